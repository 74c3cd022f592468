//! Helpers for the VMM crate's privileged tests.
#![allow(dead_code)]

/// Whether a KVM test may run: `false` (after printing why) without a usable /dev/kvm;
/// with `KVMSCOPE_REQUIRE_PRIVILEGED=1` a missing /dev/kvm fails the test instead.
pub fn kvm_available() -> bool {
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
    {
        Ok(_) => true,
        Err(e) => {
            let reason = format!("cannot open /dev/kvm: {e}");
            if std::env::var("KVMSCOPE_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
                panic!("privileged test cannot run: {reason} (KVMSCOPE_REQUIRE_PRIVILEGED=1)");
            }
            eprintln!("skipped: {reason}");
            false
        }
    }
}

/// One `key : value` figure of `/proc/self/task/<tid>/sched`.
pub fn sched_field(tid: u32, key: &str) -> f64 {
    let text = std::fs::read_to_string(format!("/proc/self/task/{tid}/sched"))
        .unwrap_or_else(|e| panic!("cannot read sched of tid {tid}: {e}"));
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().parse::<f64>().ok())?
        })
        .unwrap_or_else(|| panic!("no `{key}` in /proc/self/task/{tid}/sched"))
}

/// The CPUs this process may use.
pub fn allowed_cpus() -> Vec<u32> {
    vmm::sched::get_affinity(0).expect("sched_getaffinity")
}
