//! Privileges: the capabilities in this process's effective set, not its uid (root in a
//! container or under `setpriv` may have none of them).

use caps::{CapSet, Capability};

/// Whether this process may load and attach the eBPF probes: CAP_SYS_ADMIN, or CAP_BPF
/// together with CAP_PERFMON, in the effective set.
pub fn may_load_bpf() -> bool {
    let has = |cap| has_effective(cap);
    has(Capability::CAP_SYS_ADMIN) || (has(Capability::CAP_BPF) && has(Capability::CAP_PERFMON))
}

/// Whether `cap` is in the effective set (false if the set cannot be read).
pub fn has_effective(cap: Capability) -> bool {
    caps::has_cap(None, CapSet::Effective, cap).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_needs_sys_admin_or_bpf_with_perfmon() {
        let expected = has_effective(Capability::CAP_SYS_ADMIN)
            || (has_effective(Capability::CAP_BPF) && has_effective(Capability::CAP_PERFMON));
        assert_eq!(may_load_bpf(), expected);
    }
}
