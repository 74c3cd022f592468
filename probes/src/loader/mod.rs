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
//!     // Sleeps until the kernel side wakes it (`wakeup_bytes` of records, or a CPU's
//!     // switch ring a quarter full) or 100 ms have passed since the last drain, then drains
//!     // every ring: the timeout bounds the latency of sparse events.
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
//!
//! The loader's rooms: `options.rs` what callers pass and the errors, `object.rs` loading the
//! object into the kernel, `attach.rs` attaching its programs with their fallbacks,
//! `rings.rs` the rings records arrive on, `tracked.rs` the tracked-thread filter, `poll.rs`
//! reading and decoding, `lost.rs` what was lost, `stats.rs` the programs' own counters.

use aya::Ebpf;
use model::ExitAggregates;

use crate::decode::Decoder;
use crate::exit_aggs::ExitAggReader;
use crate::programs::Fallback;

mod attach;
mod lost;
mod object;
mod options;
mod poll;
mod rings;
mod stats;
mod tracked;

pub use lost::LostByCause;
pub(crate) use object::{load_ebpf, Loaded};
pub use options::{ExitMode, ProbeError, ProbeOptions};
pub use stats::ProgramStats;

/// CLOCK_MONOTONIC in ns, from the host-facts layer (the clock of `bpf_ktime_get_ns`).
pub use hostfacts::monotonic_ns;

/// The loaded and attached probes. Dropping it detaches everything.
pub struct Probes {
    /// Owns the programs and their links: dropping it detaches every program.
    ebpf: Ebpf,
    rings: rings::Rings,
    tracked: tracked::TrackedSet,
    lost: lost::LostCounts,
    /// Reads run at real-time priority (`ReaderPriority`) until the kernel refuses it once.
    reader_rt: bool,
    decoder: Decoder,
    attached: Vec<&'static str>,
    warnings: Vec<String>,
    fallbacks: Vec<Fallback>,
    undecodable: u64,
    /// With [`ExitMode::Aggregate`] or [`ExitMode::Both`]: the aggregates' reader, and what it
    /// read at the last polls, not yet taken.
    exit_aggs: Option<ExitAggReader>,
    exit_aggs_read: ExitAggregates,
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
        // Before any program runs: the write path reads its parameters from the rings.
        let rings = rings::Rings::set_up(&mut ebpf, &opts, cpus, chunks_per_cpu)?;
        let attached = attach::attach_programs(&mut ebpf, &btf, &opts, kvm_usable, &mut warnings)?;
        let decoder = Decoder {
            vmclear_func: attached.vmclear_func,
        };
        let tracked = tracked::TrackedSet::take(&mut ebpf)?;
        let lost = lost::LostCounts::take(&mut ebpf)?;
        let exit_aggs = match opts.exits {
            ExitMode::Stream => None,
            ExitMode::Aggregate | ExitMode::Both => Some(
                ExitAggReader::new(
                    object::take_map(&mut ebpf, "exit_aggs")?,
                    object::take_map(&mut ebpf, "exit_open")?,
                    object::take_map(&mut ebpf, "pio_aggs")?,
                )
                .map_err(options::load_error)?,
            ),
        };

        Ok(Probes {
            ebpf,
            rings,
            tracked,
            lost,
            reader_rt: true,
            decoder,
            attached: attached.events,
            warnings,
            fallbacks,
            undecodable: 0,
            exit_aggs,
            exit_aggs_read: ExitAggregates::default(),
        })
    }

    /// How the probes work differently on this kernel (none on a recent one).
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// Moves the exit aggregates read by the polls so far to `out` (none with
    /// [`ExitMode::Stream`]): each key's growth since the previous read.
    pub fn take_exit_aggregates(&mut self, out: &mut ExitAggregates) {
        out.append(&mut self.exit_aggs_read);
    }

    /// Records the kernel could not deliver since load (ring buffer full), and program runs
    /// it skipped.
    pub fn lost_total(&self) -> u64 {
        self.lost.by_cause.total()
    }

    /// [`lost_total`](Self::lost_total) by where the records were going.
    pub fn lost_by_cause(&self) -> LostByCause {
        self.lost.by_cause
    }

    /// How many times a CPU's switch ring woke the reader since load.
    pub fn switch_wakeups(&self) -> u64 {
        self.rings.switch_wakeups_seen
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
}
