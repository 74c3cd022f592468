//! One module per subcommand. Each `run` returns the process exit code.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::Command;

mod check;
mod demo;
mod export;
mod exporter;
mod qemu;
mod record;
mod replay;
mod report;
pub mod simulate;
mod top;
mod trace;
mod vmm;

/// Prints one warning line on stderr, named as the errors are (`kvmscope: warning: …`), so a
/// user reading a command's stderr can tell kvmscope's lines from those of the tools around it.
pub(crate) fn warn(what: &str) {
    eprintln!("kvmscope: warning: {what}");
}

/// Writes a command's output to stdout in one go. A reader that went away (`| head`) ends
/// nothing but the output: `println!` would panic on the broken pipe instead.
pub(crate) fn print_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    reader_gone(
        stdout
            .write_all(text.as_bytes())
            .and_then(|()| stdout.flush()),
    )
    .map(drop)
}

/// The one rule for a write to stdout: whether its reader went away (a broken pipe: the
/// output ends quietly, the command succeeds), or the error that is a failure.
pub(crate) fn reader_gone(written: std::io::Result<()>) -> anyhow::Result<bool> {
    use anyhow::Context as _;
    match written {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(e).context("cannot write to stdout"),
    }
}

/// `log_file` is the global `--log-file`: the logger already writes there; the dashboards
/// also send their stderr to it.
pub fn run(command: Command, log_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(a) => check::run(a),
        Command::Vmm(a) => vmm::run(a),
        Command::Trace(a) => trace::run(a),
        Command::Report(a) => report::run(a),
        Command::Record(a) => record::run(a),
        Command::Replay(a) => replay::run(a, log_file),
        Command::Export(a) => export::run(a),
        Command::Demo(a) => demo::run(a, log_file),
        Command::Top(a) => top::run(a, log_file),
        Command::Qemu(a) => qemu::run(a),
        Command::Simulate(a) => simulate::run(a),
        Command::Exporter(a) => exporter::run(a),
    }
}
