//! Boots one kernel of the matrix with a suite script and prints the steps that came back.
//! Usage: cargo run -p lab --example boot -- KERNEL SUITE.sh WORKDIR [EXECUTABLE...]
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
    let boot = lab::qemu::Qemu::default().boot(&k.vmlinuz, &initrd, "", &work)?;
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
