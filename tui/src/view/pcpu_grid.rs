//! The compact pCPU view, for hosts whose pCPUs do not fit one lane row each (a 128-pCPU host
//! on a 40-row terminal): one cell per pCPU, row by row, showing who runs on it now (the
//! VM's name in its colour, `-` no vCPU: idle or another task) and how many tracked tasks
//! wait in its run queue. It reads only each pCPU's current owner and queue length, so the snapshot can
//! leave the lanes out.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;

use model::PcpuSnapshot;

use super::Keys;
use crate::app::App;
use crate::theme::Theme;

/// A pCPU no vCPU runs on.
const NO_VCPU: char = '-';
/// Width of one pCPU's cell: up to 5 characters of VM name, the queue length, a gap.
pub const CELL_W: u16 = 7;
/// Width of the row label (`cpu 112`).
const LABEL_W: u16 = 8;

/// pCPUs per grid row in `width` columns.
pub fn per_row(width: u16) -> usize {
    (width.saturating_sub(LABEL_W) / CELL_W).max(1) as usize
}

/// Rows the grid needs for `pcpus` pCPUs in `width` columns.
pub fn rows(pcpus: usize, width: u16) -> usize {
    pcpus.div_ceil(per_row(width))
}

/// What one cell says: the owner's text and style, and the queue mark.
pub fn cell(p: &PcpuSnapshot, app: &App, keys: &Keys, t: Theme) -> (String, Style) {
    let waiting = match p.waiting {
        0 => ' ',
        n @ 1..=9 => char::from_digit(n, 10).unwrap_or('+'),
        _ => '+',
    };
    let (owner, style) = match p.current_tid {
        Some(tid) => match app.snapshot.vcpus.iter().find(|v| v.tid == tid) {
            Some(v) => {
                let vm = keys.vcpu(tid).map_or(0, |(_, vm)| vm);
                let name: String = app.vm_label(&v.vm, v.pid).chars().take(5).collect();
                (name, t.lane_vcpu(vm))
            }
            None => ("?".to_string(), Style::new()),
        },
        // Idle or another task: the difference needs the lanes.
        None => (NO_VCPU.to_string(), t.lane_idle()),
    };
    (format!("{owner:<5}{waiting}"), style)
}

/// Draw the grid into `area` (no border: the lanes panel owns it). Returns the rows used.
pub fn render(
    app: &App,
    keys: &Keys,
    t: Theme,
    pcpus: &[PcpuSnapshot],
    area: Rect,
    buf: &mut Buffer,
) -> u16 {
    let per_row = per_row(area.width);
    let mut y = area.y;
    for chunk in pcpus.chunks(per_row) {
        if y >= area.y + area.height {
            break;
        }
        let first = chunk.first().map_or(0, |p| p.cpu);
        buf.set_string(area.x, y, format!("cpu {first:<4}"), t.title());
        for (i, p) in chunk.iter().enumerate() {
            let (text, style) = cell(p, app, keys, t);
            let x = area.x + LABEL_W + i as u16 * CELL_W;
            let owner_w = text.chars().count().saturating_sub(1);
            let owner: String = text.chars().take(owner_w).collect();
            let mark: String = text.chars().skip(owner_w).collect();
            buf.set_string(x, y, owner, style);
            buf.set_string(x + 5, y, mark, t.warn());
        }
        y += 1;
    }
    y - area.y
}
