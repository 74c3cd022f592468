//! The encoding of [`CounterSample`]s (kind 14): each figure as the wrapping difference from
//! the same tid's previous sample in the chunk (zero at its first), so a thread sampled once a
//! second costs a few bytes per sample: counters grow by similar amounts each time, and an
//! idle thread's deltas are all zero.
//!
//! After tag, timestamp and tid, a flag byte says which fields repeat (pid, weight, allowed
//! CPUs) and whether a task clock follows; the figures go to the stream of their kind
//! (kernel clocks to `SE`, counts to `VAL`).

use super::{ChunkDecoder, ChunkEncoder, DResult, DecodeError, ID, SE, TAG, VAL};
use crate::event::{CounterSample, Event};

/// Kind code (low nibble of the tag byte); added in format version 1 without a bump: readers
/// before it never misread one, but skip the chunk that holds it whole as corrupt ("unknown
/// event kind"), hence format version 2.
pub(super) const K_COUNTER_SAMPLE: u8 = 14;

const SAME_PID: u8 = 1;
const HAS_TASK_CLOCK: u8 = 2;
const SAME_WEIGHT: u8 = 4;
const SAME_ALLOWED: u8 = 8;

fn delta(now: u64, prev: u64) -> i64 {
    now.wrapping_sub(prev) as i64
}

fn undelta(prev: u64, d: i64) -> u64 {
    prev.wrapping_add(d as u64)
}

impl ChunkEncoder {
    pub(super) fn counter_sample(&mut self, e: &CounterSample) {
        self.tag(K_COUNTER_SAMPLE, Some(e.cpu));
        self.ts(e.ts);
        self.u(ID, e.tid as u64);
        let memo = self.st.memo(e.tid);
        let prev = memo.sample;
        let mut flags = 0;
        if memo.pid == e.pid && memo.pid != 0 {
            flags |= SAME_PID;
        }
        if e.task_clock_ns.is_some() {
            flags |= HAS_TASK_CLOCK;
        }
        if e.weight == prev.weight {
            flags |= SAME_WEIGHT;
        }
        if e.allowed_cpus == prev.allowed_cpus {
            flags |= SAME_ALLOWED;
        }
        self.byte(TAG, flags);
        if flags & SAME_PID == 0 {
            self.u(ID, e.pid as u64);
        }
        self.i(SE, delta(e.run_ns, prev.run_ns));
        self.i(SE, delta(e.wait_ns, prev.wait_ns));
        if let Some(c) = e.task_clock_ns {
            self.i(SE, delta(c, prev.task_clock_ns.unwrap_or(0)));
        }
        self.i(SE, delta(e.vruntime, prev.vruntime));
        self.i(VAL, delta(e.timeslices, prev.timeslices));
        self.i(VAL, delta(e.voluntary_switches, prev.voluntary_switches));
        self.i(
            VAL,
            delta(e.involuntary_switches, prev.involuntary_switches),
        );
        self.i(VAL, delta(e.migrations, prev.migrations));
        if flags & SAME_WEIGHT == 0 {
            self.u(VAL, e.weight as u64);
        }
        if flags & SAME_ALLOWED == 0 {
            self.u(VAL, e.allowed_cpus as u64);
        }
        let m = self.st.memo_mut(e.tid);
        m.pid = e.pid;
        m.sample = *e;
    }
}

impl ChunkDecoder<'_> {
    pub(super) fn counter_sample(&mut self, cpu: u32) -> DResult<Event> {
        let ts = self.ts()?;
        let tid = self.u32(ID)?;
        let memo = *self.st.memo(tid);
        let prev = memo.sample;
        let flags = self.byte(TAG)?;
        if flags & !(SAME_PID | HAS_TASK_CLOCK | SAME_WEIGHT | SAME_ALLOWED) != 0 {
            return Err(DecodeError("unknown counter-sample flags"));
        }
        let pid = if flags & SAME_PID != 0 {
            memo.pid
        } else {
            self.u32(ID)?
        };
        let run_ns = undelta(prev.run_ns, self.i(SE)?);
        let wait_ns = undelta(prev.wait_ns, self.i(SE)?);
        let task_clock_ns = if flags & HAS_TASK_CLOCK != 0 {
            Some(undelta(prev.task_clock_ns.unwrap_or(0), self.i(SE)?))
        } else {
            None
        };
        let vruntime = undelta(prev.vruntime, self.i(SE)?);
        let timeslices = undelta(prev.timeslices, self.i(VAL)?);
        let voluntary_switches = undelta(prev.voluntary_switches, self.i(VAL)?);
        let involuntary_switches = undelta(prev.involuntary_switches, self.i(VAL)?);
        let migrations = undelta(prev.migrations, self.i(VAL)?);
        let weight = if flags & SAME_WEIGHT != 0 {
            prev.weight
        } else {
            self.u32(VAL)?
        };
        let allowed_cpus = if flags & SAME_ALLOWED != 0 {
            prev.allowed_cpus
        } else {
            self.u32(VAL)?
        };
        let e = CounterSample {
            ts,
            cpu,
            tid,
            pid,
            run_ns,
            wait_ns,
            timeslices,
            task_clock_ns,
            voluntary_switches,
            involuntary_switches,
            migrations,
            vruntime,
            weight,
            allowed_cpus,
        };
        let m = self.st.memo_mut(tid);
        m.pid = pid;
        m.sample = e;
        Ok(Event::CounterSample(e))
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::round_trip;
    use super::*;
    use crate::event::CounterSample;

    fn sample(ts: u64, tid: u32, run: u64) -> CounterSample {
        CounterSample {
            ts,
            cpu: 1,
            tid,
            pid: 40,
            run_ns: run,
            wait_ns: run / 3,
            timeslices: run / 1_000_000,
            task_clock_ns: Some(run + 7),
            voluntary_switches: run / 2_000_000,
            involuntary_switches: run / 5_000_000,
            migrations: run / 50_000_000,
            vruntime: run * 2,
            weight: 1024,
            allowed_cpus: 2,
        }
    }

    #[test]
    fn samples_round_trip_as_deltas() {
        let mut events = Vec::new();
        for k in 0..50u64 {
            events.push(Event::CounterSample(sample(
                k * 1_000_000_000,
                7,
                k * 600_000_000,
            )));
            let mut other = sample(k * 1_000_000_000 + 5, 8, k * 300_000_000);
            other.weight = if k % 10 == 0 { 335 } else { 1024 };
            other.cpu = (k % 20) as u32;
            other.task_clock_ns = (k % 3 != 0).then_some(k);
            events.push(Event::CounterSample(other));
        }
        assert_eq!(round_trip(&events), events);
        // Deltas, not totals: under 40 bytes a sample (before zstd) where the fields hold 90.
        let mut enc = ChunkEncoder::default();
        for e in events.iter().step_by(2) {
            enc.push(e);
        }
        assert!(enc.len() < 40 * 50, "{} bytes for 50 samples", enc.len());
    }

    #[test]
    fn extreme_samples_round_trip() {
        let max = CounterSample {
            ts: u64::MAX,
            cpu: u32::MAX,
            tid: u32::MAX,
            pid: u32::MAX,
            run_ns: u64::MAX,
            wait_ns: u64::MAX,
            timeslices: u64::MAX,
            task_clock_ns: Some(u64::MAX),
            voluntary_switches: u64::MAX,
            involuntary_switches: u64::MAX,
            migrations: u64::MAX,
            vruntime: u64::MAX,
            weight: u32::MAX,
            allowed_cpus: u32::MAX,
        };
        let events = vec![
            Event::CounterSample(max),
            Event::CounterSample(CounterSample {
                ts: 0,
                ..CounterSample::default()
            }),
            Event::CounterSample(CounterSample {
                task_clock_ns: None,
                ..max
            }),
        ];
        assert_eq!(round_trip(&events), events);
    }
}
