//! What the privileged probe tests share.

/// Root and BTF, or skip (fail with KVMSCOPE_REQUIRE_PRIVILEGED=1).
pub fn privileged() -> bool {
    let missing = if hostfacts::euid() != 0 {
        Some("not root (BPF tests need root)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match missing {
        None => true,
        Some(reason) => {
            if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("privileged test cannot run: {reason} (KVMSCOPE_REQUIRE_PRIVILEGED=1)");
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}
