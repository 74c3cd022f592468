//! A reader that goes away (`kvmscope report t.trace | head -1`) ends the output, never the
//! process with a panic: every command that prints a document writes it through one helper
//! that takes a broken pipe as the end of its reader.

mod common;
mod trace_file_synth;

use std::process::Stdio;

use common::{kvmscope, TempDir};
use model::trace_file::TraceWriter;

#[test]
fn commands_printing_to_a_closed_pipe_end_cleanly() {
    let dir = TempDir::new("closed-stdout");
    let t = dir.path("t.trace");
    let file = std::fs::File::create(&t).unwrap();
    let mut w = TraceWriter::new(file, &trace_file_synth::header()).unwrap();
    for e in &model::synth::demo_stream(2.0) {
        w.write(e).unwrap();
    }
    w.finish().unwrap();
    let ts = t.to_str().unwrap();
    for args in [
        vec!["report", ts],
        vec!["report", ts, "--json"],
        vec!["simulate", ts, "--policy", "cfs"],
        vec!["simulate", ts, "--policy", "cfs", "--json"],
    ] {
        let mut child = kvmscope()
            .args(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // The reader is gone before the command writes a byte.
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "kvmscope {args:?}: {err}");
        assert!(out.status.success(), "kvmscope {args:?}: {err}");
    }
}
