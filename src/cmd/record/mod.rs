//! `kvmscope record -o FILE`: the live event stream into a trace file ([`session`] observes
//! and writes it; this command names the file and says what was written and lost).

mod hand_off;
pub(super) mod session;

use std::process::ExitCode;

use anyhow::bail;

use crate::cli::RecordArgs;
use session::LiveRecording;

pub fn run(args: RecordArgs) -> anyhow::Result<ExitCode> {
    // Refuse an existing output before starting probes and VMs (the session re-checks
    // atomically when it creates the file).
    if !args.force && args.output.symlink_metadata().is_ok() {
        bail!(
            "{} already exists; pass --force to overwrite it or choose another -o",
            args.output.display()
        );
    }
    let target = args.target.resolve()?;
    let rec = session::record_live(target, args.duration, &args.output, args.force, "record")?;
    let out = args.output.display().to_string();
    let per_event = if rec.events > 0 {
        rec.bytes as f64 / rec.events as f64
    } else {
        0.0
    };
    eprintln!(
        "recorded {} events ({} lost) over {:.1} s to {out}: {} bytes, {per_event:.2} bytes/event",
        rec.events, rec.lost, rec.seconds, rec.bytes,
    );
    rec.warn_losses();
    if args.json {
        let done = RecordDone {
            output: &out,
            recording: &rec,
        };
        super::print_stdout(&(serde_json::to_string_pretty(&done)? + "\n"))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `record --json`'s closing document.
#[derive(serde::Serialize)]
struct RecordDone<'a> {
    output: &'a str,
    #[serde(flatten)]
    recording: &'a LiveRecording,
}
