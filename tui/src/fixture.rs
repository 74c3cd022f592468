//! What the view tests draw: `model::synth` streams folded through the real [`Model`], and
//! the snapshot the dashboard itself would take of it ([`dashboard_snapshot`]), so a view
//! test draws what the dashboard would draw from the same events. The streams and the model
//! are deterministic, so the pictures never change between runs. Not used by the dashboard.

use std::sync::Arc;

use model::synth::{self, SimConfig};
use model::{Event, HostInfo, Model, ModelConfig, Snapshot};

use crate::app::{App, Mode, Update};
use crate::run::dashboard_snapshot;

/// How far into the demo scenario the demo picture is: past the 10 s the lanes, the chart and
/// the shares cover, so every panel is full.
pub const DEMO_SECONDS: f64 = 12.5;

/// The host the dashboard names (a source's, not the events'): the synthetic host as the PVM
/// host the demo scenario imitates.
pub fn host() -> HostInfo {
    HostInfo {
        hostname: "testhost".into(),
        kernel: "6.18.0-test".into(),
        kvm_flavour: model::KvmFlavour::Pvm,
        tsc_hz: Some(2.596e9),
        ..synth::synthetic_host()
    }
}

/// The dashboard's snapshot after `events` (time-ordered) went through the model, mid-run as
/// the live dashboard sees it (no `finish`).
pub fn snapshot_of_events(events: &[Event]) -> Snapshot {
    let mut model = Model::new(ModelConfig::default());
    model.ingest_batch(events);
    dashboard_snapshot(&model)
}

/// The dashboard's snapshot `seconds` into the simulated host `config`.
pub fn snapshot_of(config: SimConfig, seconds: f64) -> Snapshot {
    snapshot_of_events(&synth::stream(config, seconds))
}

/// The demo scenario (`synth::demo_config`) [`DEMO_SECONDS`] in.
pub fn demo_snapshot() -> Snapshot {
    snapshot_of(synth::demo_config(), DEMO_SECONDS)
}

/// The demo scenario on a host that gives neither guest entry events nor guest gaps (an
/// external VM on a PVM host): the resume-latency figures have nothing to come from.
pub fn no_guest_timing_snapshot() -> Snapshot {
    let config = SimConfig {
        guest_gaps: false,
        entry_exit: false,
        ..synth::demo_config()
    };
    snapshot_of(config, DEMO_SECONDS)
}

/// The demo scenario on a VT-x host with `csd:*` tracepoints: guest entries, and a VMCLEAR
/// cross-call (delivered in 21 µs, run in 9 µs) for every migrated vCPU, whose way back into
/// the guest takes 72 µs longer than on the same pCPU (so the VMCLEAR is about 42% of it).
pub fn vtx_snapshot() -> Snapshot {
    let demo = synth::demo_config();
    let config = SimConfig {
        entry_exit: true,
        resume_migrated_ns: demo.resume_same_ns + 72_000,
        vmclear: Some(synth::VmclearTiming {
            delivery_ns: 21_000,
            run_ns: 9_000,
        }),
        ..demo
    };
    snapshot_of(config, DEMO_SECONDS)
}

/// A live dashboard on [`host`] showing `snapshot`.
pub fn live_app(snapshot: Snapshot) -> App {
    let mut app = App::new(Mode::Live, host(), "live".into());
    app.update(Update {
        snapshot: Arc::new(snapshot),
        replay: None,
        ended: false,
    });
    app
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_demo_picture_is_deterministic_and_full() {
        let s = demo_snapshot();
        assert_eq!(s, demo_snapshot(), "no wall clock leaks into the fixture");
        assert_eq!(s.vcpus.len(), 4, "vm0 and vm1, two vCPUs each");
        assert!(s.vcpus.iter().all(|v| v.run_ns > 0 && v.state.is_some()));
        assert!(s.vcpus.iter().any(|v| v.switches > 0 && v.migrations > 0));
        assert!(
            s.pcpus.iter().all(|p| !p.lane.is_empty()),
            "lanes on 2 pCPUs"
        );
        assert!(s.vruntime.iter().all(|v| v.points.len() > 1));
        assert!(s.resume.same_pcpu.count > 0 && s.resume.migrated.count > 0);
        let later = snapshot_of(synth::demo_config(), DEMO_SECONDS + 1.0);
        assert!(later.ts > s.ts && later.health.events > s.health.events);
    }

    #[test]
    fn without_guest_timing_nothing_is_measured() {
        let s = no_guest_timing_snapshot();
        assert_eq!(s.resume.same_pcpu.count + s.resume.migrated.count, 0);
        assert!(s.vcpus.iter().all(|v| v.guest_gaps == 0));
    }
}
