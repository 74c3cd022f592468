//! The kernels of the matrix and how each is found in Debian's archive.

use std::path::{Path, PathBuf};

use crate::apt::Archive;
use crate::{LabError, Result};

/// How a suite packages its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Packaging {
    /// `linux-image-<version>-amd64-unsigned`: vmlinuz under `boot/`, modules under `lib/`.
    Image,
    /// sid: `linux-binary-<version>-amd64` (vmlinuz) + `linux-modules-<version>-amd64`, both
    /// under `usr/lib/modules/<release>/`.
    Split,
}

/// One kernel of the matrix: a Debian suite and which of its kernels.
#[derive(Clone, Copy, Debug)]
pub struct KernelSpec {
    /// Short name, as tests and reports call it ("5.10", "sid").
    pub name: &'static str,
    pub suite: &'static str,
    /// The upstream series to take (`Some("6.1")`), or the newest of the suite.
    pub series: Option<&'static str>,
    pub packaging: Packaging,
}

/// Debian's kernels from the oldest supported (5.10, CFS) to the newest (sid, EEVDF).
pub const MATRIX: [KernelSpec; 4] = [
    KernelSpec {
        name: "5.10",
        suite: "bullseye",
        series: Some("5.10"),
        packaging: Packaging::Image,
    },
    KernelSpec {
        name: "6.1",
        suite: "bookworm",
        series: Some("6.1"),
        packaging: Packaging::Image,
    },
    KernelSpec {
        name: "6.12",
        suite: "trixie",
        series: Some("6.12"),
        packaging: Packaging::Image,
    },
    KernelSpec {
        name: "sid",
        suite: "sid",
        series: None,
        packaging: Packaging::Split,
    },
];

impl KernelSpec {
    pub fn by_name(name: &str) -> Option<KernelSpec> {
        MATRIX.iter().copied().find(|k| k.name == name)
    }

    /// The package version part (`5.10.0-32`, `7.2.13+deb14`) if `package` is this spec's
    /// plain amd64 kernel (not cloud, rt or a meta package).
    fn version_of<'a>(&self, package: &'a str) -> Option<&'a str> {
        let version = match self.packaging {
            Packaging::Image => package
                .strip_prefix("linux-image-")?
                .strip_suffix("-amd64-unsigned")?,
            Packaging::Split => package
                .strip_prefix("linux-binary-")?
                .strip_suffix("-amd64")?,
        };
        let plain = version
            .split(['-', '+'])
            .all(|w| w.starts_with("deb") || !w.chars().any(|c| c.is_ascii_alphabetic()));
        let digits = version.chars().next().is_some_and(|c| c.is_ascii_digit());
        let series = match self.series {
            Some(s) => version.strip_prefix(s).is_some_and(|r| r.starts_with('.')),
            None => true,
        };
        (plain && digits && series).then_some(version)
    }
}

/// A kernel unpacked from its package(s).
#[derive(Clone, Debug)]
pub struct Kernel {
    pub spec: KernelSpec,
    /// `uname -r` (`6.1.0-50-amd64`).
    pub release: String,
    pub packages: Vec<String>,
    pub vmlinuz: PathBuf,
    /// `.../lib/modules/<release>`.
    pub modules: PathBuf,
}

impl Kernel {
    /// The newest kernel `spec` names, fetched and unpacked (both cached).
    pub fn fetch(spec: KernelSpec, archive: &Archive) -> Result<Kernel> {
        let what = match spec.packaging {
            Packaging::Image => {
                format!("linux-image-{}.*-amd64-unsigned", spec.series.unwrap_or(""))
            }
            Packaging::Split => "linux-binary-*-amd64".to_string(),
        };
        let main = archive.newest(spec.suite, &what, |n| spec.version_of(n).is_some())?;
        let mut packages = vec![main.clone()];
        if spec.packaging == Packaging::Split {
            let version = spec.version_of(&main).expect("accepted above");
            packages.push(format!("linux-modules-{version}-amd64"));
        }
        let names: Vec<&str> = packages.iter().map(String::as_str).collect();
        let root = archive.unpacked(spec.suite, &names)?;
        Self::in_tree(spec, packages, &root)
    }

    fn in_tree(spec: KernelSpec, packages: Vec<String>, root: &Path) -> Result<Kernel> {
        let lib = ["lib/modules", "usr/lib/modules"]
            .iter()
            .map(|d| root.join(d))
            .find(|d| d.is_dir())
            .ok_or_else(|| {
                LabError::Kernel(format!(
                    "{}: no lib/modules in {}",
                    spec.name,
                    root.display()
                ))
            })?;
        let release = std::fs::read_dir(&lib)
            .map_err(crate::io_err(&lib))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .find(|r| lib.join(r).join("kernel").is_dir())
            .ok_or_else(|| {
                LabError::Kernel(format!(
                    "{}: no module tree under {}",
                    spec.name,
                    lib.display()
                ))
            })?;
        let modules = lib.join(&release);
        let vmlinuz = [
            root.join(format!("boot/vmlinuz-{release}")),
            modules.join("vmlinuz"),
        ]
        .into_iter()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            LabError::Kernel(format!(
                "{}: no vmlinuz for {release} in {}",
                spec.name,
                root.display()
            ))
        })?;
        Ok(Kernel {
            spec,
            release,
            packages,
            vmlinuz,
            modules,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_amd64_kernels_only() {
        let k510 = KernelSpec::by_name("5.10").unwrap();
        assert_eq!(
            k510.version_of("linux-image-5.10.0-32-amd64-unsigned"),
            Some("5.10.0-32")
        );
        assert_eq!(
            k510.version_of("linux-image-5.10.0-32-cloud-amd64-unsigned"),
            None
        );
        assert_eq!(
            k510.version_of("linux-image-5.10.0-32-rt-amd64-unsigned"),
            None
        );
        assert_eq!(k510.version_of("linux-image-5.10.0-32-amd64"), None);
        assert_eq!(
            k510.version_of("linux-image-5.100.0-1-amd64-unsigned"),
            None
        );
        let k612 = KernelSpec::by_name("6.12").unwrap();
        assert_eq!(
            k612.version_of("linux-image-6.12.117+deb13-amd64-unsigned"),
            Some("6.12.117+deb13")
        );
        let sid = KernelSpec::by_name("sid").unwrap();
        assert_eq!(
            sid.version_of("linux-binary-7.2.13+deb14-amd64"),
            Some("7.2.13+deb14")
        );
        assert_eq!(
            sid.version_of("linux-binary-7.2.13+deb14-cloud-amd64"),
            None
        );
        assert_eq!(sid.version_of("linux-modules-7.2.13+deb14-amd64"), None);
    }
}
