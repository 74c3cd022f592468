//! What a privileged test does on a host that lacks what it needs: skip, saying why, or fail
//! when KVMSCOPE_REQUIRE_PRIVILEGED=1 (CI, where every privileged test must run). One rule
//! for the binary's tests and, through `#[path]`, `probes`' own.

/// `false` after printing why the test is skipped; a panic with KVMSCOPE_REQUIRE_PRIVILEGED=1.
pub fn skip_unless_required(reason: &str) -> bool {
    if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("privileged test cannot run: {reason} (KVMSCOPE_REQUIRE_PRIVILEGED=1)");
    }
    eprintln!("skipped: {reason}");
    false
}
