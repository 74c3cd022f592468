//! The third mapping method: a watched thread's vCPU learnt from the `kvm_entry` events it
//! causes.

use std::collections::HashMap;

/// The third mapping method, for a live source: learns which watched thread runs which vCPU
/// from the vCPU id every `kvm_entry` event carries, for QEMU VMs that QMP and thread names
/// could not map.
///
/// The source registers each QEMU thread it watches without a vCPU index ([`Self::watch`]),
/// passes every batch of events through [`Self::observe`], and when [`Self::has_news`] says
/// so, collects the threads mapped since with [`Self::take_mapped`] (to announce them again
/// with their index) and hands complete VMs to [`QemuMappings::note_kvm_entry_ids`](super::QemuMappings::note_kvm_entry_ids) with
/// [`Self::seen_in`].
///
/// `observe` sees every event of a session: it allocates nothing and does one hash lookup
/// per `kvm_entry` (none at all once nothing is left to map).
#[derive(Debug, Default)]
pub struct KvmEntryMapper {
    /// Watched threads by tid.
    threads: HashMap<u32, WatchedThread>,
    /// Threads whose vCPU id is known, not yet taken by `take_mapped`. Its capacity covers
    /// every watched thread (reserved in `watch`), so `observe` never grows it.
    news: Vec<u32>,
    /// Watched threads whose vCPU id is not known yet: `observe` returns at once at zero.
    waiting: usize,
}

#[derive(Debug, Clone, Copy)]
struct WatchedThread {
    pid: u32,
    vcpu_id: Option<u32>,
}

/// A thread [`KvmEntryMapper`] mapped: thread `tid` of process `pid` runs the vCPU KVM numbers
/// `vcpu_id`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryMapped {
    pub pid: u32,
    pub tid: u32,
    /// KVM's id of the vCPU (the x86 APIC ID); [`cpu_index_of`](super::cpu_index_of) turns it into QEMU's index.
    pub vcpu_id: u32,
}

impl KvmEntryMapper {
    /// Start learning the vCPU of thread `tid` of QEMU process `pid`.
    pub fn watch(&mut self, pid: u32, tid: u32) {
        if self.threads.contains_key(&tid) {
            return;
        }
        self.threads
            .insert(tid, WatchedThread { pid, vcpu_id: None });
        self.waiting += 1;
        self.news
            .reserve(self.threads.len().saturating_sub(self.news.len()));
    }

    /// Stop watching `tid` (it exited or is no longer a target).
    pub fn forget(&mut self, tid: u32) {
        if let Some(t) = self.threads.remove(&tid) {
            if t.vcpu_id.is_none() {
                self.waiting -= 1;
            }
            self.news.retain(|&n| n != tid);
        }
    }

    /// Stop watching every thread of process `pid` (its VM is mapped in full: the threads
    /// left are not vCPU threads, and `observe` should not keep looking for them).
    pub fn forget_process(&mut self, pid: u32) {
        let tids: Vec<u32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in tids {
            self.forget(tid);
        }
    }

    /// Whether `tid` is watched.
    pub fn is_watched(&self, tid: u32) -> bool {
        self.threads.contains_key(&tid)
    }

    /// Note the vCPU ids of the `kvm_entry` events in `events`. The first id a thread shows
    /// is kept: a QEMU vCPU thread runs one vCPU for its whole life.
    pub fn observe(&mut self, events: &[model::Event]) {
        if self.waiting == 0 {
            return;
        }
        for event in events {
            let model::Event::KvmEntry(entry) = event else {
                continue;
            };
            let Some(t) = self.threads.get_mut(&entry.tid) else {
                continue;
            };
            if t.vcpu_id.is_none() {
                t.vcpu_id = Some(entry.vcpu_id);
                self.waiting -= 1;
                // Within the capacity reserved by `watch`: no allocation.
                self.news.push(entry.tid);
            }
        }
    }

    /// Whether threads were mapped since the last [`Self::take_mapped`].
    pub fn has_news(&self) -> bool {
        !self.news.is_empty()
    }

    /// The threads mapped since the last call, in the order their first `kvm_entry` came.
    pub fn take_mapped(&mut self, out: &mut Vec<EntryMapped>) {
        for tid in self.news.drain(..) {
            if let Some(&WatchedThread {
                pid,
                vcpu_id: Some(vcpu),
            }) = self.threads.get(&tid)
            {
                out.push(EntryMapped {
                    pid,
                    tid,
                    vcpu_id: vcpu,
                });
            }
        }
    }

    /// `(tid, vcpu_id)` of every mapped thread of process `pid`, for [`QemuMappings::note_kvm_entry_ids`](super::QemuMappings::note_kvm_entry_ids).
    pub fn seen_in(&self, pid: u32) -> Vec<(u32, u32)> {
        let mut seen: Vec<(u32, u32)> = self
            .threads
            .iter()
            .filter(|(_, t)| t.pid == pid)
            .filter_map(|(&tid, t)| t.vcpu_id.map(|id| (tid, id)))
            .collect();
        seen.sort_unstable();
        seen
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `kvm_entry` of thread `tid` running vCPU `vcpu_id`.
    fn entry(ts: u64, tid: u32, vcpu_id: u32) -> model::Event {
        model::Event::KvmEntry(model::KvmEntry {
            ts,
            cpu: 0,
            tid,
            vcpu_id,
        })
    }

    #[test]
    fn kvm_entry_mapper_labels_watched_threads_from_their_first_entry() {
        use model::synth;
        let mut mapper = KvmEntryMapper::default();
        // QEMU 100: main thread 100, vCPU threads 101 (vCPU 1) and 102 (vCPU 0).
        for tid in [100, 101, 102] {
            mapper.watch(100, tid);
        }
        mapper.watch(200, 201);
        assert!(!mapper.has_news());
        mapper.observe(&[
            synth::switch(1, 0, 100, 101),
            entry(2, 101, 1),
            synth::kvm_exit(3, 0, 101, model::ExitIsa::Vmx, 30),
            entry(4, 999, 7), // not watched: another VM's thread
            entry(5, 102, 0),
            entry(6, 101, 5), // a thread keeps its first vCPU id
        ]);
        assert!(mapper.has_news());
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert_eq!(
            mapped,
            vec![
                EntryMapped {
                    pid: 100,
                    tid: 101,
                    vcpu_id: 1
                },
                EntryMapped {
                    pid: 100,
                    tid: 102,
                    vcpu_id: 0
                },
            ]
        );
        assert!(!mapper.has_news());
        assert_eq!(mapper.seen_in(100), vec![(101, 1), (102, 0)]);
        assert_eq!(mapper.seen_in(200), vec![]);

        // Later batches report only what is new.
        mapper.observe(&[entry(7, 101, 1), entry(8, 201, 0)]);
        mapped.clear();
        mapper.take_mapped(&mut mapped);
        assert_eq!(
            mapped,
            vec![EntryMapped {
                pid: 200,
                tid: 201,
                vcpu_id: 0
            }]
        );
    }

    #[test]
    fn kvm_entry_mapper_forgets_threads_and_never_grows_while_observing() {
        let mut mapper = KvmEntryMapper::default();
        for tid in 1..=64 {
            mapper.watch(1, tid);
        }
        let capacity = mapper.news.capacity();
        assert!(capacity >= 64);
        // A thread that exits before entering the guest is forgotten, also when its entry
        // was seen but not yet taken.
        mapper.observe(&[entry(1, 3, 2)]);
        mapper.forget(3);
        mapper.forget(4);
        assert!(!mapper.has_news());
        assert!(!mapper.is_watched(3));
        let events: Vec<model::Event> = (1..=64).map(|tid| entry(tid as u64, tid, tid)).collect();
        mapper.observe(&events);
        assert_eq!(mapper.news.capacity(), capacity, "observe allocated");
        assert_eq!(mapper.news.len(), 62);
        assert_eq!(mapper.waiting, 0);
        // Nothing left to learn: a batch is not even looked at.
        mapper.observe(&[entry(99, 5, 0)]);
        assert_eq!(mapper.news.len(), 62);
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert!(mapped
            .iter()
            .all(|m| m.tid == m.vcpu_id && m.tid != 3 && m.tid != 4));
        assert_eq!(mapper.seen_in(1).len(), 62);
    }

    #[test]
    fn kvm_entry_mapper_stops_looking_once_a_vm_is_mapped() {
        let mut mapper = KvmEntryMapper::default();
        // QEMU 10: main thread 10 never enters a guest; 11 and 12 run vCPUs 0 and 1.
        for tid in [10, 11, 12] {
            mapper.watch(10, tid);
        }
        mapper.watch(20, 21);
        mapper.observe(&[entry(1, 11, 0), entry(2, 12, 1)]);
        assert_eq!(mapper.waiting, 2, "10 and 21 still unknown");
        mapper.forget_process(10);
        assert_eq!(mapper.waiting, 1);
        assert!(!mapper.is_watched(10) && !mapper.is_watched(11));
        assert!(mapper.is_watched(21));
        let mut mapped = Vec::new();
        mapper.take_mapped(&mut mapped);
        assert!(
            mapped.is_empty(),
            "forgotten threads are not reported: {mapped:?}"
        );
        mapper.forget_process(20);
        assert_eq!(mapper.waiting, 0);
    }
}
