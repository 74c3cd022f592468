//! Health: what the model could not take at face value (lost, late, unknown or malformed
//! input), counted so every view can show it, and the notes that explain the figures.

use rustc_hash::FxHashSet;

use super::task::TState;
use super::Model;
use crate::{Health, Lost, Unobserved, UnobservedKind};

/// Distinct unknown tids remembered (for counting each once).
const MAX_UNKNOWN_TIDS: usize = 65_536;

/// The model's health counters.
#[derive(Clone, Default)]
pub(super) struct HealthCounters {
    pub(super) unknown_tids: FxHashSet<u32>,
    pub(super) unknown_count: u64,
    /// Kinds of the events that came too late (for the health note).
    pub(super) late_kinds: Vec<&'static str>,
    pub(super) lost: u64,
    pub(super) uncertain_ns: u64,
    pub(super) out_of_order: u64,
    pub(super) tid_reuse: u64,
    /// Ended threads retired (`ModelConfig::retire_ended_after_ns`).
    pub(super) retired: u64,
    pub(super) malformed: u64,
    /// Switch-outs of a tracked thread with no switch-in since its previous switch-out.
    pub(super) unpaired_switch_outs: u64,
    pub(super) saw_entry_exit: bool,
    /// Guest exits that arrived counted in the kernel rather than as events.
    pub(super) aggregated_exits: u64,
    /// Port I/O exits that arrived counted in the kernel rather than as `Pio` events.
    pub(super) aggregated_port_io: u64,
    pub(super) saw_migrate: bool,
    pub(super) saw_gap: bool,
    /// Counter samples folded in (counters mode, no BPF).
    pub(super) counter_samples: u64,
    /// What the source could not observe ([`Unobserved`]).
    pub(super) missed_counter_samples: u64,
    pub(super) track_failures: u64,
}

impl Model {
    pub(super) fn note_unknown(&mut self, tid: u32) {
        let h = &mut self.health;
        if tid != 0 && h.unknown_tids.len() < MAX_UNKNOWN_TIDS && h.unknown_tids.insert(tid) {
            h.unknown_count = h.unknown_count.saturating_add(1);
        }
    }

    #[inline(never)]
    pub(super) fn on_lost(&mut self, l: &Lost) {
        self.health.lost = self.health.lost.saturating_add(l.count);
        // The loss happened somewhere since the last event we saw from that CPU.
        let from = if l.cpu == u32::MAX {
            self.cpus
                .iter()
                .map(|c| c.last_event_ts)
                .max()
                .unwrap_or(l.ts)
        } else {
            self.cpus
                .get(l.cpu as usize)
                .map_or(l.ts, |c| c.last_event_ts)
        };
        let from = if from == 0 {
            self.start.unwrap_or(l.ts)
        } else {
            from
        };
        self.health.uncertain_ns = self
            .health
            .uncertain_ns
            .saturating_add(l.ts.saturating_sub(from));
    }

    pub(super) fn on_unobserved(&mut self, u: &Unobserved) {
        let h = &mut self.health;
        let n = match u.what {
            UnobservedKind::CounterSamples => &mut h.missed_counter_samples,
            UnobservedKind::Threads => &mut h.track_failures,
        };
        *n = n.saturating_add(u.count);
    }

    pub(super) fn health_view(&self) -> Health {
        let mut notes = Vec::new();
        let has_vcpus = self.tasks.iter().any(|t| t.vcpu.is_some());
        if has_vcpus && !self.health.saw_entry_exit {
            notes.push("no guest entry/exit events seen on this host".to_string());
        }
        if has_vcpus && !self.health.saw_entry_exit && !self.health.saw_gap {
            notes.push(
                "no guest gap records either: resume latency cannot be measured for these vCPUs"
                    .to_string(),
            );
        }
        if self.health.counter_samples > 0 {
            notes.push(format!(
                "counters mode (no BPF): run, wait, switches, migrations and vruntime from the \
                 kernel's counters at {} sample points; pCPU lanes, wait culprits and resume \
                 latency split by placement need BPF",
                self.health.counter_samples
            ));
        }
        if self.health.saw_migrate || self.health.counter_samples > 0 {
            notes.push(if self.health.saw_migrate {
                "migrations counted from sched_migrate_task (= se.nr_migrations)".to_string()
            } else {
                "migrations are se.nr_migrations growth between samples".to_string()
            });
        } else if self.tasks.iter().any(|t| !t.vacant) {
            notes.push(
                "no sched_migrate_task events: migrations are switch-ins on another pCPU"
                    .to_string(),
            );
        }
        if self.health.aggregated_exits > 0 {
            notes.push(format!(
                "guest exits aggregated in the kernel ({} exits): counts and log2 handling-time \
                 buckets per vCPU and reason; exit to switch-out needs --exits stream",
                self.health.aggregated_exits
            ));
        }
        if self.health.lost > 0 {
            notes.push(format!(
                "{} events lost: figures over {:.1} ms of the run are uncertain",
                self.health.lost,
                self.health.uncertain_ns as f64 / 1e6
            ));
        }
        if self.health.out_of_order > 0 {
            notes.push(format!(
                "{} events arrived later than the {:.1} ms reorder window and were folded in late ({})",
                self.health.out_of_order,
                self.cfg.reorder_window_ns as f64 / 1e6,
                self.health.late_kinds.join(", ")
            ));
        }
        if self.health.missed_counter_samples > 0 {
            notes.push(format!(
                "{} counter samples not taken (the thread's /proc files were gone): those \
                 threads' figures stop at their previous sample",
                self.health.missed_counter_samples
            ));
        }
        if self.health.track_failures > 0 {
            notes.push(format!(
                "{} threads found by a rescan could not be tracked: their events are left out",
                self.health.track_failures
            ));
        }
        self.unknown_state_notes(&mut notes);
        if self.health.unpaired_switch_outs > 0 {
            notes.push(format!(
                "{} switch-outs of tracked threads came with no switch-in since their previous \
                 switch-out (switches the kernel did not report, or lost)",
                self.health.unpaired_switch_outs
            ));
        }
        Health {
            events: self.events,
            lost_events: self.health.lost,
            out_of_order: self.health.out_of_order,
            unknown_tids: self.health.unknown_count,
            tid_reuse: self.health.tid_reuse,
            uncertain_ns: self.health.uncertain_ns,
            malformed: self.health.malformed,
            unpaired_switch_outs: self.health.unpaired_switch_outs,
            counter_samples: self.health.counter_samples,
            retired_threads: self.health.retired,
            aggregated_exits: self.health.aggregated_exits,
            aggregated_port_io: self.health.aggregated_port_io,
            missed_counter_samples: self.health.missed_counter_samples,
            track_failures: self.health.track_failures,
            notes,
        }
    }

    /// Why threads show state `?` (no switch or wakeup of theirs yet), said once per cause:
    /// their state when tracking began is not in the source, or they were runnable then
    /// (running or queued, which `/proc` does not tell). Sampled threads (counters mode) have
    /// no state by design, which the counters note says.
    fn unknown_state_notes(&self, notes: &mut Vec<String>) {
        let (mut unrecorded, mut runnable) = (0, 0);
        for t in &self.tasks {
            if t.vacant || t.state != TState::Unknown || t.sampled.is_some() {
                continue;
            }
            match t.start_state {
                None => unrecorded += 1,
                Some(_) => runnable += 1,
            }
        }
        if unrecorded > 0 {
            notes.push(format!(
                "{unrecorded} threads show state '?': no switch or wakeup of theirs yet, and \
                 the source does not say their state when tracking began (a recording from \
                 before trace format 3, or /proc unreadable then)"
            ));
        }
        if runnable > 0 {
            notes.push(format!(
                "{runnable} threads show state '?': runnable when tracking began (running or \
                 queued: /proc does not say which) and not switched since"
            ));
        }
    }
}
