//! Nothing dropped silently: records the kernel could not deliver (counted per CPU and per
//! cause in the `lost` map, `struct ks_lost`) and program runs it skipped
//! (`recursion_misses`) become `Event::Lost`s and count in [`Probes::lost_total`], kept apart
//! by cause ([`LostByCause`]) so a loss says which ring to grow or read sooner. The skipped
//! runs of a program that would have sent nothing for them (`SKIPS_COST_NOTHING`) are not
//! losses.

use aya::maps::{MapData, PerCpuArray};
use aya::Ebpf;
use model::{Event, Lost};

use super::monotonic_ns;
use super::object::take_map;
use super::options::{load_error, ProbeError};
use super::Probes;
use crate::abi::{LostCause, LostCounts as KernelLost};
use crate::programs::SKIPS_COST_NOTHING;

// SAFETY: `bytemuck::Pod` (derived, so checked by the compiler: `repr(C)`, integer fields,
// no padding) is what aya's `Pod` asks for; the function below fails the build if it goes.
unsafe impl aya::Pod for KernelLost {}
const _: fn() = || {
    fn plain_data<T: bytemuck::Pod>() {}
    plain_data::<KernelLost>();
};

/// Lost records since load, by where they were going.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LostByCause {
    /// The shared `events` ring buffer was full (wakeups, migrations, kvm records...).
    pub events_ring: u64,
    /// A CPU's switch ring was full: the reader did not drain it in time.
    pub switch_rings: u64,
    /// The exit aggregation maps had no room (`--exits aggregate/both`).
    pub exit_aggregates: u64,
    /// Program runs the kernel skipped (see `reader_guard`): their records were never made.
    pub skipped_runs: u64,
}

/// One line for summaries: "switch rings full 12, events ring full 0, ...".
impl std::fmt::Display for LostByCause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "switch rings full {}, events ring full {}, exit aggregates full {}, probe runs skipped {}",
            self.switch_rings, self.events_ring, self.exit_aggregates, self.skipped_runs
        )
    }
}

impl LostByCause {
    pub fn total(&self) -> u64 {
        self.events_ring + self.switch_rings + self.exit_aggregates + self.skipped_runs
    }

    fn of_cause(&mut self, cause: LostCause) -> &mut u64 {
        match cause {
            LostCause::EventsRing => &mut self.events_ring,
            LostCause::SwitchRings => &mut self.switch_rings,
            LostCause::ExitAggregates => &mut self.exit_aggregates,
        }
    }
}

/// The kernel's per-CPU, per-cause counts of records that found no room, and how much of
/// them was seen.
pub(super) struct LostCounts {
    per_cpu: PerCpuArray<MapData, KernelLost>,
    /// `seen[cpu]`: the counts last turned into events.
    seen: Vec<KernelLost>,
    /// Everything lost since load: records and skipped runs.
    pub(super) by_cause: LostByCause,
    /// Program runs the kernel skipped (`recursion_misses`), summed over programs, so far.
    missed_seen: u64,
}

impl LostCounts {
    pub(super) fn take(ebpf: &mut Ebpf) -> Result<LostCounts, ProbeError> {
        let per_cpu = PerCpuArray::try_from(take_map(ebpf, "lost")?)
            .map_err(|e| load_error(format!("lost map: {e}")))?;
        Ok(LostCounts {
            per_cpu,
            seen: Vec::new(),
            by_cause: LostByCause::default(),
            missed_seen: 0,
        })
    }
}

impl Probes {
    /// Program runs the kernel skipped since the last call (see [`crate::reader_guard`])
    /// become one `Event::Lost` (no CPU: the kernel counts them per program) and a warning.
    pub(super) fn collect_missed(&mut self, out: &mut Vec<Event>) {
        let mut by_program = self.missed_runs();
        by_program.retain(|(event, _)| !SKIPS_COST_NOTHING.contains(event));
        let total: u64 = by_program.iter().map(|(_, n)| n).sum();
        if total <= self.lost.missed_seen {
            return;
        }
        let delta = total - self.lost.missed_seen;
        self.lost.missed_seen = total;
        self.lost.by_cause.skipped_runs += delta;
        out.push(Event::Lost(Lost {
            ts: monotonic_ns(),
            cpu: u32::MAX,
            count: delta,
        }));
        // One warning, kept current: which programs were skipped is what tells a skip behind
        // the reader's bpf() calls (classic tracepoints: kvm, csd) from any other.
        let why = "the kernel skipped probe runs (counted as lost events) while a BPF \
                   program or bpf() call held their CPU";
        let runs: Vec<String> = by_program.iter().map(|(e, n)| format!("{e} {n}")).collect();
        let note = if self.reader_rt {
            ""
        } else {
            "; kvmscope could not read at real-time priority (no CAP_SYS_NICE), so a \
             traced thread can preempt its reads"
        };
        let warning = format!("{why} (runs skipped: {}){note}", runs.join(", "));
        match self.warnings.iter_mut().find(|w| w.starts_with(why)) {
            Some(w) => *w = warning,
            None => self.warnings.push(warning),
        }
    }

    /// Appends one `Event::Lost` per CPU that lost records since the last call (all causes):
    /// one map lookup.
    pub(super) fn collect_lost(&mut self, out: &mut Vec<Event>) -> Result<(), ProbeError> {
        let per_cpu = self
            .lost
            .per_cpu
            .get(&0, 0)
            .map_err(|e| ProbeError::Lost(e.to_string()))?;
        let lost = &mut self.lost;
        lost.seen
            .resize(lost.seen.len().max(per_cpu.len()), KernelLost::default());
        let now = monotonic_ns();
        for (cpu, (counts, seen)) in per_cpu.iter().zip(&mut lost.seen).enumerate() {
            let mut cpu_delta = 0;
            for cause in LostCause::ALL {
                let i = cause.index();
                let (count, seen) = (counts.by_cause[i], &mut seen.by_cause[i]);
                let delta = count.saturating_sub(*seen);
                *seen = (*seen).max(count);
                *lost.by_cause.of_cause(cause) += delta;
                cpu_delta += delta;
            }
            if cpu_delta > 0 {
                out.push(Event::Lost(Lost {
                    ts: now,
                    cpu: cpu as u32,
                    count: cpu_delta,
                }));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kernel_cause_counts_in_its_own_field() {
        let mut by = LostByCause::default();
        for (n, cause) in LostCause::ALL.into_iter().enumerate() {
            *by.of_cause(cause) += 1 << n;
        }
        assert_eq!(
            (
                by.events_ring,
                by.switch_rings,
                by.exit_aggregates,
                by.skipped_runs
            ),
            (1, 2, 4, 0)
        );
        assert_eq!(by.total(), 7);
    }
}
