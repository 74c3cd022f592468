//! Affinity changes of host processes (`taskset -p`, libvirt's `vcpupin`, cgroup cpusets),
//! found by reading each tracked thread's allowed CPUs on every rescan. The bundled VMM logs
//! its own rotation exactly (see `vmm_feed`); a process of the host says nothing, so its
//! changes are seen up to one rescan late and stamped when seen.

use std::collections::BTreeMap;

use model::{Affinity, Event};

/// The allowed CPUs last reported for each tracked thread.
#[derive(Default)]
pub(super) struct AffinityPoll {
    last: BTreeMap<u32, Vec<u32>>,
}

impl AffinityPoll {
    /// Tracking of `tid` began with `cpus` (already reported).
    pub(super) fn started(&mut self, tid: u32, cpus: &[u32]) {
        self.last.insert(tid, cpus.to_vec());
    }

    pub(super) fn stopped(&mut self, tid: u32) {
        self.last.remove(&tid);
    }

    /// An `Affinity` event, stamped `ts`, for each thread whose allowed CPUs (`read`, None
    /// when they cannot be read: the thread is going) differ from the last reported.
    pub(super) fn changes(
        &mut self,
        ts: u64,
        read: impl Fn(u32) -> Option<Vec<u32>>,
        out: &mut Vec<Event>,
    ) {
        for (&tid, last) in self.last.iter_mut() {
            let Some(cpus) = read(tid) else { continue };
            if cpus != *last {
                last.clone_from(&cpus);
                out.push(Event::Affinity(Affinity { ts, tid, cpus }));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polled(poll: &mut AffinityPoll, ts: u64, masks: &[(u32, &[u32])]) -> Vec<Event> {
        let mut out = Vec::new();
        let read = |tid: u32| {
            masks
                .iter()
                .find(|(t, _)| *t == tid)
                .map(|(_, m)| m.to_vec())
        };
        poll.changes(ts, read, &mut out);
        out
    }

    #[test]
    fn a_changed_mask_is_reported_once_and_an_unchanged_or_unreadable_one_never() {
        let mut poll = AffinityPoll::default();
        poll.started(10, &[0, 1]);
        poll.started(11, &[0, 1]);
        assert!(polled(&mut poll, 5, &[(10, &[0, 1]), (11, &[0, 1])]).is_empty());
        // `taskset -p 2 10`; 11 cannot be read (exiting).
        let out = polled(&mut poll, 7, &[(10, &[1])]);
        assert_eq!(
            out,
            [Event::Affinity(Affinity {
                ts: 7,
                tid: 10,
                cpus: vec![1]
            })]
        );
        assert!(polled(&mut poll, 9, &[(10, &[1]), (11, &[0, 1])]).is_empty());
        // A thread no longer tracked is not read at all.
        poll.stopped(10);
        assert!(polled(&mut poll, 11, &[(10, &[0]), (11, &[0, 1])]).is_empty());
    }
}
