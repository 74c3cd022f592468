//! Bounded reorder buffer: events from different CPUs arrive slightly out of order; the model
//! holds the newest `window` ns and releases events in timestamp order.
//!
//! Sorted insertion from the back is O(1) for the usual nearly ordered stream. Events with
//! equal timestamps keep their arrival order.

use std::collections::VecDeque;

use crate::Event;

#[derive(Clone)]
pub(crate) struct Reorder {
    buf: VecDeque<Event>,
    window: u64,
    /// Largest timestamp seen so far.
    max_ts: u64,
}

impl Reorder {
    pub(crate) fn new(window: u64) -> Self {
        Reorder {
            buf: VecDeque::new(),
            window,
            max_ts: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// Events with `ts <= watermark()` may be released: nothing older can still arrive in time.
    pub(crate) fn back_ts(&self) -> Option<u64> {
        self.buf.back().map(Event::ts)
    }

    pub(crate) fn watermark(&self) -> u64 {
        self.max_ts.saturating_sub(self.window)
    }

    pub(crate) fn note_ts(&mut self, ts: u64) {
        self.max_ts = self.max_ts.max(ts);
    }

    pub(crate) fn push(&mut self, ev: Event) {
        let ts = ev.ts();
        self.note_ts(ts);
        match self.buf.back() {
            Some(b) if b.ts() > ts => {
                let at = self.buf.partition_point(|e| e.ts() <= ts);
                self.buf.insert(at, ev);
            }
            _ => self.buf.push_back(ev),
        }
    }

    /// Next event at or below `limit`, oldest first.
    pub(crate) fn pop_upto(&mut self, limit: u64) -> Option<Event> {
        match self.buf.front() {
            Some(e) if e.ts() <= limit => self.buf.pop_front(),
            _ => None,
        }
    }
}
