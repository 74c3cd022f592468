//! Synthetic events for tests, benchmarks and demos without root: one-line builders for every
//! event kind ([`events`]), a small weighted-fair scheduler simulator ([`Sim`], in [`sim`]) that
//! produces realistic streams, canned scenarios ([`demo_stream`], in [`demo`]), streams of any length ([`RepeatedDemo`],
//! in [`long`]), a big host of many VMs on many pCPUs ([`big_host_config`]), VMs coming and going ([`Churn`], in [`churn`]), a [`Health`](crate::Health) with every counter set
//! ([`health_with_every_figure`]) and a
//! [`SynthSource`] that serves any event vector as a [`Source`](crate::Source).
//!
//! Each file owns one job; everything is re-exported here, so callers write `model::synth::X`.

pub mod big_host;
pub mod churn;
pub mod demo;
pub mod events;
pub mod health;
pub mod long;
pub mod sim;
pub mod source;

pub use big_host::*;
pub use churn::*;
pub use demo::*;
pub use events::*;
pub use health::*;
pub use long::*;
pub use sim::*;
pub use source::*;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_stream_is_ordered_and_has_every_ingredient() {
        let evs = demo_stream(1.0);
        assert!(evs.windows(2).all(|w| w[0].ts() <= w[1].ts()));
        let has = |k: &str| evs.iter().any(|e| e.kind() == k);
        for k in [
            "task_info",
            "sched_switch",
            "wakeup",
            "guest_gap",
            "userspace_exit",
        ] {
            assert!(has(k), "no {k} in the demo stream");
        }
        assert!(evs.len() > 1000, "{}", evs.len());
    }
}
