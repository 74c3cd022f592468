//! `kvmscope exporter`'s parts: the metric families built from model snapshots at scrape time
//! ([`families`]), the hand-over between the ingest thread and the HTTP threads ([`board`]),
//! the HTTP(S) endpoint ([`http`]) and the exporter-toolkit web config ([`web_config`]).
//!
//! Architecture invariant: this crate is a sink. It reads `model::Snapshot`s and never looks
//! at events; every figure it exports is computed in the model. It installs no signal
//! handlers (the binary does) and owns no source (the binary hands one in).
//!
//! Crate choices, with compile time on two cores in mind: `prometheus-client` (the official
//! client) for the exposition formats, without its protobuf feature (prost and its build
//! script for the only gain of native histograms, which text scrapers cannot carry anyway);
//! `httparse` plus a thread per connection instead of hyper and tokio (one endpoint serves
//! a scrape every few seconds: an async runtime would more than double this crate's build for
//! no gain) or tiny_http (no limit on header size, no read deadlines, rustls 0.20); `rustls`
//! with the `ring` provider (aws-lc-rs needs cmake and builds several times longer); `bcrypt`
//! for the exporter-toolkit password hashes.

pub mod board;
pub mod families;
pub mod http;
pub mod web_config;

use std::net::SocketAddr;

pub use board::{exporter_model_config, ingest, take_snapshot, Board};
pub use families::{openmetrics_text, registry, SourceFacts};
pub use http::{serve, Endpoint, Limits};
pub use web_config::{WebConfig, WebConfigError};

/// Why the exporter could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExporterError {
    // The bind error is in the message, not a `source`: a reader printing the chain (the
    // binary's one failure line) would say it twice.
    #[error("cannot listen on {addr}: {error} (is another exporter running? pick another port with --listen)")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
}
