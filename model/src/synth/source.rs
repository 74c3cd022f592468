//! Serving any event vector as a [`Source`], from a synthetic host.

use std::collections::VecDeque;
use std::time::Duration;

use crate::*;

/// Serves a vector of events as a [`Source`], in batches.
pub struct SynthSource {
    events: VecDeque<Event>,
    batch: usize,
    host: HostInfo,
}

impl SynthSource {
    pub fn new(events: Vec<Event>) -> Self {
        SynthSource {
            events: events.into(),
            batch: 4096,
            host: synthetic_host(),
        }
    }
}

/// The host a synthetic stream claims to come from (2 pCPUs, EEVDF).
pub fn synthetic_host() -> HostInfo {
    HostInfo {
        hostname: "synthetic".into(),
        kernel: "synthetic".into(),
        scheduler: "EEVDF".into(),
        cpus: 2,
        kvm_flavour: crate::KvmFlavour::None,
        clock: "CLOCK_MONOTONIC".into(),
        tsc_hz: None,
        csd_tracepoints: None,
        hz: None,
    }
}

impl Source for SynthSource {
    fn poll(&mut self, out: &mut Vec<Event>, _timeout: Duration) -> Result<bool, SourceError> {
        let n = self.batch.min(self.events.len());
        out.extend(self.events.drain(..n));
        Ok(!self.events.is_empty() || n > 0)
    }

    fn host(&self) -> &HostInfo {
        &self.host
    }

    fn describe(&self) -> String {
        "synthetic".into()
    }
}
