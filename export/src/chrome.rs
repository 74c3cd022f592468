//! Chrome trace-event JSON (`{"traceEvents": [...]}`), for chrome://tracing, Speedscope and
//! other tools that read it. Streams: one JSON object per line inside the array.
//!
//! pCPUs appear as threads of a "host CPUs" process (what ran, as complete slices); each vCPU
//! thread gets state slices, and vruntime / resume latency / switch counters under its VM's
//! process, all written from the model's transitions (see `fold`).

use std::collections::{HashMap, HashSet};
use std::io::Write;

use model::trace_file::TraceHeader;
use model::{Event, PcpuHolder, Transition};
use serde_json::{json, Value};

use crate::fold::Fold;
use crate::ExportError;

/// Process id used for the pCPU lanes; real pids are below 2^22 on Linux.
const CPUS_PID: u32 = 0x7fff_0000;
/// Guest gaps can straddle state slices, so they live on a thread of their own.
const GAP_TID_BIT: u32 = 0x4000_0000;

/// What the export produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChromeStats {
    pub events_in: u64,
    pub trace_events: u64,
}

pub struct ChromeWriter<W: Write> {
    out: W,
    fold: Fold,
    transitions: Vec<Transition>,
    first: bool,
    /// What each CPU runs since when.
    running: HashMap<u32, (u64, PcpuHolder)>,
    /// Each thread slot's open state slice: since when, named what.
    states: HashMap<u32, (u64, &'static str)>,
    switches: HashMap<u32, u64>,
    named_cpus: HashSet<u32>,
    stats: ChromeStats,
}

fn us(ns: u64) -> f64 {
    ns as f64 / 1000.0
}

impl<W: Write> ChromeWriter<W> {
    pub fn new(mut out: W, header: &TraceHeader) -> Result<Self, ExportError> {
        out.write_all(b"{\"displayTimeUnit\":\"ns\",\"otherData\":")?;
        serde_json::to_writer(
            &mut out,
            &json!({
                "recorder": header.recorder,
                "host": header.host,
                "command_line": header.command_line,
            }),
        )?;
        out.write_all(b",\"traceEvents\":[\n")?;
        let mut w = ChromeWriter {
            out,
            fold: Fold::new(),
            transitions: Vec::new(),
            first: true,
            running: HashMap::new(),
            states: HashMap::new(),
            switches: HashMap::new(),
            named_cpus: HashSet::new(),
            stats: ChromeStats::default(),
        };
        w.emit(json!({"ph": "M", "name": "process_name", "pid": CPUS_PID, "args": {"name": "host CPUs"}}))?;
        Ok(w)
    }

    pub fn push(&mut self, ev: &Event) -> Result<(), ExportError> {
        self.stats.events_in += 1;
        let mut tx = std::mem::take(&mut self.transitions);
        self.fold.push(ev, &mut tx);
        let written = tx.drain(..).try_for_each(|t| self.transition(t));
        self.transitions = tx;
        written
    }

    pub fn finish(mut self) -> Result<(W, ChromeStats), ExportError> {
        let mut tx = std::mem::take(&mut self.transitions);
        let end = self.fold.finish(&mut tx);
        for t in tx.drain(..) {
            self.transition(t)?;
        }
        // Sorted so the same input gives the same file (hash maps drain in any order).
        let mut running: Vec<(u32, (u64, PcpuHolder))> = self.running.drain().collect();
        running.sort_unstable_by_key(|(cpu, _)| *cpu);
        for (cpu, (start, holder)) in running {
            self.cpu_slice(cpu, start, end, holder)?;
        }
        let mut states: Vec<(u32, (u64, &'static str))> = self.states.drain().collect();
        states.sort_unstable_by_key(|(thread, _)| *thread);
        for (thread, (start, name)) in states {
            self.state_slice(thread, start, end, name)?;
        }
        self.out.write_all(b"\n]}\n")?;
        self.out.flush()?;
        Ok((self.out, self.stats))
    }

    fn emit(&mut self, v: Value) -> Result<(), ExportError> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, &v)?;
        self.stats.trace_events += 1;
        Ok(())
    }

    fn cpu_slice(
        &mut self,
        cpu: u32,
        start: u64,
        end: u64,
        holder: PcpuHolder,
    ) -> Result<(), ExportError> {
        if self.named_cpus.insert(cpu) {
            self.emit(
                json!({"ph": "M", "name": "thread_name", "pid": CPUS_PID, "tid": cpu,
                "args": {"name": format!("CPU {cpu}")}}),
            )?;
        }
        let (name, tid) = match holder {
            PcpuHolder::Idle => return Ok(()), // leave the lane empty
            PcpuHolder::Thread(thread) => match self.fold.thread(thread) {
                Some(v) => (v.label.clone(), v.tid),
                None => return Ok(()),
            },
            PcpuHolder::Other { tid, comm } => (format!("{comm} ({tid})"), tid),
        };
        self.emit(
            json!({"ph": "X", "cat": "sched", "name": name, "pid": CPUS_PID, "tid": cpu,
            "ts": us(start), "dur": us(end.saturating_sub(start)), "args": {"tid": tid}}),
        )
    }

    fn state_slice(
        &mut self,
        thread: u32,
        start: u64,
        end: u64,
        name: &str,
    ) -> Result<(), ExportError> {
        let Some((pid, tid)) = self.fold.thread(thread).map(|v| (v.pid, v.tid)) else {
            return Ok(());
        };
        self.emit(json!({"ph": "X", "cat": "vcpu", "name": name, "pid": pid,
            "tid": tid, "ts": us(start), "dur": us(end.saturating_sub(start))}))
    }

    /// Begins thread `thread`'s state `name` at `ts`, closing the one before.
    fn state(&mut self, thread: u32, ts: u64, name: &'static str) -> Result<(), ExportError> {
        if let Some((start, prev)) = self.states.insert(thread, (ts, name)) {
            self.state_slice(thread, start, ts, prev)?;
        }
        Ok(())
    }

    /// A counter sample on thread `thread`'s VM process, named after the thread.
    fn counter(
        &mut self,
        thread: u32,
        ts: u64,
        what: &str,
        key: &str,
        value: f64,
    ) -> Result<(), ExportError> {
        let Some(v) = self.fold.thread(thread) else {
            return Ok(());
        };
        let (pid, name) = (v.pid, format!("{} {what}", v.label));
        self.emit(json!({"ph": "C", "name": name, "pid": pid, "ts": us(ts),
            "args": {key: value}}))
    }

    fn transition(&mut self, t: Transition) -> Result<(), ExportError> {
        match t {
            Transition::Thread { thread, .. } => {
                let Some(v) = self.fold.thread(thread).cloned() else {
                    return Ok(());
                };
                self.emit(json!({"ph": "M", "name": "process_name", "pid": v.pid,
                    "args": {"name": v.vm}}))?;
                self.emit(
                    json!({"ph": "M", "name": "thread_name", "pid": v.pid, "tid": v.tid,
                    "args": {"name": v.label}}),
                )?;
                self.emit(json!({"ph": "M", "name": "thread_name", "pid": v.pid,
                    "tid": v.tid | GAP_TID_BIT, "args": {"name": format!("{} guest gaps", v.label)}}))?;
            }
            Transition::Pcpu { ts, cpu, holder } => {
                if let Some((start, prev)) = self.running.insert(cpu, (ts, holder)) {
                    self.cpu_slice(cpu, start, ts, prev)?;
                }
            }
            Transition::State {
                ts, thread, state, ..
            } => self.state(thread, ts, state.name())?,
            Transition::Exited { ts, thread } => self.state(thread, ts, "exited")?,
            Transition::SwitchOut { ts, thread, .. } => {
                let n = self.switches.entry(thread).or_default();
                *n += 1;
                let n = *n;
                self.counter(thread, ts, "switches", "switches", n as f64)?;
            }
            Transition::Vruntime {
                ts,
                thread,
                vruntime,
            } => self.counter(
                thread,
                ts,
                "vruntime (ms)",
                "vruntime",
                vruntime as f64 / 1e6,
            )?,
            Transition::Resume {
                ts,
                thread,
                latency_ns,
                migrated,
            } => {
                let key = if migrated { "migrated" } else { "same_pcpu" };
                self.counter(
                    thread,
                    ts,
                    "resume latency (us)",
                    key,
                    latency_ns as f64 / 1000.0,
                )?;
            }
            Transition::GuestGap {
                thread, start, end, ..
            } => {
                let Some((pid, tid)) = self.fold.thread(thread).map(|v| (v.pid, v.tid)) else {
                    return Ok(());
                };
                self.emit(
                    json!({"ph": "X", "cat": "guest", "name": "off CPU (guest's view)",
                    "pid": pid, "tid": tid | GAP_TID_BIT, "ts": us(start),
                    "dur": us(end.saturating_sub(start))}),
                )?;
            }
            // VMCLEAR IPIs are drawn as flows in the Perfetto export only.
            Transition::Exit { .. }
            | Transition::Entry { .. }
            | Transition::Vmclear { .. }
            | Transition::Weight { .. }
            | Transition::Affinity { .. }
            | Transition::TaskGroup { .. }
            | Transition::OtherSwitchOut { .. } => {}
        }
        Ok(())
    }
}
