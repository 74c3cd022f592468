//! Chrome trace-event JSON (`{"traceEvents": [...]}`), for chrome://tracing, Speedscope and
//! other tools that read it. Streams: one JSON object per line inside the array.
//!
//! pCPUs appear as threads of a "host CPUs" process (what ran, as complete slices); each vCPU
//! thread gets state slices, and vruntime / resume latency counters under its VM's process.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use model::trace_file::TraceHeader;
use model::{Comm, Event, VcpuState};
use serde_json::{json, Value};

use crate::timeline::{state_name, Mark, Timeline, VcpuThread};
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
    timeline: Timeline,
    marks: Vec<Mark>,
    first: bool,
    /// What each CPU runs since when.
    running: HashMap<u32, (u64, u32, Comm)>,
    states: HashMap<u32, (u64, VcpuState)>,
    vcpus: HashMap<u32, VcpuThread>,
    named_cpus: HashSet<u32>,
    last_ts: u64,
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
            timeline: Timeline::new(header),
            marks: Vec::new(),
            first: true,
            running: HashMap::new(),
            states: HashMap::new(),
            vcpus: HashMap::new(),
            named_cpus: HashSet::new(),
            last_ts: 0,
            stats: ChromeStats::default(),
        };
        w.emit(json!({"ph": "M", "name": "process_name", "pid": CPUS_PID, "args": {"name": "host CPUs"}}))?;
        Ok(w)
    }

    pub fn push(&mut self, ev: &Event) -> Result<(), ExportError> {
        self.stats.events_in += 1;
        self.last_ts = self.last_ts.max(ev.ts());
        let mut marks = std::mem::take(&mut self.marks);
        self.timeline.push(ev, &mut marks);
        for m in marks.drain(..) {
            self.mark(m)?;
        }
        self.marks = marks;
        Ok(())
    }

    pub fn finish(mut self) -> Result<(W, ChromeStats), ExportError> {
        let end = self.last_ts;
        let running: Vec<(u32, (u64, u32, Comm))> = self.running.drain().collect();
        for (cpu, (start, tid, comm)) in running {
            self.cpu_slice(cpu, start, end, tid, comm)?;
        }
        let states: Vec<(u32, (u64, VcpuState))> = self.states.drain().collect();
        for (tid, (start, state)) in states {
            self.state_slice(tid, start, end, state)?;
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
        tid: u32,
        comm: Comm,
    ) -> Result<(), ExportError> {
        if self.named_cpus.insert(cpu) {
            self.emit(
                json!({"ph": "M", "name": "thread_name", "pid": CPUS_PID, "tid": cpu,
                "args": {"name": format!("CPU {cpu}")}}),
            )?;
        }
        if tid == 0 {
            return Ok(()); // idle: leave the lane empty
        }
        let name = match self.vcpus.get(&tid) {
            Some(v) => v.label(),
            None => format!("{comm} ({tid})"),
        };
        self.emit(
            json!({"ph": "X", "cat": "sched", "name": name, "pid": CPUS_PID, "tid": cpu,
            "ts": us(start), "dur": us(end.saturating_sub(start)), "args": {"tid": tid}}),
        )
    }

    fn state_slice(
        &mut self,
        tid: u32,
        start: u64,
        end: u64,
        state: VcpuState,
    ) -> Result<(), ExportError> {
        let Some(pid) = self.vcpus.get(&tid).map(|v| v.pid) else {
            return Ok(());
        };
        self.emit(
            json!({"ph": "X", "cat": "vcpu", "name": state_name(state), "pid": pid,
            "tid": tid, "ts": us(start), "dur": us(end.saturating_sub(start))}),
        )
    }

    fn mark(&mut self, m: Mark) -> Result<(), ExportError> {
        match m {
            Mark::NewVcpu(v) => {
                self.emit(json!({"ph": "M", "name": "process_name", "pid": v.pid,
                    "args": {"name": v.vm}}))?;
                self.emit(
                    json!({"ph": "M", "name": "thread_name", "pid": v.pid, "tid": v.tid,
                    "args": {"name": v.label()}}),
                )?;
                self.emit(json!({"ph": "M", "name": "thread_name", "pid": v.pid,
                    "tid": v.tid | GAP_TID_BIT, "args": {"name": format!("{} guest gaps", v.label())}}))?;
                self.vcpus.insert(v.tid, v);
            }
            Mark::CpuRun { cpu, ts, tid, comm } => {
                if let Some((start, prev, prev_comm)) = self.running.insert(cpu, (ts, tid, comm)) {
                    self.cpu_slice(cpu, start, ts, prev, prev_comm)?;
                }
            }
            Mark::State { tid, ts, state } => {
                if let Some((start, prev)) = self.states.insert(tid, (ts, state)) {
                    self.state_slice(tid, start, ts, prev)?;
                }
            }
            Mark::Vruntime { tid, ts, vruntime } => {
                let Some(v) = self.vcpus.get(&tid) else {
                    return Ok(());
                };
                let (pid, name) = (v.pid, format!("{} vruntime (ms)", v.label()));
                self.emit(json!({"ph": "C", "name": name, "pid": pid, "ts": us(ts),
                    "args": {"vruntime": vruntime as f64 / 1e6}}))?;
            }
            Mark::Resume {
                tid,
                ts,
                ns,
                migrated,
            } => {
                let Some(v) = self.vcpus.get(&tid) else {
                    return Ok(());
                };
                let (pid, name) = (v.pid, format!("{} resume latency (us)", v.label()));
                let key = if migrated { "migrated" } else { "same_pcpu" };
                self.emit(json!({"ph": "C", "name": name, "pid": pid, "ts": us(ts),
                    "args": {key: ns as f64 / 1000.0}}))?;
            }
            Mark::GuestGap { tid, start, end } => {
                let Some(pid) = self.vcpus.get(&tid).map(|v| v.pid) else {
                    return Ok(());
                };
                self.emit(
                    json!({"ph": "X", "cat": "guest", "name": "off CPU (guest's view)",
                    "pid": pid, "tid": tid | GAP_TID_BIT, "ts": us(start),
                    "dur": us(end.saturating_sub(start))}),
                )?;
            }
        }
        Ok(())
    }
}
