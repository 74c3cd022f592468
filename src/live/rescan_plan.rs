//! What one rescan changes, decided from what it found and what is tracked, with no kernel
//! or `/proc` access, so unit tests drive it: which threads stop being tracked, which get
//! their vCPU index, which start.

use std::collections::{BTreeMap, BTreeSet};

use probes::targets::TrackedThread;

use super::exiting::ExitingThreads;

/// The changes one rescan makes, in the order they are applied.
#[derive(Debug, Default, PartialEq)]
pub(super) struct RescanPlan {
    /// Tracked threads the scan no longer found, or found in another process (their tid
    /// reused).
    pub(super) stop: Vec<u32>,
    /// Threads watched without a vCPU index that the scan now maps (QMP answered at last,
    /// or the `kvm_entry` mapping completed), with their index.
    pub(super) relabel: Vec<(u32, u32)>,
    /// Threads found that are not tracked yet (a reused tid's new thread among them).
    pub(super) start: Vec<TrackedThread>,
}

impl RescanPlan {
    /// `found`: the scan's threads. A tracked thread it did not find stays tracked when its
    /// process is in `unreadable` (it exists but could not be read this time), when
    /// `kept_anyway` says so (a QEMU process watched whole), or while it is exiting (exited
    /// threads leave `/proc` before their last switch-out, which retires them).
    pub(super) fn new(
        tracked: &BTreeMap<u32, TrackedThread>,
        found: Vec<TrackedThread>,
        unreadable: &BTreeSet<u32>,
        kept_anyway: impl Fn(&TrackedThread) -> bool,
        exiting: &ExitingThreads,
    ) -> RescanPlan {
        let found_tids: BTreeSet<u32> = found.iter().map(|t| t.tid).collect();
        let stop = tracked
            .values()
            .filter(|t| {
                !found_tids.contains(&t.tid)
                    && !unreadable.contains(&t.pid)
                    && !kept_anyway(t)
                    && !exiting.contains(t.tid)
            })
            .map(|t| t.tid)
            .collect();
        let mut plan = RescanPlan {
            stop,
            ..RescanPlan::default()
        };
        for t in found {
            match tracked.get(&t.tid) {
                // The tid names a thread of another process now: the tracked one ended and
                // its exit was not seen (lost). It stops and the new one starts, so its events
                // are not counted to the old VM. One whose exit was seen waits for its
                // retirement: its last switch-out may still come.
                Some(known) if known.pid != t.pid => {
                    if !exiting.contains(t.tid) {
                        plan.stop.push(t.tid);
                        plan.start.push(t);
                    }
                }
                Some(known) => {
                    if let (None, Some(vcpu)) = (known.vcpu, t.vcpu) {
                        plan.relabel.push((t.tid, vcpu));
                    }
                }
                None => plan.start.push(t),
            }
        }
        plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(pid: u32, tid: u32, vcpu: Option<u32>) -> TrackedThread {
        TrackedThread {
            pid,
            tid,
            comm: format!("t{tid}"),
            vm: format!("vm{pid}"),
            vcpu,
        }
    }

    fn tracked(ts: &[TrackedThread]) -> BTreeMap<u32, TrackedThread> {
        ts.iter().map(|t| (t.tid, t.clone())).collect()
    }

    #[test]
    fn threads_not_found_stop_unless_their_process_or_exit_keeps_them() {
        let known = tracked(&[
            thread(1, 11, Some(0)),
            thread(2, 21, Some(0)),
            thread(3, 31, None),
            thread(4, 41, Some(0)),
            thread(5, 51, Some(0)),
        ]);
        let exiting = ExitingThreads::default();
        // Nothing found: everything stops but process 2 (unreadable this time) and the QEMU
        // thread watched whole (process 3).
        let plan = RescanPlan::new(
            &known,
            Vec::new(),
            &BTreeSet::from([2]),
            |t| t.pid == 3,
            &exiting,
        );
        assert_eq!(plan.stop, [11, 41, 51]);
        assert!(plan.relabel.is_empty() && plan.start.is_empty());
        // Found again: nothing changes.
        let plan = RescanPlan::new(
            &known,
            known.values().cloned().collect(),
            &BTreeSet::new(),
            |_| false,
            &exiting,
        );
        assert_eq!(plan, RescanPlan::default());
    }

    #[test]
    fn a_thread_mapped_now_is_relabelled_and_new_threads_start() {
        let known = tracked(&[thread(3, 31, None), thread(3, 32, Some(1))]);
        let found = vec![
            thread(3, 31, Some(0)),
            thread(3, 32, Some(1)),
            thread(3, 33, Some(2)),
        ];
        let plan = RescanPlan::new(
            &known,
            found,
            &BTreeSet::new(),
            |_| false,
            &ExitingThreads::default(),
        );
        assert!(plan.stop.is_empty());
        assert_eq!(plan.relabel, [(31, 0)]);
        assert_eq!(plan.start.iter().map(|t| t.tid).collect::<Vec<_>>(), [33]);
    }

    #[test]
    fn a_tid_found_in_another_process_restarts_unless_its_old_thread_is_exiting() {
        let known = tracked(&[thread(1, 11, Some(0)), thread(1, 12, Some(1))]);
        let found = vec![thread(2, 11, Some(0)), thread(2, 12, Some(0))];
        let mut exiting = ExitingThreads::default();
        let exit = model::Event::TaskExit(model::TaskExit {
            ts: 1,
            cpu: 0,
            tid: 12,
            pid: 1,
        });
        assert!(exiting
            .retire(&[exit], |_| true, std::time::Instant::now())
            .is_empty());
        let plan = RescanPlan::new(&known, found, &BTreeSet::new(), |_| false, &exiting);
        assert_eq!(plan.stop, [11]);
        assert!(plan.relabel.is_empty());
        assert_eq!(
            plan.start
                .iter()
                .map(|t| (t.pid, t.tid))
                .collect::<Vec<_>>(),
            [(2, 11)]
        );
    }
}
