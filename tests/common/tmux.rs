//! The dashboard's tests drive a real terminal: a tmux server of their own, and readers of
//! what its screen shows.

use std::process::Command;
use std::time::{Duration, Instant};

/// Fails the test, saying what to install, when tmux is missing.
pub fn require_tmux() {
    assert!(
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
        "tmux is needed for this test (apt-get install tmux)"
    );
}

/// One tmux server of our own (unique socket) with one session, killed on drop whatever
/// happens: the dashboard's tests drive a real terminal through it.
pub struct Tmux {
    pub socket: String,
    pub session: String,
}

impl Tmux {
    /// Starts `script` in a detached 120x40 session on a server of its own.
    pub fn start(socket: String, session: &str, script: &str) -> Tmux {
        let tmux = Tmux {
            socket,
            session: session.to_string(),
        };
        let out = tmux.cmd(&[
            "new-session",
            "-d",
            "-x",
            "120",
            "-y",
            "40",
            "-s",
            session,
            script,
        ]);
        assert!(
            out.status.success(),
            "tmux new-session: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        tmux
    }

    pub fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    pub fn capture(&self) -> String {
        let out = self.cmd(&["capture-pane", "-p", "-t", &self.session]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn display(&self, format: &str) -> String {
        let out = self.cmd(&["display-message", "-p", "-t", &self.session, format]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", &self.session, keys]);
    }

    /// Waits (20 s at most) until the screen satisfies `ok`; the last capture either way.
    pub fn wait_for_screen(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "timed out waiting for {what}:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-session", "-t", &self.session]);
        let _ = self.cmd(&["kill-server"]);
    }
}

/// Rows of the dashboard's vCPU table: `│A batch/0 ...`.
pub fn vcpu_rows(screen: &str) -> Vec<&str> {
    screen
        .lines()
        .filter(|l| {
            let mut c = l.chars();
            c.next() == Some('│')
                && c.next().is_some_and(|ch| ch.is_ascii_alphabetic())
                && c.next() == Some(' ')
        })
        .collect()
}

/// Whether `c` is a braille cell (what the vruntime chart draws with).
pub fn is_braille(c: &char) -> bool {
    ('\u{2801}'..='\u{28ff}').contains(c)
}
