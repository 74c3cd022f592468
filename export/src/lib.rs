//! Exporters: a kvmscope recording (its header and event stream) as Perfetto protobuf or
//! Chrome trace-event JSON, for tools beyond kvmscope's own views.
//!
//! Architecture invariant: exporters are sinks over `model::Event`s and the trace header; they
//! read no files themselves (the binary feeds them from a `FileSource`), so they are tested
//! with synthetic streams. Every state, switch and latency they draw comes from the model's
//! transitions (`fold`); only Perfetto's ftrace CPU tracks are the events themselves.

mod chrome;
mod fold;
mod perfetto;

pub use chrome::{ChromeStats, ChromeWriter};
pub use perfetto::{PerfettoStats, PerfettoWriter};

/// The schema and runtime the Perfetto output is built with, for readers (tests, tools) that
/// decode it with the same definitions.
pub use perfetto_protos;
pub use protobuf;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("cannot write the export: {0}")]
    Io(#[from] std::io::Error),
    #[error("cannot encode the Perfetto trace: {0}")]
    Protobuf(#[from] protobuf::Error),
    #[error("cannot encode the JSON trace: {0}")]
    Json(#[from] serde_json::Error),
}
