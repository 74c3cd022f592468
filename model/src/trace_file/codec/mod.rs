//! The compact per-kind encoding of [`Event`]s inside one events chunk (before zstd).
//!
//! Every chunk is decodable on its own: the coder state (previous timestamp, the comm table,
//! what each tid and CPU looked like last) starts empty at each chunk, so a lost or corrupt
//! chunk never poisons the ones after it.
//!
//! Each event starts with a tag byte: the low nibble is the kind, the high nibble is the CPU
//! plus one when it is below 15 (0 = CPU follows as a varint, or the kind has no CPU). Then
//! the timestamp as a zigzag varint delta from the previous event's (wrapping, so any `u64`
//! round-trips and small inversions between CPUs stay small), then kind-specific fields.
//! Fields that usually repeat (a tid's pid and comm, the task current on a CPU, a weight) are
//! replaced by flag bits saying "same as last time". All arithmetic wraps so that every value
//! of every field round-trips exactly.
//!
//! This file holds the chunk framing, the field primitives and the dispatch on kind; each
//! kind's encode and decode live side by side, with their named flag bits, in [`sched`]
//! (scheduler events), [`kvm`] (KVM and VMM events), [`records`] (bookkeeping records) and
//! [`counter_sample`] (the no-BPF source's counter samples).
//! [`sched_entity`] codes the scheduler entity a switch carries; [`state`] is what both sides
//! remember within a chunk.

mod counter_sample;
mod kvm;
mod records;
mod sched;
mod sched_entity;
mod state;

use integer_encoding::VarInt;

use crate::event::{Comm, Event};
use counter_sample::K_COUNTER_SAMPLE;
use records::{TASK_GROUP_TAG, TASK_INFO_HAS_SCHEDSTAT, TASK_INFO_HAS_START, UNOBSERVED_TAG};
use state::CoderState;

/// Kind codes (low nibble of the tag byte). Stable since format version 1.
const K_SCHED_SWITCH: u8 = 0;
const K_WAKEUP: u8 = 1;
const K_MIGRATE: u8 = 2;
const K_TASK_EXIT: u8 = 3;
const K_KVM_ENTRY: u8 = 4;
const K_KVM_EXIT: u8 = 5;
const K_USERSPACE_EXIT: u8 = 6;
const K_PIO: u8 = 7;
const K_CROSS_CALL: u8 = 8;
const K_GUEST_GAP: u8 = 9;
const K_LOST: u8 = 10;
const K_TASK_INFO: u8 = 11;
const K_VM_ENDED: u8 = 12;
const K_OBSERVATION_END: u8 = 13;
/// Added in format version 1 without a bump, like [`K_COUNTER_SAMPLE`] (14): a reader from
/// before it fails the chunk that holds one ("unknown event kind") and skips that chunk whole
/// as corrupt, hence version 2 (see [`super::FORMAT_VERSION`]). The last free code, so it is
/// also the escape: an affinity record's tag has no CPU, and a non-zero high nibble names a
/// further kind instead ([`records::UNOBSERVED_TAG`], [`records::TASK_GROUP_TAG`] from format
/// version 4; a reader from before either skips the chunk as corrupt: "cpu on an event
/// without one"). A further kind there needs a new format version.
const K_AFFINITY: u8 = 15;

/// Field streams. A chunk's fields are stored column-wise, one stream per kind of value, so
/// zstd sees runs of alike numbers (timestamps with timestamps, tids with tids) and
/// compresses them far better than interleaved records.
const TAG: usize = 0; // tag and flag bytes
const TS: usize = 1; // timestamp deltas, gap lengths
const ID: usize = 2; // tids, pids, CPUs, vCPU ids, comm references
const SE: usize = 3; // sched entity values
const VAL: usize = 4; // everything else: states, reasons, port I/O, strings
const STREAMS: usize = 5;

/// Longest string (VM name) a chunk may carry; a larger length is corruption.
const MAX_STRING: usize = 4096;

/// Why a chunk's payload could not be decoded (after its checksum matched: a writer bug or a
/// crafted file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DecodeError(pub &'static str);

type DResult<T> = Result<T, DecodeError>;

/// Accumulates the encoded events of one chunk.
#[derive(Default)]
pub(crate) struct ChunkEncoder {
    bufs: [Vec<u8>; STREAMS],
    st: CoderState,
    events: u32,
    min_ts: u64,
    max_ts: u64,
}

impl ChunkEncoder {
    pub(crate) fn len(&self) -> usize {
        self.bufs.iter().map(Vec::len).sum()
    }
    pub(crate) fn events(&self) -> u32 {
        self.events
    }
    pub(crate) fn ts_range(&self) -> (u64, u64) {
        (self.min_ts, self.max_ts)
    }
    /// The encoded chunk (stream lengths, then the streams), and a fresh state for the next.
    pub(crate) fn take(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.len() + 5 * STREAMS);
        for b in &self.bufs {
            let mut tmp = [0u8; 10];
            let n = (b.len() as u64).encode_var(&mut tmp);
            out.extend_from_slice(&tmp[..n]);
        }
        for b in &self.bufs {
            out.extend_from_slice(b);
        }
        *self = ChunkEncoder::default();
        out
    }

    /// Append one event.
    pub(crate) fn push(&mut self, ev: &Event) {
        let ts = ev.ts();
        if self.events == 0 {
            self.min_ts = ts;
            self.max_ts = ts;
        } else {
            self.min_ts = self.min_ts.min(ts);
            self.max_ts = self.max_ts.max(ts);
        }
        self.events += 1;
        match ev {
            Event::SchedSwitch(e) => self.sched_switch(e),
            Event::Wakeup(e) => self.wakeup(e),
            Event::Migrate(e) => self.migrate(e),
            Event::TaskExit(e) => self.task_exit(e),
            Event::KvmEntry(e) => self.kvm_entry(e),
            Event::KvmExit(e) => self.kvm_exit(e),
            Event::UserspaceExit(e) => self.userspace_exit(e),
            Event::Pio(e) => self.pio(e),
            Event::CrossCall(e) => self.cross_call(e),
            Event::GuestGap(e) => self.guest_gap(e),
            Event::Lost(e) => self.lost(e),
            Event::Unobserved(e) => self.unobserved(e),
            Event::TaskInfo(e) => self.task_info(e),
            Event::VmEnded(e) => self.vm_ended(e),
            Event::ObservationEnd(e) => self.observation_end(e),
            Event::CounterSample(e) => self.counter_sample(e),
            Event::Affinity(e) => self.affinity(e),
            Event::TaskGroup(e) => self.task_group(e),
        }
    }

    fn u(&mut self, s: usize, v: u64) {
        let mut tmp = [0u8; 10];
        let n = v.encode_var(&mut tmp);
        self.bufs[s].extend_from_slice(&tmp[..n]);
    }
    fn i(&mut self, s: usize, v: i64) {
        let mut tmp = [0u8; 10];
        let n = v.encode_var(&mut tmp);
        self.bufs[s].extend_from_slice(&tmp[..n]);
    }
    fn byte(&mut self, s: usize, b: u8) {
        self.bufs[s].push(b);
    }
    fn tag(&mut self, kind: u8, cpu: Option<u32>) {
        match cpu {
            Some(c) if c < 15 => self.byte(TAG, kind | ((c as u8 + 1) << 4)),
            Some(c) => {
                self.byte(TAG, kind);
                self.u(ID, c as u64);
            }
            None => self.byte(TAG, kind),
        }
    }
    fn ts(&mut self, ts: u64) {
        let delta = ts.wrapping_sub(self.st.prev_ts) as i64;
        self.i(TS, delta);
        self.st.prev_ts = ts;
    }
    fn comm(&mut self, c: &Comm) {
        if let Some(&idx) = self.st.comm_index.get(c) {
            self.u(ID, idx as u64 + 1);
        } else {
            self.u(ID, 0);
            // Trailing NULs are implied; any other byte is kept, so every `[u8; 16]` survives.
            let len = c.0.iter().rposition(|&b| b != 0).map_or(0, |p| p + 1);
            self.byte(VAL, len as u8);
            self.bufs[VAL].extend_from_slice(&c.0[..len]);
            let idx = self.st.comm_index.len() as u32;
            self.st.comm_index.insert(*c, idx);
        }
    }
    fn string(&mut self, s: &str) {
        // Names longer than the format allows are cut on a char boundary rather than
        // producing a chunk the reader would reject.
        let mut end = s.len().min(MAX_STRING);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.u(VAL, end as u64);
        self.bufs[VAL].extend_from_slice(&s.as_bytes()[..end]);
    }
}

/// Reads one chunk's encoded events back. Never panics: every read is bounds-checked and every
/// impossible value is a [`DecodeError`].
pub(crate) struct ChunkDecoder<'a> {
    bufs: [&'a [u8]; STREAMS],
    pos: [usize; STREAMS],
    st: CoderState,
}

impl<'a> ChunkDecoder<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> DResult<Self> {
        let mut at = 0usize;
        let mut lens = [0usize; STREAMS];
        for l in &mut lens {
            let (v, n) = u64::decode_var(&buf[at..]).ok_or(DecodeError("bad stream length"))?;
            *l = usize::try_from(v).map_err(|_| DecodeError("stream length"))?;
            at += n;
        }
        let mut bufs: [&[u8]; STREAMS] = [&[]; STREAMS];
        for (b, l) in bufs.iter_mut().zip(lens) {
            let end = at
                .checked_add(l)
                .ok_or(DecodeError("stream length overflows"))?;
            *b = buf.get(at..end).ok_or(DecodeError("stream cut short"))?;
            at = end;
        }
        if at != buf.len() {
            return Err(DecodeError("bytes after the last stream"));
        }
        Ok(ChunkDecoder {
            bufs,
            pos: [0; STREAMS],
            st: CoderState::default(),
        })
    }

    /// The next event, `None` at the end of the chunk.
    pub(crate) fn next_event(&mut self) -> DResult<Option<Event>> {
        let mut one = Vec::with_capacity(1);
        Ok(self.decode_into(&mut one)?.then(|| one.pop()).flatten())
    }

    /// Appends the next event to `out`; `false` at the end of the chunk. Decoding straight
    /// into the vector spares a 248-byte copy per event through `Result<Option<Event>>`.
    #[inline]
    pub(crate) fn decode_into(&mut self, out: &mut Vec<Event>) -> DResult<bool> {
        if self.pos[TAG] >= self.bufs[TAG].len() {
            // Every stream must be used up exactly: anything left over is corruption.
            if (0..STREAMS).any(|s| self.pos[s] != self.bufs[s].len()) {
                return Err(DecodeError("stream bytes left over"));
            }
            return Ok(false);
        }
        let tag = self.byte(TAG)?;
        let kind = tag & 0x0f;
        let has_cpu = !matches!(
            kind,
            K_GUEST_GAP | K_TASK_INFO | K_VM_ENDED | K_OBSERVATION_END | K_AFFINITY
        );
        let cpu = match (tag >> 4, has_cpu) {
            (0, true) => self.u32(ID)?,
            (n, true) => u32::from(n - 1),
            (0, false) => 0,
            _ if tag == UNOBSERVED_TAG || tag == TASK_GROUP_TAG => 0,
            _ if kind == K_TASK_INFO
                && tag & !(TASK_INFO_HAS_SCHEDSTAT | TASK_INFO_HAS_START) == K_TASK_INFO =>
            {
                0
            }
            (_, false) => return Err(DecodeError("cpu on an event without one")),
        };
        out.push(match kind {
            K_SCHED_SWITCH => Event::SchedSwitch(self.sched_switch(cpu)?),
            K_WAKEUP => Event::Wakeup(self.wakeup(cpu)?),
            K_MIGRATE => Event::Migrate(self.migrate(cpu)?),
            K_TASK_EXIT => Event::TaskExit(self.task_exit(cpu)?),
            K_KVM_ENTRY => Event::KvmEntry(self.kvm_entry(cpu)?),
            K_KVM_EXIT => Event::KvmExit(self.kvm_exit(cpu)?),
            K_USERSPACE_EXIT => Event::UserspaceExit(self.userspace_exit(cpu)?),
            K_PIO => Event::Pio(self.pio(cpu)?),
            K_CROSS_CALL => Event::CrossCall(self.cross_call(cpu)?),
            K_GUEST_GAP => Event::GuestGap(self.guest_gap()?),
            K_LOST => Event::Lost(self.lost(cpu)?),
            K_TASK_INFO => Event::TaskInfo(self.task_info(tag)?),
            K_VM_ENDED => Event::VmEnded(self.vm_ended()?),
            K_OBSERVATION_END => Event::ObservationEnd(self.observation_end()?),
            K_COUNTER_SAMPLE => self.counter_sample(cpu)?,
            K_AFFINITY if tag == UNOBSERVED_TAG => Event::Unobserved(self.unobserved()?),
            K_AFFINITY if tag == TASK_GROUP_TAG => Event::TaskGroup(self.task_group()?),
            K_AFFINITY => Event::Affinity(self.affinity()?),
            _ => return Err(DecodeError("unknown event kind")),
        });
        Ok(true)
    }

    fn byte(&mut self, s: usize) -> DResult<u8> {
        let b = *self.bufs[s]
            .get(self.pos[s])
            .ok_or(DecodeError("event cut short"))?;
        self.pos[s] += 1;
        Ok(b)
    }
    fn u(&mut self, s: usize) -> DResult<u64> {
        let rest = &self.bufs[s][self.pos[s]..];
        let (v, n) = u64::decode_var(rest).ok_or(DecodeError("bad varint"))?;
        self.pos[s] += n;
        Ok(v)
    }
    fn u32(&mut self, s: usize) -> DResult<u32> {
        u32::try_from(self.u(s)?).map_err(|_| DecodeError("32-bit field out of range"))
    }
    fn i(&mut self, s: usize) -> DResult<i64> {
        let rest = &self.bufs[s][self.pos[s]..];
        let (v, n) = i64::decode_var(rest).ok_or(DecodeError("bad varint"))?;
        self.pos[s] += n;
        Ok(v)
    }
    fn bytes(&mut self, s: usize, n: usize) -> DResult<&'a [u8]> {
        let end = self.pos[s]
            .checked_add(n)
            .ok_or(DecodeError("length overflows"))?;
        let b = self.bufs[s]
            .get(self.pos[s]..end)
            .ok_or(DecodeError("field cut short"))?;
        self.pos[s] = end;
        Ok(b)
    }
    fn ts(&mut self) -> DResult<u64> {
        let ts = self.st.prev_ts.wrapping_add(self.i(TS)? as u64);
        self.st.prev_ts = ts;
        Ok(ts)
    }
    fn comm(&mut self) -> DResult<Comm> {
        let idx = self.u(ID)?;
        if idx == 0 {
            let len = self.byte(VAL)? as usize;
            if len > 16 {
                return Err(DecodeError("comm longer than 16 bytes"));
            }
            let mut c = Comm::default();
            c.0[..len].copy_from_slice(self.bytes(VAL, len)?);
            self.st.comm_list.push(c);
            Ok(c)
        } else {
            let i = usize::try_from(idx - 1).map_err(|_| DecodeError("comm index"))?;
            self.st
                .comm_list
                .get(i)
                .copied()
                .ok_or(DecodeError("unknown comm index"))
        }
    }
    fn string(&mut self) -> DResult<String> {
        let len = self.u(VAL)?;
        if len > MAX_STRING as u64 {
            return Err(DecodeError("string too long"));
        }
        let b = self.bytes(VAL, len as usize)?;
        String::from_utf8(b.to_vec()).map_err(|_| DecodeError("string is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::*;

    pub(super) fn round_trip(events: &[Event]) -> Vec<Event> {
        let mut enc = ChunkEncoder::default();
        for e in events {
            enc.push(e);
        }
        let buf = enc.take();
        let mut dec = ChunkDecoder::new(&buf).unwrap();
        let mut out = Vec::new();
        while let Some(e) = dec.next_event().unwrap() {
            out.push(e);
        }
        out
    }

    #[test]
    fn extreme_values_round_trip() {
        let se = SchedEntity {
            vruntime: u64::MAX,
            weight: u32::MAX,
            sum_exec_runtime: 0,
            deadline: Some(0),
            vlag: Some(i64::MIN),
            slice: Some(u64::MAX),
            run_delay: Some(u64::MAX),
        };
        let mut weird = Comm([0xff; 16]);
        weird.0[3] = 0;
        let events = vec![
            Event::SchedSwitch(SchedSwitch {
                ts: u64::MAX,
                cpu: u32::MAX,
                prev_tid: 7,
                prev_pid: 7,
                prev_comm: weird,
                prev_state: u64::MAX,
                next_tid: 7,
                next_pid: 8,
                next_comm: Comm::default(),
                prev_se: Some(se),
                next_se: Some(SchedEntity::default()),
            }),
            Event::GuestGap(GuestGap {
                start: 10,
                end: 0,
                tid: 1,
                vm: u32::MAX,
                vcpu: 0,
            }),
            Event::UserspaceExit(UserspaceExit {
                ts: 0,
                cpu: 14,
                tid: 0,
                reason: 2,
                errno: i32::MIN,
            }),
            Event::KvmExit(KvmExit {
                ts: 1,
                cpu: 15,
                tid: 9,
                vcpu_id: 0,
                reason: 1,
                isa: ExitIsa::Unknown,
            }),
            Event::TaskInfo(TaskInfo {
                ts: 2,
                tid: 9,
                pid: 9,
                comm: Comm::new("CPU 0/KVM"),
                vm: "vm-é".into(),
                vcpu: Some(u32::MAX),
                nice: i32::MIN,
                schedstat: Some(Schedstat {
                    run_ns: u64::MAX,
                    wait_ns: 0,
                }),
                start: Some(crate::ThreadStart {
                    state: crate::TaskState(u64::MAX),
                    cpu: u32::MAX,
                }),
            }),
            Event::Lost(Lost {
                ts: 3,
                cpu: u32::MAX,
                count: u64::MAX,
            }),
            Event::Affinity(Affinity {
                ts: 4,
                tid: u32::MAX,
                cpus: vec![0, 1, 15, 4095, u32::MAX, 3],
            }),
            Event::Affinity(Affinity {
                ts: 5,
                tid: 9,
                cpus: Vec::new(),
            }),
            Event::Unobserved(Unobserved {
                ts: 6,
                what: UnobservedKind::CounterSamples,
                count: 3,
            }),
            Event::Unobserved(Unobserved {
                ts: 6,
                what: UnobservedKind::Threads,
                count: u64::MAX,
            }),
            Event::Affinity(Affinity {
                ts: 7,
                tid: 9,
                cpus: vec![1],
            }),
            Event::TaskGroup(crate::TaskGroup {
                ts: 8,
                tid: u32::MAX,
                pid: 7,
                group: Some(crate::SchedGroup {
                    name: "/autogroup-687".into(),
                    weight: 1024,
                }),
            }),
            Event::TaskGroup(crate::TaskGroup {
                ts: 8,
                tid: 2,
                pid: 2,
                group: Some(crate::SchedGroup {
                    name: String::new(),
                    weight: u32::MAX,
                }),
            }),
            Event::TaskGroup(crate::TaskGroup {
                ts: 9,
                tid: 3,
                pid: 3,
                group: None,
            }),
            Event::TaskGroup(crate::TaskGroup {
                ts: 9,
                tid: 4,
                pid: 4,
                group: Some(crate::SchedGroup {
                    name: "/autogroup-687".into(),
                    weight: 2048,
                }),
            }),
        ];
        assert_eq!(round_trip(&events), events);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        for seed in 0u32..2000 {
            let bytes: Vec<u8> = (0..64)
                .map(|i| (seed.wrapping_mul(2654435761).rotate_left(i) >> 7) as u8)
                .collect();
            let Ok(mut dec) = ChunkDecoder::new(&bytes) else {
                continue;
            };
            for _ in 0..100 {
                match dec.next_event() {
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
    }
}
