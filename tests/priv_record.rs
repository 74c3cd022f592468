//! `kvmscope record` for real (root, BPF, KVM): the demo recorded and read back, the report
//! over the file equal to the model over the same events, and a recorder stopped by SIGINT,
//! SIGTERM or killed outright mid-run still leaving a readable file.

mod common;
mod export_figures;

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use common::*;
use model::trace_file::{ReadStats, TraceReader, Trailer};
use model::{Model, ModelConfig};
use serde_json::Value;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kvmscope-priv-record-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(&p);
    p
}

/// Everything in the file: events, reader stats, trailer.
fn read_back(path: &Path) -> (Vec<model::Event>, ReadStats, Option<Trailer>) {
    let mut r = TraceReader::new(std::fs::File::open(path).unwrap(), "t").unwrap();
    let mut events = Vec::new();
    while r.next_chunk(&mut events).unwrap() {}
    (events, r.stats().clone(), r.trailer().cloned())
}

#[test]
fn record_the_demo_then_report_the_file() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let path = scratch("demo.trace");
    let out = kvmscope()
        .args(["record", "--demo", "--duration", "4", "--json", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "record failed: {err}");
    // --json: the same figures, plus the bundled VMM's own counters the file does not hold.
    let done: Value = serde_json::from_slice(&out.stdout).expect("record --json prints JSON");
    // "recorded N events (L lost) over S s to FILE: B bytes, X bytes/event"
    let said: u64 = err
        .split("recorded ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary line: {err}"));

    let (events, stats, trailer) = read_back(&path);
    assert!(stats.problems().is_empty(), "{:?}", stats.problems());
    let trailer = trailer.unwrap();
    assert_eq!(trailer.events, said);
    assert_eq!(done["events"], said);
    assert_eq!(done["lost"], trailer.lost);
    // Lost kernel records are counted by cause (which ring was full), and the writer thread
    // kept up: it discarded nothing.
    let by_cause = &done["lost_by_cause"];
    for cause in [
        "events_ring",
        "switch_rings",
        "exit_aggregates",
        "skipped_runs",
    ] {
        assert!(
            by_cause[cause].is_u64(),
            "no lost_by_cause.{cause}: {done:#}"
        );
    }
    assert_eq!(done["writer"]["discarded_events"], 0, "{done:#}");
    // `lost` is the kernel's causes, the VMM's lost gap records and the writer's discards.
    let figure = |v: &Value| {
        v.as_u64()
            .unwrap_or_else(|| panic!("not a count: {done:#}"))
    };
    let causes: u64 = [
        "events_ring",
        "switch_rings",
        "exit_aggregates",
        "skipped_runs",
    ]
    .iter()
    .map(|c| figure(&by_cause[c]))
    .sum();
    assert_eq!(
        figure(&done["lost"]),
        causes + figure(&done["vmm_gaps_lost"]) + figure(&done["writer"]["discarded_events"]),
        "{done:#}"
    );
    let queue = figure(&done["writer"]["queue_chunks"]);
    assert!(
        (1..=queue + 1).contains(&figure(&done["writer"]["peak_unwritten_chunks"])),
        "{done:#}"
    );
    let vmm_vcpus = done["vmm"]["vcpus"].as_array().expect("the VMM's vCPUs");
    assert_eq!(vmm_vcpus.len(), 6, "the default demo's vCPUs: {done:#}");
    assert!(
        vmm_vcpus
            .iter()
            .all(|v| v["exits"]["pio"].as_u64() >= Some(1)),
        "{done:#}"
    );
    assert_eq!(events.len() as u64, said);
    assert!(
        said > 1000,
        "the demo should produce thousands of events, got {said}"
    );
    let vcpus: usize = trailer.processes.iter().map(|p| p.threads.len()).sum();
    assert!(vcpus >= 2, "{:?}", trailer.processes);
    assert_file_is_the_formats_encoding(&path, &events, said);

    // report FILE: the model over exactly these events, plus the header and the count.
    let out = kvmscope()
        .args(["report", "--json"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(doc["source"]["extra"]["events"], said);
    assert_eq!(
        doc["source"]["extra"]["header"]["host"]["cpus"],
        trailer_cpus()
    );
    // The report's own configuration: a window that differs reorders differently.
    let mut model = Model::new(ModelConfig::report());
    let mut r = TraceReader::new(std::fs::File::open(&path).unwrap(), "t").unwrap();
    let mut batch = Vec::new();
    while r.next_chunk(&mut batch).unwrap() {
        model.ingest_batch(&batch);
        batch.clear();
    }
    model.finish();
    let live = serde_json::to_value(model.snapshot()).unwrap();
    for key in ["vcpus", "vms", "resume", "health"] {
        assert_json_close(&doc[key], &live[key], key);
    }
    assert!(!doc["vcpus"].as_array().unwrap().is_empty());

    // A copy cut at 60% still reports what came before, exit 0.
    let cut = scratch("cut.trace");
    let all = std::fs::read(&path).unwrap();
    std::fs::write(&cut, &all[..all.len() * 6 / 10]).unwrap();
    let out = kvmscope()
        .args(["report", "--json"])
        .arg(&cut)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let n = doc["source"]["extra"]["events"].as_u64().unwrap();
    assert!(n > 0 && n < said, "{n} of {said}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("truncated"));

    // Without --force an existing file is left alone.
    let before = std::fs::read(&path).unwrap();
    let out = kvmscope()
        .args(["record", "--demo", "--duration", "1", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("already exists"));
    assert_eq!(std::fs::read(&path).unwrap(), before);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&cut);
}

/// The recording's size against what the format promises, not against a figure of bytes per
/// event, which moves with the host: a loaded host makes the demo's 2 s chunks hold fewer
/// events (each chunk restarts the coder's comm table and zstd's window), its vCPUs switch
/// to more distinct other tasks (their comms and task-group records), and the file's header
/// and trailer are shared by fewer events. Measured on demo recordings: 7.6-8.0 bytes per
/// event in the steady chunks on a quiet host, 8.8-9.0 beside others' builds (9.1 for the
/// whole file), where this test once asserted < 9.
///
/// What holds on any host: (1) the file is byte for byte the format's own writer's output for
/// its header, its events in its chunks and its trailer, at `record`'s zstd level: `record`
/// adds nothing to the encoding; (2) it seals a chunk every 2 s, not more often (a recorder
/// that sealed per poll would multiply the restarts); (3) against a baseline of the same
/// run, the same events as JSON lines (`trace --format jsonl`), it is at most a tenth, as the
/// bench holds it to a tenth of `perf record`'s (`export/benches/record_vs_perf.sh`; 0.038 to
/// 0.048 measured). Bytes per event themselves are printed, and benchmarked by that script
/// and `cargo bench -p kvmscope --bench record_storm`.
fn assert_file_is_the_formats_encoding(path: &Path, events: &[model::Event], said: u64) {
    use model::trace_file::{ChunkBuilder, ChunkWriter, WriterOptions};
    let file = std::fs::read(path).unwrap();
    let mut r = TraceReader::new(file.as_slice(), "t").unwrap();
    let opts = WriterOptions::default();
    let mut builder = ChunkBuilder::new(r.header(), opts);
    let mut rewritten = ChunkWriter::new(Vec::new(), r.header(), opts.zstd_level).unwrap();
    let mut chunk = Vec::new();
    let mut chunk_events = Vec::new();
    while r.next_chunk(&mut chunk).unwrap() {
        for e in &chunk {
            assert!(builder.push(e).is_none(), "a demo chunk is far from full");
        }
        rewritten.write_chunk(&builder.seal().unwrap()).unwrap();
        chunk_events.push(chunk.len());
        chunk.clear();
    }
    let trailer = r.trailer().cloned().unwrap();
    let (rewritten, _) = rewritten.finish(trailer.clone()).unwrap();
    assert!(
        rewritten == file,
        "the file ({} bytes) is not the format's encoding of its events ({} bytes)",
        file.len(),
        rewritten.len()
    );

    let seconds = (trailer.end_ts - trailer.start_ts) as f64 / 1e9;
    assert!(
        chunk_events.len() as f64 <= seconds / 2.0 + 2.0,
        "{chunk_events:?} events in chunks over {seconds:.1} s: sealed more often than every 2 s"
    );

    let bytes = file.len() as f64;
    let json: usize = events
        .iter()
        .map(|e| serde_json::to_string(e).unwrap().len() + 1)
        .sum();
    eprintln!(
        "demo recording: {said} events, {bytes} bytes, {:.2} bytes/event over {} chunks of \
         {:?} events; {:.4} of the same events as JSON lines ({:.1} bytes/event)",
        bytes / said as f64,
        chunk_events.len(),
        chunk_events,
        bytes / json as f64,
        json as f64 / said as f64
    );
    assert!(
        bytes <= json as f64 / 10.0,
        "{bytes} bytes, more than a tenth of the same events as JSON lines ({json} bytes)"
    );
}

fn trailer_cpus() -> u64 {
    std::thread::available_parallelism()
        .map(|n| n.get() as u64)
        .unwrap_or(0)
}

/// Starts `record --demo` with no duration and waits until at least one events chunk is on
/// disk (chunks are written every two seconds).
fn start_recorder(path: &Path) -> Child {
    let mut child = kvmscope()
        .args(["record", "--demo", "-o"])
        .arg(path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let began = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len > 4096 && began.elapsed() > Duration::from_millis(2500) {
            return child;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("recorder exited early: {status}");
        }
        assert!(
            began.elapsed() < Duration::from_secs(30),
            "no chunk written in 30 s"
        );
    }
}

/// libc: std's Child::kill sends only SIGKILL.
fn signal_and_wait(mut child: Child, sig: i32) -> (std::process::ExitStatus, String) {
    // SAFETY: kill with a pid we spawned and still own (not yet waited for).
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, sig) };
    assert_eq!(rc, 0);
    let began = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut err = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut err)
                .unwrap();
            return (status, err);
        }
        if began.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("recorder did not stop within 20 s of signal {sig}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn stop_cleanly_with(sig: i32, name: &str) {
    let path = scratch(name);
    let child = start_recorder(&path);
    let (status, err) = signal_and_wait(child, sig);
    assert!(
        status.success(),
        "recorder exited with {status} after signal {sig}: {err}"
    );
    let (events, stats, trailer) = read_back(&path);
    assert!(stats.problems().is_empty(), "{:?}", stats.problems());
    let trailer = trailer.expect("finalised on signal");
    assert_eq!(trailer.events, events.len() as u64);
    assert!(events.len() > 100, "{} events", events.len());
    assert!(
        err.contains(&format!("recorded {} events", events.len())),
        "{err}"
    );
    let _ = std::fs::remove_file(&path);
}

#[test]
fn sigint_mid_run_finalises_the_file() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    stop_cleanly_with(libc::SIGINT, "sigint.trace");
}

#[test]
fn sigterm_mid_run_finalises_the_file() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    stop_cleanly_with(libc::SIGTERM, "sigterm.trace");
}

#[test]
fn a_killed_recorder_leaves_every_chunk_it_finished() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let path = scratch("sigkill.trace");
    let child = start_recorder(&path);
    let (status, _) = signal_and_wait(child, libc::SIGKILL);
    assert!(!status.success());
    let (events, stats, trailer) = read_back(&path);
    assert!(trailer.is_none());
    assert!(!stats.finalised);
    assert_eq!(stats.corrupt_chunks, 0);
    assert!(events.len() > 100, "{} events survived", events.len());
    // The CLI reports it, says what was lost, and exits 0.
    let out = kvmscope().arg("report").arg(&path).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("not finalised"));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn a_full_disk_is_one_clear_error() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    // /dev/full fails every write with ENOSPC, as a full disk does.
    let out = kvmscope()
        .args([
            "record",
            "--demo",
            "--duration",
            "2",
            "--force",
            "-o",
            "/dev/full",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot write /dev/full (disk full?)"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn exports_of_a_recorded_demo_equal_its_report() {
    if !privileged(Privilege::Bpf) {
        return;
    }
    let path = scratch("export-eq.trace");
    let out = kvmscope()
        .args(["record", "--demo", "--duration", "2", "-o"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "record failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    export_figures::assert_exports_equal_report(&path);
    let _ = std::fs::remove_file(&path);
}
