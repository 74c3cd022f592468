//! Streams of any length at a fixed cost: the demo scenario generated once as a block, then
//! replayed with every timestamp shifted by the block's span, for the benchmarks that need
//! 100 M events (ingest, trace-file size, replay memory).

use super::{demo_config, Sim};
use crate::Event;

/// Moves an event `by` ns later.
pub fn shift_ts(ev: &mut Event, by: u64) {
    match ev {
        Event::SchedSwitch(x) => x.ts += by,
        Event::Wakeup(x) => x.ts += by,
        Event::Migrate(x) => x.ts += by,
        Event::TaskExit(x) => x.ts += by,
        Event::KvmEntry(x) => x.ts += by,
        Event::KvmExit(x) => x.ts += by,
        Event::UserspaceExit(x) => x.ts += by,
        Event::Pio(x) => x.ts += by,
        Event::CrossCall(x) => x.ts += by,
        Event::GuestGap(x) => {
            x.start += by;
            x.end += by;
        }
        Event::Lost(x) => x.ts += by,
        Event::Unobserved(x) => x.ts += by,
        Event::TaskInfo(x) => x.ts += by,
        Event::VmEnded(x) => x.ts += by,
        Event::ObservationEnd(x) => x.ts += by,
        Event::CounterSample(x) => x.ts += by,
        Event::Affinity(x) => x.ts += by,
        Event::TaskGroup(x) => x.ts += by,
    }
}

/// The demo scenario (4 vCPUs and a kworker on 2 pCPUs) as one endless stream, a block at a
/// time.
pub struct RepeatedDemo {
    /// The block's `TaskInfo` events, sent once at the start (later blocks would otherwise
    /// announce the same tids again, as if reused).
    infos: Vec<Event>,
    block: Vec<Event>,
    span: u64,
    blocks: u64,
}

impl RepeatedDemo {
    /// Blocks of `events` events each.
    pub fn new(events: usize) -> Self {
        let mut sim = Sim::new(demo_config());
        let mut block = Vec::with_capacity(events + 10_000);
        let mut until = 1_000_000_000u64;
        while block.len() < events {
            until += 100_000_000;
            sim.run_until(until, &mut block);
        }
        block.truncate(events);
        let infos = block
            .iter()
            .filter(|e| matches!(e, Event::TaskInfo(_)))
            .cloned()
            .collect();
        block.retain(|e| !matches!(e, Event::TaskInfo(_)));
        let first = block.first().map_or(0, Event::ts);
        let last = block.last().map_or(0, Event::ts);
        RepeatedDemo {
            infos,
            block,
            span: last - first + 1_000,
            blocks: 0,
        }
    }

    /// Event time one block covers, ns.
    pub fn span_ns(&self) -> u64 {
        self.span
    }

    /// The scenario's `TaskInfo` events, which [`Self::next_block`] sends once, first.
    pub fn infos(&self) -> &[Event] {
        &self.infos
    }

    /// The next block without the `TaskInfo` events, timestamps after the previous one's,
    /// borrowed (for benchmarks that must not pay for a copy).
    pub fn advance(&mut self) -> &[Event] {
        if self.blocks > 0 {
            for e in &mut self.block {
                shift_ts(e, self.span);
            }
        }
        self.blocks += 1;
        &self.block
    }

    /// The next block, timestamps after the previous one's; the first starts with the
    /// scenario's `TaskInfo` events.
    pub fn next_block(&mut self) -> Vec<Event> {
        let first = self.blocks == 0;
        let block = self.advance().to_vec();
        if first {
            self.infos.iter().cloned().chain(block).collect()
        } else {
            block
        }
    }
}
