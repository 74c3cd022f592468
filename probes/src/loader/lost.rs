//! Nothing dropped silently: records the kernel could not deliver (counted per CPU in the
//! `lost` map) and program runs it skipped (`recursion_misses`) become `Event::Lost`s and
//! count in [`Probes::lost_total`].

use aya::maps::{MapData, PerCpuArray};
use aya::Ebpf;
use model::{Event, Lost};

use super::monotonic_ns;
use super::object::take_map;
use super::options::{load_error, ProbeError};
use super::Probes;

/// The kernel's per-CPU count of records that found no room, and how much of it was seen.
pub(super) struct LostCounts {
    per_cpu: PerCpuArray<MapData, u64>,
    seen: Vec<u64>,
    /// Everything lost since load: records and skipped runs.
    pub(super) total: u64,
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
            total: 0,
            missed_seen: 0,
        })
    }
}

impl Probes {
    /// Program runs the kernel skipped since the last call (see [`crate::reader_guard`])
    /// become one `Event::Lost` (no CPU: the kernel counts them per program) and a warning.
    pub(super) fn collect_missed(&mut self, out: &mut Vec<Event>) {
        let by_program = self.missed_runs();
        let total: u64 = by_program.iter().map(|(_, n)| n).sum();
        if total <= self.lost.missed_seen {
            return;
        }
        let delta = total - self.lost.missed_seen;
        self.lost.missed_seen = total;
        self.lost.total += delta;
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

    pub(super) fn collect_lost(&mut self, out: &mut Vec<Event>) -> Result<(), ProbeError> {
        let per_cpu = self
            .lost
            .per_cpu
            .get(&0, 0)
            .map_err(|e| ProbeError::Lost(e.to_string()))?;
        if self.lost.seen.len() < per_cpu.len() {
            self.lost.seen.resize(per_cpu.len(), 0);
        }
        let now = monotonic_ns();
        for (cpu, (&count, seen)) in per_cpu.iter().zip(self.lost.seen.iter_mut()).enumerate() {
            if count > *seen {
                let delta = count - *seen;
                *seen = count;
                self.lost.total += delta;
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
