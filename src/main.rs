//! `kvmscope`: wires sources (live probes, the bundled VMM, trace files) to sinks (trace
//! lines, report, recorder, dashboard, exporters). Logic lives in the crates.

mod cli;
mod cmd;
mod file_source;
mod live;
mod report_text;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // One line: the outermost context plus its causes, as the user should read it.
            eprintln!("kvmscope: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
