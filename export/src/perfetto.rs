//! Perfetto protobuf (`.pftrace`), built with Perfetto's own schema (`perfetto_protos`).
//!
//! Scheduler events become ftrace events in `FtraceEventBundle`s per CPU, exactly as
//! Perfetto's own `traced_probes` writes them, so ui.perfetto.dev and trace_processor fill
//! their `sched`/`thread_state` tables and draw CPU tracks natively. What only kvmscope knows
//! (vCPU states, switches, vruntime, resume latency, guest gaps) goes on TrackEvent tracks
//! under each VM's process, written from the model's transitions (see `fold`), never
//! re-derived from the events. On VT-x, each VMCLEAR IPI a migrating vCPU costs is a flow from
//! an instant on the vCPU's state track (queued as it was loaded on its new pCPU) to the
//! `__loaded_vmcs_clear` slice on the old pCPU's VMCLEAR track.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;

use model::trace_file::TraceHeader;
use model::{Comm, Event, Transition};
use perfetto_protos::counter_descriptor::{counter_descriptor::Unit, CounterDescriptor};
use perfetto_protos::ftrace_event::FtraceEvent;
use perfetto_protos::ftrace_event_bundle::FtraceEventBundle;
use perfetto_protos::process_descriptor::ProcessDescriptor;
use perfetto_protos::process_tree::{process_tree, ProcessTree};
use perfetto_protos::sched::{
    SchedMigrateTaskFtraceEvent, SchedProcessExitFtraceEvent, SchedSwitchFtraceEvent,
    SchedWakingFtraceEvent,
};
use perfetto_protos::thread_descriptor::ThreadDescriptor;
use perfetto_protos::trace::Trace;
use perfetto_protos::trace_packet::{trace_packet::SequenceFlags, TracePacket};
use perfetto_protos::track_descriptor::{
    track_descriptor::Static_or_dynamic_name, TrackDescriptor,
};
use perfetto_protos::track_event::{track_event::Type, TrackEvent};
use protobuf::{EnumOrUnknown, Message, MessageField};

use crate::fold::{Fold, ThreadLabel};
use crate::ExportError;

/// The kernel's default priority for a nice-0 task; the recording does not carry prio.
const DEFAULT_PRIO: i32 = 120;
/// Our TrackEvent packets' sequence.
const SEQUENCE_ID: u32 = 1;
/// Packets buffered before a write; concatenated `Trace` messages form one valid trace.
const PACKETS_PER_WRITE: usize = 512;
/// ftrace events per bundle, like traced_probes' page-sized bundles.
const EVENTS_PER_BUNDLE: usize = 1024;

/// What the export produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PerfettoStats {
    pub events_in: u64,
    pub packets: u64,
    pub ftrace_events: u64,
    pub sched_switches: u64,
    pub track_events: u64,
    pub cpus: u32,
    pub vcpu_tracks: u32,
    /// VMCLEAR IPIs drawn as flows (one per `Transition::Vmclear`).
    pub vmclear_flows: u64,
}

/// Streams a recording into Perfetto's protobuf format.
pub struct PerfettoWriter<W: Write> {
    out: W,
    trace: Trace,
    fold: Fold,
    transitions: Vec<Transition>,
    /// Last comm by tid, for the ftrace events that carry only a tid.
    comms: HashMap<u32, Comm>,
    bundles: BTreeMap<u32, Vec<FtraceEvent>>,
    declared_processes: HashSet<u32>,
    /// By thread slot.
    declared_threads: HashMap<u32, ThreadLabel>,
    open_state: HashSet<u32>,
    switches: HashMap<u32, i64>,
    /// pCPUs whose VMCLEAR track is declared.
    vmclear_tracks: HashSet<u32>,
    first_sequence_packet: bool,
    cpus: HashSet<u32>,
    stats: PerfettoStats,
}

/// A track of thread slot `thread` (slots, not tids: a reused tid is another thread).
fn uuid(thread: u32, kind: u64) -> u64 {
    (1u64 << 40) | ((thread as u64) << 4) | kind
}
fn process_uuid(pid: u32) -> u64 {
    (2u64 << 40) | pid as u64
}
/// The track of the VMCLEARs pCPU `cpu` ran for vCPUs that left it.
fn vmclear_uuid(cpu: u32) -> u64 {
    (3u64 << 40) | cpu as u64
}
const STATE: u64 = 1;
const VRUNTIME: u64 = 2;
const RESUME_SAME: u64 = 3;
const GAPS: u64 = 4;
const RESUME_MIGRATED: u64 = 5;
const SWITCHES: u64 = 6;

/// Counter tracks per thread: kind, name suffix, unit.
const COUNTERS: [(u64, &str, Unit); 4] = [
    (VRUNTIME, "vruntime", Unit::UNIT_TIME_NS),
    (
        RESUME_SAME,
        "resume latency (same pCPU)",
        Unit::UNIT_TIME_NS,
    ),
    (
        RESUME_MIGRATED,
        "resume latency (migrated)",
        Unit::UNIT_TIME_NS,
    ),
    (SWITCHES, "switches", Unit::UNIT_COUNT),
];

impl<W: Write> PerfettoWriter<W> {
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, ExportError> {
        let mut w = PerfettoWriter {
            out,
            trace: Trace::new(),
            fold: Fold::new(),
            transitions: Vec::new(),
            comms: HashMap::new(),
            bundles: BTreeMap::new(),
            declared_processes: HashSet::new(),
            declared_threads: HashMap::new(),
            open_state: HashSet::new(),
            switches: HashMap::new(),
            vmclear_tracks: HashSet::new(),
            first_sequence_packet: true,
            cpus: HashSet::new(),
            stats: PerfettoStats::default(),
        };
        // Name the tracked processes and threads up front so trace_processor labels them.
        let mut tree = ProcessTree::new();
        for p in &header.processes {
            let mut proc_ = process_tree::Process::new();
            proc_.pid = Some(p.pid as i32);
            proc_.ppid = Some(0);
            proc_.cmdline = vec![p.vm.clone()];
            tree.processes.push(proc_);
            for t in &p.threads {
                let mut th = process_tree::Thread::new();
                th.tid = Some(t.tid as i32);
                th.tgid = Some(p.pid as i32);
                th.name = Some(t.comm.clone());
                tree.threads.push(th);
            }
        }
        let mut packet = TracePacket::new();
        packet.set_process_tree(tree);
        w.push_packet(packet)?;
        Ok(w)
    }

    /// Adds one event.
    pub fn push(&mut self, ev: &Event) -> Result<(), ExportError> {
        self.stats.events_in += 1;
        self.ftrace(ev)?;
        let mut tx = std::mem::take(&mut self.transitions);
        self.fold.push(ev, &mut tx);
        let written = tx.drain(..).try_for_each(|t| self.transition(t));
        self.transitions = tx;
        written
    }

    /// Flushes everything, closes open slices and returns the inner writer and figures.
    pub fn finish(mut self) -> Result<(W, PerfettoStats), ExportError> {
        let cpus: Vec<u32> = self.bundles.keys().copied().collect();
        for cpu in cpus {
            self.flush_bundle(cpu)?;
        }
        let mut tx = std::mem::take(&mut self.transitions);
        let end = self.fold.finish(&mut tx);
        for t in tx.drain(..) {
            self.transition(t)?;
        }
        // Sorted so the same input gives the same file (a hash set iterates in any order).
        let mut open: Vec<u32> = self.open_state.iter().copied().collect();
        open.sort_unstable();
        for thread in open {
            self.track_event(uuid(thread, STATE), end, Type::TYPE_SLICE_END, None, None)?;
        }
        self.write_out()?;
        self.out.flush()?;
        self.stats.cpus = self.cpus.len() as u32;
        Ok((self.out, self.stats))
    }

    fn ftrace(&mut self, ev: &Event) -> Result<(), ExportError> {
        let mut fe = FtraceEvent::new();
        let cpu = match ev {
            Event::TaskInfo(t) => {
                self.comms.insert(t.tid, t.comm);
                return Ok(());
            }
            Event::SchedSwitch(s) => {
                self.comms.insert(s.prev_tid, s.prev_comm);
                self.comms.insert(s.next_tid, s.next_comm);
                let mut e = SchedSwitchFtraceEvent::new();
                e.prev_comm = Some(s.prev_comm.to_string());
                e.prev_pid = Some(s.prev_tid as i32);
                e.prev_prio = Some(DEFAULT_PRIO);
                e.prev_state = Some(s.prev_task_state().report() as i64);
                e.next_comm = Some(s.next_comm.to_string());
                e.next_pid = Some(s.next_tid as i32);
                e.next_prio = Some(DEFAULT_PRIO);
                fe.pid = Some(s.prev_tid);
                fe.set_sched_switch(e);
                self.stats.sched_switches += 1;
                s.cpu
            }
            Event::Wakeup(w) => {
                let mut e = SchedWakingFtraceEvent::new();
                e.comm = Some(self.comm(w.tid));
                e.pid = Some(w.tid as i32);
                e.prio = Some(DEFAULT_PRIO);
                e.success = Some(1);
                e.target_cpu = Some(w.target_cpu as i32);
                fe.pid = Some(w.waker_tid);
                fe.set_sched_waking(e);
                w.cpu
            }
            Event::Migrate(m) => {
                let mut e = SchedMigrateTaskFtraceEvent::new();
                e.comm = Some(self.comm(m.tid));
                e.pid = Some(m.tid as i32);
                e.prio = Some(DEFAULT_PRIO);
                e.orig_cpu = Some(m.orig_cpu as i32);
                e.dest_cpu = Some(m.dest_cpu as i32);
                fe.pid = Some(m.tid);
                fe.set_sched_migrate_task(e);
                m.cpu
            }
            Event::TaskExit(x) => {
                let mut e = SchedProcessExitFtraceEvent::new();
                e.comm = Some(self.comm(x.tid));
                e.pid = Some(x.tid as i32);
                e.tgid = Some(x.pid as i32);
                e.prio = Some(DEFAULT_PRIO);
                fe.pid = Some(x.tid);
                fe.set_sched_process_exit(e);
                x.cpu
            }
            _ => return Ok(()),
        };
        fe.timestamp = Some(ev.ts());
        self.cpus.insert(cpu);
        self.stats.ftrace_events += 1;
        let bundle = self.bundles.entry(cpu).or_default();
        bundle.push(fe);
        if bundle.len() >= EVENTS_PER_BUNDLE {
            self.flush_bundle(cpu)?;
        }
        Ok(())
    }

    fn comm(&self, tid: u32) -> String {
        self.comms
            .get(&tid)
            .copied()
            .unwrap_or_default()
            .to_string()
    }

    fn flush_bundle(&mut self, cpu: u32) -> Result<(), ExportError> {
        let Some(events) = self.bundles.remove(&cpu) else {
            return Ok(());
        };
        if events.is_empty() {
            return Ok(());
        }
        let mut bundle = FtraceEventBundle::new();
        bundle.cpu = Some(cpu);
        bundle.event = events;
        let mut packet = TracePacket::new();
        packet.set_ftrace_events(bundle);
        self.push_packet(packet)
    }

    fn transition(&mut self, t: Transition) -> Result<(), ExportError> {
        match t {
            Transition::Thread { thread, .. } => {
                if let Some(label) = self.fold.thread(thread).cloned() {
                    self.declare(thread, label)?;
                }
            }
            Transition::State {
                ts, thread, state, ..
            } => self.state_slice(thread, ts, state.name())?,
            Transition::Exited { ts, thread } => self.state_slice(thread, ts, "exited")?,
            Transition::SwitchOut { ts, thread, .. } => {
                let n = self.switches.entry(thread).or_default();
                *n += 1;
                let n = *n;
                self.track_event(
                    uuid(thread, SWITCHES),
                    ts,
                    Type::TYPE_COUNTER,
                    None,
                    Some(n),
                )?;
            }
            Transition::Vruntime {
                ts,
                thread,
                vruntime,
            } => {
                self.track_event(
                    uuid(thread, VRUNTIME),
                    ts,
                    Type::TYPE_COUNTER,
                    None,
                    Some(vruntime as i64),
                )?;
            }
            Transition::Resume {
                ts,
                thread,
                latency_ns,
                migrated,
            } => {
                let kind = if migrated {
                    RESUME_MIGRATED
                } else {
                    RESUME_SAME
                };
                self.track_event(
                    uuid(thread, kind),
                    ts,
                    Type::TYPE_COUNTER,
                    None,
                    Some(latency_ns as i64),
                )?;
            }
            Transition::GuestGap {
                thread, start, end, ..
            } => {
                let track = uuid(thread, GAPS);
                self.track_event(
                    track,
                    start,
                    Type::TYPE_SLICE_BEGIN,
                    Some("off CPU (guest's view)"),
                    None,
                )?;
                self.track_event(track, end, Type::TYPE_SLICE_END, None, None)?;
            }
            Transition::Vmclear {
                ts,
                thread,
                queued,
                entered,
                pcpu,
                old_pcpu,
            } => self.vmclear_flow(thread, ts, queued, entered, pcpu, old_pcpu)?,
            // The CPU tracks are the ftrace events; exits are not drawn.
            Transition::Exit { .. }
            | Transition::Entry { .. }
            | Transition::Pcpu { .. }
            | Transition::Weight { .. }
            | Transition::Affinity { .. }
            | Transition::TaskGroup { .. }
            | Transition::OtherSwitchOut { .. } => {}
        }
        Ok(())
    }

    /// One VMCLEAR IPI: an instant on the vCPU's state track when it was queued, a slice on
    /// the old pCPU's VMCLEAR track while it ran there (an instant at its end when its start
    /// was not seen), joined by a flow.
    fn vmclear_flow(
        &mut self,
        thread: u32,
        ts: u64,
        queued: u64,
        entered: Option<u64>,
        pcpu: u32,
        old_pcpu: u32,
    ) -> Result<(), ExportError> {
        if self.vmclear_tracks.insert(old_pcpu) {
            let mut td = TrackDescriptor::new();
            td.uuid = Some(vmclear_uuid(old_pcpu));
            td.static_or_dynamic_name = Some(Static_or_dynamic_name::Name(format!(
                "pCPU {old_pcpu} VMCLEAR IPIs"
            )));
            self.descriptor(td)?;
        }
        self.stats.vmclear_flows += 1;
        let flow = self.stats.vmclear_flows;
        let label = self
            .fold
            .thread(thread)
            .map_or_else(|| format!("thread slot {thread}"), |v| v.label.clone());
        let mut queue = TrackEvent::new();
        queue.set_name(format!(
            "VMCLEAR IPI to pCPU {old_pcpu} (loaded on pCPU {pcpu})"
        ));
        queue.flow_ids.push(flow);
        self.track_event_with(uuid(thread, STATE), queued, Type::TYPE_INSTANT, queue)?;
        let mut clear = TrackEvent::new();
        clear.set_name(format!("__loaded_vmcs_clear ({label})"));
        clear.terminating_flow_ids.push(flow);
        let track = vmclear_uuid(old_pcpu);
        match entered {
            Some(entered) => {
                self.track_event_with(track, entered, Type::TYPE_SLICE_BEGIN, clear)?;
                self.track_event(track, ts, Type::TYPE_SLICE_END, None, None)
            }
            None => self.track_event_with(track, ts, Type::TYPE_INSTANT, clear),
        }
    }

    /// Ends the thread's open state slice at `ts` and begins one named `name`.
    fn state_slice(&mut self, thread: u32, ts: u64, name: &str) -> Result<(), ExportError> {
        let track = uuid(thread, STATE);
        if self.open_state.contains(&thread) {
            self.track_event(track, ts, Type::TYPE_SLICE_END, None, None)?;
        }
        self.track_event(track, ts, Type::TYPE_SLICE_BEGIN, Some(name), None)?;
        self.open_state.insert(thread);
        Ok(())
    }

    /// Track descriptors for a thread: its state track (a thread track, so it sits with the
    /// thread's scheduling lane) and counter/gap tracks under the VM's process.
    fn declare(&mut self, thread: u32, v: ThreadLabel) -> Result<(), ExportError> {
        if self.declared_threads.get(&thread) == Some(&v) {
            return Ok(());
        }
        if self.declared_processes.insert(v.pid) {
            let mut p = ProcessDescriptor::new();
            p.pid = Some(v.pid as i32);
            p.process_name = Some(v.vm.clone());
            let mut td = TrackDescriptor::new();
            td.uuid = Some(process_uuid(v.pid));
            td.process = MessageField::some(p);
            self.descriptor(td)?;
        }
        let label = v.label.clone();
        let mut t = ThreadDescriptor::new();
        t.pid = Some(v.pid as i32);
        t.tid = Some(v.tid as i32);
        t.thread_name = Some(v.comm.clone());
        let mut td = TrackDescriptor::new();
        td.uuid = Some(uuid(thread, STATE));
        td.thread = MessageField::some(t);
        td.static_or_dynamic_name = Some(Static_or_dynamic_name::Name(format!("{label} state")));
        self.descriptor(td)?;
        for (kind, name, unit) in COUNTERS {
            let mut c = CounterDescriptor::new();
            c.unit = Some(EnumOrUnknown::new(unit));
            let mut td = TrackDescriptor::new();
            td.uuid = Some(uuid(thread, kind));
            td.parent_uuid = Some(process_uuid(v.pid));
            td.static_or_dynamic_name =
                Some(Static_or_dynamic_name::Name(format!("{label} {name}")));
            td.counter = MessageField::some(c);
            self.descriptor(td)?;
        }
        let mut td = TrackDescriptor::new();
        td.uuid = Some(uuid(thread, GAPS));
        td.parent_uuid = Some(process_uuid(v.pid));
        td.static_or_dynamic_name =
            Some(Static_or_dynamic_name::Name(format!("{label} guest gaps")));
        self.descriptor(td)?;
        self.declared_threads.insert(thread, v);
        self.stats.vcpu_tracks = self.declared_threads.len() as u32;
        Ok(())
    }

    fn descriptor(&mut self, td: TrackDescriptor) -> Result<(), ExportError> {
        let mut packet = TracePacket::new();
        packet.set_track_descriptor(td);
        self.sequence_packet(packet)
    }

    fn track_event(
        &mut self,
        track: u64,
        ts: u64,
        ty: Type,
        name: Option<&str>,
        counter: Option<i64>,
    ) -> Result<(), ExportError> {
        let mut e = TrackEvent::new();
        if let Some(n) = name {
            e.set_name(n.to_string());
        }
        if let Some(c) = counter {
            e.set_counter_value(c);
        }
        self.track_event_with(track, ts, ty, e)
    }

    /// `e` (name, flows...) as a `ty` event on `track` at `ts`.
    fn track_event_with(
        &mut self,
        track: u64,
        ts: u64,
        ty: Type,
        mut e: TrackEvent,
    ) -> Result<(), ExportError> {
        e.type_ = Some(EnumOrUnknown::new(ty));
        e.track_uuid = Some(track);
        let mut packet = TracePacket::new();
        packet.timestamp = Some(ts);
        packet.set_track_event(e);
        self.stats.track_events += 1;
        self.sequence_packet(packet)
    }

    fn sequence_packet(&mut self, mut packet: TracePacket) -> Result<(), ExportError> {
        packet.set_trusted_packet_sequence_id(SEQUENCE_ID);
        if self.first_sequence_packet {
            packet.sequence_flags = Some(SequenceFlags::SEQ_INCREMENTAL_STATE_CLEARED as u32);
            self.first_sequence_packet = false;
        }
        self.push_packet(packet)
    }

    fn push_packet(&mut self, packet: TracePacket) -> Result<(), ExportError> {
        self.trace.packet.push(packet);
        self.stats.packets += 1;
        if self.trace.packet.len() >= PACKETS_PER_WRITE {
            self.write_out()?;
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<(), ExportError> {
        if self.trace.packet.is_empty() {
            return Ok(());
        }
        self.trace.write_to_writer(&mut self.out)?;
        self.trace.packet.clear();
        Ok(())
    }
}
