//! The gap collector: reads each guest's ring of off-CPU gaps from shared memory (no exits),
//! converts their TSC stamps to CLOCK_MONOTONIC and queues them for
//! [`RunningVmm::drain_gaps`](crate::RunningVmm::drain_gaps).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::clock::{self, TscClock};
use crate::guest::{self, block};
use crate::VcpuSlot;

/// Gaps kept for [`crate::RunningVmm::drain_gaps`] when nobody drains; older ones are
/// dropped (and counted) so an undrained VMM does not grow without bound.
pub(crate) const PENDING_GAPS_MAX: usize = 1 << 18;
const CLOCK_PAIR_EVERY: Duration = Duration::from_millis(200);

/// Reader state of one guest's gap ring.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RingReader {
    tail: u64,
    pub(crate) gaps: u64,
    pub(crate) gap_ticks: u64,
    pub(crate) overruns: u64,
}

/// Every guest's ring reader, the TSC-to-monotonic fit, and the gaps not yet drained.
pub(crate) struct GapCollector {
    pub(crate) clock: TscClock,
    last_pair: Instant,
    pub(crate) readers: Vec<RingReader>,
    pub(crate) pending: VecDeque<model::GuestGap>,
    pub(crate) pending_dropped: u64,
}

impl GapCollector {
    /// A collector for `vcpus` rings, none read yet.
    pub(crate) fn new(clock: TscClock, vcpus: usize) -> Self {
        GapCollector {
            clock,
            last_pair: Instant::now(),
            readers: vec![RingReader::default(); vcpus],
            pending: VecDeque::new(),
            pending_dropped: 0,
        }
    }

    /// Reads every ring up to its head. Slots the guest may have overwritten meanwhile (it
    /// lapped the reader) are counted as overruns, not reported.
    pub(crate) fn collect(&mut self, vcpus: &[VcpuSlot]) {
        if self.last_pair.elapsed() >= CLOCK_PAIR_EVERY {
            self.clock.add(clock::sample_pair());
            self.last_pair = Instant::now();
        }
        let mut entries = Vec::new();
        for (slot, reader) in vcpus.iter().zip(self.readers.iter_mut()) {
            let ring = slot.block + block::RING;
            let head = slot.mem.read_u64(slot.block + block::RING_HEAD);
            if head <= reader.tail {
                continue;
            }
            let mut from = reader.tail;
            if head - from > guest::RING_SLOTS {
                from = head - guest::RING_SLOTS;
            }
            entries.clear();
            for i in from..head {
                let at = ring + (i & (guest::RING_SLOTS - 1)) * 16;
                entries.push((i, slot.mem.read_u64(at), slot.mem.read_u64(at + 8)));
            }
            // Anything the guest wrote past `head` while we read may have reused slots below.
            let head_after = slot.mem.read_u64(slot.block + block::RING_HEAD);
            let valid_from = from.max(head_after.saturating_sub(guest::RING_SLOTS));
            reader.overruns += valid_from - reader.tail;
            reader.tail = head;
            let tid = slot.tid();
            for &(_, start, end) in entries.iter().filter(|(i, ..)| *i >= valid_from) {
                if end <= start {
                    reader.overruns += 1;
                    continue;
                }
                reader.gaps += 1;
                reader.gap_ticks += end - start;
                let host = |t: u64| t.wrapping_sub(slot.tsc_offset as u64);
                if self.pending.len() == PENDING_GAPS_MAX {
                    self.pending.pop_front();
                    self.pending_dropped += 1;
                }
                self.pending.push_back(model::GuestGap {
                    start: self.clock.to_ns(host(start)),
                    end: self.clock.to_ns(host(end)),
                    tid,
                    vm: slot.plan.vm_index,
                    vcpu: slot.plan.index,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicU32;
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::memory::GuestMemory;
    use crate::vcpu::VcpuThread;
    use crate::{Scenario, Workload};

    fn slot(mem: Arc<GuestMemory>, tsc_offset: i64) -> VcpuSlot {
        let plan = Scenario::uniform(1, 1, Workload::Spin)
            .plan()
            .unwrap()
            .remove(0);
        VcpuSlot {
            thread: VcpuThread::name(&plan),
            plan,
            tid: AtomicU32::new(42),
            mem,
            block: guest::control_block(0),
            tsc_offset,
            rotate_over: vec![0],
            sched_start: Mutex::new(None),
        }
    }

    fn collector() -> GapCollector {
        // 1 GHz: one tick is one ns, so expectations are easy to read.
        let mut clock = TscClock::from_pair((0, 0));
        clock.add((1_000_000_000, 1_000_000_000));
        GapCollector {
            clock,
            last_pair: Instant::now(),
            readers: vec![RingReader::default()],
            pending: VecDeque::new(),
            pending_dropped: 0,
        }
    }

    /// Plays the guest: appends a gap the way the program does (slot first, then head).
    fn guest_gap(mem: &GuestMemory, start: u64, end: u64) {
        let b = guest::control_block(0);
        let head = mem.read_u64(b + block::RING_HEAD);
        let at = b + block::RING + (head % guest::RING_SLOTS) * 16;
        mem.write_u64(at, start);
        mem.write_u64(at + 8, end);
        mem.write_u64(b + block::RING_HEAD, head + 1);
    }

    #[test]
    fn rings_are_read_once_and_converted_to_host_time() {
        let mem = Arc::new(GuestMemory::new(guest::MEM_SIZE).unwrap());
        // The guest's TSC runs 1000 ticks ahead of the host's.
        let vcpus = [slot(mem.clone(), 1000)];
        let mut c = collector();
        guest_gap(&mem, 6_000, 16_000);
        guest_gap(&mem, 20_000, 50_000);
        c.collect(&vcpus);
        c.collect(&vcpus);
        let gaps: Vec<_> = c.pending.drain(..).collect();
        assert_eq!(gaps.len(), 2);
        assert_eq!((gaps[0].start, gaps[0].end), (5_000, 15_000));
        assert_eq!(
            (gaps[1].start, gaps[1].end, gaps[1].tid),
            (19_000, 49_000, 42)
        );
        assert_eq!(c.readers[0].gaps, 2);
        assert_eq!(c.readers[0].gap_ticks, 40_000);
        assert_eq!(c.readers[0].overruns, 0);
    }

    #[test]
    fn a_lapped_ring_counts_overruns() {
        let mem = Arc::new(GuestMemory::new(guest::MEM_SIZE).unwrap());
        let vcpus = [slot(mem.clone(), 0)];
        let mut c = collector();
        for i in 0..guest::RING_SLOTS + 10 {
            guest_gap(&mem, i * 100, i * 100 + 50);
        }
        c.collect(&vcpus);
        assert_eq!(c.readers[0].overruns, 10);
        assert_eq!(c.readers[0].gaps, guest::RING_SLOTS);
        // The oldest gap kept is the 11th one written.
        assert_eq!(c.pending.front().unwrap().start, 1_000);
    }
}
