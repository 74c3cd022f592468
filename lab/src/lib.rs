//! The kernel lab: stock Debian kernels booted under an emulator that gives them real
//! hardware-style KVM (QEMU TCG emulates AMD-V; Bochs emulates VT-x), with kvmscope and a
//! suite script in an initramfs, and the suite's results read back on the host.
//!
//! The pieces, each usable alone (see `lab/README.md`):
//! - [`apt::Archive`]: Debian packages fetched with `apt-get download` through apt state of
//!   its own (never the host's sources), cached under [`cache_dir`];
//! - [`kernel::Kernel`]: a kernel package (or sid's split `linux-binary-*` +
//!   `linux-modules-*`) extracted once, with its vmlinuz and module tree;
//! - [`modules::ModuleTree`]: a module and its dependencies in load order, from each
//!   module's `.modinfo` `depends=` (the packages ship no `modules.dep`);
//! - [`initramfs::Initramfs`]: a newc cpio around busybox, the generic `/init`
//!   ([`GUEST_INIT`]), the modules, the binaries under test with their libraries and a suite;
//! - [`qemu::Qemu`]: one boot under TCG, console and results port captured to files;
//! - [`bochs::Bochs`]: the same under Bochs (emulated VT-x), from an isolinux CD image;
//! - [`results::Results`]: the protocol by which the guest's steps come back (markers on a
//!   serial port: works on every emulator);
//! - [`suite::SuiteBoot`]: one boot of a suite script by hand (the examples);
//! - [`replayed::vcpus`]: each vCPU's recorded and replayed figures in `simulate --json`;
//! - [`spread::Spread`]: the kernel's own rounds of one scenario against their replays.

pub mod apt;
pub mod bochs;
pub mod initramfs;
pub mod kernel;
pub mod modules;
pub mod qemu;
pub mod replayed;
pub mod results;
pub mod spread;
pub mod suite;

use std::path::PathBuf;

/// The generic `/init`: mounts, module loading, the step protocol, then the suite script at
/// `/lab/suite.sh`, then power-off.
pub const GUEST_INIT: &str = include_str!("../guest/init.sh");

/// Where downloads and extracted kernels are kept between runs: `$KVMSCOPE_LAB_CACHE`, or
/// `/var/cache/kvmscope-lab` (outside any clone, so CI's fresh clones reuse it).
pub fn cache_dir() -> PathBuf {
    std::env::var_os("KVMSCOPE_LAB_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/kvmscope-lab"))
}

/// busybox-static from Debian 12 (the lab's shell and tools inside every guest).
pub fn busybox(archive: &apt::Archive) -> Result<PathBuf> {
    Ok(archive
        .unpacked("bookworm", &["busybox-static"])?
        .join("bin/busybox"))
}

/// The initramfs every lane starts from: busybox, the generic `/init`, and `kvm_module`
/// (`kvm-amd` or `kvm-intel`) of `kernel` with its dependencies in load order. Add the
/// binaries and `/lab/suite.sh`, then [`initramfs::Initramfs::write`].
pub fn base_initramfs(
    archive: &apt::Archive,
    kernel: &kernel::Kernel,
    kvm_module: &str,
) -> Result<initramfs::Initramfs> {
    let mut fs = initramfs::Initramfs::with_busybox(&busybox(archive)?)?;
    fs.modules(&modules::ModuleTree::open(&kernel.modules)?.load_order(kvm_module)?);
    Ok(fs)
}

/// The static `tinyvmm` built from `lab/guest/tinyvmm.c`: a KVM user that is not kvmscope.
pub fn tinyvmm() -> PathBuf {
    PathBuf::from(env!("LAB_TINYVMM"))
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Command {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no package in {suite} matches {what} (and none is cached under {cache})")]
    NoPackage {
        suite: String,
        what: String,
        cache: PathBuf,
    },
    #[error("{0}")]
    Kernel(String),
    #[error("module {module}: {why}")]
    Module { module: String, why: String },
    #[error("boot of {kernel} failed: {why}")]
    Boot { kernel: String, why: String },
    #[error("results: {0}")]
    Results(String),
    #[error("{0}")]
    Config(String),
}

pub type Result<T> = std::result::Result<T, LabError>;

/// `path`-tagged I/O errors.
pub(crate) fn io_err(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> LabError {
    let path = path.into();
    move |source| LabError::Io { path, source }
}

/// Runs a command to completion; its stdout on success, its stderr in the error.
pub(crate) fn run(cmd: &mut std::process::Command) -> Result<Vec<u8>> {
    let command = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| LabError::Spawn {
        program: cmd.get_program().to_string_lossy().into_owned(),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}
