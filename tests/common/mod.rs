//! Helpers shared by the end-to-end tests of the `kvmscope` binary.
#![allow(dead_code)]

pub mod autogroup_load;
pub mod port_io;
pub mod schedstat;
pub mod skip;
pub mod tmux;

use std::path::Path;
use std::process::Command;

/// The binary under test.
pub fn kvmscope() -> Command {
    Command::new(env!("CARGO_BIN_EXE_kvmscope"))
}

/// Writes `toml` as `dir`'s `scenario.toml` (for `--scenario`) and returns its path.
pub fn write_scenario(dir: &Path, toml: &str) -> std::path::PathBuf {
    let path = dir.join("scenario.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// `kvmscope trace --demo ARGS --scenario FILE` on the scenario `toml`, stdin closed, run to
/// its end.
pub fn trace_demo(toml: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let scenario = write_scenario(dir.path(), toml);
    kvmscope()
        .args(["trace", "--demo"])
        .args(args)
        .arg("--scenario")
        .arg(&scenario)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

/// Runs `cmd`, which must succeed, and parses what it printed as one JSON document.
pub fn json_output(cmd: &mut Command) -> serde_json::Value {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("one JSON document")
}

/// `trace --format jsonl`'s output: its event lines, and its summary (the last line), which
/// must say that nothing was lost.
pub fn trace_lines_lossless(stdout: &[u8]) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut lines: Vec<serde_json::Value> = std::str::from_utf8(stdout)
        .expect("UTF-8 output")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad line {l}: {e}")))
        .collect();
    let summary = lines.pop().expect("no output");
    assert_eq!(summary["type"], "summary", "{summary}");
    assert_eq!(summary["lost"], 0, "events were lost: {summary}");
    (lines, summary)
}

/// How far apart a recorded and a simulated wait are, as a factor: the lab's, so the kernel
/// matrix, `priv_simulate` and the lab's `repeat` example measure alike.
#[allow(unused_imports)] // as `dead_code` above: not every test binary compares waits
pub use lab::spread::wait_factor;

/// Whether a privileged test may run. Returns `false` (after printing why) when the host
/// lacks `what`; with `KVMSCOPE_REQUIRE_PRIVILEGED=1` a missing privilege fails the test.
pub fn privileged(what: Privilege) -> bool {
    let missing = match what {
        Privilege::Kvm => missing_kvm(),
        Privilege::Bpf => missing_kvm().or_else(missing_bpf),
    };
    missing.is_none_or(|reason| skip::skip_unless_required(&reason))
}

#[derive(Clone, Copy, Debug)]
pub enum Privilege {
    /// Read/write `/dev/kvm`.
    Kvm,
    /// KVM plus root, BTF and tracefs for the eBPF probes.
    Bpf,
}

fn missing_kvm() -> Option<String> {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => None,
        Err(e) => Some(format!("cannot open /dev/kvm: {e}")),
    }
}

fn missing_bpf() -> Option<String> {
    if hostfacts::euid() != 0 {
        return Some("not root (BPF tests need root)".into());
    }
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Some("no /sys/kernel/btf/vmlinux".into());
    }
    None
}

/// JSON equality, floats to 1e-12 relative: serde_json's default float parsing may be one ulp
/// off the printed value.
pub fn assert_json_close(a: &serde_json::Value, b: &serde_json::Value, path: &str) {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            assert!(
                (x - y).abs() <= 1e-12 * x.abs().max(y.abs()),
                "{path}: {x} != {y}"
            );
        }
        (Value::Array(x), Value::Array(y)) => {
            assert_eq!(x.len(), y.len(), "{path}: lengths differ");
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                assert_json_close(p, q, &format!("{path}[{i}]"));
            }
        }
        (Value::Object(x), Value::Object(y)) => {
            assert_eq!(
                x.keys().collect::<Vec<_>>(),
                y.keys().collect::<Vec<_>>(),
                "{path}: keys"
            );
            for (k, v) in x {
                assert_json_close(v, &y[k], &format!("{path}.{k}"));
            }
        }
        _ => assert_eq!(a, b, "{path}"),
    }
}

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("kvmscope-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self, f: &str) -> std::path::PathBuf {
        self.0.join(f)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `ok` every 100 ms until it holds; fails the test after `timeout`, naming `what`.
pub fn wait_for(what: &str, timeout: std::time::Duration, mut ok: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
