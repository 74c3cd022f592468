//! Replay and report memory and backward-seek time on a long recording (issue #15, goal 4):
//! `cargo bench -p tui --bench replay_scale` (no root; `KVMSCOPE_REPLAY_EVENTS` sets the
//! length, 100 M by default).
//!
//! Writes the repeated demo scenario (`model::synth::RepeatedDemo`) to a trace file with a
//! chunk every 2 s of event time, as `record` does, then measures, each in a fresh child
//! process so its peak RSS (`VmHWM`) is its own:
//! - replay: `tui::Track` over the file (what `kvmscope replay` plays), folded to the end, then
//!   backward seeks to pseudo-random positions; beside them, the baseline measured in the same
//!   run: a refold from the first event to the middle (how replay sought back before), and
//!   the memory the old in-memory replay would have needed (events × size of an `Event`);
//! - report: the file read a chunk at a time into `Model::new(ModelConfig::report())`, as
//!   `kvmscope report FILE` does.
//!
//! Goals: peak RSS under 256 MiB for both, every backward seek at most 200 ms.

use std::fs::File;
use std::hint::black_box;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use model::trace_file::{TraceHeader, TraceWriter};
use model::{Event, Model, ModelConfig};
use tui::Track;

// The binary's allocator (jemalloc with huge pages), so that the peak RSS is what `kvmscope
// replay` and `report FILE` reach, not what glibc's malloc would.
#[path = "../../src/allocator.rs"]
mod allocator;

const RSS_GOAL_MIB: f64 = 256.0;
const SEEK_GOAL_MS: f64 = 200.0;
const SEEKS: usize = 20;

fn status_kib(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// This thread's CPU time, s.
fn cpu_s() -> f64 {
    hostfacts::thread_cpu_ns() as f64 / 1e9
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "missed"
    }
}

fn write_file(path: &Path, events: u64) -> (u64, u64) {
    let mut demo = model::synth::RepeatedDemo::new(100_000);
    let out = BufWriter::new(File::create(path).unwrap());
    let mut w = TraceWriter::new(out, &TraceHeader::default()).unwrap();
    let mut written = 0u64;
    let mut chunk_start = None;
    'blocks: loop {
        for e in demo.next_block() {
            if written == events {
                break 'blocks;
            }
            let start = *chunk_start.get_or_insert(e.ts());
            if e.ts() >= start + 2_000_000_000 {
                w.end_chunk().unwrap();
                chunk_start = Some(e.ts());
            }
            w.write(&e).unwrap();
            written += 1;
        }
    }
    let (_, trailer) = w.finish().unwrap();
    (written, trailer.chunks)
}

fn child_replay(path: &Path) {
    let mut reader = model::trace_file::open(path).unwrap();
    let index = reader.scan().unwrap();
    let mut track = Track::from_file(reader, index);
    let (first, last) = (track.first_ts(), track.last_ts());
    let t = cpu_s();
    track.fold_to(last).unwrap();
    println!(
        "replay: folded to the end in {:.1} s CPU ({} events), {} checkpoints",
        cpu_s() - t,
        track.model().events(),
        track.checkpoints()
    );
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut walls = Vec::new();
    let mut cpus = Vec::new();
    for _ in 0..SEEKS {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let target = first + (seed >> 11) % (last - first);
        let (w, c) = (Instant::now(), cpu_s());
        track.seek_back(target).unwrap();
        black_box(track.model().snapshot());
        walls.push(w.elapsed().as_secs_f64() * 1e3);
        cpus.push((cpu_s() - c) * 1e3);
    }
    walls.sort_by(f64::total_cmp);
    cpus.sort_by(f64::total_cmp);
    // Baseline: the old backward seek, a refold from the first event to the middle.
    let mid = first + (last - first) / 2;
    let (w, c) = (Instant::now(), cpu_s());
    let mut fresh = Model::new(ModelConfig::default());
    let mut reader = model::trace_file::open(path).unwrap();
    let mut buf = Vec::new();
    'read: loop {
        buf.clear();
        if !reader.next_chunk(&mut buf).unwrap() {
            break;
        }
        for (i, e) in buf.iter().enumerate() {
            if e.ts() > mid {
                fresh.ingest_batch(&buf[..i]);
                break 'read;
            }
        }
        fresh.ingest_batch(&buf);
    }
    black_box(fresh.snapshot());
    let (base_wall, base_cpu) = (w.elapsed().as_secs_f64() * 1e3, (cpu_s() - c) * 1e3);
    let worst = walls[SEEKS - 1];
    println!(
        "replay: backward seek ({SEEKS} random positions): median {:.0} ms wall ({:.0} ms CPU), worst {:.0} ms wall ({:.0} ms CPU); baseline refold from the start to the middle {:.0} ms wall ({:.0} ms CPU), {:.0}x the worst seek; goal <= {SEEK_GOAL_MS} ms: {}",
        walls[SEEKS / 2],
        cpus[SEEKS / 2],
        worst,
        cpus[SEEKS - 1],
        base_wall,
        base_cpu,
        base_wall / worst,
        verdict(cpus[SEEKS - 1] <= SEEK_GOAL_MS),
    );
    let peak = status_kib("VmHWM:") / 1024.0;
    println!(
        "replay: peak RSS {peak:.0} MiB; the old in-memory replay would hold {:.0} MiB of events; goal < {RSS_GOAL_MIB} MiB: {}",
        track.model().events() as f64 * std::mem::size_of::<Event>() as f64 / (1 << 20) as f64,
        verdict(peak < RSS_GOAL_MIB)
    );
}

fn child_report(path: &Path) {
    let mut reader = model::trace_file::open(path).unwrap();
    let mut model = Model::new(ModelConfig::report());
    let mut buf = Vec::new();
    let t = cpu_s();
    loop {
        buf.clear();
        if !reader.next_chunk(&mut buf).unwrap() {
            break;
        }
        model.ingest_batch(&buf);
    }
    model.finish();
    black_box(model.snapshot());
    let peak = status_kib("VmHWM:") / 1024.0;
    println!(
        "report: {} events in {:.1} s CPU, peak RSS {peak:.0} MiB; goal < {RSS_GOAL_MIB} MiB: {}",
        model.events(),
        cpu_s() - t,
        verdict(peak < RSS_GOAL_MIB)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--child") {
        let path = PathBuf::from(&args[i + 2]);
        match args[i + 1].as_str() {
            "replay" => child_replay(&path),
            _ => child_report(&path),
        }
        return;
    }
    let events: u64 = std::env::var("KVMSCOPE_REPLAY_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000_000);
    let path =
        std::env::temp_dir().join(format!("kvmscope-replay-scale-{}.kvms", std::process::id()));
    let t = Instant::now();
    let (written, chunks) = write_file(&path, events);
    println!(
        "file: {written} events in {chunks} chunks, {:.0} MiB, written in {:.0} s",
        std::fs::metadata(&path).unwrap().len() as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    for mode in ["replay", "report"] {
        let out = Command::new(std::env::current_exe().unwrap())
            .args(["--child", mode])
            .arg(&path)
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
        if !out.status.success() {
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
    }
    std::fs::remove_file(&path).unwrap();
}
