//! The rings records arrive on: the shared `events` ring buffer, the per-CPU switch rings
//! ([`SwitchRings`]) and the `switch_wakeups` ring they wake the reader through; set up from
//! the loaded object, waited on together, drained one after the other.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use aya::maps::{MapData, RingBuf};
use aya::Ebpf;

use super::object::take_map;
use super::options::{load_error, ProbeError, ProbeOptions};
use crate::reader_wait::ReaderWait;
use crate::switch_rings::SwitchRings;

pub(super) struct Rings {
    events: RingBuf<MapData>,
    /// Per-CPU rings of sched_switch records.
    switches: SwitchRings,
    /// Wakeups raised by the switch rings (`switch_wakeups` in kvmscope.bpf.c).
    switch_wakeups: RingBuf<MapData>,
    pub(super) switch_wakeups_seen: u64,
    /// Sleeps until `events` or `switch_wakeups` is woken.
    wait: ReaderWait,
    last_drain: Instant,
}

impl Rings {
    /// Takes the rings' maps out of the loaded object. Before any program is attached: the
    /// write path reads its parameters from the switch rings.
    pub(super) fn set_up(
        ebpf: &mut Ebpf,
        opts: &ProbeOptions,
        cpus: usize,
        chunks_per_cpu: u32,
    ) -> Result<Rings, ProbeError> {
        let (outer, heads, tails) = (
            take_map(ebpf, "switch_chunks")?,
            take_map(ebpf, "switch_head")?,
            take_map(ebpf, "switch_tail")?,
        );
        let switches = SwitchRings::create(
            outer,
            heads,
            tails,
            cpus,
            chunks_per_cpu,
            opts.switch_wakeups,
        )
        .map_err(|e| ProbeError::SwitchRings(e.to_string()))?;
        let events = RingBuf::try_from(take_map(ebpf, "events")?)
            .map_err(|e| load_error(format!("events map: {e}")))?;
        let switch_wakeups = RingBuf::try_from(take_map(ebpf, "switch_wakeups")?)
            .map_err(|e| load_error(format!("switch_wakeups map: {e}")))?;
        let wait =
            ReaderWait::new(&[events.as_fd(), switch_wakeups.as_fd()]).map_err(ProbeError::Poll)?;
        Ok(Rings {
            events,
            switches,
            switch_wakeups,
            switch_wakeups_seen: 0,
            wait,
            last_drain: Instant::now(),
        })
    }

    /// Sleeps until the kernel side wakes the reader or `timeout` has passed since the
    /// previous drain. Also when no time is left: consumes a pending wakeup, which the drain
    /// that follows answers.
    pub(super) fn wait(&mut self, timeout: Duration) -> Result<(), ProbeError> {
        self.wait
            .wait(timeout.saturating_sub(self.last_drain.elapsed()))
            .map_err(ProbeError::Poll)?;
        self.last_drain = Instant::now();
        Ok(())
    }

    /// Hands every waiting record to `take`: the switch rings' records first, then the
    /// shared ring's (each ring in its own order).
    pub(super) fn drain(&mut self, mut take: impl FnMut(&[u8])) -> Result<(), ProbeError> {
        while self.switch_wakeups.next().is_some() {
            self.switch_wakeups_seen += 1;
        }
        self.switches
            .drain(&mut take)
            .map_err(|e| ProbeError::SwitchRings(e.to_string()))?;
        while let Some(item) = self.events.next() {
            take(&item);
        }
        Ok(())
    }
}
