//! Builds the lab's guest programs as static executables (the initramfs has no C library of
//! its own): `guest/tinyvmm.c`, the foreign KVM user the suites run beside kvmscope, and
//! `guest/port-e9.c`, the Bochs lane's results port.
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    for (source, exe, env) in [
        ("guest/tinyvmm.c", "tinyvmm", "LAB_TINYVMM"),
        ("guest/port-e9.c", "lab-port-e9", "LAB_PORT_E9"),
    ] {
        let out = out_dir.join(exe);
        println!("cargo:rerun-if-changed={source}");
        let status = Command::new(&cc)
            .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
            .arg(&out)
            .arg(source)
            .status()
            .unwrap_or_else(|e| panic!("cannot run {cc} for lab/{source}: {e} (install gcc and libc6-dev: bash scripts/setup.sh)"));
        assert!(
            status.success(),
            "{cc} failed on lab/{source} (static linking needs libc6-dev)"
        );
        println!("cargo:rustc-env={env}={}", out.display());
    }
}
