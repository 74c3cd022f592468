//! `kvmscope`: wires sources (live probes, the bundled VMM, trace files) to sinks (trace
//! lines, report, recorder, dashboard, exporters). Logic lives in the crates.

mod cli;
mod cmd;
mod file_source;
mod live;
mod logging;
mod report_text;
mod target;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Bad input is one line, like every other failure: clap's first line, which
            // names the argument and says what is wrong with it, plus the values it takes
            // where clap knows them (its later lines).
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            match e.get(clap::error::ContextKind::ValidValue) {
                Some(clap::error::ContextValue::Strings(valid)) => {
                    eprintln!("kvmscope: {first} (expected one of: {})", valid.join(", "))
                }
                _ => eprintln!("kvmscope: {first}"),
            }
            return std::process::ExitCode::FAILURE;
        }
    };
    let log_file = cli.log_file.as_deref();
    let result = logging::init(log_file).and_then(|()| cmd::run(cli.command, log_file));
    match result {
        Ok(code) => code,
        Err(err) => {
            for line in logging::failure_lines(&err, cli.verbose, log_file) {
                eprintln!("{line}");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
