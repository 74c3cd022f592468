//! Loads kvmscope's eBPF object with aya, attaches its programs, fills the tracked-thread
//! filter and turns the ring buffer into `model::Event`s.
//!
//! # API
//! ```no_run
//! use std::time::Duration;
//! use probes::loader::{ProbeOptions, Probes};
//!
//! # fn main() -> Result<(), probes::loader::ProbeError> {
//! // Needs root (or CAP_BPF + CAP_PERFMON), BTF and tracefs (mounted here if absent).
//! let mut probes = Probes::load(ProbeOptions::default())?;
//! for w in probes.warnings() {
//!     eprintln!("warning: {w}"); // a feature this host cannot give, e.g. no kvm_exit
//! }
//! probes.track(1234)?; // a vCPU thread id; only tracked threads produce events
//! let mut events = Vec::new();
//! loop {
//!     // Sleeps until `wakeup_bytes` of records wait or the timeout passes (no busy loop),
//!     // then drains the ring: the timeout bounds the latency of sparse events and of
//!     // every switch event (sched_switch records never wake the reader).
//!     // Ring-buffer overflows arrive as `Event::Lost` in the same batch.
//!     probes.poll(&mut events, Duration::from_millis(100))?;
//!     # break;
//! }
//! println!("{} events, {} lost", events.len(), probes.lost_total());
//! # Ok(()) }
//! ```
//! - [`ProbeOptions`]: ring buffer size (`ring_bytes`, a power of two ≥ the page size), the
//!   reader wakeup threshold (`wakeup_bytes`) and which optional event groups to attach
//!   (`kvm`, `cross_calls`).
//! - [`Probes::load`] attaches everything the host has. Without `sched_switch` it fails; any
//!   other missing tracepoint is a warning ([`Probes::warnings`]) naming the lost feature.
//!   [`Probes::attached`] lists what is attached (`"sched:sched_switch"`, `"kvm:kvm_exit"`...).
//! - [`Probes::track`] / [`Probes::untrack`] edit the in-kernel filter: a switch is sent when
//!   either side is tracked; wakeup, migrate, exit and kvm events only for tracked threads.
//!   Callers untrack a thread after its `TaskExit` (tids are reused).
//! - [`Probes::poll`] appends decoded events; timestamps are CLOCK_MONOTONIC ns.
//! - Dropping [`Probes`] detaches every program and frees the maps.
//!
//! kvm tracepoints are attached as classic tracepoints with field offsets read from tracefs
//! at load time (KVM is a module on most hosts; layouts differ by kernel version).

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use aya::maps::{Array, MapData, PerCpuArray, RingBuf};
use aya::{Btf, Ebpf, EbpfLoader};
use model::{Event, ExitAggregate, Lost};
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

use crate::abi;
use crate::decode::Decoder;
use crate::exit_aggs::ExitAggReader;
use crate::programs::{self, attach, Fallback, ProgramFailure, CSD, KVM, SCHED};
use crate::reader_guard::{recursion_misses, ReaderPriority};
use crate::switch_rings::{self, SwitchRings};
use crate::tracefs::{self, EventFormat, KvmOffsets};

#[derive(Clone, Debug)]
pub struct ProbeOptions {
    /// Ring buffer size in bytes: a power of two and a multiple of the page size. The
    /// per-CPU rings of switch records get up to as much again, shared among the CPUs (from
    /// 1 152 to 9 216 records per CPU).
    pub ring_bytes: u32,
    /// Attach the `kvm:*` tracepoints (entry, exit, userspace exit, pio).
    pub kvm: bool,
    /// Attach the optional `csd:*` tracepoints (VMCLEAR cross-call attribution).
    pub cross_calls: bool,
    /// Wake the reader once this many bytes of records wait (clamped to `ring_bytes / 2`).
    /// Waking per record would let a reader sharing CPUs with tracked threads trigger the
    /// switches it then reads about. Switch records never wake the reader: they go to
    /// per-CPU rings read at every [`Probes::poll`], so those must hold one poll period of
    /// them (the default, on 2 CPUs, 32 768 each); overflows are counted as `Lost` as ever.
    pub wakeup_bytes: u32,
    /// How `kvm_exit`/`kvm_entry` reach user space (see [`ExitMode`]).
    pub exits: ExitMode,
}

/// How guest exits reach user space.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ExitMode {
    /// Every `kvm_exit` and `kvm_entry` as an event (`trace`, `record`).
    #[default]
    Stream,
    /// Counted in the kernel per vCPU thread and reason, with log2 histograms of handling
    /// time, read by [`Probes::take_exit_aggregates`]; only the entries the model needs for
    /// resume latency (the first after a switch-in, the one after a userspace exit) are
    /// events.
    Aggregate,
    /// Both: every event, and the aggregates of the same exits (the equality check).
    Both,
}

impl ExitMode {
    fn bits(self) -> u32 {
        match self {
            ExitMode::Stream => abi::EXITS_STREAM,
            ExitMode::Aggregate => abi::EXITS_AGGREGATE,
            ExitMode::Both => abi::EXITS_STREAM | abi::EXITS_AGGREGATE,
        }
    }
}

impl Default for ProbeOptions {
    fn default() -> Self {
        ProbeOptions {
            ring_bytes: 16 << 20,
            kvm: true,
            cross_calls: true,
            wakeup_bytes: 64 << 10,
            exits: ExitMode::Stream,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "loading eBPF probes needs root or CAP_BPF and CAP_PERFMON (run with sudo, or use --no-bpf)"
    )]
    NotPrivileged,
    #[error(
        "no kernel BTF at /sys/kernel/btf/vmlinux: the probes need a kernel built with \
         CONFIG_DEBUG_INFO_BTF=y (or use --no-bpf)"
    )]
    NoBtf,
    #[error("cannot read kernel BTF from /sys/kernel/btf/vmlinux: {0}")]
    Btf(String),
    #[error("{0}")]
    Tracefs(#[from] tracefs::TracefsError),
    #[error("ring buffer size {0} is not a power of two of at least the page size ({1} bytes)")]
    BadRingSize(u32, usize),
    #[error("cannot load the eBPF object on Linux {release}: {reason}")]
    Load { release: String, reason: String },
    #[error("{0}")]
    Program(ProgramFailure),
    #[error("eBPF object has no {0} map (object and loader out of step)")]
    MissingMap(&'static str),
    #[error("cannot track thread {tid}: {reason}")]
    Track { tid: u32, reason: String },
    #[error("cannot wait on the ring buffer: {0}")]
    Poll(std::io::Error),
    #[error("cannot read the lost-event counters: {0}")]
    Lost(String),
    #[error("cannot set up or read the sched_switch rings: {0}")]
    SwitchRings(String),
    #[error("cannot read the exit aggregates: {0}")]
    ExitAggs(String),
}

/// Cost counters of one attached program (non-zero only while `kernel.bpf_stats_enabled=1`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProgramStats {
    /// `category:event` the program is attached to.
    pub event: &'static str,
    /// Kernel program id (as `bpftool prog show` lists it).
    pub id: u32,
    pub run_time_ns: u64,
    pub run_count: u64,
}

/// The loaded and attached probes. Dropping it detaches everything.
pub struct Probes {
    /// Owns the programs and their links: dropping it detaches every program.
    ebpf: Ebpf,
    ring: RingBuf<MapData>,
    /// Per-CPU rings of sched_switch records.
    switches: SwitchRings,
    /// Bitmap over tids (`tracked` in kvmscope.bpf.c); this process is its only writer.
    tracked: Array<MapData, u64>,
    lost: PerCpuArray<MapData, u64>,
    lost_seen: Vec<u64>,
    lost_total: u64,
    /// Program runs the kernel skipped (`recursion_misses`), summed over programs, so far.
    missed_seen: u64,
    /// Reads run at real-time priority ([`ReaderPriority`]) until the kernel refuses it once.
    reader_rt: bool,
    decoder: Decoder,
    attached: Vec<&'static str>,
    warnings: Vec<String>,
    fallbacks: Vec<Fallback>,
    undecodable: u64,
    /// With [`ExitMode::Aggregate`] or [`ExitMode::Both`]: the aggregates' reader, and what it
    /// read at the last polls, not yet taken.
    exit_aggs: Option<ExitAggReader>,
    exit_aggs_read: Vec<ExitAggregate>,
}

impl Probes {
    /// Checks privileges, BTF and tracefs, loads the object and attaches every program the
    /// host supports. See the module docs.
    pub fn load(opts: ProbeOptions) -> Result<Probes, ProbeError> {
        Self::load_with(opts, None)
    }

    /// [`Probes::load`] with another build of the object (cost experiments).
    #[doc(hidden)]
    pub fn load_object(opts: ProbeOptions, object: &[u8]) -> Result<Probes, ProbeError> {
        Self::load_with(opts, Some(object))
    }

    fn load_with(opts: ProbeOptions, object: Option<&[u8]>) -> Result<Probes, ProbeError> {
        let Loaded {
            mut ebpf,
            btf,
            fallbacks,
            kvm_usable,
            mut warnings,
            cpus,
            chunks_per_cpu,
        } = load_ebpf(&opts, object)?;
        let kvm_usable: Vec<&'static str> = kvm_usable
            .into_iter()
            .filter_map(|(program, usable)| match usable {
                Ok(()) => Some(program),
                Err(why) => {
                    let feature = KVM
                        .iter()
                        .find(|s| s.program == program)
                        .map_or("", |s| s.feature);
                    warnings.push(format!("{feature} lost: {why}"));
                    None
                }
            })
            .collect();
        // Before any program runs: the write path reads its parameters from the rings.
        let (outer, heads, tails) = (
            take_map(&mut ebpf, "switch_chunks")?,
            take_map(&mut ebpf, "switch_head")?,
            take_map(&mut ebpf, "switch_tail")?,
        );
        let switches = SwitchRings::create(outer, heads, tails, cpus, chunks_per_cpu)
            .map_err(|e| ProbeError::SwitchRings(e.to_string()))?;

        let mut attached = Vec::new();
        for spec in &SCHED {
            match attach(&mut ebpf, spec, &btf) {
                Ok(()) => attached.push(spec.event),
                Err(failure) if spec.program == "handle_sched_switch" => {
                    return Err(ProbeError::Program(failure));
                }
                Err(reason) => warnings.push(format!("{} lost: {reason}", spec.feature)),
            }
        }
        for spec in KVM.iter().filter(|s| kvm_usable.contains(&s.program)) {
            match attach(&mut ebpf, spec, &btf) {
                Ok(()) => attached.push(spec.event),
                Err(reason) => warnings.push(format!("{} lost: {reason}", spec.feature)),
            }
        }
        let mut decoder = Decoder::default();
        if opts.cross_calls {
            let mut csd_failed = None;
            for spec in &CSD {
                match attach(&mut ebpf, spec, &btf) {
                    Ok(()) => attached.push(spec.event),
                    Err(reason) => csd_failed = csd_failed.or(Some(reason)),
                }
            }
            if let Some(reason) = csd_failed {
                warnings.push(format!("{} lost: {reason}", CSD[0].feature));
            } else {
                decoder.vmclear_func = hostfacts::system::kallsyms()
                    .and_then(|k| tracefs::kallsyms_lookup(&k, "__loaded_vmcs_clear"));
            }
        }

        let ring = RingBuf::try_from(take_map(&mut ebpf, "events")?)
            .map_err(|e| load_error(format!("events map: {e}")))?;
        let tracked = Array::try_from(take_map(&mut ebpf, "tracked")?)
            .map_err(|e| load_error(format!("tracked map: {e}")))?;
        let lost = PerCpuArray::try_from(take_map(&mut ebpf, "lost")?)
            .map_err(|e| load_error(format!("lost map: {e}")))?;
        let exit_aggs = match opts.exits {
            ExitMode::Stream => None,
            ExitMode::Aggregate | ExitMode::Both => Some(
                ExitAggReader::new(
                    take_map(&mut ebpf, "exit_aggs")?,
                    take_map(&mut ebpf, "exit_open")?,
                )
                .map_err(load_error)?,
            ),
        };

        Ok(Probes {
            ebpf,
            ring,
            switches,
            tracked,
            lost,
            lost_seen: Vec::new(),
            lost_total: 0,
            missed_seen: 0,
            reader_rt: true,
            decoder,
            attached,
            warnings,
            fallbacks,
            undecodable: 0,
            exit_aggs,
            exit_aggs_read: Vec::new(),
        })
    }

    /// How the probes work differently on this kernel (none on a recent one).
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Report events of thread `tid` from now on.
    pub fn track(&mut self, tid: u32) -> Result<(), ProbeError> {
        if tid == 0 {
            return Err(ProbeError::Track {
                tid,
                reason: "tid 0 is the idle task".into(),
            });
        }
        self.set_tracked(tid, true)
    }

    /// Stop reporting events of `tid`. Untracking a thread that is not tracked is fine.
    pub fn untrack(&mut self, tid: u32) -> Result<(), ProbeError> {
        if let Some(a) = &mut self.exit_aggs {
            a.forget(tid);
        }
        self.set_tracked(tid, false)
    }

    /// Moves the exit aggregates read by the polls so far to `out` (none with
    /// [`ExitMode::Stream`]): each key's growth since the previous read.
    pub fn take_exit_aggregates(&mut self, out: &mut Vec<ExitAggregate>) {
        out.append(&mut self.exit_aggs_read);
    }

    fn set_tracked(&mut self, tid: u32, on: bool) -> Result<(), ProbeError> {
        let (slot, bit) = (tid / 64, 1u64 << (tid % 64));
        let fail = |reason: String| ProbeError::Track { tid, reason };
        if slot >= self.tracked.len() {
            return Err(fail(format!(
                "tid is above kernel.pid_max ({})",
                self.tracked.len() * 64
            )));
        }
        let bits = self
            .tracked
            .get(&slot, 0)
            .map_err(|e| fail(e.to_string()))?;
        let new = if on { bits | bit } else { bits & !bit };
        if new != bits {
            self.tracked
                .set(slot, new, 0)
                .map_err(|e| fail(e.to_string()))?;
        }
        Ok(())
    }

    /// Appends the available events to `out`. When none are waiting, sleeps until
    /// `wakeup_bytes` of records have gathered or `timeout` passes, then drains: `timeout` is
    /// the latency bound for sparse events and for switch events, which never wake the
    /// reader (use the consumer's tick, e.g. 100 ms).
    /// Records lost to a full ring buffer since the last call are appended as `Event::Lost`
    /// (one per CPU that lost some).
    pub fn poll(&mut self, out: &mut Vec<Event>, timeout: Duration) -> Result<(), ProbeError> {
        let before = out.len();
        // The reads' bpf() calls must not let a traced thread run on this CPU meanwhile.
        let mut guard = self.raise_priority();
        self.drain(out)?;
        if out.len() == before {
            // Switch records, and others below the wakeup threshold, do not wake us: drain
            // after the timeout too.
            drop(guard.take());
            wait_readable(&self.ring, timeout)?;
            guard = self.raise_priority();
            self.drain(out)?;
        }
        // The rings are read one after the other: put the batch back in time order (stable,
        // so each CPU's order stays as written).
        out[before..].sort_by_key(Event::ts);
        self.collect_lost(out)?;
        self.collect_missed(out);
        // After the records: an entry sent for a resume is never older than the exits
        // counted before it.
        if let Some(a) = &mut self.exit_aggs {
            a.read(&mut self.exit_aggs_read)
                .map_err(ProbeError::ExitAggs)?;
        }
        drop(guard);
        Ok(())
    }

    /// [`ReaderPriority::raise`] unless the kernel refused it before.
    fn raise_priority(&mut self) -> Option<ReaderPriority> {
        if !self.reader_rt {
            return None;
        }
        match ReaderPriority::raise() {
            Ok(guard) => Some(guard),
            Err(e) => {
                log::debug!("reads stay at normal priority: {e}");
                self.reader_rt = false;
                None
            }
        }
    }

    /// Program runs the kernel skipped since the last call (see [`crate::reader_guard`])
    /// become one `Event::Lost` (no CPU: the kernel counts them per program) and a warning.
    fn collect_missed(&mut self, out: &mut Vec<Event>) {
        let total: u64 = self.missed_runs().iter().map(|(_, n)| n).sum();
        if total <= self.missed_seen {
            return;
        }
        let delta = total - self.missed_seen;
        self.missed_seen = total;
        self.lost_total += delta;
        out.push(Event::Lost(Lost {
            ts: monotonic_ns(),
            cpu: u32::MAX,
            count: delta,
        }));
        let why = "the kernel skipped probe runs (counted as lost events) while a BPF \
                   program or bpf() call held their CPU";
        if !self.warnings.iter().any(|w| w.starts_with(why)) {
            let note = if self.reader_rt {
                ""
            } else {
                "; kvmscope could not read at real-time priority (no CAP_SYS_NICE), so a \
                 traced thread can preempt its reads"
            };
            self.warnings.push(format!("{why}{note}"));
        }
    }

    /// Records the kernel could not deliver since load (ring buffer full).
    pub fn lost_total(&self) -> u64 {
        self.lost_total
    }

    /// Records that could not be decoded (object and decoder out of step: a bug).
    pub fn undecodable(&self) -> u64 {
        self.undecodable
    }

    /// Features this host cannot provide, one line each ("guest exit reasons lost: ...").
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Tracepoints attached, as `category:event`.
    pub fn attached(&self) -> &[&'static str] {
        &self.attached
    }

    /// Address of KVM's `__loaded_vmcs_clear` if the host has it (VT-x with kvm_intel).
    pub fn vmclear_func(&self) -> Option<u64> {
        self.decoder.vmclear_func
    }

    /// Run-time counters of every attached program (for the cost benchmark).
    pub fn program_stats(&self) -> Vec<ProgramStats> {
        let specs = SCHED.iter().chain(KVM.iter()).chain(CSD.iter());
        specs
            .filter(|s| self.attached.contains(&s.event))
            .filter_map(|s| {
                let info = self.ebpf.program(s.program)?.info().ok()?;
                Some(ProgramStats {
                    event: s.event,
                    id: info.id(),
                    run_time_ns: u64::try_from(info.run_time().as_nanos()).unwrap_or(u64::MAX),
                    run_count: info.run_count(),
                })
            })
            .collect()
    }

    /// Runs of each attached program the kernel skipped, by event (see [`crate::reader_guard`]:
    /// kernels from 6.7 on count them). Only programs that missed runs are listed; their sum
    /// is part of [`Probes::lost_total`].
    pub fn missed_runs(&self) -> Vec<(&'static str, u64)> {
        let specs = SCHED.iter().chain(KVM.iter()).chain(CSD.iter());
        specs
            .filter(|s| self.attached.contains(&s.event))
            .filter_map(|s| {
                let fd = self.ebpf.program(s.program)?.fd().ok()?;
                let misses = recursion_misses(fd.as_fd().as_raw_fd())?;
                (misses > 0).then_some((s.event, misses))
            })
            .collect()
    }

    fn drain(&mut self, out: &mut Vec<Event>) -> Result<(), ProbeError> {
        let (decoder, warnings, undecodable) =
            (&self.decoder, &mut self.warnings, &mut self.undecodable);
        let mut take = |record: &[u8]| match decoder.decode(record) {
            Ok(event) => out.push(event),
            Err(e) => {
                if *undecodable == 0 {
                    warnings.push(format!("undecodable records: {e}"));
                }
                *undecodable += 1;
            }
        };
        self.switches
            .drain(&mut take)
            .map_err(|e| ProbeError::SwitchRings(e.to_string()))?;
        while let Some(item) = self.ring.next() {
            take(&item);
        }
        Ok(())
    }

    fn collect_lost(&mut self, out: &mut Vec<Event>) -> Result<(), ProbeError> {
        let per_cpu = self
            .lost
            .get(&0, 0)
            .map_err(|e| ProbeError::Lost(e.to_string()))?;
        if self.lost_seen.len() < per_cpu.len() {
            self.lost_seen.resize(per_cpu.len(), 0);
        }
        let now = monotonic_ns();
        for (cpu, (&count, seen)) in per_cpu.iter().zip(self.lost_seen.iter_mut()).enumerate() {
            if count > *seen {
                let delta = count - *seen;
                *seen = count;
                self.lost_total += delta;
                out.push(Event::Lost(Lost {
                    ts: now,
                    cpu: cpu as u32,
                    count: delta,
                }));
            }
        }
        Ok(())
    }
}

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
            .map_max_entries("tracked", tracked_slots())
            .map_max_entries("switch_head", cpus as u32)
            .map_max_entries("switch_tail", cpus as u32)
            .map_max_entries("switch_chunks", cpus as u32 * chunks_per_cpu)
            .override_global("wakeup_bytes", &wakeup_bytes, true)
            .override_global("exit_mode", &exit_mode, true);
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

fn load_error(reason: String) -> ProbeError {
    ProbeError::Load {
        release: crate::host::kernel_release(),
        reason,
    }
}

impl ProbeError {
    /// The verifier's whole log when a program was refused (for `-v` and log files).
    pub fn verifier_log(&self) -> Option<&str> {
        match self {
            ProbeError::Program(f) => f.verifier_log.as_deref(),
            _ => None,
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &'static str) -> Result<aya::maps::Map, ProbeError> {
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

/// CLOCK_MONOTONIC in ns, from the host-facts layer (the clock of `bpf_ktime_get_ns`).
pub use hostfacts::monotonic_ns;

/// Waits until `fd` is readable or `timeout` passes. `Ok(false)` on timeout or a signal.
fn wait_readable(fd: impl AsFd, timeout: Duration) -> Result<bool, ProbeError> {
    let mut pfd = [PollFd::new(&fd, PollFlags::IN)];
    let timeout = Timespec::try_from(timeout).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    match poll(&mut pfd, Some(&timeout)) {
        Ok(n) => Ok(n > 0),
        Err(Errno::INTR) => Ok(false),
        Err(e) => Err(ProbeError::Poll(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
