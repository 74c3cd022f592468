//! Command-line surface of `kvmscope` (clap derive). Each subcommand's work lives in
//! `cmd/<name>.rs`; this file only says what users can type.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "kvmscope",
    version,
    about = "See how the Linux host schedules KVM vCPUs"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// On failure, print everything known (e.g. the eBPF verifier's whole log).
    #[arg(short, long, global = true)]
    pub verbose: bool,
    /// Write logs here, appended: warnings, fallbacks and a rejected eBPF program's whole
    /// verifier log (every command; the dashboards never log to the screen).
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,
}

/// The command line as clap parses it: every option's value may start with a minus, so
/// `--pcpus -1` or `--duration -1` reach the option's own check, which says what it takes,
/// instead of clap's "unexpected argument '-1' found".
pub fn command() -> clap::Command {
    fn negatives(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|arg| {
            if arg.get_action().takes_values() {
                arg.allow_negative_numbers(true)
            } else {
                arg
            }
        })
        .mut_subcommands(negatives)
    }
    negatives(<Cli as clap::CommandFactory>::command())
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Say what this host offers kvmscope (root, /dev/kvm flavour, BTF, tracefs, tracepoints).
    Check(CheckArgs),
    /// Run the bundled VMM: VMs whose vCPU threads compete for pCPUs.
    Vmm(VmmArgs),
    /// Stream decoded scheduler and KVM events, one per line.
    Trace(TraceArgs),
    /// Summarise how vCPUs were scheduled, live or from a trace file.
    Report(ReportArgs),
    /// Record events to a trace file.
    Record(RecordArgs),
    /// Open the dashboard over a trace file.
    Replay(ReplayArgs),
    /// Convert a trace file for other tools (Perfetto, Chrome trace JSON).
    Export(ExportArgs),
    /// Start the bundled VMM with an overcommitted scenario and open the dashboard on it.
    Demo(DemoArgs),
    /// Open the dashboard on VMs already running.
    Top(TopArgs),
    /// Find QEMU VMs and their vCPU threads.
    Qemu(QemuArgs),
    /// Replay a recording's vCPU demand through other schedulers (CFS, EEVDF, O(1), 2.4
    /// goodness, Xen credit, Xen SEDF) and compare them with what the host did.
    Simulate(SimulateArgs),
    /// Serve per-vCPU scheduling metrics to Prometheus (OpenMetrics on /metrics).
    Exporter(ExporterArgs),
}

/// Which vCPU threads to watch. Exactly one of these is given (or none where a command
/// has a default).
#[derive(Args, Debug, Clone, Default)]
pub struct TargetArgs {
    /// Run the bundled VMM in-process with its default scenario and watch it.
    #[arg(long, conflicts_with_all = ["pid", "all_kvm", "qemu"])]
    pub demo: bool,
    /// Scenario for --demo (TOML, see `kvmscope vmm --scenario`).
    #[arg(long, requires = "demo")]
    pub scenario: Option<PathBuf>,
    /// Watch these processes (a VMM or QEMU pid), all their vCPU threads.
    #[arg(long, num_args = 1.., value_name = "PID", conflicts_with_all = ["all_kvm", "qemu"])]
    pub pid: Vec<u32>,
    /// Watch every process that holds a KVM vCPU.
    #[arg(long, conflicts_with = "qemu")]
    pub all_kvm: bool,
    /// Watch QEMU VMs: all of them (also those that start later), or the one with this name or pid.
    #[arg(long, num_args = 0..=1, default_missing_value = "", value_name = "NAME|PID")]
    pub qemu: Option<String>,
    /// QMP socket to map QEMU vCPUs to threads (otherwise found from the command line).
    #[arg(long, value_name = "PATH")]
    pub qmp: Option<PathBuf>,
    /// Counters mode: no BPF, every figure from perf counters, schedstat and /proc (also
    /// chosen by itself when this process lacks the capabilities to load BPF).
    #[arg(long)]
    pub no_bpf: bool,
    /// How often counters mode samples each thread (`1s`, `250ms`, ...).
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_sample_every)]
    pub sample_every: std::time::Duration,
    /// Ring buffer size in bytes (power of two, multiple of the page size); the per-CPU rings of
    /// switch records get up to as much again.
    #[arg(long, default_value_t = crate::target::DEFAULT_RING_BYTES)]
    pub ring_bytes: u32,
    /// Guest exits: `stream` every kvm_exit/kvm_entry as an event, `aggregate` them in the
    /// kernel (counts and log2 handling times per vCPU and reason, read periodically), or
    /// `both`. Default: aggregate for `report`, stream for every other command.
    #[arg(long, value_enum, value_name = "MODE")]
    pub exits: Option<ExitsArg>,
}

/// `--exits`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExitsArg {
    Stream,
    Aggregate,
    Both,
}

/// `--duration`, the one parser of every command's: seconds (`10`, `0.5`) or a humantime
/// duration (`90s`, `2m`, `500ms`), above zero and below 10,000,000 s.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let d = match s.trim().parse::<f64>() {
        Ok(secs) if secs.is_finite() && secs > 0.0 && secs < 1e7 => {
            std::time::Duration::from_secs_f64(secs)
        }
        Ok(_) => std::time::Duration::ZERO,
        Err(_) => humantime::parse_duration(s).unwrap_or_default(),
    };
    if d.is_zero() || d.as_secs_f64() >= 1e7 {
        return Err(format!(
            "`{s}` is not a duration: expected seconds above 0 (10, 0.5) or a duration (90s, \
             2m, 500ms), below 10000000 s"
        ));
    }
    Ok(d)
}

/// `trace --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TraceFormat {
    /// One readable line per event.
    Text,
    /// One JSON object per line.
    Jsonl,
}

/// `export --format`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// Perfetto's protobuf trace (ui.perfetto.dev).
    Perfetto,
    /// Chrome's JSON trace events (chrome://tracing, Perfetto too).
    ChromeJson,
}

/// `--sample-every`: a humantime duration from 10 ms to an hour.
fn parse_sample_every(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("{e} (try 1s or 250ms)"))?;
    if d < std::time::Duration::from_millis(10) || d > std::time::Duration::from_secs(3600) {
        return Err(format!("{s} is outside 10ms..1h"));
    }
    Ok(d)
}

/// `--tick-hz`: a redraw rate from 0.5 to 100 Hz.
fn parse_tick_hz(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(hz) if (0.5..=100.0).contains(&hz) => Ok(hz),
        _ => Err(format!("`{s}` is not a redraw rate from 0.5 to 100 Hz")),
    }
}

/// `replay --speed`: a positive, finite playback speed.
fn parse_speed(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
        _ => Err(format!(
            "`{s}` is not a playback speed: expected a number above 0 (1 = real time)"
        )),
    }
}

/// `vmm --workload`: clap's view of [`vmm::Workload`], each value named by the workload's
/// own `name()`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WorkloadArg(pub vmm::Workload);

impl clap::ValueEnum for WorkloadArg {
    fn value_variants<'a>() -> &'a [Self] {
        use vmm::Workload::*;
        &[
            WorkloadArg(Spin),
            WorkloadArg(Exits),
            WorkloadArg(Sleepy),
            WorkloadArg(Mixed),
            WorkloadArg(TripleFault),
        ]
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        Some(clap::builder::PossibleValue::new(self.0.name()))
    }
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct VmmArgs {
    /// Number of VMs.
    #[arg(long, default_value_t = 2)]
    pub vms: u32,
    /// vCPUs per VM.
    #[arg(long, default_value_t = 2)]
    pub vcpus: u32,
    /// Guest workload of every vCPU.
    #[arg(long, value_enum, default_value = "mixed")]
    pub workload: WorkloadArg,
    /// Scenario file (TOML); overrides --vms/--vcpus/--workload.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Seconds to run (until Ctrl-C if not given).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// CPU affinity, e.g. `all=0`, `vm1=0-1`, `vm0:vcpu1=1` (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub pin: Vec<String>,
    /// Nice values, e.g. `vm1=10`, `vm0:vcpu0=-5` (repeatable, comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub nice: Vec<String>,
    /// Rotate each vCPU's affinity over the pCPUs every MS milliseconds to force migrations.
    #[arg(long, value_name = "MS")]
    pub migrate_every: Option<u64>,
    /// Port-I/O exit every K work units (workload `exits`).
    #[arg(long, value_name = "K")]
    pub exit_every: Option<u64>,
    /// Length of each burst of work of the `sleepy` workload, in microseconds.
    #[arg(long, value_name = "US")]
    pub burst_us: Option<u64>,
    /// How long the VMM blocks a `sleepy` vCPU after each burst, in microseconds.
    #[arg(long, value_name = "US")]
    pub sleep_us: Option<u64>,
    /// Off-CPU gap threshold in microseconds for the guests' gap rings.
    #[arg(long, value_name = "US")]
    pub gap_threshold_us: Option<u64>,
    /// Print the summary as one JSON document.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct TraceArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to trace (until Ctrl-C if not given).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = TraceFormat::Text)]
    pub format: TraceFormat,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Trace file to report on (otherwise live, from a target).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to observe when live.
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct RecordArgs {
    /// Output trace file.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to record (until Ctrl-C if not given).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
    /// When done, print one JSON document: events, lost, bytes and (`--demo`) the bundled
    /// VMM's own counters, which the trace file does not hold.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ReplayArgs {
    pub file: PathBuf,
    /// Playback speed (1 = real time).
    #[arg(long, default_value_t = 1.0, value_parser = parse_speed)]
    pub speed: f64,
    /// Also replay the recording's demand through this scheduler (cfs, eevdf, o1, on,
    /// credit, sedf) and show that run beside the recorded one (`m` switches).
    #[arg(long, value_name = "POLICY")]
    pub simulate: Option<String>,
    /// A parameter of the `--simulate` policy, NAME=VALUE (as `simulate --param`); repeatable.
    #[arg(long, value_name = "NAME=VALUE", requires = "simulate")]
    pub param: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SimulateArgs {
    /// Trace file whose demand is replayed (otherwise a live target, observed for --duration).
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub target: TargetArgs,
    /// Seconds to observe a live target before replaying its demand (required with one).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Policies, comma-separated (cfs, eevdf, o1, on, credit, sedf), or `all`.
    #[arg(long, default_value = "all")]
    pub policy: String,
    /// pCPUs to simulate (default: the recording's).
    // Signed, so that a negative count is refused with the simulation's range as 0 is, not
    // by the argument parser.
    #[arg(long)]
    pub pcpus: Option<i64>,
    /// A policy parameter, NAME=VALUE (`cfs.latency=12ms`, `credit.cap.vm1=50`); repeatable.
    #[arg(long, value_name = "NAME=VALUE")]
    pub param: Vec<String>,
    /// One JSON document instead of text.
    #[arg(long)]
    pub json: bool,
    /// Write the simulated run (one --policy) as a trace file instead of the comparison.
    #[arg(long, value_name = "OUT")]
    pub record: Option<PathBuf>,
    /// Overwrite an existing --record file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    pub file: PathBuf,
    #[arg(long, value_enum)]
    pub format: ExportFormat,
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// Overwrite an existing output file.
    #[arg(long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct DemoArgs {
    /// Scenario file (TOML) instead of the built-in overcommitted one.
    #[arg(long)]
    pub scenario: Option<PathBuf>,
    /// Stop after this many seconds (default: until `q`).
    #[arg(long, value_name = "SECONDS", value_parser = parse_duration)]
    pub duration: Option<std::time::Duration>,
    /// Counters mode: no BPF (see `kvmscope report --help`).
    #[arg(long)]
    pub no_bpf: bool,
    /// How often counters mode samples each thread.
    #[arg(long, value_name = "DURATION", default_value = "1s", value_parser = parse_sample_every)]
    pub sample_every: std::time::Duration,
    /// Redraw rate in Hz (0.5 to 100).
    #[arg(long, default_value_t = 10.0, value_parser = parse_tick_hz)]
    pub tick_hz: f64,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub target: TargetArgs,
    /// Redraw rate in Hz (0.5 to 100).
    #[arg(long, default_value_t = 10.0, value_parser = parse_tick_hz)]
    pub tick_hz: f64,
}

#[derive(Args, Debug)]
pub struct ExporterArgs {
    /// What to watch; by default every KVM user on the host, also VMs that start later.
    #[command(flatten)]
    pub target: TargetArgs,
    /// Address to serve on.
    #[arg(long, default_value = "127.0.0.1:9477", value_name = "ADDR")]
    pub listen: std::net::SocketAddr,
    /// Prometheus exporter-toolkit web config (YAML): TLS and basic auth with bcrypt hashes.
    #[arg(long, value_name = "FILE")]
    pub web_config: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct QemuArgs {
    #[command(subcommand)]
    pub command: QemuCommand,
}

#[derive(Subcommand, Debug)]
pub enum QemuCommand {
    /// List running QEMU VMs using KVM with each vCPU's thread.
    List {
        #[arg(long)]
        json: bool,
        /// QMP socket to ask (otherwise found from each command line).
        #[arg(long)]
        qmp: Option<PathBuf>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    /// `--workload` offers every workload, by the name `vmm` parses back.
    #[test]
    fn every_workload_is_a_value_and_parses_back() {
        let names: Vec<&str> = vmm::Workload::NAMES
            .split([',', ' '])
            .filter(|w| !w.is_empty() && *w != "or")
            .collect();
        let values = WorkloadArg::value_variants();
        assert_eq!(values.len(), names.len(), "{names:?}");
        for v in values {
            let name = v.0.name();
            assert!(names.contains(&name), "{name} not in {names:?}");
            assert_eq!(name.parse::<vmm::Workload>().unwrap(), v.0);
        }
    }
}
