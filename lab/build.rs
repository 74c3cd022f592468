//! Builds `guest/tinyvmm.c`, the foreign KVM user the suites run beside kvmscope, as a static
//! executable (the initramfs has no C library of its own).
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("tinyvmm");
    println!("cargo:rerun-if-changed=guest/tinyvmm.c");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-static", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&out)
        .arg("guest/tinyvmm.c")
        .status()
        .unwrap_or_else(|e| panic!("cannot run {cc} for lab/guest/tinyvmm.c: {e} (install gcc and libc6-dev: bash scripts/setup.sh)"));
    assert!(
        status.success(),
        "{cc} failed on lab/guest/tinyvmm.c (static linking needs libc6-dev)"
    );
    println!("cargo:rustc-env=LAB_TINYVMM={}", out.display());
}
