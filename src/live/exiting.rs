//! Tracked threads on their way out. A thread's last switch-out (state TASK_DEAD) comes after
//! `sched_process_exit`, once the exit has released its memory and files, and must still
//! carry its sched entity; but its tid can be reused by an unrelated thread soon after. So an
//! exited thread stays tracked until that switch-out, or [`GRACE`] after its exit if the
//! switch is never seen, and not until the next rescan.

use std::time::{Duration, Instant};

use model::Event;

/// How long after its exit a thread stays tracked when its last switch-out is not seen.
pub(super) const GRACE: Duration = Duration::from_secs(1);

/// Tracked threads whose exit was seen, each with the instant it is retired at the latest.
#[derive(Debug, Default)]
pub(super) struct ExitingThreads {
    exiting: Vec<(u32, Instant)>,
}

impl ExitingThreads {
    /// Whether thread `tid`'s exit was seen and it is not retired yet.
    pub(super) fn contains(&self, tid: u32) -> bool {
        self.exiting.iter().any(|(t, _)| *t == tid)
    }

    /// Notes the exits of tracked threads in `batch` (seen at `now`) and returns, once each,
    /// the threads to stop tracking: those whose last switch-out is in `batch`, and those
    /// whose exit is [`GRACE`] old.
    pub(super) fn retire(
        &mut self,
        batch: &[Event],
        is_tracked: impl Fn(u32) -> bool,
        now: Instant,
    ) -> Vec<u32> {
        let mut done: Vec<u32> = Vec::new();
        for e in batch {
            match e {
                Event::TaskExit(x) if is_tracked(x.tid) && !self.contains(x.tid) => {
                    self.exiting.push((x.tid, now + GRACE));
                }
                Event::SchedSwitch(s)
                    if s.prev_task_state().is_dead() && self.contains(s.prev_tid) =>
                {
                    done.push(s.prev_tid);
                }
                _ => {}
            }
        }
        done.extend(
            self.exiting
                .iter()
                .filter(|(_, deadline)| *deadline <= now)
                .map(|(t, _)| *t),
        );
        done.sort_unstable();
        done.dedup();
        self.exiting.retain(|(t, _)| !done.contains(t));
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::task_state::bits::TASK_DEAD;
    use model::{Comm, SchedSwitch, TaskExit};

    fn exit(tid: u32) -> Event {
        Event::TaskExit(TaskExit {
            ts: 1,
            cpu: 0,
            tid,
            pid: 100,
        })
    }

    fn switch_out(tid: u32, prev_state: u64) -> Event {
        Event::SchedSwitch(SchedSwitch {
            ts: 2,
            cpu: 0,
            prev_tid: tid,
            prev_pid: 100,
            prev_comm: Comm::new("vm0-vcpu0"),
            prev_state,
            next_tid: 0,
            next_pid: 0,
            next_comm: Comm::new("swapper/0"),
            prev_se: None,
            next_se: None,
        })
    }

    #[test]
    fn an_exited_thread_is_retired_at_its_dead_switch_out_not_before() {
        let mut exiting = ExitingThreads::default();
        let now = Instant::now();
        let tracked = |tid| tid == 11 || tid == 12;
        // The exit alone, or a preemption after it, retires nothing yet.
        assert!(exiting.retire(&[exit(11)], tracked, now).is_empty());
        assert!(exiting.contains(11));
        assert!(exiting
            .retire(&[switch_out(11, 0), exit(11)], tracked, now)
            .is_empty());
        // Its last switch-out (TASK_DEAD) does, once.
        assert_eq!(
            exiting.retire(&[switch_out(11, TASK_DEAD)], tracked, now),
            [11]
        );
        assert!(!exiting.contains(11));
        assert!(exiting
            .retire(&[switch_out(11, TASK_DEAD)], tracked, now)
            .is_empty());
        // A dead switch-out of a thread whose exit was not seen retires nothing.
        assert!(exiting
            .retire(&[switch_out(12, TASK_DEAD)], tracked, now)
            .is_empty());
    }

    #[test]
    fn an_exit_without_its_switch_out_is_retired_after_the_grace() {
        let mut exiting = ExitingThreads::default();
        let t0 = Instant::now();
        let tracked = |tid| tid == 11;
        // Untracked threads' exits are not ours to retire.
        assert!(exiting
            .retire(&[exit(11), exit(99)], tracked, t0)
            .is_empty());
        assert!(!exiting.contains(99));
        assert!(exiting
            .retire(&[], tracked, t0 + GRACE - Duration::from_millis(1))
            .is_empty());
        // Both ways at once (the switch-out arrives as the grace ends): retired once.
        assert_eq!(
            exiting.retire(&[switch_out(11, TASK_DEAD)], tracked, t0 + GRACE),
            [11]
        );
        assert!(exiting.retire(&[], tracked, t0 + 2 * GRACE).is_empty());
    }
}
