//! The global `--log-file`: one logger for every command, appending to the file, and what
//! the user is told about a rejected eBPF program's verifier log when a command fails.

use std::fs::File;
use std::path::Path;

use anyhow::Context;

/// Opens `path` for appending (created if missing).
pub fn open(path: &Path) -> anyhow::Result<File> {
    File::options()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open log file {}", path.display()))
}

/// With `--log-file`, every `log` record from here on goes to that file, at `info` unless
/// RUST_LOG says otherwise. Without it no logger is installed here (the exporter sets up
/// its own on stderr).
pub fn init(log_file: Option<&Path>) -> anyhow::Result<()> {
    let Some(path) = log_file else {
        return Ok(());
    };
    let file = open(path)?;
    // A logger installed earlier wins (only tests do that).
    let _ = env_logger::Builder::new()
        .parse_filters(&std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
        .target(env_logger::Target::Pipe(Box::new(file)))
        .try_init();
    Ok(())
}

/// `err` and its causes joined by ": " as `{:#}` joins them, leaving out a cause whose text
/// ends the message before it: an error that formats its own `source` into its message
/// ("cannot read web config F: No such file or directory (os error 2)") said it twice.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
}

/// The lines printed to stderr for a failed command: the error on one line, then where the
/// verifier's whole log is when a program was rejected. The probes already logged that log
/// (so with `--log-file` it is in the file); `-v` also prints it here.
pub fn failure_lines(err: &anyhow::Error, verbose: bool, log_file: Option<&Path>) -> Vec<String> {
    // One line: the outermost context plus its causes, as the user should read it.
    let mut lines = vec![format!("kvmscope: {}", one_line(err))];
    let log = err
        .chain()
        .find_map(|e| e.downcast_ref::<probes::loader::ProbeError>())
        .and_then(|e| e.verifier_log());
    if let Some(log) = log {
        if verbose {
            lines.push(format!("kvmscope: the verifier's log:\n{log}"));
        }
        match log_file {
            Some(path) => lines.push(format!(
                "kvmscope: the verifier's whole log is in {}",
                path.display()
            )),
            None if !verbose => lines.push(
                "kvmscope: run again with -v or --log-file FILE for the verifier's whole log"
                    .into(),
            ),
            None => {}
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use probes::loader::ProbeError;
    use probes::programs::ProgramFailure;

    const LOG: &str =
        "0: (79) r2 = *(u64 *)(r10 -8)\nR2 unbounded memory access\nprocessed 9 insns";

    fn rejected() -> anyhow::Error {
        anyhow::Error::new(ProbeError::Program(ProgramFailure {
            line: "handle_sched_switch (sched:sched_switch) cannot be loaded on Linux 6.1.0: \
                   R2 unbounded memory access"
                .into(),
            verifier_log: Some(LOG.into()),
        }))
        .context("cannot start watching")
    }

    #[test]
    fn a_rejected_program_says_where_its_whole_log_is() {
        let file = Path::new("/tmp/k.log");
        let lines = failure_lines(&rejected(), false, Some(file));
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("R2 unbounded memory access") && !lines[0].contains('\n'));
        assert_eq!(
            lines[1],
            "kvmscope: the verifier's whole log is in /tmp/k.log"
        );

        let lines = failure_lines(&rejected(), true, None);
        assert!(lines[1].ends_with(LOG), "{lines:?}");
        assert_eq!(lines.len(), 2, "-v alone needs no hint: {lines:?}");

        let lines = failure_lines(&rejected(), false, None);
        assert!(lines[1].contains("-v or --log-file"), "{lines:?}");

        let plain = anyhow::anyhow!("no such pid 7");
        assert_eq!(failure_lines(&plain, true, Some(file)).len(), 1);
    }

    #[test]
    fn a_cause_the_message_already_quotes_is_said_once() {
        let io = || std::io::Error::from(std::io::ErrorKind::NotFound);
        let e = anyhow::Error::new(metrics::WebConfigError::Read {
            path: "/x.yml".into(),
            source: io(),
        });
        assert_eq!(
            failure_lines(&e, false, None),
            vec![format!("kvmscope: cannot read web config /x.yml: {}", io())]
        );
        // Contexts and causes that add something stay, in order.
        let e = anyhow::Error::new(io()).context("cannot start watching");
        assert_eq!(
            failure_lines(&e, false, None),
            vec![format!("kvmscope: cannot start watching: {}", io())]
        );
    }

    #[test]
    fn the_log_file_receives_every_record_appended() {
        let dir = std::env::temp_dir().join(format!("kvmscope-log-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("kvmscope.log");
        std::fs::write(&path, "earlier run\n").unwrap();
        init(Some(&path)).unwrap();
        log::warn!("a multi-line record:\n{LOG}");
        log::logger().flush();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(text.starts_with("earlier run\n"), "appended: {text}");
        // env_logger indents a record's continuation lines.
        for line in LOG.lines() {
            assert!(text.contains(line), "the whole record: {text}");
        }
    }

    #[test]
    fn an_unopenable_log_file_is_one_clear_error() {
        let e = init(Some(Path::new("/nonexistent-dir/kvmscope.log"))).unwrap_err();
        assert!(
            format!("{e:#}").starts_with("cannot open log file /nonexistent-dir/kvmscope.log"),
            "{e:#}"
        );
    }
}
