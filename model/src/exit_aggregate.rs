//! Exits counted in the kernel instead of streamed (issue #15): what a live source hands the
//! model besides its events when `kvm_exit`/`kvm_entry` are aggregated in BPF maps.
//!
//! Not an [`crate::Event`]: nothing records them (`record` and `trace` stream every exit), so
//! they never reach a trace file. The model folds each one as `count` exits of one reason, with
//! their handling time (exit to next entry) in log2 buckets.

use crate::ExitIsa;

/// Log2 buckets of exit handling time: bucket `b` holds `[2^b, 2^(b+1))` ns (bucket 0 also
/// 0 ns, the last one everything above). The kernel's `KS_EXIT_HIST_BUCKETS`.
pub const EXIT_HIST_BUCKETS: usize = 40;

/// One vCPU thread's exits of one reason since the previous aggregate of that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitAggregate {
    pub tid: u32,
    pub isa: ExitIsa,
    /// The `kvm_exit` reason code, as a streamed `KvmExit` carries it.
    pub reason: u32,
    pub count: u64,
    /// Exits of those (or of earlier aggregates) closed by a guest entry, by handling time.
    pub handling_log2: [u64; EXIT_HIST_BUCKETS],
}

impl ExitAggregate {
    /// The value standing for log2 bucket `b` in percentiles: the middle of its range.
    pub fn bucket_ns(b: usize) -> u64 {
        match b {
            0 => 1,
            _ => 3u64 << (b.min(62) - 1),
        }
    }
}
