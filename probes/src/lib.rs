//! kvmscope's kernel side, seen from user space: find the threads to watch, load and attach
//! the eBPF programs with aya, read the ring buffer and decode records into `model::Event`.
//!
//! Architecture invariant: this crate knows nothing about views; it yields events.

pub mod abi;
pub mod counters;
pub mod decode;
mod exit_agg_keys;
mod exit_aggs;
pub mod features;
pub mod host;
pub mod loader;
pub mod programs;
pub mod qemu;
mod reader_guard;
mod reader_wait;
mod switch_rings;
pub mod targets;
pub mod tracefs;

pub use loader::LostByCause;
