//! One boot of a suite script by hand, as the lab's examples run it (`examples/boot.rs`,
//! `examples/repeat.rs`): the kernel fetched, an initramfs with the suite at
//! `/lab/suite.sh`, the scenario files beside it (`*.toml`) at `/lab/NAME`, the demo without
//! affinity rotation where `tests/priv_kernels.rs` puts it, `tinyvmm`, the given executables
//! in `/bin`, then one QEMU boot.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::kernel::{Kernel, KernelSpec};
use crate::qemu::{Boot, Qemu};
use crate::{io_err, LabError, Result};

/// The demo without affinity rotation (`tests/fixtures/demo-fixed-affinity.toml`), which the
/// suites that record the demo (`svm.sh`'s `LAB_RECORD_DEMO`, `cfs-sample.sh`,
/// `repeat-demo.sh`) read from `/lab/demo-fixed-affinity.toml`.
const DEMO_FIXED_AFFINITY: &[u8] = include_bytes!("../../tests/fixtures/demo-fixed-affinity.toml");

/// What to boot: `LAB_APPEND` and `LAB_TIMEOUT_S` are the by-hand knobs ([`SuiteBoot::env`]).
#[derive(Clone, Debug)]
pub struct SuiteBoot {
    /// A [`crate::kernel::MATRIX`] name (`6.1`, `6.12`, ...).
    pub kernel: String,
    pub suite: PathBuf,
    /// Logs and the initramfs go here.
    pub workdir: PathBuf,
    /// Each goes to `/bin/<its file name>`.
    pub executables: Vec<PathBuf>,
    /// Words for the kernel command line (the suite's variables, e.g. `LAB_ROUNDS=8`).
    pub append: String,
    pub qemu: Qemu,
}

impl SuiteBoot {
    /// `append` from `$LAB_APPEND`, the boot's time limit from `$LAB_TIMEOUT_S` (seconds;
    /// QEMU's default otherwise).
    pub fn env(
        kernel: &str,
        suite: &Path,
        workdir: &Path,
        executables: &[PathBuf],
    ) -> Result<Self> {
        let mut qemu = Qemu::default();
        if let Ok(secs) = std::env::var("LAB_TIMEOUT_S") {
            let secs = secs.parse().map_err(|_| {
                LabError::Config(format!("LAB_TIMEOUT_S={secs:?} is not a number of seconds"))
            })?;
            qemu.timeout = Duration::from_secs(secs);
        }
        Ok(SuiteBoot {
            kernel: kernel.to_string(),
            suite: suite.to_path_buf(),
            workdir: workdir.to_path_buf(),
            executables: executables.to_vec(),
            append: std::env::var("LAB_APPEND").unwrap_or_default(),
            qemu,
        })
    }

    /// Fetches the kernel, writes the initramfs into the workdir and boots it once.
    pub fn boot(&self) -> Result<(Kernel, Boot)> {
        let spec = KernelSpec::by_name(&self.kernel).ok_or_else(|| {
            let names: Vec<&str> = crate::kernel::MATRIX.iter().map(|k| k.name).collect();
            LabError::Config(format!(
                "unknown kernel {:?} (the matrix has {})",
                self.kernel,
                names.join(", ")
            ))
        })?;
        let archive = crate::apt::Archive::new(&crate::cache_dir());
        let kernel = Kernel::fetch(spec, &archive)?;
        let mut fs = crate::base_initramfs(&archive, &kernel, "kvm-amd")?;
        fs.host_file("/lab/suite.sh", &self.suite, 0o644)?;
        let suite_dir = self.suite.parent().unwrap_or(Path::new("."));
        let suite_dir = if suite_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            suite_dir
        };
        for entry in std::fs::read_dir(suite_dir).map_err(io_err(suite_dir))? {
            let path = entry.map_err(io_err(suite_dir))?.path();
            if let (Some("toml"), Some(name)) = (
                path.extension().and_then(|e| e.to_str()),
                path.file_name().and_then(|n| n.to_str()),
            ) {
                fs.host_file(&format!("/lab/{name}"), &path, 0o644)?;
            }
        }
        fs.executable("/bin/tinyvmm", &crate::tinyvmm())?;
        fs.file(
            "/lab/demo-fixed-affinity.toml",
            DEMO_FIXED_AFFINITY.to_vec(),
            0o644,
        );
        for exe in &self.executables {
            let name = exe
                .file_name()
                .ok_or_else(|| LabError::Config(format!("{}: not a file name", exe.display())))?;
            fs.executable(&format!("/bin/{}", name.to_string_lossy()), exe)?;
        }
        std::fs::create_dir_all(&self.workdir).map_err(io_err(&self.workdir))?;
        let initrd = self.workdir.join("initramfs.cpio");
        fs.write(&initrd)?;
        let boot = self
            .qemu
            .boot(&kernel.vmlinuz, &initrd, &self.append, &self.workdir)?;
        Ok((kernel, boot))
    }
}
