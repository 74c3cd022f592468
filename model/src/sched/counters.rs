//! The counters room: [`CounterSample`]s (the kernel's own per-thread totals, read without
//! BPF) folded into the same per-thread clocks the switch events fill, so every view reads
//! run, wait, shares, switches, migrations and vruntime the same way in both modes.
//!
//! A sampled thread has no scheduling state between samples (no switch says when it runs):
//! it stays `Unknown` and its counters move only at sample points. The growth between two
//! samples of a thread is what the kernel counted over that interval, exactly:
//! - run: schedstat's first field (`se.sum_exec_runtime`), also its task clock;
//! - wait: schedstat's second field (`sched_info.run_delay`), also its `run_delay`;
//! - sleep: the rest of the interval;
//! - switches: `nr_voluntary_switches` / `nr_involuntary_switches`;
//! - migrations: `se.nr_migrations`; pCPU changes: samples on another pCPU than the last;
//! - vruntime and weight as of the sample; lag at sample points against the other sampled
//!   threads last seen on the same pCPU.
//!
//! Run and wait count from the schedstat the `TaskInfo` carried when there is one, else from
//! the thread's first sample; switches and migrations from its first sample (the source emits
//! one right after the `TaskInfo`).

use super::task::TState;
use super::Model;
use crate::{CounterSample, SchedEntity};

/// What a thread's previous sample said, for the growth to the next.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct SampleMemo {
    ts: u64,
    voluntary: u64,
    involuntary: u64,
    migrations: u64,
}

impl Model {
    #[inline(never)]
    pub(super) fn on_counter_sample(&mut self, s: &CounterSample) {
        let Some(n) = self.slot(s.tid) else {
            self.note_unknown(s.tid);
            return;
        };
        self.health.counter_samples = self.health.counter_samples.saturating_add(1);
        let (spacing, history) = (self.cfg.vruntime_spacing_ns, self.cfg.history_ns);
        let t = &mut self.tasks[n];
        if t.state == TState::Exited || t.pid != s.pid {
            // After the thread's end (or for another process's thread of that tid): its
            // figures are final.
            self.health.malformed = self.health.malformed.saturating_add(1);
            return;
        }
        let prev_run = t.clock.last_sum_exec;
        let prev_wait = t.clock.last_run_delay;
        let se = SchedEntity {
            vruntime: s.vruntime,
            weight: s.weight,
            sum_exec_runtime: s.run_ns,
            run_delay: Some(s.wait_ns),
            ..SchedEntity::default()
        };
        // Task clock, run_delay, vruntime and its series, as a switch's sched entity would.
        t.clock.sample(&se, s.ts, spacing, history);
        let grew = |prev: Option<u64>, now: u64| prev.map_or(0, |p| now.saturating_sub(p));
        let d_run = grew(prev_run, s.run_ns);
        let d_wait = grew(prev_wait, s.wait_ns);
        let since = t.sampled.map_or(t.first_seen, |m| m.ts);
        let cum = &mut t.clock.cum;
        cum.run = cum.run.saturating_add(d_run);
        cum.wait = cum.wait.saturating_add(d_wait);
        let interval = s.ts.saturating_sub(since);
        cum.sleep = cum
            .sleep
            .saturating_add(interval.saturating_sub(d_run.saturating_add(d_wait)));
        if let Some(m) = t.sampled {
            cum.voluntary = cum
                .voluntary
                .saturating_add(s.voluntary_switches.saturating_sub(m.voluntary));
            cum.involuntary = cum
                .involuntary
                .saturating_add(s.involuntary_switches.saturating_sub(m.involuntary));
            cum.migrate_events = cum
                .migrate_events
                .saturating_add(s.migrations.saturating_sub(m.migrations));
            if s.cpu != t.cpu {
                cum.pcpu_changes = cum.pcpu_changes.saturating_add(1);
            }
        }
        if s.weight > 0 {
            t.weight = s.weight;
        }
        t.cpu = s.cpu;
        t.cpus_used.insert(s.cpu);
        t.sampled = Some(SampleMemo {
            ts: s.ts,
            voluntary: s.voluntary_switches,
            involuntary: s.involuntary_switches,
            migrations: s.migrations,
        });
        if let Some(c) = self.cpu_mut(s.cpu) {
            c.last_event_ts = c.last_event_ts.max(s.ts);
        }
    }

    /// Whether thread slot `i` is known from counter samples only (no switch has placed it).
    pub(super) fn sampled_only(&self, i: usize) -> bool {
        let t = &self.tasks[i];
        t.sampled.is_some() && matches!(t.state, TState::Unknown | TState::Exited)
    }

    /// The time of a sampled-only thread's last sample: where its figures end.
    pub(super) fn sampled_end(&self, i: usize) -> Option<u64> {
        self.sampled_only(i)
            .then(|| self.tasks[i].sampled.map(|m| m.ts))
            .flatten()
    }

    /// Lag at the last sample point of a sampled thread: its vruntime minus the smallest
    /// among the sampled threads last seen on the same pCPU and still tracked then (running
    /// on, or ended at the same instant: a session's close). Vruntimes of different run
    /// queues are not comparable.
    pub(super) fn sampled_lag(&self, i: usize) -> i64 {
        let t = &self.tasks[i];
        let min = self
            .tasks
            .iter()
            .enumerate()
            .filter(|(j, o)| {
                !o.vacant && self.sampled_only(*j) && o.cpu == t.cpu && o.ended_at == t.ended_at
            })
            .map(|(_, o)| o.clock.vruntime)
            .min();
        min.map_or(0, |m| {
            (t.clock.vruntime as i128 - m as i128).clamp(i64::MIN as i128, i64::MAX as i128) as i64
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::{Comm, CounterSample, Event, Model, Schedstat, TaskInfo, VmEnded};

    const S: u64 = 1_000_000_000;

    fn info(tid: u32, vcpu: u32, seed: Schedstat) -> Event {
        Event::TaskInfo(TaskInfo {
            ts: S,
            tid,
            pid: 100,
            comm: Comm::new(&format!("vm0-vcpu{vcpu}")),
            vm: "vm0".into(),
            vcpu: Some(vcpu),
            nice: 0,
            schedstat: Some(seed),
            start: None,
        })
    }

    fn sample(ts: u64, tid: u32, cpu: u32, run: u64, wait: u64, sw: (u64, u64, u64)) -> Event {
        Event::CounterSample(CounterSample {
            ts,
            cpu,
            tid,
            pid: 100,
            run_ns: run,
            wait_ns: wait,
            timeslices: sw.0 + sw.1,
            task_clock_ns: Some(run),
            voluntary_switches: sw.0,
            involuntary_switches: sw.1,
            migrations: sw.2,
            vruntime: run / 2,
            weight: 1024,
            allowed_cpus: 2,
        })
    }

    /// Two vCPUs sampled once a second for 3 s: run, wait, sleep, switches, migrations and
    /// vruntime are the kernel totals' growth since tracking began; lag is against the other
    /// thread on the same pCPU; the VM's totals are the sums.
    #[test]
    fn samples_fold_into_vcpu_figures() {
        let seed = |run, wait| Schedstat {
            run_ns: run,
            wait_ns: wait,
        };
        let mut m = Model::default();
        let mut evs = vec![
            info(11, 0, seed(5 * S, S)),
            sample(S, 11, 0, 5 * S, S, (10, 20, 3)),
            info(12, 1, seed(0, 0)),
            sample(S, 12, 0, 0, 0, (0, 0, 0)),
        ];
        for k in 1..=3u64 {
            // vcpu0 runs 0.6 s and waits 0.3 s of each second; vcpu1 runs 0.3 s, waits 0.6 s.
            let ts = S + k * S;
            evs.push(sample(
                ts,
                11,
                0,
                5 * S + k * 600_000_000,
                S + k * 300_000_000,
                (10 + k, 20 + 2 * k, 3 + k),
            ));
            evs.push(sample(
                ts,
                12,
                if k == 3 { 1 } else { 0 },
                k * 300_000_000,
                k * 600_000_000,
                (k, 0, k),
            ));
        }
        evs.push(Event::VmEnded(VmEnded {
            ts: 4 * S,
            pid: 100,
            vm: "vm0".into(),
        }));
        for e in &evs {
            m.ingest(e);
        }
        m.finish();
        let snap = m.snapshot();
        let v0 = snap.vcpus.iter().find(|v| v.tid == 11).unwrap();
        let v1 = snap.vcpus.iter().find(|v| v.tid == 12).unwrap();
        assert_eq!(v0.run_ns, 1_800_000_000);
        assert_eq!(v0.wait_ns, 900_000_000);
        assert_eq!(v0.run_delay_ns, Some(900_000_000));
        assert_eq!(v0.task_clock_ns, 1_800_000_000);
        assert_eq!(v0.sleep_ns, 300_000_000);
        assert_eq!(v0.voluntary_switches, 3);
        assert_eq!(v0.involuntary_switches, 6);
        assert_eq!(v0.switches, 9);
        assert_eq!(v0.migrations, 3);
        assert_eq!(v0.vruntime, (5 * S + 1_800_000_000) / 2);
        assert_eq!(v0.sampled_at, Some(4 * S));
        assert_eq!(v0.elapsed_ns, 3 * S);
        assert!((v0.cpu_share - 0.6).abs() < 1e-9, "{}", v0.cpu_share);
        assert_eq!(v1.run_ns, 900_000_000);
        assert_eq!(v1.wait_ns, 1_800_000_000);
        assert_eq!(v1.migrations, 3);
        assert_eq!(v1.pcpu_changes, 1);
        assert_eq!(v1.pcpu, Some(1));
        let vm = snap.vms.iter().find(|v| v.name == "vm0").unwrap();
        assert_eq!(vm.run_ns, 2_700_000_000);
        assert_eq!(snap.health.counter_samples, 8);
        assert!(
            snap.health.notes.iter().any(|n| n.contains("need BPF")),
            "{:?}",
            snap.health.notes
        );
    }

    /// Lag at sample points: against the smallest vruntime on the same pCPU, while running.
    #[test]
    fn lag_is_taken_on_the_same_pcpu_at_sample_points() {
        let mut m = Model::default();
        let seed = Schedstat::default();
        for e in [
            info(11, 0, seed),
            info(12, 1, seed),
            sample(2 * S, 11, 0, 4 * S, 0, (0, 0, 0)),
            sample(2 * S, 12, 0, 2 * S, 0, (0, 0, 0)),
        ] {
            m.ingest(&e);
        }
        m.finish();
        let snap = m.snapshot();
        let lag = |tid| snap.vcpus.iter().find(|v| v.tid == tid).unwrap().lag;
        assert_eq!(lag(11), 1_000_000_000);
        assert_eq!(lag(12), 0);
    }
}
