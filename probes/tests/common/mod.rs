//! What the privileged probe tests share.

#[path = "../../../tests/common/skip.rs"]
mod skip;

/// Root and BTF, or skip (fail with KVMSCOPE_REQUIRE_PRIVILEGED=1).
pub fn privileged() -> bool {
    let missing = if hostfacts::euid() != 0 {
        Some("not root (BPF tests need root)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    missing.is_none_or(skip::skip_unless_required)
}
