//! Two header lines: what is being watched (host, kernel, scheduler, pCPUs, rates, source,
//! time) and how the dashboard is set (pause, replay transport, window, sort, filter).

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::{App, Mode, VruntimeMode};
use crate::fmt;
use crate::theme::Theme;

pub struct Header<'a> {
    pub app: &'a App,
    pub theme: Theme,
}

impl Widget for &Header<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let t = self.theme;
        let s = &app.snapshot;
        let host = &app.host;
        let sep = " │ ";
        let elapsed = s.ts.saturating_sub(s.start) as f64 / 1e9;
        let lost = s.health.lost_events;
        let mut first = vec![
            Span::styled(" kvmscope", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(sep),
            Span::raw(format!("host {}", or_dash(&host.hostname))),
            Span::raw(sep),
            Span::raw(format!("kernel {}", or_dash(&host.kernel))),
            Span::raw(sep),
            Span::raw(or_dash(app.scheduler_label()).to_string()),
            Span::raw(sep),
            Span::raw(format!("{} pCPUs", host.cpus)),
        ];
        if host.kvm_flavour != model::KvmFlavour::Unknown {
            first.push(Span::raw(format!(" ({})", host.kvm_flavour)));
        }
        first.extend([
            Span::raw(sep),
            Span::raw(format!("{} ev/s", fmt::rate(s.events_per_second))),
            Span::raw(sep),
            Span::styled(
                format!("lost {}", fmt::count(lost)),
                if lost > 0 { t.bad() } else { Style::new() },
            ),
        ]);

        let mut second = vec![
            Span::styled(format!(" {}", app.source_label), t.title()),
            Span::raw(format!("  t+{}", fmt::secs(elapsed))),
        ];
        if let Some(clock) = &app.clock {
            second.push(Span::raw(format!("  {clock}")));
        }
        second.push(Span::raw("  "));
        if app.mode == Mode::Replay {
            if let Some(r) = app.replay {
                let icon = if r.playing { "▶" } else { "⏸" };
                second.push(Span::styled(
                    format!(
                        "{icon} {}x {} / {}",
                        trim_speed(r.speed),
                        fmt::secs(r.position_ns as f64 / 1e9),
                        fmt::secs(r.length_ns as f64 / 1e9)
                    ),
                    t.title(),
                ));
                second.push(Span::raw("  "));
            }
            if app.simulated_label.is_some() {
                let run = if app.showing_simulated() {
                    "SIMULATED run (m: recorded)"
                } else {
                    "recorded run (m: simulated)"
                };
                second.push(Span::styled(run, t.warn()));
                second.push(Span::raw("  "));
            }
        } else if app.paused {
            second.push(Span::styled("PAUSED (events still folded)", t.warn()));
            second.push(Span::raw("  "));
        }
        if app.ended {
            second.push(Span::styled(
                if app.mode == Mode::Replay {
                    "end of recording"
                } else {
                    "source ended"
                },
                t.warn(),
            ));
            second.push(Span::raw("  "));
        }
        let vm = app.vm_filter.as_deref().unwrap_or("all");
        let mode = match app.vruntime_mode {
            VruntimeMode::PerLine => "progress",
            VruntimeMode::Common => "common min",
        };
        // The settings, each also shown by its panel (the lanes' window, the table's ▼ and
        // filter, the chart's title), and the keys' hint. When the line is too narrow for
        // all of them (a replay's transport, a paused or ended run), the first to go is the
        // vruntime mode, then the window, the sort, the VM: whole, never cut mid-word.
        let mut settings = [
            (2, format!("window {}s  ", app.window_s())),
            (3, format!("sort {}  ", app.sort.label())),
            (4, format!("vm {vm}  ")),
            (1, format!("vruntime {mode}  ")),
            (5, "? help  q quit".to_string()),
        ]
        .map(|(drop_order, text)| (drop_order, Some(text)));
        let used: usize = second.iter().map(Span::width).sum();
        let width = |s: &[(u8, Option<String>)]| -> usize {
            s.iter()
                .filter_map(|(_, text)| text.as_deref())
                .map(|text| Span::raw(text).width())
                .sum()
        };
        for order in 1..=5 {
            if used + width(&settings) <= area.width as usize {
                break;
            }
            for setting in settings.iter_mut().filter(|(o, _)| *o == order) {
                setting.1 = None;
            }
        }
        second.extend(
            settings
                .into_iter()
                .filter_map(|(_, text)| text)
                .map(|text| Span::styled(text, t.dim())),
        );
        Paragraph::new(vec![
            Line::from(first).style(t.header_bar()),
            Line::from(second),
        ])
        .render(area, buf);
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() {
        "-"
    } else {
        s
    }
}

fn trim_speed(v: f64) -> String {
    if v >= 1.0 && v.fract() == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_string()
    }
}
