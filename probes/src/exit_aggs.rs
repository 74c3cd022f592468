//! Reads the in-kernel exit aggregates (`exit_aggs` and `pio_aggs`,
//! `ebpf/kvmscope_exit_agg.h`) and turns them into `model::ExitAggregate`s and
//! `model::PortIoAggregate`s: the growth of each key's count (and histogram) since the
//! previous read, summed over CPUs. The kernel keeps totals since load; only this reader
//! takes differences, so the model folds each exit once.

use std::collections::HashMap;

use aya::maps::{HashMap as BpfHashMap, MapData, PerCpuHashMap};
use aya::Pod;
use model::{ExitAggregate, ExitAggregates, PortIoAggregate, EXIT_HIST_BUCKETS};

use crate::abi::{ExitAgg, ExitKey, PioKey};
use crate::decode::exit_isa;

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
    seen: HashMap<ExitKey, Totals>,
    pio_seen: HashMap<PioKey, u64>,
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
            seen: HashMap::new(),
            pio_seen: HashMap::new(),
        })
    }

    /// Appends one aggregate per key that grew since the last call.
    pub(crate) fn read(&mut self, out: &mut ExitAggregates) -> Result<(), String> {
        self.read_exits(&mut out.exits)?;
        self.read_port_io(&mut out.port_io)
    }

    fn read_port_io(&mut self, out: &mut Vec<PortIoAggregate>) -> Result<(), String> {
        for item in self.pio.iter() {
            let (key, per_cpu) = item.map_err(|e| format!("reading pio_aggs: {e}"))?;
            let total = per_cpu.iter().fold(0u64, |t, n| t.wrapping_add(*n));
            let before = self.pio_seen.insert(key, total).unwrap_or(0);
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
                .get(&key)
                .copied()
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
            self.seen.insert(key, total);
        }
        Ok(())
    }

    /// Forgets an untracked thread's open exit (tids are reused). Its totals stay: a thread
    /// with the same tid later continues from them.
    pub(crate) fn forget(&mut self, tid: u32) {
        // Absent when the thread never entered its guest: nothing to do.
        let _ = self.open.remove(&tid);
    }
}
