//! The bottom line: how trustworthy the numbers are (lost, late and unknown events) and the
//! model's notes, so a figure is never silently wrong.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Paragraph, Widget};

use crate::app::App;
use crate::fmt;
use crate::theme::Theme;

pub struct HealthLine<'a> {
    pub app: &'a App,
    pub theme: Theme,
}

impl Widget for &HealthLine<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let h = &self.app.snapshot.health;
        let t = self.theme;
        let flag = |n: u64| if n > 0 { t.warn() } else { Style::new() };
        let mut spans = vec![
            Span::styled(" health ", t.title()),
            Span::raw(format!("events {}", fmt::count(h.events))),
            Span::raw("  "),
            Span::styled(
                format!("lost {}", fmt::count(h.lost_events)),
                if h.lost_events > 0 {
                    t.bad()
                } else {
                    Style::new()
                },
            ),
            Span::raw("  "),
            Span::styled(
                format!("late {}", fmt::count(h.out_of_order)),
                flag(h.out_of_order),
            ),
            Span::raw("  "),
            Span::styled(
                format!("unknown tids {}", fmt::count(h.unknown_tids)),
                t.dim(),
            ),
        ];
        // Counts that only matter when something happened: shown then, as warnings.
        for (what, n) in [
            ("tid reuse", h.tid_reuse),
            ("unpaired switch-outs", h.unpaired_switch_outs),
            ("missed samples", h.missed_counter_samples),
            ("untracked threads", h.track_failures),
        ] {
            if n > 0 {
                spans.push(Span::styled(format!("  {what} {n}"), t.warn()));
            }
        }
        if h.uncertain_ns > 0 {
            spans.push(Span::styled(
                format!("  uncertain {}", fmt::ns(h.uncertain_ns)),
                t.warn(),
            ));
        }
        let notes: Vec<&str> = self
            .app
            .notes
            .iter()
            .chain(&h.notes)
            .map(String::as_str)
            .collect();
        if !notes.is_empty() {
            spans.push(Span::raw("  │ "));
            spans.push(Span::styled(notes.join("; "), t.dim()));
        }
        Paragraph::new(Line::from(spans)).render(area, buf);
    }
}
