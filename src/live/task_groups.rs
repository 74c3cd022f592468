//! Each task's group, read once, the first time the live source sees the task run: either
//! side of a switch the probes report (a tracked thread's, and the untracked task it switched
//! to or from). A replay splits other tasks' load by these groups (`model::demand`), as the
//! kernel shares a pCPU among groups first. A task that exited before its group could be read
//! gets a record that says so, counted in [`TaskGroups::unread`]: never left out silently.

use std::collections::HashSet;

use hostfacts::task_group::TaskGroupFacts;
use model::{nice_to_weight, Event, SchedGroup, TaskGroup};

#[derive(Default)]
pub(super) struct TaskGroups {
    /// Tasks already recorded (tid reuse within a session keeps the first record).
    seen: HashSet<u32>,
    unread: u64,
}

impl TaskGroups {
    /// Puts a task-group record just before each switch in `out[from..]` that shows a task
    /// for the first time, stamped with that switch: the batch stays in time order, so no
    /// record reaches the model later than its reorder window (appended at the batch's end,
    /// 30-90 records of a 3 s demo did, each counted and noted as a late event). `read`
    /// reads a task's group (`hostfacts::task_group::task_group` live, a script in tests).
    pub(super) fn note(
        &mut self,
        out: &mut Vec<Event>,
        from: usize,
        mut read: impl FnMut(u32) -> Option<TaskGroupFacts>,
    ) {
        let first_seen = |seen: &HashSet<u32>, ev: &Event| match ev {
            Event::SchedSwitch(s) => [s.prev_tid, s.next_tid]
                .iter()
                .any(|&tid| tid != 0 && !seen.contains(&tid)),
            _ => false,
        };
        // Most batches show no new task: leave them as they are.
        if !out[from..].iter().any(|ev| first_seen(&self.seen, ev)) {
            return;
        }
        let batch = out.split_off(from);
        for ev in batch {
            if let Event::SchedSwitch(s) = &ev {
                for (tid, pid) in [(s.prev_tid, s.prev_pid), (s.next_tid, s.next_pid)] {
                    // tid 0: a CPU's idle task, in no group.
                    if tid == 0 || !self.seen.insert(tid) {
                        continue;
                    }
                    // A thread that ended in a process that lives on is in its process's group.
                    let group = read(tid)
                        .or_else(|| (pid != tid && pid != 0).then(|| read(pid)).flatten())
                        .map(sched_group);
                    if group.is_none() {
                        self.unread += 1;
                    }
                    out.push(Event::TaskGroup(TaskGroup {
                        ts: s.ts,
                        tid,
                        pid,
                        group,
                    }));
                }
            }
            out.push(ev);
        }
    }

    /// Tasks that had exited before their group could be read.
    pub(super) fn unread(&self) -> u64 {
        self.unread
    }
}

/// The group as the kernel weighs it: an autogroup by its nice's weight, a cgroup by its
/// shares; the root group with the weight of nice 0 (its tasks weigh their own).
fn sched_group(facts: TaskGroupFacts) -> SchedGroup {
    match facts {
        TaskGroupFacts::Root => SchedGroup {
            name: String::new(),
            weight: nice_to_weight(0),
        },
        TaskGroupFacts::Autogroup { name, nice } => SchedGroup {
            name,
            weight: nice_to_weight(nice),
        },
        TaskGroupFacts::Cgroup { path, shares } => SchedGroup {
            name: path,
            weight: shares,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth::events::switch;

    #[test]
    fn each_task_is_read_once_and_one_gone_is_counted() {
        let mut out = vec![
            switch(10, 0, 100, 200),
            switch(20, 0, 200, 300),
            switch(30, 1, 0, 100),
        ];
        let mut groups = TaskGroups::default();
        let mut reads = Vec::new();
        groups.note(&mut out, 0, |tid| {
            reads.push(tid);
            match tid {
                300 => None,
                100 => Some(TaskGroupFacts::Autogroup {
                    name: "/autogroup-7".into(),
                    nice: 5,
                }),
                _ => Some(TaskGroupFacts::Root),
            }
        });
        assert_eq!(reads, [100, 200, 300]);
        assert_eq!(groups.unread(), 1);
        // Each record just before the switch that first shows its task, so the batch stays
        // in time order (appended at its end, they reached the model late).
        let shown: Vec<_> = out
            .iter()
            .map(|e| match e {
                Event::TaskGroup(g) => (g.ts, Some(g.tid), g.group.clone()),
                Event::SchedSwitch(s) => (s.ts, None, None),
                other => panic!("{other:?}"),
            })
            .collect();
        let autogroup = Some(SchedGroup {
            name: "/autogroup-7".into(),
            weight: nice_to_weight(5),
        });
        let root = Some(SchedGroup {
            name: String::new(),
            weight: 1024,
        });
        assert_eq!(
            shown,
            [
                (10, Some(100), autogroup),
                (10, Some(200), root),
                (10, None, None),
                (20, Some(300), None),
                (20, None, None),
                (30, None, None),
            ]
        );
        assert!(out.windows(2).all(|w| w[0].ts() <= w[1].ts()));
        // A thread gone from a process that lives on: its process's group.
        let mut ended = switch(40, 1, 100, 401);
        if let Event::SchedSwitch(s) = &mut ended {
            s.next_pid = 400;
        }
        out.push(ended);
        groups.note(&mut out, 6, |tid| {
            (tid == 400).then_some(TaskGroupFacts::Root)
        });
        assert!(
            matches!(&out[6], Event::TaskGroup(g) if g.tid == 401 && g.group.is_some()),
            "{out:?}"
        );
        assert!(matches!(&out[7], Event::SchedSwitch(s) if s.ts == 40));
        assert_eq!(groups.unread(), 1);
        // Seen before: no record again.
        let n = out.len();
        groups.note(&mut out, n - 1, |_| panic!("read again"));
        assert_eq!(out.len(), n);
    }
}
