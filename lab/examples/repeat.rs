//! The kernel against itself (issue #16): the demo scenario recorded ROUNDS times in one boot
//! of KERNEL (`suite/repeat-demo.sh`), each recording replayed by `KVMSCOPE simulate --policy
//! POLICY`, and one screen of how far apart the kernel's own rounds are and where the replays
//! fall against them (`lab::spread`; what the figures mean: `simulate/VALIDATION.md`).
//!
//! Usage:
//!   cargo run -p lab --example repeat -- KERNEL ROUNDS POLICY WORKDIR KVMSCOPE
//!   cargo run -p lab --example repeat -- --files POLICY KVMSCOPE A.kvms B.kvms...
//! The first boots (KVMSCOPE goes into the guest as /bin/kvmscope) and writes each round's
//! recording to WORKDIR/N.kvms (and its `record --json` to WORKDIR/N.record.json); the second
//! takes recordings made before. Environment: `LAB_APPEND` more kernel command-line words,
//! `LAB_TIMEOUT_S` the boot's limit (default 300 s + 60 s a round).
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

use lab::replayed::ReplayedVcpu;
use lab::spread::{wait_factor, Round, Spread, GOAL_FACTOR};
use serde_json::Value;

const USAGE: &str = "usage: repeat KERNEL ROUNDS POLICY WORKDIR KVMSCOPE | repeat --files POLICY KVMSCOPE FILE.kvms...";

fn main() -> ExitCode {
    match run(std::env::args().skip(1).collect()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("repeat: {e}");
            ExitCode::FAILURE
        }
    }
}

type Error = Box<dyn std::error::Error>;

fn run(args: Vec<String>) -> Result<(), Error> {
    let (policy, kvmscope, files, source) = match args.as_slice() {
        [flag, policy, kvmscope, files @ ..] if flag == "--files" => {
            if files.is_empty() {
                return Err(format!("--files: no recordings given ({USAGE})").into());
            }
            let files: Vec<PathBuf> = files.iter().map(PathBuf::from).collect();
            (policy, kvmscope, files, "recordings".to_string())
        }
        [kernel, rounds, policy, workdir, kvmscope] if !kernel.starts_with('-') => {
            let rounds: usize = match rounds.parse() {
                Ok(n) if n >= 2 => n,
                _ => {
                    return Err(format!("ROUNDS={rounds:?}: expected a count of at least 2").into())
                }
            };
            let (release, files) = boot(kernel, rounds, Path::new(workdir), Path::new(kvmscope))?;
            (policy, kvmscope, files, release)
        }
        _ => return Err(USAGE.into()),
    };
    let rounds: Vec<Replayed> = files
        .iter()
        .map(|f| replay(Path::new(kvmscope), policy, f))
        .collect::<Result<_, _>>()?;
    print(&source, policy, &files, &rounds)
}

/// Boots `kernel` with `repeat-demo.sh` for `rounds` rounds; writes each round's recording
/// to `workdir/N.kvms`. Returns the kernel's release and the recordings.
fn boot(
    kernel: &str,
    rounds: usize,
    workdir: &Path,
    kvmscope: &Path,
) -> Result<(String, Vec<PathBuf>), Error> {
    if kvmscope.file_name().is_none_or(|n| n != "kvmscope") {
        return Err(format!(
            "{}: the suite runs /bin/kvmscope, so KVMSCOPE must be a file called kvmscope",
            kvmscope.display()
        )
        .into());
    }
    let suite = Path::new(env!("CARGO_MANIFEST_DIR")).join("suite/repeat-demo.sh");
    let mut lab = lab::suite::SuiteBoot::env(kernel, &suite, workdir, &[kvmscope.to_path_buf()])?;
    lab.append = format!("{} LAB_ROUNDS={rounds}", lab.append);
    if std::env::var_os("LAB_TIMEOUT_S").is_none() {
        lab.qemu.timeout = Duration::from_secs(300 + 60 * rounds as u64);
    }
    let (k, booted) = lab.boot()?;
    eprintln!(
        "{} booted in {:.1} s, suite {}",
        k.release,
        booted.wall.as_secs_f64(),
        if booted.results.done {
            "done"
        } else {
            "NOT done"
        }
    );
    let mut files = Vec::new();
    for n in 1..=rounds {
        // The record step first: a round whose recording failed says why there.
        let record = workdir.join(format!("{n}.record.json"));
        std::fs::write(&record, booted.results.ok(&format!("demo.record.{n}"))?)
            .map_err(|e| format!("{}: {e}", record.display()))?;
        let file = workdir.join(format!("{n}.kvms"));
        std::fs::write(&file, booted.results.base64(&format!("demo.kvms.{n}"))?)
            .map_err(|e| format!("{}: {e}", file.display()))?;
        files.push(file);
    }
    Ok((format!("{} ({})", k.release, k.packages.join(" + ")), files))
}

/// One recording and its replay.
struct Replayed {
    vcpus: Vec<ReplayedVcpu>,
    /// The recording's, as `report --json` counts them.
    events: u64,
    lost: u64,
}

impl Replayed {
    fn labels(&self) -> Vec<String> {
        self.vcpus.iter().map(|v| v.label.clone()).collect()
    }
}

/// `kvmscope simulate --policy POLICY --json` on `file`, and its events and losses as
/// `report --json` counts them.
fn replay(kvmscope: &Path, policy: &str, file: &Path) -> Result<Replayed, Error> {
    let json = |args: &[&str]| -> Result<Value, Error> {
        let out = Command::new(kvmscope)
            .args(args)
            .arg(file)
            .output()
            .map_err(|e| format!("cannot run {}: {e}", kvmscope.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {} {}: {}",
                kvmscope.display(),
                args.join(" "),
                file.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("{} {}: not JSON: {e}", args.join(" "), file.display()).into())
    };
    let doc = json(&["simulate", "--policy", policy, "--json"])?;
    let health = json(&["report", "--json"])?["health"].clone();
    let count = |key: &str| {
        health[key]
            .as_u64()
            .ok_or_else(|| format!("{}: report --json without health.{key}", file.display()))
    };
    Ok(Replayed {
        vcpus: lab::replayed::vcpus(&doc, policy)
            .map_err(|e| format!("{}: {e}", file.display()))?,
        events: count("events")?,
        lost: count("lost_events")?,
    })
}

fn print(
    source: &str,
    policy: &str,
    files: &[PathBuf],
    replayed: &[Replayed],
) -> Result<(), Error> {
    let labels = replayed[0].labels();
    let mut rounds = Vec::new();
    for (file, r) in files.iter().zip(replayed) {
        if r.labels() != labels {
            return Err(format!(
                "{}: vCPUs {:?}, where {} has {:?}: not the same scenario",
                file.display(),
                r.labels(),
                files[0].display(),
                labels
            )
            .into());
        }
        rounds.push(Round {
            recorded: r.vcpus.iter().map(|v| v.recorded_wait_p50_us).collect(),
            replayed: r.vcpus.iter().map(|v| v.replayed_wait_p50_us).collect(),
        });
    }
    let spread = Spread::new(labels, rounds)?;
    println!(
        "{source}: {} rounds, each replayed by simulate --policy {policy}; run-queue wait p50 in us, recorded/{policy}",
        files.len()
    );
    for (i, (file, r)) in files.iter().zip(replayed).enumerate() {
        let waits: Vec<String> = r
            .vcpus
            .iter()
            .map(|v| {
                format!(
                    "{} {:.0}/{:.0}",
                    v.label, v.recorded_wait_p50_us, v.replayed_wait_p50_us
                )
            })
            .collect();
        let worst_share = r
            .vcpus
            .iter()
            .map(ReplayedVcpu::share_points)
            .fold(0.0, f64::max);
        println!(
            "  {}: {} events, {} lost; worst x{:.2}, shares within {:.1} points; {}",
            file.file_name().map_or_else(
                || file.display().to_string(),
                |n| n.to_string_lossy().into_owned()
            ),
            r.events,
            r.lost,
            spread.replay_factor(i),
            worst_share,
            waits.join(", ")
        );
    }
    let width = spread.labels.iter().map(String::len).max().unwrap_or(0);
    println!(
        "  {:width$}  {:>13}  {:>13}  replays outside the kernel's range",
        "vCPU", "kernel", policy
    );
    for (v, label) in spread.labels.iter().enumerate() {
        let (klo, khi) = spread.kernel_range(v);
        let (rlo, rhi) = spread.replay_range(v);
        println!(
            "  {label:width$}  {:>13}  {:>13}  x{:.2} (the kernel's own spread x{:.2})",
            format!("{klo:.0}-{khi:.0}"),
            format!("{rlo:.0}-{rhi:.0}"),
            spread.replay_outside_kernel(v),
            wait_factor(klo, khi)
        );
    }
    let (k, n) = spread.kernel_pairs_within(GOAL_FACTOR);
    println!("  the kernel's own rounds, pairs with every vCPU within x{GOAL_FACTOR}: {k} of {n}");
    let (k, n) = spread.replays_within(GOAL_FACTOR);
    println!(
        "  {policy} replays within x{GOAL_FACTOR} of their recording on every vCPU: {k} of {n}"
    );
    Ok(())
}
