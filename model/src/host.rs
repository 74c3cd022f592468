//! Facts about the host a trace was taken on, shown in headers and stored in trace files.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// "EEVDF" or "CFS" (told from the kernel's BTF: `sched_entity` has `deadline` on EEVDF),
    /// "unknown" without BTF.
    pub scheduler: String,
    pub cpus: u32,
    /// "vmx", "svm", "pvm" or "none".
    pub kvm_flavour: String,
    /// Always "CLOCK_MONOTONIC" today; stored so a reader can refuse a clock it does not know.
    pub clock: String,
    /// Host TSC rate, if known (the bundled VMM measures it).
    pub tsc_hz: Option<f64>,
    /// Whether the kernel has the `csd:*` tracepoints (Linux 6.4 on), from its BTF; `None`
    /// when not known (no BTF, or a recording made before this was stored).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub csd_tracepoints: Option<bool>,
}

impl HostInfo {
    /// Why VMCLEAR IPIs cannot be attributed on this host, if they cannot. Only VT-x has
    /// them (a vCPU loaded on another pCPU has its VMCS cleared on the old one first), and
    /// the `csd:*` tracepoints that show them arrived in Linux 6.4. Decided by whether the
    /// kernel has them, not by its release.
    pub fn vmclear_unattributable(&self) -> Option<&'static str> {
        (self.kvm_flavour == "vmx" && self.csd_tracepoints == Some(false)).then_some(
            "VMCLEAR attribution needs Linux 6.4 (csd:* tracepoints); everything else works",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmclear_attribution_needs_vtx_and_the_csd_tracepoints() {
        let host = |csd: Option<bool>, kvm: &str| HostInfo {
            // The release is not looked at: a backport may have csd:* on an older one.
            kernel: "6.1.0-50-amd64".into(),
            kvm_flavour: kvm.into(),
            csd_tracepoints: csd,
            ..HostInfo::default()
        };
        assert!(host(Some(false), "vmx")
            .vmclear_unattributable()
            .is_some_and(|w| w.contains("Linux 6.4")));
        assert_eq!(host(Some(true), "vmx").vmclear_unattributable(), None);
        assert_eq!(host(Some(false), "svm").vmclear_unattributable(), None);
        assert_eq!(host(None, "vmx").vmclear_unattributable(), None);
        // A recording from before the field existed reads as "not known".
        let old: HostInfo = serde_json::from_str(
            r#"{"hostname":"h","kernel":"6.1.0","scheduler":"CFS","cpus":2,"kvm_flavour":"vmx","clock":"CLOCK_MONOTONIC","tsc_hz":null}"#,
        )
        .unwrap();
        assert_eq!(old.csd_tracepoints, None);
    }
}
