//! Boots one kernel of the matrix with a suite script and prints the steps that came back.
//! Usage: cargo run -p lab --example boot -- KERNEL SUITE.sh WORKDIR [EXECUTABLE...]
//! Environment: `LAB_APPEND` words for the kernel command line (the suite's variables, e.g.
//! `LAB_ROUNDS=20`), `LAB_TIMEOUT_S` the boot's time limit in seconds (600).
use std::path::{Path, PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [kernel, suite, workdir, rest @ ..] = args.as_slice() else {
        return Err("usage: boot KERNEL SUITE.sh WORKDIR [EXECUTABLE...]".into());
    };
    let executables: Vec<PathBuf> = rest.iter().map(PathBuf::from).collect();
    let (k, boot) =
        lab::suite::SuiteBoot::env(kernel, Path::new(suite), Path::new(workdir), &executables)?
            .boot()?;
    println!(
        "{} ({}) in {:.1} s, suite {}",
        k.release,
        k.packages.join(" "),
        boot.wall.as_secs_f64(),
        if boot.results.done {
            "done"
        } else {
            "NOT done"
        }
    );
    for s in &boot.results.steps {
        println!(
            "== {} rc={:?} {} ms, {} bytes out\n{}\n-- stderr\n{}",
            s.name,
            s.rc,
            s.ms,
            s.stdout.len(),
            lab::results::tail(&s.stdout, 15),
            lab::results::tail(&s.stderr, 10)
        );
    }
    Ok(())
}
