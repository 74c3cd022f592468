//! Facts about the host a trace was taken on, shown in headers and stored in trace files.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
pub struct HostInfo {
    pub hostname: String,
    /// `uname -r`.
    pub kernel: String,
    /// "EEVDF" (Linux >= 6.6) or "CFS".
    pub scheduler: String,
    pub cpus: u32,
    /// "vmx", "svm", "pvm" or "none".
    pub kvm_flavour: String,
    /// Always "CLOCK_MONOTONIC" today; stored so a reader can refuse a clock it does not know.
    pub clock: String,
    /// Host TSC rate, if known (the bundled VMM measures it).
    pub tsc_hz: Option<f64>,
}
