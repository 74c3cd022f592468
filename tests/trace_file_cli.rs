//! `kvmscope report FILE` and friends on recordings made without root (synthetic streams
//! written with the trace-file writer): the report over a file equals the model over the same
//! events; truncated, damaged and foreign files behave as documented.

mod common;
mod trace_file_synth;

use std::path::Path;

use common::{assert_json_close, kvmscope, TempDir};
use model::trace_file::{TraceReader, TraceWriter};
use model::{Model, ModelConfig};
use serde_json::Value;

/// The model helper's synthetic demo (4 vCPUs, 2 pCPUs) as a finished trace file.
fn synthetic_trace(path: &Path) -> Vec<model::Event> {
    let events = model::synth::demo_stream(3.0);
    let file = std::fs::File::create(path).unwrap();
    let mut w = TraceWriter::new(file, &trace_file_synth::header()).unwrap();
    for e in &events {
        w.write(e).unwrap();
        // Chunks of about 0.1 s of events, so truncation tests have boundaries to hit.
        if w.events() % 2000 == 0 {
            w.end_chunk().unwrap();
        }
    }
    w.finish().unwrap();
    events
}

fn report_json(path: &Path) -> Value {
    let out = kvmscope()
        .args(["report", "--json"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The model folded over exactly the events the file holds, batch per chunk as a source
/// delivers them: what a live report over these events would say.
fn model_over(path: &Path) -> Value {
    let mut r = TraceReader::new(std::fs::File::open(path).unwrap(), "x").unwrap();
    // The report's own configuration: a window that differs reorders differently.
    let mut m = Model::new(ModelConfig::report());
    let mut batch = Vec::new();
    while r.next_chunk(&mut batch).unwrap() {
        m.ingest_batch(&batch);
        batch.clear();
    }
    m.finish();
    serde_json::to_value(m.snapshot()).unwrap()
}

#[test]
fn report_of_a_file_is_the_model_over_its_events_plus_header_and_count() {
    let dir = TempDir::new("report-file");
    let path = dir.path("demo.trace");
    let events = synthetic_trace(&path);
    let doc = report_json(&path);
    let extra = &doc["source"]["extra"];
    assert_eq!(extra["events"], events.len() as u64);
    assert_eq!(extra["header"]["host"]["hostname"], "testhost");
    assert_eq!(extra["header"]["processes"][0]["threads"][1]["vcpu"], 1);
    assert_eq!(extra["trailer"]["events"], events.len() as u64);
    assert_eq!(extra["read"]["finalised"], true);
    assert!(extra.get("problems").is_none(), "{extra}");
    let model = model_over(&path);
    for key in [
        "vcpus",
        "vms",
        "resume",
        "fairness",
        "health",
        "wait_culprits",
    ] {
        assert_json_close(&doc[key], &model[key], key);
    }
    assert!(!doc["vcpus"].as_array().unwrap().is_empty());
}

#[test]
fn a_copy_cut_at_60_percent_still_reports_what_came_before() {
    let dir = TempDir::new("report-cut");
    let full = dir.path("full.trace");
    let events = synthetic_trace(&full);
    let bytes = std::fs::read(&full).unwrap();
    let cut = dir.path("cut.trace");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).unwrap();
    let doc = report_json(&cut);
    let extra = &doc["source"]["extra"];
    let n = extra["events"].as_u64().unwrap();
    assert!(
        n > events.len() as u64 / 3 && n < events.len() as u64,
        "{n} of {}",
        events.len()
    );
    assert!(extra["read"]["truncated_bytes"].as_u64().unwrap() > 0);
    let problems = extra["problems"].to_string();
    assert!(
        problems.contains("truncated") && problems.contains("not finalised"),
        "{problems}"
    );
    assert_json_close(&doc["vcpus"], &model_over(&cut)["vcpus"], "vcpus");

    // The text report says so too, and still exits 0.
    let out = kvmscope().arg("report").arg(&cut).output().unwrap();
    assert!(out.status.success());
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(all.contains("truncated"), "{all}");
    // Each warning names kvmscope, as its errors do (it began "warning: FILE: …").
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.lines().count() >= 2, "{err}");
    for line in err.lines() {
        assert!(line.starts_with("kvmscope: warning: "), "{line}");
    }
}

fn report_error(path: &Path) -> String {
    let out = kvmscope().arg("report").arg(path).output().unwrap();
    assert!(
        !out.status.success(),
        "report of {} should fail",
        path.display()
    );
    assert!(out.stdout.is_empty());
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        err.contains(&path.display().to_string()),
        "names the file: {err}"
    );
    err
}

#[test]
fn random_bytes_empty_files_and_directories_give_one_clear_line() {
    let dir = TempDir::new("report-bad");
    let mut rng = trace_file_synth::Rng::new(42);
    let noise = dir.path("noise.trace");
    std::fs::write(&noise, rng.bytes(100_000)).unwrap();
    assert!(report_error(&noise).contains("not a kvmscope trace"));
    let empty = dir.path("empty.trace");
    std::fs::write(&empty, b"").unwrap();
    assert!(report_error(&empty).contains("empty"));
    assert!(report_error(&dir.0).contains("directory"));
    assert!(report_error(&dir.path("missing.trace")).contains("no such file"));
    let mut newer = std::fs::read({
        let p = dir.path("v.trace");
        synthetic_trace(&p);
        p
    })
    .unwrap();
    newer[8] = 5;
    let newer_path = dir.path("newer.trace");
    std::fs::write(&newer_path, newer).unwrap();
    assert!(
        report_error(&newer_path).contains("written by a newer kvmscope (trace format version 5;")
    );
}

#[test]
fn unreadable_file_says_permission_denied() {
    // Root reads everything: drop to `nobody` with setpriv (util-linux) for the check.
    if hostfacts::euid() != 0 || Path::new("/usr/bin/setpriv").metadata().is_err() {
        eprintln!("skipped: needs root and setpriv to run the binary as another user");
        return;
    }
    let dir = TempDir::new("report-perm");
    let path = dir.path("private.trace");
    synthetic_trace(&path);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_kvmscope"))
        .arg("report")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("permission denied"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A copy cut inside its first chunk holds a header and no event: `report` and `export` say
/// so (after the warnings that say why), exit non-zero and leave no empty export behind, as
/// `replay` and `simulate` refuse the same file. They printed an empty report and wrote an
/// empty trace, exit 0.
#[test]
fn a_copy_cut_before_its_first_event_reports_and_exports_nothing_but_says_so() {
    let dir = TempDir::new("report-no-events");
    let whole = dir.path("whole.trace");
    synthetic_trace(&whole);
    let mut reader = model::trace_file::open(&whole).unwrap();
    let first_chunk = reader.scan().unwrap()[0].offset;
    let cut = dir.path("cut.trace");
    let bytes = std::fs::read(&whole).unwrap();
    std::fs::write(&cut, &bytes[..first_chunk as usize + 16]).unwrap();
    let out_path = dir.path("cut.pftrace");
    for (args, to) in [
        (vec!["report".to_string()], "report"),
        (vec!["report".into(), "--json".into()], "report"),
        (
            vec![
                "export".into(),
                "--format".into(),
                "perfetto".into(),
                "-o".into(),
                out_path.display().to_string(),
            ],
            "export",
        ),
    ] {
        let out = kvmscope().args(&args).arg(&cut).output().unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(!out.status.success(), "{args:?}: {err}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(!err.contains("panicked"), "{err}");
        assert!(err.contains("truncated"), "the warning says why: {err}");
        assert_eq!(
            err.lines().last().unwrap(),
            format!("kvmscope: {} holds no events to {to}", cut.display()),
            "{args:?}"
        );
    }
    assert!(!out_path.exists(), "no empty export left behind");
    // What `-o` names is removed only when it is a file: `-o /dev/null --force`, run as
    // root, unlinked /dev/null. A link stands in for it here.
    let target = dir.path("target.pftrace");
    std::fs::write(&target, b"kept").unwrap();
    let link = dir.path("out.link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let out = kvmscope()
        .args(["export", "--format", "perfetto", "--force", "-o"])
        .arg(&link)
        .arg(&cut)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        std::fs::symlink_metadata(&link).is_ok_and(|m| m.file_type().is_symlink()),
        "the link -o named is still there"
    );
    assert!(target.exists());
}

/// A vCPU with no switch or wakeup in the whole recording (a halted vCPU, #16): a file that
/// carries its state at tracking start reports it asleep all along; a file from before trace
/// format 3 reports `?`, and one note says why, once for all such threads.
#[test]
fn a_vcpu_asleep_all_recording_reports_asleep_and_older_files_say_why_once() {
    let dir = TempDir::new("report-start-state");
    let asleep = model::ThreadStart {
        state: model::TaskState::from_letter('S').unwrap(),
        cpu: 1,
    };
    let info = |tid, vcpu, start| {
        let mut e = model::synth::task_info(1_000, tid, 100, "vm0", Some(vcpu), 0);
        if let model::Event::TaskInfo(t) = &mut e {
            t.start = start;
        }
        e
    };
    let write = |name: &str, events: &[model::Event], version: u8| {
        let p = dir.path(name);
        let mut w = TraceWriter::new(
            std::fs::File::create(&p).unwrap(),
            &trace_file_synth::header(),
        )
        .unwrap();
        for e in events {
            w.write(e).unwrap();
        }
        w.finish().unwrap();
        let mut bytes = std::fs::read(&p).unwrap();
        bytes[8] = version;
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let end = model::Event::ObservationEnd(model::ObservationEnd { ts: 2_000_001_000 });
    let report = |p: &Path| {
        let out = kvmscope().arg("report").arg(p).output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let state_of = |text: &str, tid: u32| -> String {
        let row = text
            .lines()
            .find(|l| l.split_whitespace().nth(2) == Some(&tid.to_string()))
            .unwrap_or_else(|| panic!("no row of {tid} in\n{text}"));
        row.split_whitespace().nth(3).unwrap().to_string()
    };
    let why = |text: &str| text.matches("show state '?'").count();

    let now = write(
        "now.trace",
        &[
            info(101, 0, Some(asleep)),
            info(102, 1, Some(asleep)),
            end.clone(),
        ],
        3,
    );
    let text = report(&now);
    assert_eq!(state_of(&text, 101), "sleep", "{text}");
    assert_eq!(state_of(&text, 102), "sleep", "{text}");
    assert_eq!(why(&text), 0, "{text}");
    let doc = report_json(&now);
    assert_eq!(doc["vcpus"][0]["sleep_ns"], 2_000_000_000u64, "{doc}");

    let older = write(
        "v2.trace",
        &[info(101, 0, None), info(102, 1, None), end],
        2,
    );
    let text = report(&older);
    assert_eq!(state_of(&text, 101), "?", "{text}");
    assert_eq!(state_of(&text, 102), "?", "{text}");
    assert_eq!(why(&text), 1, "{text}");
    assert!(
        text.contains(
            "2 threads show state '?': no switch or wakeup of theirs yet, and the \
                       source does not say their state when tracking began"
        ),
        "{text}"
    );
}

/// A recording whose events announce no tracked thread (only other tasks' switches): `report`
/// says so in one line and exits non-zero, as `replay` and `simulate` refuse it. It printed
/// an empty vCPU table and a pCPU occupancy of other tasks, exit 0.
#[test]
fn a_file_with_no_tracked_thread_is_refused_in_one_line() {
    let dir = TempDir::new("report-untracked");
    let path = dir.path("untracked.trace");
    let file = std::fs::File::create(&path).unwrap();
    let mut writer = TraceWriter::new(file, &trace_file_synth::header()).unwrap();
    for ev in [
        model::synth::switch(1_000, 0, 0, 77),
        model::synth::switch(2_000, 0, 77, 0),
    ] {
        writer.write(&ev).unwrap();
    }
    writer.finish().unwrap();
    let err = report_error(&path);
    assert!(
        err.contains("announces no tracked thread: no vCPU to report"),
        "{err}"
    );
}
