//! vruntime over the window, one line per vCPU. Raw vruntimes sit at arbitrary offsets (each
//! run queue has its own minimum, and a migrated task is re-placed on its new queue's scale),
//! so by default each line shows its own progress from the window's start with those
//! re-placements cut out: the slopes sit side by side (share x 1024 / weight, so a nice-10
//! vCPU climbs steeply on little CPU). `v` switches to raw vruntime minus the common minimum,
//! which shows spreads and convergence among tasks that share a run queue.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Rect};
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Chart, Dataset, GraphType, LegendPosition, Widget};

use super::{vcpu_label, Keys};
use crate::app::{App, VruntimeMode};
use crate::theme::Theme;

/// Lines drawn at most: more are unreadable (and costly) in a chart this size.
pub const CHART_LINES: usize = 16;

pub struct VruntimeChart<'a> {
    pub app: &'a App,
    pub theme: Theme,
    pub keys: &'a Keys,
}

/// One prepared line: legend name, style keys, the vCPU's weight, its (ts, vruntime) samples
/// in the window and the (seconds before now, ms) points drawn.
struct ChartLine {
    name: String,
    vm: usize,
    index: usize,
    weight: u32,
    samples: Vec<(u64, u64)>,
    points: Vec<(f64, f64)>,
}

impl VruntimeChart<'_> {
    /// Points of the visible vCPUs inside the window, shifted per the mode and thinned to at
    /// most a few per column (the chart cannot show more, and it keeps drawing cheap).
    fn lines(&self, columns: usize) -> Vec<ChartLine> {
        let app = self.app;
        let s = &app.snapshot;
        let t1 = s.ts;
        let t0 = t1.saturating_sub((app.window_s() * 1e9) as u64);
        let max_points = (columns * 2).max(16);
        let mut out: Vec<ChartLine> = vec![];
        for v in app.rows_from_table(CHART_LINES) {
            let Some(series) = s.vruntime.iter().find(|r| r.tid == v.tid) else {
                continue;
            };
            let first = series.points.partition_point(|p| p.ts < t0);
            let inside = &series.points[first..];
            let step = inside.len().div_ceil(max_points).max(1);
            let mut pts: Vec<(u64, u64)> = inside
                .iter()
                .step_by(step)
                .map(|p| (p.ts, p.vruntime))
                .collect();
            // Keep the newest point so the line reaches "now".
            if let (Some(last), Some(kept)) = (inside.last(), pts.last()) {
                if kept.0 != last.ts {
                    pts.push((last.ts, last.vruntime));
                }
            }
            if pts.is_empty() {
                continue;
            }
            let (letter, vm) = self.keys.vcpu(v.tid).unwrap_or(('#', 0));
            out.push(ChartLine {
                name: format!(
                    "{letter} {}",
                    vcpu_label(&app.vm_label(&v.vm, v.pid), v.vcpu, v.tid)
                ),
                vm,
                index: out.len(),
                weight: v.weight,
                samples: pts,
                points: vec![],
            });
        }
        let common_min = out
            .iter()
            .flat_map(|l| l.samples.iter().map(|x| x.1))
            .min()
            .unwrap_or(0);
        let x = |ts: u64| -((t1 - ts.min(t1)) as f64 / 1e9);
        for line in &mut out {
            let pts = &line.samples;
            line.points = match app.vruntime_mode {
                VruntimeMode::PerLine => progress(pts, line.weight)
                    .into_iter()
                    .map(|(ts, y)| (x(ts), y as f64 / 1e6))
                    .collect(),
                VruntimeMode::Common => pts
                    .iter()
                    .map(|&(ts, v)| (x(ts), (v - common_min) as f64 / 1e6))
                    .collect(),
            };
        }
        out
    }
}

/// Cumulative vruntime growth of one line, ns, with re-placements on another run queue cut
/// out: a step backwards, or forwards faster than running flat out at `weight` could explain
/// (with slack for sampling), counts as zero.
pub fn progress(points: &[(u64, u64)], weight: u32) -> Vec<(u64, u64)> {
    let max_rate = 1024.0 / weight.max(1) as f64 * 1.25;
    let mut out = Vec::with_capacity(points.len());
    let mut total = 0u64;
    let mut prev: Option<(u64, u64)> = None;
    for &(ts, v) in points {
        if let Some((pts, pv)) = prev {
            let allowed = (ts.saturating_sub(pts)) as f64 * max_rate + 1e6;
            if v >= pv && ((v - pv) as f64) <= allowed {
                total += v - pv;
            }
        }
        out.push((ts, total));
        prev = Some((ts, v));
    }
    out
}

impl Widget for &VruntimeChart<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let t = self.theme;
        let window = app.window_s();
        let mode = match app.vruntime_mode {
            VruntimeMode::PerLine => "progress per vCPU, run-queue jumps cut",
            VruntimeMode::Common => "minus the common minimum",
        };
        let title = Line::from(vec![
            Span::styled(" vruntime ", t.title()),
            Span::styled(format!("({mode}; v toggles) "), t.dim()),
        ]);
        let block = Block::bordered().title(title);
        let lines = self.lines(area.width.saturating_sub(10) as usize);
        if lines.is_empty() {
            let inner = block.inner(area);
            block.render(area, buf);
            if inner.height > 0 && inner.width > 4 {
                buf.set_string(
                    inner.x + 1,
                    inner.y,
                    "no vruntime samples in this window yet",
                    t.dim(),
                );
            }
            return;
        }
        let y_max = lines
            .iter()
            .flat_map(|l| l.points.iter().map(|p| p.1))
            .fold(0.0f64, f64::max)
            .max(1.0)
            * 1.05;
        let datasets: Vec<Dataset> = lines
            .iter()
            .map(|l| {
                Dataset::default()
                    .name(l.name.clone())
                    .marker(t.marker(l.index))
                    .graph_type(GraphType::Line)
                    .style(if t.colour {
                        t.vm(l.vm).patch(series_shade(l.index))
                    } else {
                        Style::new()
                    })
                    .data(&l.points)
            })
            .collect();
        let label = |v: f64| Span::raw(format!("{v:.0}ms"));
        let x_label = |v: f64| {
            Span::raw(if v == 0.0 {
                "now".to_string()
            } else {
                format!("{v:.0}s")
            })
        };
        Chart::new(datasets)
            .block(block)
            .x_axis(
                Axis::default()
                    .bounds([-window, 0.0])
                    .labels([x_label(-window), x_label(-window / 2.0), x_label(0.0)])
                    .style(t.dim()),
            )
            .y_axis(
                Axis::default()
                    .bounds([0.0, y_max])
                    .labels([label(0.0), label(y_max / 2.0), label(y_max)])
                    .style(t.dim()),
            )
            .hidden_legend_constraints((Constraint::Ratio(1, 3), Constraint::Ratio(3, 4)))
            // Lines climb from bottom left to top right: the top left stays free.
            .legend_position(Some(LegendPosition::TopLeft))
            .render(area, buf);
    }
}

/// vCPUs of one VM share its hue; alternate bold so neighbours differ.
fn series_shade(index: usize) -> Style {
    use ratatui::style::Modifier;
    if index % 2 == 1 {
        Style::new().add_modifier(Modifier::BOLD)
    } else {
        Style::new()
    }
}

#[cfg(test)]
mod tests {
    use super::progress;

    #[test]
    fn progress_cuts_run_queue_jumps() {
        const MS: u64 = 1_000_000;
        // Runs flat out at nice 0 (1 ns of vruntime per ns), then is re-placed 14 s lower on
        // another run queue, then 14 s higher again.
        let pts = [
            (0, 100_000 * MS),
            (10 * MS, 100_010 * MS),
            (20 * MS, 86_000 * MS),
            (30 * MS, 86_010 * MS),
            (40 * MS, 100_030 * MS),
            (50 * MS, 100_040 * MS),
        ];
        let p: Vec<u64> = progress(&pts, 1024)
            .into_iter()
            .map(|(_, v)| v / MS)
            .collect();
        assert_eq!(p, vec![0, 10, 10, 20, 20, 30]);
        // A light task's vruntime legitimately grows ~9x faster than wall time.
        let light = [(0, 0), (10 * MS, 90 * MS)];
        assert_eq!(progress(&light, 110)[1].1, 90 * MS);
    }
}
