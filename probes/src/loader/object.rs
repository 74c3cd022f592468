//! Loading the object into the kernel: the checks before it (ring size, privileges, BTF),
//! the kvm tracepoint layouts from tracefs, the resource limits it needs, the map sizes and
//! globals it is loaded with, and the waker-hash build where the kernel calls for it.

use std::path::Path;

use aya::{Btf, Ebpf, EbpfLoader};
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use super::options::{load_error, ProbeError, ProbeOptions};
use crate::programs::{self, Fallback, KVM};
use crate::switch_rings;
use crate::tracefs::{self, EventFormat, KvmOffsets};

/// The object loaded into the kernel (maps created), nothing attached yet.
pub(crate) struct Loaded {
    pub(crate) ebpf: Ebpf,
    pub(crate) btf: Btf,
    pub(crate) fallbacks: Vec<Fallback>,
    /// Per kvm program: whether this kernel's tracefs layout is usable, or why not.
    pub(crate) kvm_usable: Vec<(&'static str, Result<(), String>)>,
    pub(crate) warnings: Vec<String>,
    pub(crate) cpus: usize,
    pub(crate) chunks_per_cpu: u32,
}

/// Checks privileges, BTF and tracefs and loads `object`, or the build this kernel's BTF
/// calls for (see [`programs::object_for`]).
pub(crate) fn load_ebpf(opts: &ProbeOptions, object: Option<&[u8]>) -> Result<Loaded, ProbeError> {
    let page = page_size();
    if !opts.ring_bytes.is_power_of_two() || (opts.ring_bytes as usize) < page {
        return Err(ProbeError::BadRingSize(opts.ring_bytes, page));
    }
    check_privileges()?;
    if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        return Err(ProbeError::NoBtf);
    }
    let mut warnings = Vec::new();
    raise_memlock(&mut warnings);
    let btf = Btf::from_sys_fs().map_err(|e| ProbeError::Btf(e.to_string()))?;

    // kvm tracepoint layouts, from this kernel's tracefs.
    let mut offsets = KvmOffsets::default();
    let mut kvm_usable = Vec::new();
    if opts.kvm {
        let root = tracefs::tracefs_root()?;
        for spec in &KVM {
            let programs::Hook::Classic(system, name) = spec.hook else {
                continue;
            };
            let usable = match EventFormat::load(&root, system, name)? {
                None => Err(format!(
                    "{} is not on this kernel (is KVM loaded?)",
                    spec.event
                )),
                Some(format) => match name {
                    "kvm_entry" => offsets.set_entry(&format),
                    "kvm_exit" => offsets.set_exit(&format),
                    "kvm_userspace_exit" => offsets.set_userspace_exit(&format),
                    _ => offsets.set_pio(&format),
                },
            };
            kvm_usable.push((spec.program, usable));
        }
    }

    let globals = offsets.globals();
    let thread_size = kernel_thread_size(&btf);
    let wakeup_bytes = u64::from(opts.wakeup_bytes.clamp(1, opts.ring_bytes / 2));
    let exit_mode = opts.exits.bits();
    // bpf_get_smp_processor_id() is below the number of possible CPUs.
    let cpus =
        aya::util::nr_cpus().map_err(|(path, e)| load_error(format!("cannot read {path}: {e}")))?;
    let chunks_per_cpu = switch_rings::chunks_per_cpu(opts.ring_bytes, cpus);
    raise_nofile(cpus as u64 * u64::from(chunks_per_cpu), &mut warnings);
    let load = |object: &[u8]| {
        let mut loader = EbpfLoader::new();
        loader
            .btf(Some(&btf))
            // `wakers` is task-local storage, which aya creates but has no user-space type
            // for; only the eBPF programs use it.
            .allow_unsupported_maps()
            .map_max_entries("events", opts.ring_bytes)
            .map_max_entries("switch_wakeups", page as u32)
            .map_max_entries("tracked", tracked_slots())
            .map_max_entries("switch_head", cpus as u32)
            .map_max_entries("switch_tail", cpus as u32)
            .map_max_entries("switch_chunks", cpus as u32 * chunks_per_cpu)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("exit_mode", &exit_mode, true)
            .override_global("ks_thread_size", &thread_size, true);
        for (name, value) in &globals {
            loader.override_global(name, value, true);
        }
        loader.load(object)
    };
    let (object, mut fallbacks) = match object {
        Some(o) => (o, Vec::new()),
        None => programs::object_for(&btf),
    };
    let ebpf = match load(object) {
        Ok(ebpf) => ebpf,
        // A kernel with the helper but not for tracing programs (5.11): the other build.
        Err(e)
            if object.as_ptr() == programs::OBJECT.as_ptr() && e.to_string().contains("wakers") =>
        {
            fallbacks.push(programs::waker_hash_fallback(&format!(
                "the task-local storage map cannot be created here: {e}"
            )));
            load(programs::OBJECT_WAKER_HASH).map_err(|e| load_error(e.to_string()))?
        }
        Err(e) => return Err(load_error(e.to_string())),
    };
    Ok(Loaded {
        ebpf,
        btf,
        fallbacks,
        kvm_usable,
        warnings,
        cpus,
        chunks_per_cpu,
    })
}

pub(super) fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
    ebpf.take_map(name).ok_or(ProbeError::MissingMap(name))
}

/// Root, or CAP_BPF + CAP_PERFMON (or CAP_SYS_ADMIN) in the effective set.
fn check_privileges() -> Result<(), ProbeError> {
    if crate::host::may_load_bpf() {
        Ok(())
    } else {
        Err(ProbeError::NotPrivileged)
    }
}

/// Kernels before 5.11 charge BPF maps to RLIMIT_MEMLOCK; later ones to the memory cgroup,
/// so a failed raise (no CAP_SYS_RESOURCE) only matters, and is only reported, on old ones
/// (told from BTF: [`crate::features::KernelFeatures::memcg_bpf_accounting`]).
fn raise_memlock(warnings: &mut Vec<String>) {
    let unlimited = Rlimit {
        current: None,
        maximum: None,
    };
    let Err(err) = setrlimit(Resource::Memlock, unlimited) else {
        return;
    };
    if crate::features::KernelFeatures::host().memcg_bpf_accounting != Some(true) {
        warnings.push(format!(
            "cannot raise RLIMIT_MEMLOCK ({err}): map creation may fail on this kernel \
             (it charges BPF memory to RLIMIT_MEMLOCK, before 5.11)"
        ));
    }
}

/// Each switch-ring chunk is a map this process holds open: make room for `maps` more
/// descriptors than are usually open, up to the hard limit.
fn raise_nofile(maps: u64, warnings: &mut Vec<String>) {
    let mut lim = getrlimit(Resource::Nofile);
    // `None` is RLIM_INFINITY.
    let want = (maps + 1024).min(lim.maximum.unwrap_or(u64::MAX));
    if lim.current.is_none_or(|cur| cur >= want) {
        return;
    }
    lim.current = Some(want);
    // The new soft limit is within the hard one.
    if let Err(err) = setrlimit(Resource::Nofile, lim) {
        warnings.push(format!(
            "cannot raise RLIMIT_NOFILE to {want} ({err}): the switch rings need {maps} maps"
        ));
    }
}

/// Elements of the tracked-tid bitmap: one bit per possible tid (`kernel.pid_max`; the
/// 64-bit kernel's ceiling, 4194304, if it cannot be read).
fn tracked_slots() -> u32 {
    let pid_max = hostfacts::system::pid_max().unwrap_or(4 << 20);
    pid_max.div_ceil(64)
}

fn page_size() -> usize {
    rustix::param::page_size()
}

/// The size of a task's kernel stack on this (x86-64) kernel: 16 KiB, doubled by KASAN
/// (`KASAN_STACK_ORDER`). The cross-call program tells a task's own calls from an interrupt's
/// by whether its arguments lie on the task's stack; a size too small would make it send
/// none. A KASAN kernel has its report function in BTF.
fn kernel_thread_size(btf: &Btf) -> u64 {
    let kasan = btf
        .id_by_type_name_kind("kasan_report", aya_obj::btf::BtfKind::Func)
        .is_ok();
    if kasan {
        32 << 10
    } else {
        16 << 10
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::Probes;

    #[test]
    fn bad_ring_sizes_are_refused_before_touching_the_kernel() {
        for ring_bytes in [0, 1000, 4096 + 1, 3 << 20] {
            let opts = ProbeOptions {
                ring_bytes,
                ..ProbeOptions::default()
            };
            let err = Probes::load(opts).err().expect("refused");
            assert!(
                matches!(err, ProbeError::BadRingSize(n, _) if n == ring_bytes),
                "{err}"
            );
            assert!(err.to_string().contains("not a power of two"), "{err}");
        }
    }

    #[test]
    fn tracked_bitmap_covers_pid_max() {
        let slots = tracked_slots();
        let pid_max: u32 = hostfacts::system::pid_max().unwrap_or(4 << 20);
        assert!(slots * 64 >= pid_max && (slots - 1) * 64 < pid_max);
    }
}
