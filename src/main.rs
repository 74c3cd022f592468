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
    let verbose = cli.verbose;
    match cmd::run(cli.command) {
        Ok(code) => code,
        Err(err) => {
            // One line: the outermost context plus its causes, as the user should read it.
            eprintln!("kvmscope: {err:#}");
            let log = err
                .chain()
                .find_map(|e| e.downcast_ref::<probes::loader::ProbeError>())
                .and_then(|e| e.verifier_log());
            match log {
                Some(log) if verbose => eprintln!("kvmscope: the verifier's log:\n{log}"),
                Some(_) => eprintln!("kvmscope: run again with -v for the verifier's whole log"),
                None => {}
            }
            std::process::ExitCode::FAILURE
        }
    }
}
