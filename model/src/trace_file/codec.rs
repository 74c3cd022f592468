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

use std::collections::HashMap;

use integer_encoding::VarInt;

use crate::event::*;

mod counter_sample;
use counter_sample::K_COUNTER_SAMPLE;

/// Kind codes (low nibble of the tag byte). Stable: part of format version 1.
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

/// Sched-entity flag byte: bits 0-5 say which fields follow and which are predicted, 64 alone
/// means "unchanged", and this bit says a `run_delay` delta ends the entity. Files written
/// before run_delay existed never set it, so they still read; older readers refuse new files
/// with a clear error instead of misreading them.
const SE_HAS_RUN_DELAY: u8 = 128;

/// Task-info tag bit (high nibble, where other kinds keep their CPU): the thread's schedstat
/// at tracking start follows. Older files never set it.
const TASK_INFO_HAS_SCHEDSTAT: u8 = 0x10;

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

/// What the coder remembers about one tid within a chunk.
#[derive(Clone, Copy, Default)]
struct TidMemo {
    pid: u32,
    comm: Comm,
    se: SchedEntity,
    vcpu_id: u32,
    /// Last port I/O (rw, port, size, val): guests repeat the same OUT.
    pio: (u32, u32, u32, u32),
    /// VM and vCPU index of this tid's last guest gap.
    gap_owner: (u32, u32),
    /// When it last became runnable off-CPU (preempted or woken), 0 if not waiting.
    queued_at: u64,
    /// Run-queue wait seen in the stream since its last `run_delay` was coded: the kernel adds
    /// just that to `run_delay`, give or take the µs its clock starts before the tracepoint.
    waited: u64,
    /// This tid's last counter sample (deltas are coded from it).
    sample: CounterSample,
}

/// State shared (mirrored) by encoder and decoder; reset at every chunk.
#[derive(Default)]
struct CoderState {
    prev_ts: u64,
    /// Guest gaps arrive in batches from the VMM, out of step with kernel events: they get
    /// their own time base so they neither pay for nor cause big jumps in `prev_ts`.
    prev_gap_end: u64,
    tids: HashMap<u32, TidMemo>,
    /// Task last switched in on each CPU.
    current: HashMap<u32, u32>,
    /// Decoder: comm table by index. Encoder: unused.
    comm_list: Vec<Comm>,
    /// Encoder: comm table by value.
    comm_index: HashMap<Comm, u32>,
}

impl CoderState {
    fn memo(&self, tid: u32) -> TidMemo {
        self.tids.get(&tid).copied().unwrap_or_default()
    }
    fn memo_mut(&mut self, tid: u32) -> &mut TidMemo {
        self.tids.entry(tid).or_default()
    }
    fn current(&self, cpu: u32) -> u32 {
        self.current.get(&cpu).copied().unwrap_or(0)
    }
    /// After a switch is coded: what it says about waits, for the `run_delay` prediction.
    fn note_switch(&mut self, ts: u64, prev_tid: u32, prev_runnable: bool, next_tid: u32) {
        self.memo_mut(prev_tid).queued_at = if prev_runnable { ts } else { 0 };
        let m = self.memo_mut(next_tid);
        if m.queued_at != 0 {
            m.waited = m.waited.wrapping_add(ts.wrapping_sub(m.queued_at));
        }
        m.queued_at = 0;
    }
    fn note_wakeup(&mut self, ts: u64, tid: u32) {
        let m = self.memo_mut(tid);
        if m.queued_at == 0 {
            m.queued_at = ts;
        }
    }
    /// The `run_delay` a coded sched entity is predicted to carry; the residual is stored.
    fn predicted_run_delay(&mut self, tid: u32) -> u64 {
        let m = self.memo_mut(tid);
        let p = m.se.run_delay.unwrap_or(0).wrapping_add(m.waited);
        m.waited = 0;
        p
    }
}

/// The run time a vruntime advance implies: the scheduler advances vruntime by
/// `delta_exec * 1024 / weight`, so for a nice-0 task the two deltas are equal and the
/// residual stored is 0. Wrapping integer arithmetic, identical in encoder and decoder.
fn exec_from_vruntime(vr_delta: i64, weight: u32) -> i64 {
    if weight == 1024 || weight == 0 {
        return vr_delta;
    }
    (vr_delta as i128 * weight as i128 / 1024) as i64
}

/// EEVDF sets `deadline = vruntime + slice * 1024 / weight` when it picks a new slice, so
/// the deadline usually costs one flag bit.
fn predicted_deadline(vruntime: u64, slice: Option<u64>, weight: u32) -> Option<u64> {
    let slice = slice?;
    let scaled = if weight == 1024 || weight == 0 {
        slice
    } else {
        (slice as u128 * 1024 / weight as u128) as u64
    };
    Some(vruntime.wrapping_add(scaled))
}

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
    fn se(&mut self, tid: u32, se: &SchedEntity) {
        let old = self.st.memo(tid).se;
        if *se == old {
            // The usual switch-in: nothing changed while the task was off the CPU.
            self.byte(TAG, 64);
            return;
        }
        let mut flags = 0u8;
        if se.weight == old.weight {
            flags |= 1;
        }
        if se.deadline.is_some() {
            flags |= 2;
        }
        if se.vlag.is_some() {
            flags |= 4;
        }
        if se.slice.is_some() {
            flags |= 8;
            if se.slice == old.slice {
                flags |= 16;
            }
        }
        let predicted = predicted_deadline(se.vruntime, se.slice, se.weight);
        if se.deadline.is_some() && se.deadline == predicted {
            flags |= 32;
        }
        if se.run_delay.is_some() {
            flags |= SE_HAS_RUN_DELAY;
        }
        self.byte(TAG, flags);
        if flags & 1 == 0 {
            self.u(SE, se.weight as u64);
        }
        let vr_delta = se.vruntime.wrapping_sub(old.vruntime) as i64;
        self.i(SE, vr_delta);
        let exec_delta = se.sum_exec_runtime.wrapping_sub(old.sum_exec_runtime) as i64;
        self.i(
            SE,
            exec_delta.wrapping_sub(exec_from_vruntime(vr_delta, se.weight)),
        );
        if let Some(l) = se.vlag {
            self.i(SE, l);
        }
        if let (Some(s), true) = (se.slice, flags & 16 == 0) {
            self.u(SE, s);
        }
        if let (Some(d), true) = (se.deadline, flags & 32 == 0) {
            self.i(
                SE,
                d.wrapping_sub(old.deadline.unwrap_or(se.vruntime)) as i64,
            );
        }
        if let Some(r) = se.run_delay {
            let predicted = self.st.predicted_run_delay(tid);
            self.i(SE, r.wrapping_sub(predicted) as i64);
        }
        self.st.memo_mut(tid).se = *se;
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
            Event::SchedSwitch(e) => {
                let prev = self.st.memo(e.prev_tid);
                let mut flags = 0u8;
                if e.prev_tid == self.st.current(e.cpu) {
                    flags |= 1;
                }
                if e.prev_pid == prev.pid {
                    flags |= 2;
                }
                if e.prev_comm == prev.comm {
                    flags |= 4;
                }
                if e.prev_se.is_some() {
                    flags |= 32;
                }
                if e.next_se.is_some() {
                    flags |= 64;
                }
                if e.prev_state == 0 {
                    flags |= 128;
                }
                // next's memo is read after prev's is updated: prev and next may be one tid.
                self.tag(K_SCHED_SWITCH, Some(e.cpu));
                self.ts(e.ts);
                {
                    let m = self.st.memo_mut(e.prev_tid);
                    m.pid = e.prev_pid;
                    m.comm = e.prev_comm;
                }
                let next = self.st.memo(e.next_tid);
                if e.next_pid == next.pid {
                    flags |= 8;
                }
                if e.next_comm == next.comm {
                    flags |= 16;
                }
                self.byte(TAG, flags);
                if flags & 1 == 0 {
                    self.u(ID, e.prev_tid as u64);
                }
                if flags & 2 == 0 {
                    self.u(ID, e.prev_pid as u64);
                }
                if flags & 4 == 0 {
                    self.comm(&e.prev_comm);
                }
                if flags & 128 == 0 {
                    self.u(VAL, e.prev_state);
                }
                self.u(ID, e.next_tid as u64);
                if flags & 8 == 0 {
                    self.u(ID, e.next_pid as u64);
                }
                if flags & 16 == 0 {
                    self.comm(&e.next_comm);
                }
                {
                    let m = self.st.memo_mut(e.next_tid);
                    m.pid = e.next_pid;
                    m.comm = e.next_comm;
                }
                if let Some(se) = &e.prev_se {
                    self.se(e.prev_tid, se);
                }
                if let Some(se) = &e.next_se {
                    self.se(e.next_tid, se);
                }
                self.st
                    .note_switch(e.ts, e.prev_tid, e.prev_state == 0, e.next_tid);
                self.st.current.insert(e.cpu, e.next_tid);
            }
            Event::Wakeup(e) => {
                self.tag(K_WAKEUP, Some(e.cpu));
                self.ts(e.ts);
                let mut flags = 0u8;
                if e.pid == self.st.memo(e.tid).pid {
                    flags |= 1;
                }
                if e.target_cpu == e.cpu {
                    flags |= 2;
                }
                if e.waker_tid == self.st.current(e.cpu) {
                    flags |= 4;
                }
                self.byte(TAG, flags);
                self.u(ID, e.tid as u64);
                if flags & 1 == 0 {
                    self.u(ID, e.pid as u64);
                }
                if flags & 2 == 0 {
                    self.u(ID, e.target_cpu as u64);
                }
                if flags & 4 == 0 {
                    self.u(ID, e.waker_tid as u64);
                }
                self.st.memo_mut(e.tid).pid = e.pid;
                self.st.note_wakeup(e.ts, e.tid);
            }
            Event::Migrate(e) => {
                self.tag(K_MIGRATE, Some(e.cpu));
                self.ts(e.ts);
                self.u(ID, e.tid as u64);
                self.u(ID, e.pid as u64);
                self.u(ID, e.orig_cpu as u64);
                self.u(ID, e.dest_cpu as u64);
                self.st.memo_mut(e.tid).pid = e.pid;
            }
            Event::TaskExit(e) => {
                self.tag(K_TASK_EXIT, Some(e.cpu));
                self.ts(e.ts);
                self.u(ID, e.tid as u64);
                self.u(ID, e.pid as u64);
            }
            Event::KvmEntry(e) => {
                self.tag(K_KVM_ENTRY, Some(e.cpu));
                self.ts(e.ts);
                let (flags, tid_known) = self.vcpu_flags(e.cpu, e.tid, e.vcpu_id);
                self.byte(TAG, flags);
                self.vcpu_fields(flags, tid_known, e.tid, e.vcpu_id);
            }
            Event::KvmExit(e) => {
                self.tag(K_KVM_EXIT, Some(e.cpu));
                self.ts(e.ts);
                let (mut flags, tid_known) = self.vcpu_flags(e.cpu, e.tid, e.vcpu_id);
                flags |= match e.isa {
                    ExitIsa::Vmx => 0,
                    ExitIsa::Svm => 4,
                    ExitIsa::Unknown => 8,
                };
                self.byte(TAG, flags);
                self.vcpu_fields(flags, tid_known, e.tid, e.vcpu_id);
                self.u(VAL, e.reason as u64);
            }
            Event::UserspaceExit(e) => {
                self.tag(K_USERSPACE_EXIT, Some(e.cpu));
                self.ts(e.ts);
                let mut flags = 0u8;
                if e.tid == self.st.current(e.cpu) {
                    flags |= 1;
                }
                if e.errno == 0 {
                    flags |= 2;
                }
                self.byte(TAG, flags);
                if flags & 1 == 0 {
                    self.u(ID, e.tid as u64);
                }
                self.u(VAL, e.reason as u64);
                if flags & 2 == 0 {
                    self.i(VAL, e.errno as i64);
                }
            }
            Event::Pio(e) => {
                self.tag(K_PIO, Some(e.cpu));
                self.ts(e.ts);
                let mut flags = u8::from(e.tid == self.st.current(e.cpu));
                let pio = (e.rw, e.port, e.size, e.val);
                if pio == self.st.memo(e.tid).pio {
                    flags |= 2;
                }
                self.byte(TAG, flags);
                if flags & 1 == 0 {
                    self.u(ID, e.tid as u64);
                }
                if flags & 2 == 0 {
                    self.u(VAL, e.rw as u64);
                    self.u(VAL, e.port as u64);
                    self.u(VAL, e.size as u64);
                    self.u(VAL, e.val as u64);
                }
                self.st.memo_mut(e.tid).pio = pio;
            }
            Event::CrossCall(e) => {
                self.tag(K_CROSS_CALL, Some(e.cpu));
                self.ts(e.ts);
                let mut flags = match e.phase {
                    CrossCallPhase::Queue => 0u8,
                    CrossCallPhase::Entry => 1,
                    CrossCallPhase::Exit => 2,
                };
                if e.is_vmclear {
                    flags |= 4;
                }
                if e.target_cpu == e.cpu {
                    flags |= 8;
                }
                if e.tid == self.st.current(e.cpu) {
                    flags |= 16;
                }
                self.byte(TAG, flags);
                self.u(VAL, e.func);
                self.u(VAL, e.csd);
                if flags & 8 == 0 {
                    self.u(ID, e.target_cpu as u64);
                }
                if flags & 16 == 0 {
                    self.u(ID, e.tid as u64);
                }
            }
            Event::GuestGap(e) => {
                self.tag(K_GUEST_GAP, None);
                let owner = (e.vm, e.vcpu);
                let flags = u8::from(owner == self.st.memo(e.tid).gap_owner);
                self.byte(TAG, flags);
                self.i(TS, e.end.wrapping_sub(self.st.prev_gap_end) as i64);
                self.st.prev_gap_end = e.end;
                self.u(TS, e.end.wrapping_sub(e.start));
                self.u(ID, e.tid as u64);
                if flags & 1 == 0 {
                    self.u(ID, e.vm as u64);
                    self.u(ID, e.vcpu as u64);
                }
                self.st.memo_mut(e.tid).gap_owner = owner;
            }
            Event::Lost(e) => {
                self.tag(K_LOST, Some(e.cpu));
                self.ts(e.ts);
                self.u(VAL, e.count);
            }
            Event::TaskInfo(e) => {
                // A task-info record has no CPU: the tag's high nibble says whether the
                // thread's schedstat at tracking start follows.
                self.byte(
                    TAG,
                    K_TASK_INFO
                        | if e.schedstat.is_some() {
                            TASK_INFO_HAS_SCHEDSTAT
                        } else {
                            0
                        },
                );
                self.ts(e.ts);
                self.u(ID, e.tid as u64);
                self.u(ID, e.pid as u64);
                self.comm(&e.comm);
                self.string(&e.vm);
                self.u(ID, e.vcpu.map_or(0, |v| v as u64 + 1));
                self.i(VAL, e.nice as i64);
                if let Some(s) = e.schedstat {
                    self.u(SE, s.run_ns);
                    self.u(SE, s.wait_ns);
                }
                let m = self.st.memo_mut(e.tid);
                m.pid = e.pid;
                m.comm = e.comm;
            }
            Event::VmEnded(e) => {
                self.tag(K_VM_ENDED, None);
                self.ts(e.ts);
                self.u(ID, e.pid as u64);
                self.string(&e.vm);
            }
            Event::ObservationEnd(e) => {
                self.tag(K_OBSERVATION_END, None);
                self.ts(e.ts);
            }
            Event::CounterSample(e) => self.counter_sample(e),
        }
    }

    fn vcpu_flags(&self, cpu: u32, tid: u32, vcpu_id: u32) -> (u8, bool) {
        let tid_known = tid == self.st.current(cpu);
        let mut flags = u8::from(tid_known);
        if vcpu_id == self.st.memo(tid).vcpu_id {
            flags |= 2;
        }
        (flags, tid_known)
    }
    fn vcpu_fields(&mut self, flags: u8, tid_known: bool, tid: u32, vcpu_id: u32) {
        if !tid_known {
            self.u(ID, tid as u64);
        }
        if flags & 2 == 0 {
            self.u(ID, vcpu_id as u64);
        }
        self.st.memo_mut(tid).vcpu_id = vcpu_id;
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
    fn se(&mut self, tid: u32) -> DResult<SchedEntity> {
        let old = self.st.memo(tid).se;
        let flags = self.byte(TAG)?;
        if flags == 64 {
            return Ok(old);
        }
        if flags & !(63 | SE_HAS_RUN_DELAY) != 0 || (flags & 32 != 0 && flags & 2 == 0) {
            return Err(DecodeError("unknown sched entity flags"));
        }
        let weight = if flags & 1 != 0 {
            old.weight
        } else {
            self.u32(SE)?
        };
        let vr_delta = self.i(SE)?;
        let vruntime = old.vruntime.wrapping_add(vr_delta as u64);
        let exec_delta = self
            .i(SE)?
            .wrapping_add(exec_from_vruntime(vr_delta, weight));
        let sum_exec_runtime = old.sum_exec_runtime.wrapping_add(exec_delta as u64);
        let vlag = if flags & 4 != 0 {
            Some(self.i(SE)?)
        } else {
            None
        };
        let slice = match (flags & 8 != 0, flags & 16 != 0) {
            (false, false) => None,
            (false, true) => return Err(DecodeError("slice flags")),
            (true, true) => Some(old.slice.ok_or(DecodeError("no previous slice"))?),
            (true, false) => Some(self.u(SE)?),
        };
        let deadline = match (flags & 2 != 0, flags & 32 != 0) {
            (false, _) => None,
            (true, true) => Some(
                predicted_deadline(vruntime, slice, weight)
                    .ok_or(DecodeError("deadline predicted without a slice"))?,
            ),
            (true, false) => Some(
                old.deadline
                    .unwrap_or(vruntime)
                    .wrapping_add(self.i(SE)? as u64),
            ),
        };
        let run_delay = if flags & SE_HAS_RUN_DELAY != 0 {
            let predicted = self.st.predicted_run_delay(tid);
            Some(predicted.wrapping_add(self.i(SE)? as u64))
        } else {
            None
        };
        let se = SchedEntity {
            vruntime,
            weight,
            sum_exec_runtime,
            deadline,
            vlag,
            slice,
            run_delay,
        };
        self.st.memo_mut(tid).se = se;
        Ok(se)
    }
    fn vcpu_fields(&mut self, flags: u8, cpu: u32) -> DResult<(u32, u32)> {
        let tid = if flags & 1 != 0 {
            self.st.current(cpu)
        } else {
            self.u32(ID)?
        };
        let vcpu_id = if flags & 2 != 0 {
            self.st.memo(tid).vcpu_id
        } else {
            self.u32(ID)?
        };
        self.st.memo_mut(tid).vcpu_id = vcpu_id;
        Ok((tid, vcpu_id))
    }

    /// The next event, `None` at the end of the chunk.
    pub(crate) fn next_event(&mut self) -> DResult<Option<Event>> {
        if self.pos[TAG] >= self.bufs[TAG].len() {
            // Every stream must be used up exactly: anything left over is corruption.
            if (0..STREAMS).any(|s| self.pos[s] != self.bufs[s].len()) {
                return Err(DecodeError("stream bytes left over"));
            }
            return Ok(None);
        }
        let tag = self.byte(TAG)?;
        let kind = tag & 0x0f;
        let has_cpu = !matches!(
            kind,
            K_GUEST_GAP | K_TASK_INFO | K_VM_ENDED | K_OBSERVATION_END
        );
        let cpu = match (tag >> 4, has_cpu) {
            (0, true) => self.u32(ID)?,
            (n, true) => u32::from(n - 1),
            (0, false) => 0,
            _ if tag == K_TASK_INFO | TASK_INFO_HAS_SCHEDSTAT => 0,
            (_, false) => return Err(DecodeError("cpu on an event without one")),
        };
        let ev = match kind {
            K_SCHED_SWITCH => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                let prev_tid = if flags & 1 != 0 {
                    self.st.current(cpu)
                } else {
                    self.u32(ID)?
                };
                let prev = self.st.memo(prev_tid);
                let prev_pid = if flags & 2 != 0 {
                    prev.pid
                } else {
                    self.u32(ID)?
                };
                let prev_comm = if flags & 4 != 0 {
                    prev.comm
                } else {
                    self.comm()?
                };
                let prev_state = if flags & 128 != 0 { 0 } else { self.u(VAL)? };
                {
                    let m = self.st.memo_mut(prev_tid);
                    m.pid = prev_pid;
                    m.comm = prev_comm;
                }
                let next_tid = self.u32(ID)?;
                let next = self.st.memo(next_tid);
                let next_pid = if flags & 8 != 0 {
                    next.pid
                } else {
                    self.u32(ID)?
                };
                let next_comm = if flags & 16 != 0 {
                    next.comm
                } else {
                    self.comm()?
                };
                {
                    let m = self.st.memo_mut(next_tid);
                    m.pid = next_pid;
                    m.comm = next_comm;
                }
                let prev_se = if flags & 32 != 0 {
                    Some(self.se(prev_tid)?)
                } else {
                    None
                };
                let next_se = if flags & 64 != 0 {
                    Some(self.se(next_tid)?)
                } else {
                    None
                };
                self.st.note_switch(ts, prev_tid, prev_state == 0, next_tid);
                self.st.current.insert(cpu, next_tid);
                Event::SchedSwitch(SchedSwitch {
                    ts,
                    cpu,
                    prev_tid,
                    prev_pid,
                    prev_comm,
                    prev_state,
                    next_tid,
                    next_pid,
                    next_comm,
                    prev_se,
                    next_se,
                })
            }
            K_WAKEUP => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                if flags & !7 != 0 {
                    return Err(DecodeError("unknown wakeup flags"));
                }
                let tid = self.u32(ID)?;
                let pid = if flags & 1 != 0 {
                    self.st.memo(tid).pid
                } else {
                    self.u32(ID)?
                };
                let target_cpu = if flags & 2 != 0 { cpu } else { self.u32(ID)? };
                let waker_tid = if flags & 4 != 0 {
                    self.st.current(cpu)
                } else {
                    self.u32(ID)?
                };
                self.st.memo_mut(tid).pid = pid;
                self.st.note_wakeup(ts, tid);
                Event::Wakeup(Wakeup {
                    ts,
                    cpu,
                    tid,
                    pid,
                    target_cpu,
                    waker_tid,
                })
            }
            K_MIGRATE => {
                let ts = self.ts()?;
                let tid = self.u32(ID)?;
                let pid = self.u32(ID)?;
                let orig_cpu = self.u32(ID)?;
                let dest_cpu = self.u32(ID)?;
                self.st.memo_mut(tid).pid = pid;
                Event::Migrate(Migrate {
                    ts,
                    cpu,
                    tid,
                    pid,
                    orig_cpu,
                    dest_cpu,
                })
            }
            K_TASK_EXIT => {
                let ts = self.ts()?;
                let tid = self.u32(ID)?;
                let pid = self.u32(ID)?;
                Event::TaskExit(TaskExit { ts, cpu, tid, pid })
            }
            K_KVM_ENTRY => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                if flags & !3 != 0 {
                    return Err(DecodeError("unknown kvm_entry flags"));
                }
                let (tid, vcpu_id) = self.vcpu_fields(flags, cpu)?;
                Event::KvmEntry(KvmEntry {
                    ts,
                    cpu,
                    tid,
                    vcpu_id,
                })
            }
            K_KVM_EXIT => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                let isa = match flags & 12 {
                    0 => ExitIsa::Vmx,
                    4 => ExitIsa::Svm,
                    8 => ExitIsa::Unknown,
                    _ => return Err(DecodeError("unknown exit isa")),
                };
                if flags & !15 != 0 {
                    return Err(DecodeError("unknown kvm_exit flags"));
                }
                let (tid, vcpu_id) = self.vcpu_fields(flags, cpu)?;
                let reason = self.u32(VAL)?;
                Event::KvmExit(KvmExit {
                    ts,
                    cpu,
                    tid,
                    vcpu_id,
                    reason,
                    isa,
                })
            }
            K_USERSPACE_EXIT => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                if flags & !3 != 0 {
                    return Err(DecodeError("unknown userspace_exit flags"));
                }
                let tid = if flags & 1 != 0 {
                    self.st.current(cpu)
                } else {
                    self.u32(ID)?
                };
                let reason = self.u32(VAL)?;
                let errno = if flags & 2 != 0 {
                    0
                } else {
                    i32::try_from(self.i(VAL)?).map_err(|_| DecodeError("errno out of range"))?
                };
                Event::UserspaceExit(UserspaceExit {
                    ts,
                    cpu,
                    tid,
                    reason,
                    errno,
                })
            }
            K_PIO => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                if flags & !3 != 0 {
                    return Err(DecodeError("unknown pio flags"));
                }
                let tid = if flags & 1 != 0 {
                    self.st.current(cpu)
                } else {
                    self.u32(ID)?
                };
                let (rw, port, size, val) = if flags & 2 != 0 {
                    self.st.memo(tid).pio
                } else {
                    (
                        self.u32(VAL)?,
                        self.u32(VAL)?,
                        self.u32(VAL)?,
                        self.u32(VAL)?,
                    )
                };
                self.st.memo_mut(tid).pio = (rw, port, size, val);
                Event::Pio(Pio {
                    ts,
                    cpu,
                    tid,
                    rw,
                    port,
                    size,
                    val,
                })
            }
            K_CROSS_CALL => {
                let ts = self.ts()?;
                let flags = self.byte(TAG)?;
                let phase = match flags & 3 {
                    0 => CrossCallPhase::Queue,
                    1 => CrossCallPhase::Entry,
                    2 => CrossCallPhase::Exit,
                    _ => return Err(DecodeError("unknown cross-call phase")),
                };
                if flags & !31 != 0 {
                    return Err(DecodeError("unknown cross-call flags"));
                }
                let func = self.u(VAL)?;
                let csd = self.u(VAL)?;
                let target_cpu = if flags & 8 != 0 { cpu } else { self.u32(ID)? };
                let tid = if flags & 16 != 0 {
                    self.st.current(cpu)
                } else {
                    self.u32(ID)?
                };
                Event::CrossCall(CrossCall {
                    ts,
                    cpu,
                    phase,
                    func,
                    csd,
                    target_cpu,
                    tid,
                    is_vmclear: flags & 4 != 0,
                })
            }
            K_GUEST_GAP => {
                let flags = self.byte(TAG)?;
                if flags & !1 != 0 {
                    return Err(DecodeError("unknown guest gap flags"));
                }
                let end = self.st.prev_gap_end.wrapping_add(self.i(TS)? as u64);
                self.st.prev_gap_end = end;
                let start = end.wrapping_sub(self.u(TS)?);
                let tid = self.u32(ID)?;
                let (vm, vcpu) = if flags & 1 != 0 {
                    self.st.memo(tid).gap_owner
                } else {
                    (self.u32(ID)?, self.u32(ID)?)
                };
                self.st.memo_mut(tid).gap_owner = (vm, vcpu);
                Event::GuestGap(GuestGap {
                    start,
                    end,
                    tid,
                    vm,
                    vcpu,
                })
            }
            K_LOST => {
                let ts = self.ts()?;
                let count = self.u(VAL)?;
                Event::Lost(Lost { ts, cpu, count })
            }
            K_TASK_INFO => {
                let ts = self.ts()?;
                let tid = self.u32(ID)?;
                let pid = self.u32(ID)?;
                let comm = self.comm()?;
                let vm = self.string()?;
                let vcpu = match self.u(ID)? {
                    0 => None,
                    v => Some(u32::try_from(v - 1).map_err(|_| DecodeError("vcpu index"))?),
                };
                let nice = i32::try_from(self.i(VAL)?).map_err(|_| DecodeError("nice"))?;
                let schedstat = if tag & TASK_INFO_HAS_SCHEDSTAT != 0 {
                    Some(Schedstat {
                        run_ns: self.u(SE)?,
                        wait_ns: self.u(SE)?,
                    })
                } else {
                    None
                };
                let m = self.st.memo_mut(tid);
                m.pid = pid;
                m.comm = comm;
                Event::TaskInfo(TaskInfo {
                    ts,
                    tid,
                    pid,
                    comm,
                    vm,
                    vcpu,
                    nice,
                    schedstat,
                })
            }
            K_VM_ENDED => {
                let ts = self.ts()?;
                let pid = self.u32(ID)?;
                let vm = self.string()?;
                Event::VmEnded(VmEnded { ts, pid, vm })
            }
            K_OBSERVATION_END => Event::ObservationEnd(ObservationEnd { ts: self.ts()? }),
            K_COUNTER_SAMPLE => self.counter_sample(cpu)?,
            _ => return Err(DecodeError("unknown event kind")),
        };
        Ok(Some(ev))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            }),
            Event::Lost(Lost {
                ts: 3,
                cpu: u32::MAX,
                count: u64::MAX,
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
