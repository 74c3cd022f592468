//! kvmscope's terminal dashboard: ratatui views over model snapshots.
//!
//! - [`app`]: dashboard state and key handling (no drawing);
//! - [`view`]: one widget per panel, and [`view::Dashboard`] that lays them out;
//! - [`run`](mod@run): the loop that folds a [`model::Source`] into a [`model::Model`] on one
//!   thread and draws snapshots on a tick from another.
//!
//! Architecture invariant: this crate knows sources only through `model::Source`; it never
//! reads probes or starts VMs itself, so live, replayed and synthetic streams look the same.

pub mod app;
pub mod fixture;
pub mod fmt;
pub mod run;
mod stderr;
pub mod theme;
pub mod view;

pub use app::{App, Mode};
pub use run::{render_to_string, run_live, run_replay, RunOptions, TuiError};
pub use theme::Theme;

use ratatui::buffer::Buffer;

/// The characters of a buffer, one line per row, trailing spaces trimmed.
pub fn buffer_text(buf: &Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod snapshot_tests;
