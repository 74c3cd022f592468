//! The vCPU table: one row per vCPU thread with where it runs, how far its vruntime is from
//! its run queue's minimum, what share of a CPU it gets against what its weight entitles it
//! to, and how long it waits.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Row, Table, Widget};

use model::{VcpuSnapshot, VcpuState};

use super::{vcpu_label, Keys};
use crate::app::{App, SortKey};
use crate::fmt;
use crate::theme::Theme;

/// Below this width the table drops tid, vruntime and weight.
const WIDE: u16 = 100;

pub struct VcpuTable<'a> {
    pub app: &'a App,
    pub theme: Theme,
    pub keys: &'a Keys,
}

fn window_label(w: model::Window) -> &'static str {
    match w {
        model::Window::LastSecond => "the last 1 s",
        model::Window::LastTenSeconds => "the last 10 s",
        model::Window::WholeRun => "the whole run",
    }
}

impl Widget for &VcpuTable<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let t = self.theme;
        let wide = area.width >= WIDE;
        let rows = app.visible_vcpus();
        let sort = app.sort;
        let head = |label: &'static str, key: Option<SortKey>| {
            let text = if key == Some(sort) {
                format!("{label}▼")
            } else {
                label.to_string()
            };
            Cell::from(text).style(if key == Some(sort) {
                t.title()
            } else {
                t.dim()
            })
        };
        let mut header = vec![head(" ", None), head("vCPU", Some(SortKey::Vcpu))];
        if wide {
            header.push(head("tid", None));
        }
        header.extend([head("cpu", None), head("state", None)]);
        if wide {
            header.push(head("vruntime", None));
        }
        header.push(head("lag", Some(SortKey::Lag)));
        if wide {
            header.push(head("wt/nice", None));
        }
        header.extend([
            head("share/entitled", Some(SortKey::Share)),
            head("wait p99", Some(SortKey::WaitP99)),
            head("mig/s", Some(SortKey::Migrations)),
            head("exits/s", Some(SortKey::Exits)),
        ]);

        // Rows that fit under the border and header; ↑/↓ scroll through the rest.
        let fit = area.height.saturating_sub(3) as usize;
        app.table_rows_shown.set(fit);
        let first = app.table_scroll.min(rows.len().saturating_sub(fit));
        let body: Vec<Row> = rows
            .iter()
            .skip(first)
            .take(fit)
            .map(|v| self.row(v, wide))
            .collect();
        let shown = if body.len() < rows.len() {
            format!(
                "{}-{} of {}, ↑↓ scroll, tab VM, s sort",
                first + 1,
                first + body.len(),
                rows.len()
            )
        } else {
            format!("{} shown", rows.len())
        };
        let mut widths = vec![
            Constraint::Length(1),
            Constraint::Length(if wide { 15 } else { 13 }),
        ];
        if wide {
            widths.push(Constraint::Length(7));
        }
        widths.extend([Constraint::Length(3), Constraint::Length(5)]);
        if wide {
            widths.push(Constraint::Length(12));
        }
        widths.push(Constraint::Length(9));
        if wide {
            widths.push(Constraint::Length(9));
        }
        widths.extend([
            // "share/entitled▼" when sorted by it.
            Constraint::Length(15),
            Constraint::Length(9),
            Constraint::Length(6),
            Constraint::Length(8),
        ]);
        let filter = app.vm_filter.as_deref().unwrap_or("all VMs");
        let title = Line::from(vec![
            Span::styled(" vCPUs ", t.title()),
            Span::styled(
                format!(
                    "({}, {}; shares and rates over {}) ",
                    filter,
                    shown,
                    window_label(app.snapshot.window)
                ),
                t.dim(),
            ),
        ]);
        let empty = rows.is_empty();
        Table::new(body, widths)
            .header(Row::new(header))
            .column_spacing(1)
            .block(Block::bordered().title(title))
            .render(area, buf);
        if empty && area.height > 3 && area.width > 4 {
            let msg = if app.snapshot.ts == 0 {
                "waiting for events…"
            } else {
                "no vCPU threads seen yet"
            };
            buf.set_string(area.x + 2, area.y + 2, msg, t.dim());
        }
    }
}

impl VcpuTable<'_> {
    fn row<'r>(&self, v: &VcpuSnapshot, wide: bool) -> Row<'r> {
        let t = self.theme;
        let (letter, vm) = self.keys.vcpu(v.tid).unwrap_or(('#', 0));
        let state = v.state;
        let state_style = match state {
            Some(VcpuState::Waiting) => t.warn(),
            Some(VcpuState::InGuest) | Some(VcpuState::Running) | Some(VcpuState::InVmm) => {
                t.good()
            }
            _ => t.dim(),
        };
        // Getting clearly less than the weight entitles it to is what a user hunts for.
        let starved = v.entitled_share > 0.0 && v.cpu_share < v.entitled_share * 0.8;
        let share_style = if starved { t.warn() } else { Style::new() };
        let mut cells = vec![
            Cell::from(letter.to_string()).style(t.lane_vcpu(vm)),
            Cell::from(vcpu_label(&self.app.vm_label(&v.vm, v.pid), v.vcpu, v.tid)).style(t.vm(vm)),
        ];
        if wide {
            cells.push(Cell::from(v.tid.to_string()));
        }
        cells.push(Cell::from(v.pcpu.map_or("-".into(), |c| c.to_string())));
        cells.push(Cell::from(v.state_name()).style(state_style));
        if wide {
            cells.push(Cell::from(if v.vruntime_seen {
                fmt::vruntime(v.vruntime)
            } else {
                "-".into()
            }));
        }
        cells.push(Cell::from(if v.vruntime_seen {
            fmt::signed_ns(v.lag)
        } else {
            "-".into()
        }));
        if wide {
            cells.push(Cell::from(format!("{}/{}", v.weight, v.nice)));
        }
        cells.extend([
            Cell::from(format!(
                "{:>4} / {:>4}",
                fmt::pct(v.cpu_share),
                fmt::pct(v.entitled_share)
            ))
            .style(share_style),
            Cell::from(if v.wait.count == 0 {
                "-".to_string()
            } else {
                fmt::ns(v.wait.p99)
            }),
            Cell::from(fmt::rate(v.migrations_per_second)),
            // Counters mode observes no exits, a simulation runs no guests: not measured is
            // not zero.
            Cell::from(if super::exits_not_measured(self.app).is_some() {
                "-".to_string()
            } else {
                fmt::rate(v.exits_per_second)
            }),
        ]);
        Row::new(cells)
    }
}
