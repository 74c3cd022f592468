//! `kvmscope`: wires sources (live probes, the bundled VMM, trace files) to sinks (trace
//! lines, report, recorder, dashboard, exporters). Logic lives in the crates.

mod allocator;
mod cli;
mod cmd;
mod file_source;
mod live;
mod logging;
mod report_text;
mod target;

fn main() -> std::process::ExitCode {
    let parsed = cli::command()
        .try_get_matches()
        .and_then(|m| <cli::Cli as clap::FromArgMatches>::from_arg_matches(&m));
    let cli = match parsed {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => e.exit(), // --help, --version
        Err(e) => {
            // Bad input is one line, like every other failure: clap's first line, which
            // names the argument and says what is wrong with it, plus the values it takes
            // where clap knows them (its later lines).
            use clap::error::{ContextKind, ContextValue, ErrorKind};
            if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                // No command (clap's help, whose first line is only the tagline), at the top
                // or under a command that has its own (`kvmscope qemu`): name that level's.
                let mut path = vec!["kvmscope".to_string()];
                let mut level = <cli::Cli as clap::CommandFactory>::command();
                for arg in std::env::args().skip(1) {
                    let Some(sub) = level.find_subcommand(&arg).cloned() else {
                        continue;
                    };
                    path.push(arg);
                    level = sub;
                }
                let commands: Vec<&str> = level.get_subcommands().map(|c| c.get_name()).collect();
                let path = path.join(" ");
                eprintln!(
                    "{path}: no command given (one of: {}; `{path} --help` says what each does)",
                    commands.join(", ")
                );
                return std::process::ExitCode::FAILURE;
            }
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or_default();
            let first = first.strip_prefix("error: ").unwrap_or(first);
            match (
                e.get(ContextKind::ValidValue),
                e.get(ContextKind::InvalidArg),
            ) {
                (Some(ContextValue::Strings(valid)), _) if !valid.is_empty() => {
                    eprintln!("kvmscope: {first} (expected one of: {})", valid.join(", "))
                }
                // "the following required arguments were not provided:" names them on the
                // lines after it.
                (_, Some(ContextValue::Strings(missing)))
                    if e.kind() == ErrorKind::MissingRequiredArgument =>
                {
                    eprintln!("kvmscope: {first} {}", missing.join(", "))
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
