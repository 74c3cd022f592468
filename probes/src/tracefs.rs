//! tracefs: where it is mounted (mounting it if needed) and what the event `format` files say.
//!
//! The classic `kvm:*` tracepoints carry their fields at offsets that change between kernel
//! versions (Linux 6.1 vs 6.12 `kvm_entry`, 5.x `kvm_exit` without `vcpu_id`, ...). The loader
//! parses each event's `format` file here and hands the offsets to the eBPF programs, so the
//! same object works wherever KVM is (built in or a module).

use std::fs;
use std::path::{Path, PathBuf};

use crate::abi::FIELD_ABSENT;

/// Usual tracefs mount points, preferred first.
const TRACEFS_DIRS: [&str; 2] = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it on /sys/kernel/tracing failed: {0} \
         (run `mount -t tracefs nodev /sys/kernel/tracing` as root)"
    )]
    NotMounted(std::io::Error),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bad tracefs format file {path}: {reason}")]
    BadFormat { path: String, reason: String },
}

/// The tracefs root (holding `events/`). Mounts tracefs on `/sys/kernel/tracing` when no
/// mount is found (needs root).
pub fn tracefs_root() -> Result<PathBuf, TracefsError> {
    if let Some(dir) = TRACEFS_DIRS
        .iter()
        .map(Path::new)
        .find(|d| d.join("events").is_dir())
    {
        return Ok(dir.to_path_buf());
    }
    mount_tracefs(Path::new(TRACEFS_DIRS[0])).map_err(TracefsError::NotMounted)?;
    Ok(PathBuf::from(TRACEFS_DIRS[0]))
}

fn mount_tracefs(dir: &Path) -> std::io::Result<()> {
    use rustix::mount::{mount, MountFlags};
    mount("nodev", dir, "tracefs", MountFlags::empty(), None)?;
    if dir.join("events").is_dir() {
        Ok(())
    } else {
        Err(std::io::Error::other(
            "mounted, but no events/ directory appeared",
        ))
    }
}

/// One field of a tracepoint record as its `format` file declares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    /// C declaration without the name, e.g. `unsigned int` or `char[16]`.
    pub ctype: String,
    pub name: String,
    pub offset: u32,
    pub size: u32,
    pub signed: bool,
}

/// A parsed `events/<system>/<event>/format` file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventFormat {
    pub name: String,
    pub id: u32,
    pub fields: Vec<Field>,
}

impl EventFormat {
    /// Reads and parses `events/<system>/<event>/format` under `root`. `Ok(None)` when the
    /// kernel has no such event.
    pub fn load(root: &Path, system: &str, event: &str) -> Result<Option<Self>, TracefsError> {
        let path = root.join("events").join(system).join(event).join("format");
        match fs::read_to_string(&path) {
            Ok(text) => Self::parse(&text)
                .map(Some)
                .map_err(|reason| TracefsError::BadFormat {
                    path: path.display().to_string(),
                    reason,
                }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(TracefsError::Read { path, source }),
        }
    }

    /// Parses the text of a format file.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut name = None;
        let mut id = None;
        let mut fields = Vec::new();
        for line in text.lines().map(str::trim) {
            if let Some(v) = line.strip_prefix("name:") {
                name = Some(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("ID:") {
                id = Some(
                    v.trim()
                        .parse::<u32>()
                        .map_err(|e| format!("bad ID {v:?}: {e}"))?,
                );
            } else if line.starts_with("field:") {
                fields.push(parse_field(line)?);
            }
        }
        let name = name.ok_or("no `name:` line")?;
        let id = id.ok_or("no `ID:` line")?;
        if fields.is_empty() {
            return Err("no `field:` lines".into());
        }
        Ok(EventFormat { name, id, fields })
    }

    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Offset of a 4-byte field, or `Err` saying why it cannot be used.
    pub fn u32_offset(&self, name: &str) -> Result<u32, String> {
        let f = self
            .field(name)
            .ok_or_else(|| format!("{} has no field `{name}`", self.name))?;
        if f.size != 4 {
            return Err(format!(
                "{}.{name} is {} bytes ({}), expected 4",
                self.name, f.size, f.ctype
            ));
        }
        Ok(f.offset)
    }
}

/// `field:unsigned int vcpu_id;\toffset:8;\tsize:4;\tsigned:0;`
fn parse_field(line: &str) -> Result<Field, String> {
    let mut decl = None;
    let (mut offset, mut size, mut signed) = (None, None, None);
    for part in line.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (key, value) = part
            .split_once(':')
            .ok_or_else(|| format!("bad field part {part:?}"))?;
        let num = || {
            value
                .trim()
                .parse::<u32>()
                .map_err(|e| format!("bad {key} {value:?}: {e}"))
        };
        match key.trim() {
            "field" => decl = Some(value.trim()),
            "offset" => offset = Some(num()?),
            "size" => size = Some(num()?),
            "signed" => signed = Some(num()? != 0),
            _ => {} // newer kernels may add keys; they do not change the layout
        }
    }
    let decl = decl.ok_or_else(|| format!("no declaration in {line:?}"))?;
    let (ctype, name) = split_decl(decl).ok_or_else(|| format!("bad declaration {decl:?}"))?;
    Ok(Field {
        ctype,
        name,
        offset: offset.ok_or_else(|| format!("no offset in {line:?}"))?,
        size: size.ok_or_else(|| format!("no size in {line:?}"))?,
        signed: signed.unwrap_or(false),
    })
}

/// `unsigned int vcpu_id` → (`unsigned int`, `vcpu_id`); `char prev_comm[16]` →
/// (`char[16]`, `prev_comm`); `__data_loc char[] comm` → (`__data_loc char[]`, `comm`).
fn split_decl(decl: &str) -> Option<(String, String)> {
    let (ty, last) = decl.rsplit_once(char::is_whitespace)?;
    let (name, array) = match last.find('[') {
        Some(i) => (&last[..i], &last[i..]),
        None => (last, ""),
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((format!("{}{array}", ty.trim()), name.to_string()))
}

/// Field offsets of the classic `kvm:*` tracepoints, as set in the eBPF object's globals.
/// [`FIELD_ABSENT`] marks a field the kernel's event lacks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvmOffsets {
    pub entry_vcpu_id: u32,
    pub exit_reason: u32,
    pub exit_isa: u32,
    pub exit_vcpu_id: u32,
    pub uexit_reason: u32,
    pub uexit_errno: u32,
    pub pio_rw: u32,
    pub pio_port: u32,
    pub pio_size: u32,
    pub pio_val: u32,
}

impl Default for KvmOffsets {
    fn default() -> Self {
        KvmOffsets {
            entry_vcpu_id: FIELD_ABSENT,
            exit_reason: FIELD_ABSENT,
            exit_isa: FIELD_ABSENT,
            exit_vcpu_id: FIELD_ABSENT,
            uexit_reason: FIELD_ABSENT,
            uexit_errno: FIELD_ABSENT,
            pio_rw: FIELD_ABSENT,
            pio_port: FIELD_ABSENT,
            pio_size: FIELD_ABSENT,
            pio_val: FIELD_ABSENT,
        }
    }
}

/// What a kvm event's format allows: its offsets, or why the event cannot be used.
pub type Usable = Result<(), String>;

impl KvmOffsets {
    /// Fills the offsets of `kvm_entry` from its format. A missing `vcpu_id` is tolerated
    /// (reported as absent); the event stays usable since the thread identifies the vCPU.
    pub fn set_entry(&mut self, f: &EventFormat) -> Usable {
        self.entry_vcpu_id = f.u32_offset("vcpu_id").unwrap_or(FIELD_ABSENT);
        Ok(())
    }

    /// `kvm_exit` needs `exit_reason`; `isa` and `vcpu_id` are optional (older kernels).
    pub fn set_exit(&mut self, f: &EventFormat) -> Usable {
        self.exit_reason = f.u32_offset("exit_reason")?;
        self.exit_isa = f.u32_offset("isa").unwrap_or(FIELD_ABSENT);
        self.exit_vcpu_id = f.u32_offset("vcpu_id").unwrap_or(FIELD_ABSENT);
        Ok(())
    }

    /// `kvm_userspace_exit` needs `reason` and `errno`.
    pub fn set_userspace_exit(&mut self, f: &EventFormat) -> Usable {
        self.uexit_reason = f.u32_offset("reason")?;
        self.uexit_errno = f.u32_offset("errno")?;
        Ok(())
    }

    /// `kvm_pio` needs `rw`, `port`, `size` and `val`.
    pub fn set_pio(&mut self, f: &EventFormat) -> Usable {
        self.pio_rw = f.u32_offset("rw")?;
        self.pio_port = f.u32_offset("port")?;
        self.pio_size = f.u32_offset("size")?;
        self.pio_val = f.u32_offset("val")?;
        Ok(())
    }

    /// (global name in kvmscope.bpf.c, value) pairs for `EbpfLoader::set_global`.
    pub fn globals(&self) -> [(&'static str, u32); 10] {
        [
            ("kvm_entry_vcpu_id_off", self.entry_vcpu_id),
            ("kvm_exit_reason_off", self.exit_reason),
            ("kvm_exit_isa_off", self.exit_isa),
            ("kvm_exit_vcpu_id_off", self.exit_vcpu_id),
            ("kvm_uexit_reason_off", self.uexit_reason),
            ("kvm_uexit_errno_off", self.uexit_errno),
            ("kvm_pio_rw_off", self.pio_rw),
            ("kvm_pio_port_off", self.pio_port),
            ("kvm_pio_size_off", self.pio_size),
            ("kvm_pio_val_off", self.pio_val),
        ]
    }
}

/// Address of a kernel symbol from `/proc/kallsyms` text (`None` if absent or hidden as 0 by
/// `kptr_restrict`).
///
/// Only the lines holding the name are split: splitting all of a kernel's 100-200k lines
/// took an unoptimised build about 0.2 s of CPU, which inside the Bochs lane's emulator is
/// most of a minute (memchr's search is optimised in every profile, see Cargo.toml).
pub fn kallsyms_lookup(kallsyms: &str, symbol: &str) -> Option<u64> {
    let text = kallsyms.as_bytes();
    memchr::memmem::find_iter(text, symbol.as_bytes()).find_map(|at| {
        let start = memchr::memrchr(b'\n', &text[..at]).map_or(0, |n| n + 1);
        let end = memchr::memchr(b'\n', &text[at..]).map_or(text.len(), |n| at + n);
        let mut it = kallsyms[start..end].split_whitespace();
        let (addr, _kind, name) = (it.next()?, it.next()?, it.next()?);
        if name != symbol {
            return None;
        }
        u64::from_str_radix(addr, 16).ok().filter(|&a| a != 0)
    })
}
