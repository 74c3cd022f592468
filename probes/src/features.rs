//! What the running kernel offers, decided from its BTF (`/sys/kernel/btf/vmlinux`) rather
//! than from its version string: distribution kernels backport features and a release
//! number says nothing about them. Every kernel-feature decision of user space lives here.
//!
//! aya-obj parses BTF but keeps struct members private, so this walks the type section
//! itself: only names, kinds and struct members are read (the format is
//! Documentation/bpf/btf.rst).

use std::sync::OnceLock;

/// BTF kinds whose records this walk must know the length of (`BTF_KIND_*`).
const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_ENUM64: u32 = 19;
const MAGIC: u16 = 0xeb9f;

/// The features kvmscope's user space decides on. `None` where there is no BTF to tell.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelFeatures {
    /// The fair class is EEVDF: `sched_entity` has `deadline` (Linux 6.6 on), else CFS.
    /// (Not `vlag`: 6.18 moved it into an anonymous union with `vprot`.)
    pub eevdf: Option<bool>,
    /// The `csd:*` tracepoints exist (their `btf_trace_csd_function_entry` typedef; 6.4 on).
    pub csd_tracepoints: Option<bool>,
    /// BPF memory is charged to the memory cgroup, not RLIMIT_MEMLOCK (5.11 on; the
    /// `bpf_ktime_get_coarse_ns` helper came in the same release, as libbpf also relies on).
    pub memcg_bpf_accounting: Option<bool>,
}

impl KernelFeatures {
    /// This kernel's features, read once per process.
    pub fn host() -> KernelFeatures {
        static HOST: OnceLock<KernelFeatures> = OnceLock::new();
        *HOST.get_or_init(|| {
            std::fs::read("/sys/kernel/btf/vmlinux")
                .ok()
                .and_then(|data| KernelFeatures::from_btf(&data))
                .unwrap_or_default()
        })
    }

    /// From raw BTF; `None` if it is not BTF this walk understands.
    pub fn from_btf(data: &[u8]) -> Option<KernelFeatures> {
        let mut f = KernelFeatures {
            eevdf: None,
            csd_tracepoints: Some(false),
            memcg_bpf_accounting: Some(false),
        };
        let mut sched_entity = None;
        walk(data, |kind, name, members| match (kind, name) {
            (KIND_STRUCT, "sched_entity") => {
                sched_entity = Some(members.contains(&"deadline"));
            }
            (KIND_TYPEDEF, "btf_trace_csd_function_entry") => f.csd_tracepoints = Some(true),
            (KIND_FUNC, "bpf_ktime_get_coarse_ns") => f.memcg_bpf_accounting = Some(true),
            _ => {}
        })?;
        f.eevdf = sched_entity;
        Some(f)
    }

    /// "EEVDF", "CFS", or "unknown" without BTF.
    pub fn scheduler(&self) -> &'static str {
        match self.eevdf {
            Some(true) => "EEVDF",
            Some(false) => "CFS",
            None => "unknown",
        }
    }
}

/// Calls `visit(kind, name, member names)` for every type (members only for structs and
/// unions). `None` if the data is not well-formed BTF.
fn walk(data: &[u8], mut visit: impl FnMut(u32, &str, &[&str])) -> Option<()> {
    let u16_at = |at: usize| Some(u16::from_ne_bytes(data.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_ne_bytes(data.get(at..at + 4)?.try_into().ok()?));
    if u16_at(0)? != MAGIC {
        return None;
    }
    let hdr_len = u32_at(4)? as usize;
    let (type_off, type_len) = (u32_at(8)? as usize, u32_at(12)? as usize);
    let (str_off, str_len) = (u32_at(16)? as usize, u32_at(20)? as usize);
    let strings = data.get(hdr_len + str_off..hdr_len + str_off + str_len)?;
    let name = |off: u32| -> &str {
        let rest = strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or_default()
    };
    let (mut at, end) = (hdr_len + type_off, hdr_len + type_off + type_len);
    let mut members = Vec::new();
    while at < end {
        let (name_off, info) = (u32_at(at)?, u32_at(at + 4)?);
        let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
        at += 12;
        members.clear();
        let extra = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION => {
                for m in 0..vlen {
                    members.push(name(u32_at(at + 12 * m)?));
                }
                12 * vlen
            }
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            // PTR, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FLOAT, TYPE_TAG.
            2 | 7..=12 | 16 | 18 => 0,
            _ => return None,
        };
        visit(kind, name(name_off), &members);
        at += extra;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BTF blob of `types`: (kind, name, member names).
    fn btf(types: &[(u32, &str, &[&str])]) -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut string = |s: &str| {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let mut section = Vec::new();
        for (kind, name, members) in types {
            let name = string(name);
            let info = (kind << 24) | members.len() as u32;
            for word in [name, info, 0] {
                section.extend_from_slice(&word.to_ne_bytes());
            }
            if *kind == KIND_INT {
                section.extend_from_slice(&64u32.to_ne_bytes());
            }
            for m in *members {
                for word in [string(m), 1, 0] {
                    section.extend_from_slice(&word.to_ne_bytes());
                }
            }
        }
        let mut out = Vec::new();
        out.extend_from_slice(&MAGIC.to_ne_bytes());
        out.extend_from_slice(&[1, 0]);
        for word in [24u32, 0, section.len() as u32, section.len() as u32] {
            out.extend_from_slice(&word.to_ne_bytes());
        }
        out.extend_from_slice(&(strings.len() as u32).to_ne_bytes());
        out.extend_from_slice(&section);
        out.extend_from_slice(&strings);
        out
    }

    #[test]
    fn eevdf_is_told_by_the_deadline_member_not_the_release() {
        let cfs = btf(&[
            (KIND_INT, "u64", &[]),
            (
                KIND_STRUCT,
                "sched_entity",
                &["load", "vruntime", "sum_exec_runtime"],
            ),
            (KIND_FUNC, "bpf_task_storage_get", &[]),
        ]);
        let f = KernelFeatures::from_btf(&cfs).unwrap();
        assert_eq!(f.scheduler(), "CFS");
        assert_eq!(f.csd_tracepoints, Some(false));
        assert_eq!(f.memcg_bpf_accounting, Some(false));

        let eevdf = btf(&[
            (
                KIND_STRUCT,
                "sched_entity",
                &["load", "deadline", "vruntime", "", "slice"],
            ),
            (KIND_TYPEDEF, "btf_trace_csd_function_entry", &[]),
            (KIND_FUNC, "bpf_ktime_get_coarse_ns", &[]),
        ]);
        let f = KernelFeatures::from_btf(&eevdf).unwrap();
        assert_eq!(f.scheduler(), "EEVDF");
        assert_eq!(f.csd_tracepoints, Some(true));
        assert_eq!(f.memcg_bpf_accounting, Some(true));
    }

    #[test]
    fn not_btf_tells_nothing() {
        assert_eq!(KernelFeatures::from_btf(b"garbage garbage garbage"), None);
        assert_eq!(KernelFeatures::default().scheduler(), "unknown");
        let mut cut = btf(&[(KIND_STRUCT, "sched_entity", &["deadline"])]);
        cut.truncate(30);
        assert_eq!(KernelFeatures::from_btf(&cut), None);
    }

    #[test]
    fn this_hosts_btf_is_understood() {
        // Every kernel kvmscope traces on has BTF (tp_btf needs it); this host's is 6.18.
        let Ok(data) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            return;
        };
        let f = KernelFeatures::from_btf(&data).expect("this host's BTF walks");
        assert_eq!(f.scheduler(), "EEVDF");
        assert_eq!(f.memcg_bpf_accounting, Some(true));
    }
}
