//! One boot under QEMU's TCG emulator, whose AMD CPU models emulate SVM: the guest kernel
//! loads `kvm_amd` and has real hardware-style KVM. The console goes to the first serial
//! port, the results protocol ([`crate::results`]) to the second; both are captured to files.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::results::{tail, Results};
use crate::{io_err, LabError, Result};

#[derive(Clone, Debug)]
pub struct Qemu {
    /// `-cpu`: an SVM-capable model (TCG emulates SVM with nested paging).
    pub cpu: String,
    pub smp: u32,
    pub mem_mb: u32,
    /// The whole boot, suite included, is killed after this long.
    pub timeout: Duration,
    /// TCG's threading: `multi` runs each vCPU on a host thread of its own, `single` runs
    /// them all round-robin on one. The default is `single`: multi-threaded TCG lets one
    /// vCPU run a stale translation of text another vCPU is patching (the kernel's
    /// tracepoint static keys, switched on when probes attach), an `Oops: int3` in a random
    /// function about once in 15 boots; single-threaded TCG has no such race, and on this
    /// 2-core host it was no slower (6.1's suite 42.1 s single vs 47.7 s multi, 6.12's
    /// 112.7 s vs 120.8 s, one after the other under load). `KVMSCOPE_LAB_TCG=single|multi`
    /// overrides it.
    pub tcg_threads: TcgThreads,
}

/// `-accel tcg,thread=...`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TcgThreads {
    Single,
    Multi,
}

impl TcgThreads {
    pub fn as_str(self) -> &'static str {
        match self {
            TcgThreads::Single => "single",
            TcgThreads::Multi => "multi",
        }
    }

    /// `KVMSCOPE_LAB_TCG` if set (`single` or `multi`), else `default`.
    pub fn from_env(default: TcgThreads) -> Result<TcgThreads> {
        match std::env::var("KVMSCOPE_LAB_TCG").as_deref() {
            Err(_) => Ok(default),
            Ok("single") => Ok(TcgThreads::Single),
            Ok("multi") => Ok(TcgThreads::Multi),
            Ok(other) => Err(LabError::Config(format!(
                "KVMSCOPE_LAB_TCG={other}: expected single or multi"
            ))),
        }
    }
}

impl Default for Qemu {
    fn default() -> Self {
        Qemu {
            cpu: "EPYC,+svm,+npt".into(),
            smp: 2,
            mem_mb: 2048,
            timeout: Duration::from_secs(600),
            tcg_threads: TcgThreads::Single,
        }
    }
}

/// What one boot produced.
#[derive(Debug)]
pub struct Boot {
    pub console: String,
    pub results: Results,
    pub console_log: PathBuf,
    pub results_log: PathBuf,
    /// Host wall time from QEMU's start to its exit.
    pub wall: Duration,
}

impl Qemu {
    /// Boots `vmlinuz` with `initramfs`; `append` goes to the kernel command line after the
    /// console settings (words `K=V` the kernel does not know reach `/init` as variables).
    /// Logs go to `workdir`. Returns once the guest powered off, or fails on a timeout or a
    /// QEMU error, with the console's end in the message.
    pub fn boot(
        &self,
        vmlinuz: &Path,
        initramfs: &Path,
        append: &str,
        workdir: &Path,
    ) -> Result<Boot> {
        std::fs::create_dir_all(workdir).map_err(io_err(workdir))?;
        let console_log = workdir.join("console.log");
        let results_log = workdir.join("results.log");
        let started = Instant::now();
        let mut child = Command::new("qemu-system-x86_64")
            .arg("-accel")
            .arg(format!("tcg,thread={}", self.tcg_threads.as_str()))
            .args(["-cpu", &self.cpu])
            .args([
                "-smp",
                &self.smp.to_string(),
                "-m",
                &self.mem_mb.to_string(),
            ])
            .arg("-kernel")
            .arg(vmlinuz)
            .arg("-initrd")
            .arg(initramfs)
            .arg("-append")
            .arg(format!("console=ttyS0 quiet loglevel=4 panic=-1 {append}"))
            .args([
                "-nodefaults",
                "-no-reboot",
                "-display",
                "none",
                "-monitor",
                "none",
            ])
            .arg("-serial")
            .arg(format!("file:{}", console_log.display()))
            .arg("-serial")
            .arg(format!("file:{}", results_log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LabError::Spawn {
                program: "qemu-system-x86_64".into(),
                source,
            })?;
        let read =
            |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
        let fail = |why: String| LabError::Boot {
            kernel: vmlinuz.display().to_string(),
            why: format!("{why}; console ends:\n{}", tail(&read(&console_log), 30)),
        };
        let status = loop {
            if let Some(status) = child
                .try_wait()
                .map_err(|e| fail(format!("cannot wait for QEMU: {e}")))?
            {
                break status;
            }
            if started.elapsed() > self.timeout {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!("no power-off within {:?}", self.timeout)));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let wall = started.elapsed();
        if !status.success() {
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            return Err(fail(format!(
                "QEMU exited with {status}: {}",
                stderr.trim()
            )));
        }
        let console = read(&console_log);
        let results = Results::parse(&read(&results_log));
        Ok(Boot {
            console,
            results,
            console_log,
            results_log,
            wall,
        })
    }
}
