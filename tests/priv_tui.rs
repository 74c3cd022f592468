//! End to end in a real terminal: `kvmscope demo` inside tmux at 120x40. The dashboard must
//! show vCPU rows, vruntime lines and pCPU lanes that move, quit on `q` with status 0, leave
//! the terminal restored (alternate screen off) and leave no vCPU thread behind.

mod common;
use common::tmux::*;
use common::*;

use std::path::{Path, PathBuf};

use std::time::Duration;

/// The kvmscope process started by the pane's shell.
fn kvmscope_child_of(shell: u32) -> Option<u32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The command name may hold spaces: fields start after the last ')'.
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let ppid = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(shell) && head.ends_with("(kvmscope") {
            return Some(pid);
        }
    }
    None
}

/// (tid, comm) of the `vm<V>-vcpu<C>` threads of `pid`.
fn vcpu_threads(pid: u32) -> Vec<(u32, String)> {
    let mut out = vec![];
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(tid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim().to_string();
        if comm.starts_with("vm") && comm.contains("-vcpu") {
            out.push((tid, comm));
        }
    }
    out
}

fn lane_lines(screen: &str) -> Vec<&str> {
    screen.lines().filter(|l| l.starts_with("│cpu")).collect()
}

/// Braille cells: the chart's lines.
fn chart_cells(screen: &str) -> usize {
    screen.chars().filter(is_braille).count()
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

/// How the test ends the dashboard.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Quit {
    KeyQ,
    CtrlC,
    Sigterm,
}

#[test]
fn demo_dashboard_runs_moves_and_quits_cleanly() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    demo_session(Quit::KeyQ);
}

#[test]
fn demo_dashboard_quits_cleanly_on_ctrl_c() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    demo_session(Quit::CtrlC);
}

#[test]
fn demo_dashboard_quits_cleanly_on_sigterm() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    demo_session(Quit::Sigterm);
}

fn demo_session(quit: Quit) {
    require_tmux();
    let tag = format!("{}-{quit:?}", std::process::id());
    let dir: PathBuf = std::env::temp_dir().join(format!("kvmscope-priv-tui-{tag}"));
    std::fs::create_dir_all(&dir).unwrap();
    let rc = dir.join("rc");
    let log = dir.join("log");
    let _ = std::fs::remove_file(&rc);
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_kvmscope"));
    // The shell stays after kvmscope exits so the restored screen can be inspected.
    let script = format!(
        "{} demo --log-file {}; echo $? > {}; sleep 120",
        shell_quote(&bin),
        shell_quote(&log),
        shell_quote(&rc)
    );
    let tmux = Tmux::start(format!("kvmscope-tui-{tag}"), "tui", &script);
    let shell: u32 = tmux.display("#{pane_pid}").parse().expect("pane pid");

    // The dashboard is up once the table has rows and the lanes have letters.
    let mut first = String::new();
    wait_for("vCPU rows and lanes", Duration::from_secs(30), || {
        first = tmux.capture();
        vcpu_rows(&first).len() >= 3
            && lane_lines(&first)
                .iter()
                .any(|l| l.chars().skip(6).any(|c| c.is_ascii_alphabetic()))
    });
    let pid = kvmscope_child_of(shell).expect("kvmscope process under the tmux shell");
    let threads = vcpu_threads(pid);
    assert!(
        !threads.is_empty(),
        "the demo's vm<V>-vcpu<C> threads should be running"
    );

    // Give the chart time to draw lines, then compare two frames about a second apart.
    wait_for("vruntime lines", Duration::from_secs(15), || {
        first = tmux.capture();
        chart_cells(&first) > 10
    });
    std::thread::sleep(Duration::from_millis(1200));
    let second = tmux.capture();
    assert!(
        first.contains("vruntime") && first.contains("pCPU lanes"),
        "panels missing:\n{first}"
    );
    assert!(second.contains("kvmscope"), "header missing:\n{second}");
    assert!(
        vcpu_rows(&second).len() >= threads.len().min(3),
        "vCPU rows missing:\n{second}"
    );
    assert_ne!(
        vcpu_rows(&first),
        vcpu_rows(&second),
        "vCPU rows did not change in 1.2 s"
    );
    assert_ne!(
        lane_lines(&first),
        lane_lines(&second),
        "pCPU lanes did not move in 1.2 s"
    );
    let chart = |s: &str| {
        s.lines()
            .filter(|l| l.contains('│'))
            .map(|l| l.chars().filter(is_braille).collect::<String>())
            .collect::<Vec<_>>()
    };
    assert_ne!(
        chart(&first),
        chart(&second),
        "vruntime lines did not move in 1.2 s"
    );

    match quit {
        Quit::KeyQ => {
            tmux.cmd(&["send-keys", "-t", "tui", "q"]);
        }
        Quit::CtrlC => {
            tmux.cmd(&["send-keys", "-t", "tui", "C-c"]);
        }
        Quit::Sigterm => {
            // libc: std's Child::kill sends only SIGKILL.
            // SAFETY: kill sends a signal to the kvmscope process this test started.
            assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
        }
    }
    wait_for("kvmscope to exit", Duration::from_secs(20), || {
        rc.exists()
            && !std::fs::read_to_string(&rc)
                .unwrap_or_default()
                .trim()
                .is_empty()
    });
    let code = std::fs::read_to_string(&rc).unwrap();
    assert_eq!(
        code.trim(),
        "0",
        "kvmscope demo exit status; log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    // Restored: the alternate screen is off and the dashboard is gone from the pane.
    assert_eq!(
        tmux.display("#{alternate_on}"),
        "0",
        "alternate screen still on"
    );
    let after = tmux.capture();
    assert!(
        !after.contains("pCPU lanes"),
        "dashboard still on screen after exit:\n{after}"
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "kvmscope still running"
    );
    for (tid, comm) in threads {
        let now = std::fs::read_to_string(format!("/proc/{tid}/comm")).unwrap_or_default();
        assert_ne!(
            now.trim(),
            comm,
            "vCPU thread {comm} (tid {tid}) survived the dashboard"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
