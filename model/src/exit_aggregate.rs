//! Exits counted in the kernel instead of streamed (issue #15): what a live source hands the
//! model besides its events when `kvm_exit`/`kvm_entry` and `kvm_pio` are aggregated in BPF
//! maps.
//!
//! Not an [`crate::Event`]: nothing records them (`record` and `trace` stream every exit), so
//! they never reach a trace file. The model folds each [`ExitAggregate`] as `count` exits of
//! one reason, with their handling time (exit to next entry) in log2 buckets, and each
//! [`PortIoAggregate`] as `count` port I/O exits, which no figure needs one by one (a
//! streamed `Pio` only moves its pCPU's last-event time, which only a loss's uncertain time
//! reads).

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

/// One vCPU thread's port I/O exits (`kvm_pio`) on one port in one direction since the
/// previous aggregate of that key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortIoAggregate {
    pub tid: u32,
    pub port: u32,
    /// 0 = in, 1 = out, as a streamed [`crate::Pio`] carries it.
    pub rw: u32,
    pub count: u64,
}

/// What a source read from the kernel's aggregation maps since it was last asked
/// ([`crate::Source::take_exit_aggregates`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExitAggregates {
    pub exits: Vec<ExitAggregate>,
    pub port_io: Vec<PortIoAggregate>,
}

impl ExitAggregates {
    pub fn clear(&mut self) {
        self.exits.clear();
        self.port_io.clear();
    }

    /// Moves everything of `other` to the end of `self`.
    pub fn append(&mut self, other: &mut ExitAggregates) {
        self.exits.append(&mut other.exits);
        self.port_io.append(&mut other.port_io);
    }

    pub fn is_empty(&self) -> bool {
        self.exits.is_empty() && self.port_io.is_empty()
    }
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
