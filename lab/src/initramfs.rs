//! An initramfs (newc cpio, uncompressed: every kernel takes it and there is nothing to
//! gain on a local boot) built in memory, device nodes included, without root or a staging
//! tree.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::process::Command;

use cpio::newc::Builder;

use crate::modules::Module;
use crate::{io_err, run, LabError, Result};

#[derive(Clone, Debug)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDev { major: u32, minor: u32, mode: u32 },
}

/// Paths are absolute in the guest (`/bin/sh`); parents are created as needed.
#[derive(Clone, Debug, Default)]
pub struct Initramfs {
    entries: BTreeMap<String, Entry>,
}

impl Initramfs {
    /// busybox (as `/bin/busybox` and `/bin/sh`), `/dev/console` and `/dev/null`, the
    /// mount points, and the lab's generic `/init` ([`crate::GUEST_INIT`]).
    pub fn with_busybox(busybox: &Path) -> Result<Initramfs> {
        let mut fs = Initramfs::default();
        for dir in [
            "/proc", "/sys", "/dev", "/tmp", "/run", "/etc", "/sbin", "/usr/bin", "/lab",
        ] {
            fs.dir(dir);
        }
        fs.host_file("/bin/busybox", busybox, 0o755)?;
        // Without /bin/sh the kernel cannot run /init: "Failed to execute /init (error -2)".
        fs.symlink("/bin/sh", "busybox");
        fs.char_dev("/dev/console", 5, 1, 0o600);
        fs.char_dev("/dev/null", 1, 3, 0o666);
        fs.file("/init", crate::GUEST_INIT.as_bytes().to_vec(), 0o755);
        Ok(fs)
    }

    pub fn dir(&mut self, path: &str) {
        self.entries.insert(key(path), Entry::Dir);
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.entries.insert(key(path), Entry::File { data, mode });
    }

    pub fn symlink(&mut self, path: &str, target: &str) {
        self.entries
            .insert(key(path), Entry::Symlink(target.into()));
    }

    pub fn char_dev(&mut self, path: &str, major: u32, minor: u32, mode: u32) {
        self.entries
            .insert(key(path), Entry::CharDev { major, minor, mode });
    }

    pub fn host_file(&mut self, path: &str, src: &Path, mode: u32) -> Result<()> {
        let data = std::fs::read(src).map_err(io_err(src))?;
        self.file(path, data, mode);
        Ok(())
    }

    /// A host executable at `path`, stripped of debug info, with the shared libraries and
    /// the dynamic loader `ldd` lists at their host paths.
    pub fn executable(&mut self, path: &str, src: &Path) -> Result<()> {
        let stripped = std::env::temp_dir().join(format!(
            "lab-strip-{}-{}",
            std::process::id(),
            src.file_name().unwrap_or_default().to_string_lossy()
        ));
        run(Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&stripped)
            .arg(src))?;
        let data = std::fs::read(&stripped).map_err(io_err(&stripped));
        let _ = std::fs::remove_file(&stripped);
        self.file(path, data?, 0o755);
        for lib in shared_libraries(src)? {
            let lib_path = lib.to_string_lossy().into_owned();
            self.host_file(&lib_path, &lib, 0o755)?;
        }
        Ok(())
    }

    /// The modules as `/lib/modules/<name>.ko` and their load order in `/lib/modules/order`,
    /// one name a line (the generic `/init` loads them in that order).
    pub fn modules(&mut self, modules: &[Module]) {
        let mut order = String::new();
        for m in modules {
            self.file(
                &format!("/lib/modules/{}.ko", m.name),
                m.image.clone(),
                0o644,
            );
            order.push_str(&m.name);
            order.push('\n');
        }
        self.file("/lib/modules/order", order.into_bytes(), 0o644);
    }

    /// Writes the newc archive.
    pub fn write(&self, out: &Path) -> Result<()> {
        // Every parent directory, before its children (BTreeMap order puts "a" before "a/b").
        let mut all = self.entries.clone();
        for path in self.entries.keys() {
            let mut parent = Path::new(path).parent();
            while let Some(p) = parent.filter(|p| !p.as_os_str().is_empty()) {
                all.entry(p.to_string_lossy().into_owned())
                    .or_insert(Entry::Dir);
                parent = p.parent();
            }
        }
        let inputs = all.into_iter().map(|(path, entry)| {
            let b = Builder::new(&path).uid(0).gid(0).nlink(1);
            let (b, data) = match entry {
                Entry::Dir => (b.mode(0o040755).nlink(2), Vec::new()),
                Entry::File { data, mode } => (b.mode(0o100000 | mode), data),
                Entry::Symlink(target) => (b.mode(0o120777), target.into_bytes()),
                Entry::CharDev { major, minor, mode } => (
                    b.mode(0o020000 | mode).rdev_major(major).rdev_minor(minor),
                    Vec::new(),
                ),
            };
            (b, Cursor::new(data))
        });
        let file = std::fs::File::create(out).map_err(io_err(out))?;
        let mut w = std::io::BufWriter::new(file);
        cpio::write_cpio(inputs, &mut w).map_err(io_err(out))?;
        std::io::Write::flush(&mut w).map_err(io_err(out))
    }
}

fn key(path: &str) -> String {
    path.trim_start_matches('/').to_string()
}

/// The absolute paths `ldd` prints for `binary` (none for a static one).
fn shared_libraries(binary: &Path) -> Result<Vec<std::path::PathBuf>> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|source| LabError::Spawn {
            program: "ldd".into(),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || text.contains("not a dynamic executable") {
        return Ok(Vec::new());
    }
    Ok(text
        .lines()
        .filter_map(|l| l.split_whitespace().find(|w| w.starts_with('/')))
        .map(std::path::PathBuf::from)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_lists_parents_nodes_and_links() {
        let mut fs = Initramfs::default();
        fs.file("/lib/modules/kvm.ko", b"elf".to_vec(), 0o644);
        fs.symlink("/bin/sh", "busybox");
        fs.char_dev("/dev/console", 5, 1, 0o600);
        let out = std::env::temp_dir().join(format!("lab-initramfs-test-{}", std::process::id()));
        fs.write(&out).unwrap();
        let mut reader = std::fs::File::open(&out).unwrap();
        let mut seen = Vec::new();
        loop {
            let entry = cpio::NewcReader::new(reader).unwrap();
            if entry.entry().is_trailer() {
                break;
            }
            let e = entry.entry();
            seen.push((
                e.name().to_string(),
                e.mode() >> 12,
                e.rdev_major(),
                e.file_size(),
            ));
            reader = entry.finish().unwrap();
        }
        std::fs::remove_file(&out).unwrap();
        assert_eq!(
            seen,
            vec![
                ("bin".into(), 0o04, 0, 0),
                ("bin/sh".into(), 0o12, 0, 7),
                ("dev".into(), 0o04, 0, 0),
                ("dev/console".into(), 0o02, 5, 0),
                ("lib".into(), 0o04, 0, 0),
                ("lib/modules".into(), 0o04, 0, 0),
                ("lib/modules/kvm.ko".into(), 0o10, 0, 3),
            ]
        );
    }
}
