//! Migration / VMCS panel: how much longer a vCPU takes to get back into its guest when it is
//! switched in on a different pCPU (VMCS reload, VMCLEAR IPI on VT-x) than on the same one,
//! as percentile bars side by side, the p50/p99 difference and the migration rate; then the
//! exit reasons of each vCPU. When the host gives neither guest entry events nor guest gaps
//! (an external VM on PVM), it says so rather than drawing zeros.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Widget};

use model::{Percentiles, ResumeLatency};

use super::{counters_only, vcpu_label};
use crate::app::App;
use crate::fmt;
use crate::theme::Theme;

pub struct VmcsPanel<'a> {
    pub app: &'a App,
    pub theme: Theme,
}

/// Whether the snapshot carries any resume-latency measurement at all.
pub fn has_resume_timing(r: &ResumeLatency) -> bool {
    !(r.source.is_empty() || r.source == "none")
}

fn source_label(source: &str) -> &str {
    match source {
        "kvm_entry" => "kvm_entry events",
        "guest_gap" => "guest gaps",
        other => other,
    }
}

/// A horizontal bar of `value / max` over `width` cells, in eighths.
pub fn bar(value: u64, max: u64, width: usize) -> String {
    const PARTS: [char; 8] = [' ', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];
    if max == 0 || width == 0 {
        return String::new();
    }
    let eighths = ((value.min(max) as f64 / max as f64) * (width * 8) as f64).round() as usize;
    let mut s = "█".repeat(eighths / 8);
    if eighths % 8 > 0 {
        s.push(PARTS[eighths % 8]);
    }
    s
}

/// [`bar`] drawn with `fill`, ending in `»` when the value is beyond the scale.
fn clipped_bar(value: u64, max: u64, width: usize, fill: char) -> String {
    if value > max && width > 0 {
        let mut s: String = std::iter::repeat_n(fill, width - 1).collect();
        s.push('»');
        return s;
    }
    bar(value, max, width).replace('█', &fill.to_string())
}

/// VT-x: the VMCLEAR IPIs of migrated switch-ins (queue → done on the old pCPU, and its
/// delivery and VMCLEAR parts) and the share of the migration cost they explain; or, on a
/// VT-x host without `csd:*` tracepoints, that they cannot be attributed.
fn vmclear_lines(r: &ResumeLatency, host: &model::HostInfo, t: Theme) -> Vec<Line<'static>> {
    if r.vmclear_calls == 0 {
        return host
            .vmclear_unattributable()
            .map(|why| Line::styled(why, t.dim()))
            .into_iter()
            .collect();
    }
    let mut lines = vec![Line::raw(format!(
        "VMCLEAR IPIs {}  p50 {} (delivery {}, clear {})  p99 {}",
        fmt::count(r.vmclear_calls),
        fmt::ns(r.vmclear.p50),
        fmt::ns(r.vmclear_delivery.p50),
        fmt::ns(r.vmclear_run.p50),
        fmt::ns(r.vmclear.p99)
    ))];
    if let Some(share) = r.vmclear_explains {
        lines.push(Line::raw(format!(
            "  = {:.0}% of the migrated − same mean",
            share * 100.0
        )));
    }
    lines
}

impl Widget for &VmcsPanel<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let t = self.theme;
        let s = &app.snapshot;
        let r = &s.resume;
        let timed = has_resume_timing(r);
        let title = if timed {
            Line::from(vec![
                Span::styled(" migration / VMCS ", t.title()),
                Span::styled(
                    format!("(resume latency from {}) ", source_label(&r.source)),
                    t.dim(),
                ),
            ])
        } else {
            Line::from(Span::styled(" migration / VMCS ", t.title()))
        };
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let width = inner.width as usize;
        let migrations: f64 = s.vcpus.iter().map(|v| v.migrations_per_second).sum();
        let mut lines: Vec<Line> = vec![];
        if timed {
            lines.push(Line::styled(
                format!(
                    "{:<6}{:>6} {:>8} {:>8} {:>8} {:>8}",
                    "", "n", "p50", "p90", "p99", "max"
                ),
                t.dim(),
            ));
            let row = |name: &str, p: &Percentiles, style: Style| {
                Line::from(vec![
                    Span::styled(format!("{name:<6}"), style),
                    Span::raw(format!(
                        "{:>6} {:>8} {:>8} {:>8} {:>8}",
                        fmt::count(p.count),
                        fmt::ns(p.p50),
                        fmt::ns(p.p90),
                        fmt::ns(p.p99),
                        fmt::ns(p.max)
                    )),
                ])
            };
            lines.push(row("same", &r.same_pcpu, t.same_pcpu()));
            lines.push(row("migr", &r.migrated, t.migrated()));
            let cost_style = |v: i64| if v > 0 { t.warn() } else { t.good() };
            lines.push(Line::from(vec![
                Span::raw("cost  p50 "),
                Span::styled(
                    fmt::signed_ns(r.migration_cost_p50),
                    cost_style(r.migration_cost_p50),
                ),
                Span::raw("  p99 "),
                Span::styled(
                    fmt::signed_ns(r.migration_cost_p99),
                    cost_style(r.migration_cost_p99),
                ),
                Span::raw(format!("  migrations {}/s", fmt::rate(migrations))),
            ]));
            lines.extend(vmclear_lines(r, &app.host, t));
            if r.same_pcpu.count > 0 || r.migrated.count > 0 {
                // Scale to the p90s so the body of both distributions is readable; a p99
                // far out in the tail is clipped and marked.
                let scale = [r.same_pcpu.p90, r.migrated.p90]
                    .into_iter()
                    .max()
                    .unwrap_or(0)
                    * 3
                    / 2;
                let bar_w = width.saturating_sub(4 + 10);
                for (name, a, b) in [
                    ("p50", r.same_pcpu.p50, r.migrated.p50),
                    ("p90", r.same_pcpu.p90, r.migrated.p90),
                    ("p99", r.same_pcpu.p99, r.migrated.p99),
                ] {
                    lines.push(Line::from(vec![
                        Span::styled(format!("{name} "), t.dim()),
                        Span::styled(clipped_bar(a, scale, bar_w, '█'), t.same_pcpu()),
                        Span::raw(format!(" {}", fmt::ns(a))),
                    ]));
                    lines.push(Line::from(vec![
                        Span::raw("    "),
                        Span::styled(clipped_bar(b, scale, bar_w, '▓'), t.migrated()),
                        Span::raw(format!(" {}", fmt::ns(b))),
                    ]));
                }
            }
        } else if counters_only(s) {
            lines.push(Line::styled("counters mode (no BPF):", t.warn()));
            lines.push(Line::raw("resume latency and its split by placement need"));
            lines.push(Line::raw("switch events, which need BPF."));
            lines.push(Line::raw(format!(
                "migrations {}/s (se.nr_migrations)",
                fmt::rate(migrations)
            )));
        } else if app.showing_simulated() {
            // Not the host's limits (a PVM host, an external VM): a simulation has no guests.
            lines.push(Line::styled(
                "simulated run: no guests run in it,",
                t.warn(),
            ));
            lines.push(Line::raw("so no resume latency (m: the recorded"));
            lines.push(Line::raw("run's)."));
            lines.push(Line::raw(format!("migrations {}/s", fmt::rate(migrations))));
        } else {
            // Lines of at most 40 columns: the panel's width at 120 columns is 51, and less
            // before the first event (ratatui cuts a longer line, it does not wrap it).
            lines.push(Line::styled(
                "no guest entries or guest gaps seen:",
                t.warn(),
            ));
            lines.push(Line::raw("the resume latency after a migration"));
            // Which VMs do report gaps, so a user of `top` on the bundled VMM knows where to
            // look ("an external VM on a PVM host" left them guessing).
            lines.push(Line::raw("cannot be measured (on a PVM host, only"));
            lines.push(Line::raw("the guests of --demo report their gaps)."));
            lines.push(Line::raw(format!("migrations {}/s", fmt::rate(migrations))));
        }

        // Over each thread's whole run, as the latencies above: the table's exits/s column is
        // over its window (a batch vCPU read 0 there and 0.1 here).
        lines.push(Line::styled("exits/s by reason (whole run)", t.title()));
        let mut any = false;
        // One line per vCPU, from the table's first row; the panel shows a dozen at most.
        for v in app.rows_from_table(inner.height as usize) {
            let mut exits: Vec<_> = v.exits.iter().filter(|e| e.count > 0).collect();
            if exits.is_empty() {
                continue;
            }
            any = true;
            exits.sort_by(|a, b| b.per_second.total_cmp(&a.per_second));
            let mut spans = vec![Span::raw(format!(
                "{:<8}",
                vcpu_label(&app.vm_label(&v.vm, v.pid), v.vcpu, v.tid)
            ))];
            for e in exits.iter().take(3) {
                spans.push(Span::raw(format!(
                    " {} {}",
                    e.reason,
                    fmt::rate(e.per_second)
                )));
            }
            lines.push(Line::from(spans));
        }
        if !any {
            // Counters mode reads no exits at all, a simulation makes none: "none seen" would
            // say the guests made none.
            let none = super::exits_not_measured(app).unwrap_or("no exits seen");
            lines.push(Line::styled(none, t.dim()));
        }
        Paragraph::new(lines).render(inner, buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_scale_in_eighths() {
        assert_eq!(bar(0, 100, 10), "");
        assert_eq!(bar(100, 100, 10), "█".repeat(10));
        assert_eq!(bar(50, 100, 10), "█".repeat(5));
        assert_eq!(bar(55, 100, 10), "█████▌");
        assert_eq!(bar(200, 100, 2), "██", "values above the scale are clipped");
        assert_eq!(bar(5, 0, 10), "");
    }

    #[test]
    fn clipped_bars_mark_the_tail() {
        assert_eq!(clipped_bar(300, 100, 5, '▓'), "▓▓▓▓»");
        assert_eq!(clipped_bar(50, 100, 4, '▓'), "▓▓");
    }

    #[test]
    fn none_source_means_no_timing() {
        assert!(!has_resume_timing(&ResumeLatency::default()));
        assert!(!has_resume_timing(&ResumeLatency {
            source: "none".into(),
            ..Default::default()
        }));
        assert!(has_resume_timing(&ResumeLatency {
            source: "guest_gap".into(),
            ..Default::default()
        }));
    }
}
