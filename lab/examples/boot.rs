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
    let spec = lab::kernel::KernelSpec::by_name(kernel).ok_or("unknown kernel")?;
    let archive = lab::apt::Archive::new(&lab::cache_dir());
    let k = lab::kernel::Kernel::fetch(spec, &archive)?;
    let mut fs = lab::base_initramfs(&archive, &k, "kvm-amd")?;
    fs.host_file("/lab/suite.sh", Path::new(suite), 0o644)?;
    // The suite's scenario files, beside it (lab/suite/*.toml), at /lab/NAME.
    let suite_dir = Path::new(suite).parent().unwrap_or(Path::new("."));
    for entry in std::fs::read_dir(suite_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            fs.host_file(&format!("/lab/{name}"), &path, 0o644)?;
        }
    }
    fs.executable("/bin/tinyvmm", &lab::tinyvmm())?;
    // The demo without affinity rotation, where tests/priv_kernels.rs puts it: the suites that
    // record the demo (svm.sh's LAB_RECORD_DEMO, cfs-sample.sh) read it from there.
    fs.file(
        "/lab/demo-fixed-affinity.toml",
        include_bytes!("../../tests/fixtures/demo-fixed-affinity.toml").to_vec(),
        0o644,
    );
    for exe in rest {
        let p = PathBuf::from(exe);
        fs.executable(
            &format!("/bin/{}", p.file_name().unwrap().to_string_lossy()),
            &p,
        )?;
    }
    let work = PathBuf::from(workdir);
    std::fs::create_dir_all(&work)?;
    let initrd = work.join("initramfs.cpio");
    fs.write(&initrd)?;
    let append = std::env::var("LAB_APPEND").unwrap_or_default();
    let mut qemu = lab::qemu::Qemu::default();
    if let Ok(secs) = std::env::var("LAB_TIMEOUT_S") {
        let secs = secs
            .parse()
            .map_err(|_| format!("LAB_TIMEOUT_S={secs:?} is not a number of seconds"))?;
        qemu.timeout = std::time::Duration::from_secs(secs);
    }
    let boot = qemu.boot(&k.vmlinuz, &initrd, &append, &work)?;
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
