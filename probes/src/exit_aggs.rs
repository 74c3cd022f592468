//! Reads the in-kernel exit aggregates (`exit_aggs` and `pio_aggs`,
//! `ebpf/kvmscope_exit_agg.h`) and turns them into `model::ExitAggregate`s and
//! `model::PortIoAggregate`s: the growth of each key's count (and histogram) since the
//! previous read, summed over CPUs. The kernel keeps totals since load; only this reader
//! takes differences, so the model folds each exit once.
//!
//! A thread that stops being tracked takes its keys out of both maps ([`ExitAggReader::forget`]):
//! otherwise the keys of every thread that ever ran would stay, and VMs coming and going
//! (issue #15 goal 7) would fill the maps, after which every new key's exits are lost. Its
//! keys go right after the next read, which every poll makes anyway, so a VM of many vCPUs
//! that stops costs no read more than a poll's.

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, PerCpuHashMap};
use aya::Pod;
use model::{ExitAggregate, ExitAggregates, PortIoAggregate, EXIT_HIST_BUCKETS};

use crate::abi::{ExitAgg, ExitKey, PioKey};
use crate::decode::exit_isa;
use crate::exit_agg_keys::KeyBook;

// SAFETY: `bytemuck::Pod` (derived, so checked by the compiler: `repr(C)`, integer fields,
// no padding; the layout is asserted against the C header in abi.rs) is what aya's `Pod` asks
// for; the function below fails the build if it goes.
unsafe impl Pod for ExitKey {}
// SAFETY: as above.
unsafe impl Pod for ExitAgg {}
// SAFETY: as above.
unsafe impl Pod for ExitOpen {}
// SAFETY: as above.
unsafe impl Pod for PioKey {}
const _: fn() = || {
    fn plain_data<T: bytemuck::Pod>() {}
    plain_data::<ExitKey>();
    plain_data::<PioKey>();
    plain_data::<ExitAgg>();
    plain_data::<ExitOpen>();
};

/// Per-thread state of the kernel side (`struct ks_exit_open`: 2 u64, a 16-byte key, 2 u32),
/// only ever deleted from here.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct ExitOpen([u64; 5]);

/// A key's totals at the previous read.
type Totals = (u64, [u64; EXIT_HIST_BUCKETS]);

pub(crate) struct ExitAggReader {
    aggs: PerCpuHashMap<MapData, ExitKey, ExitAgg>,
    open: BpfHashMap<MapData, u32, ExitOpen>,
    pio: PerCpuHashMap<MapData, PioKey, u64>,
    seen: KeyBook<ExitKey, Totals>,
    pio_seen: KeyBook<PioKey, u64>,
    /// Threads untracked since the last read, whose keys the next read deletes.
    leaving: Vec<u32>,
}

impl ExitAggReader {
    pub(crate) fn new(
        aggs: aya::maps::Map,
        open: aya::maps::Map,
        pio: aya::maps::Map,
    ) -> Result<Self, String> {
        Ok(ExitAggReader {
            aggs: PerCpuHashMap::try_from(aggs).map_err(|e| format!("exit_aggs map: {e}"))?,
            open: BpfHashMap::try_from(open).map_err(|e| format!("exit_open map: {e}"))?,
            pio: PerCpuHashMap::try_from(pio).map_err(|e| format!("pio_aggs map: {e}"))?,
            seen: KeyBook::new(),
            pio_seen: KeyBook::new(),
            leaving: Vec::new(),
        })
    }

    /// Appends one aggregate per key that grew since the last call, then deletes the keys
    /// of the threads untracked since (see [`Self::forget`]).
    pub(crate) fn read(&mut self, out: &mut ExitAggregates) -> Result<(), String> {
        self.read_exits(&mut out.exits)?;
        self.read_port_io(&mut out.port_io)?;
        self.delete_leaving();
        Ok(())
    }

    fn read_port_io(&mut self, out: &mut Vec<PortIoAggregate>) -> Result<(), String> {
        for item in self.pio.iter() {
            let (key, per_cpu) = item.map_err(|e| format!("reading pio_aggs: {e}"))?;
            let total = per_cpu.iter().fold(0u64, |t, n| t.wrapping_add(*n));
            let before = self.pio_seen.note(key, total).unwrap_or(0);
            if before != total {
                out.push(PortIoAggregate {
                    tid: key.tid,
                    port: key.port,
                    rw: key.rw,
                    count: total.wrapping_sub(before),
                });
            }
        }
        Ok(())
    }

    fn read_exits(&mut self, out: &mut Vec<ExitAggregate>) -> Result<(), String> {
        for item in self.aggs.iter() {
            let (key, per_cpu) = item.map_err(|e| format!("reading exit_aggs: {e}"))?;
            let mut total: Totals = (0, [0; EXIT_HIST_BUCKETS]);
            for v in per_cpu.iter() {
                total.0 = total.0.wrapping_add(v.count);
                for (t, h) in total.1.iter_mut().zip(v.hist.iter()) {
                    *t = t.wrapping_add(*h);
                }
            }
            let before = self
                .seen
                .note(key, total)
                .unwrap_or((0, [0; EXIT_HIST_BUCKETS]));
            if before == total {
                continue;
            }
            let mut handling_log2 = [0; EXIT_HIST_BUCKETS];
            for (d, (t, b)) in handling_log2
                .iter_mut()
                .zip(total.1.iter().zip(before.1.iter()))
            {
                *d = t.wrapping_sub(*b);
            }
            out.push(ExitAggregate {
                tid: key.tid,
                isa: exit_isa(key.isa),
                reason: key.reason,
                count: total.0.wrapping_sub(before.0),
                handling_log2,
            });
        }
        Ok(())
    }

    /// Thread `tid` stopped being tracked ([`crate::loader::Probes::untrack`] cleared its
    /// bit first): deletes its open exit (tids are reused), and the next [`Self::read`]
    /// reads its keys' last growth (keys it made since the last read among them) and then
    /// deletes them from `exit_aggs` and `pio_aggs` and forgets them.
    ///
    /// Nothing it counted is lost between that read and the deletes: callers untrack a
    /// thread once it has ended (its last switch-out, a second after its exit, or gone from
    /// `/proc`), which runs no tracepoint any more, and with its bit cleared the kernel
    /// starts no new count for it (a run that passed the tracked check just before, for a
    /// thread untracked while alive, has until the next poll to finish). A tid tracked
    /// again before that read (reused) goes through [`Self::before_track`].
    pub(crate) fn forget(&mut self, tid: u32) {
        // Absent when the thread never entered its guest: nothing to do.
        let _ = self.open.remove(&tid);
        if !self.leaving.contains(&tid) {
            self.leaving.push(tid);
        }
    }

    /// Before thread `tid`'s bit is set: if a thread of that tid left since the last read,
    /// its keys are read (into `out`) and deleted now, while the kernel counts nothing for
    /// the tid, so the new thread's counts start from fresh keys and none of them are
    /// deleted unread.
    pub(crate) fn before_track(
        &mut self,
        tid: u32,
        out: &mut ExitAggregates,
    ) -> Result<(), String> {
        if self.leaving.contains(&tid) {
            self.read(out)?;
        }
        Ok(())
    }

    fn delete_leaving(&mut self) {
        if self.leaving.is_empty() {
            return;
        }
        let began = std::time::Instant::now();
        let (aggs, pio) = (&mut self.aggs, &mut self.pio);
        let mut n = 0;
        for tid in self.leaving.drain(..) {
            n += self
                .seen
                .remove_thread(tid, |k| deleted(aggs.remove(k), "exit_aggs"))
                + self
                    .pio_seen
                    .remove_thread(tid, |k| deleted(pio.remove(k), "pio_aggs"));
        }
        log::debug!(
            "{n} keys of untracked threads deleted in {} us; {} exit and {} port I/O keys left",
            began.elapsed().as_micros(),
            self.seen.len(),
            self.pio_seen.len()
        );
    }
}

/// Whether a key's delete left it out of its map (gone already counts). A key the kernel
/// refused to delete stays known with its totals (see [`KeyBook::remove_thread`]).
fn deleted(result: Result<(), MapError>, map: &str) -> bool {
    match result {
        Ok(()) => true,
        Err(MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => true,
        Err(e) => {
            log::warn!("cannot delete an ended thread's key from {map}: {e}");
            false
        }
    }
}
