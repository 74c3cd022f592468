//! The bottom line: how trustworthy the numbers are (the model's health figures: events, lost,
//! then every non-zero one) and the model's notes, so a figure is never silently wrong.

use model::{HealthFigure, HealthKind, HealthUnit};
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

const TITLE: &str = " health ";

/// `lost 2`: the label and the value, as short as the line needs.
fn figure_text(f: &HealthFigure) -> String {
    let value = match f.unit {
        HealthUnit::Count => fmt::count(f.value),
        HealthUnit::Nanoseconds => fmt::ns(f.value),
    };
    format!("{} {value}", f.label)
}

/// What did not fit, said rather than cut off mid-word.
fn more_text(n: usize) -> String {
    format!("  +{n} more")
}

/// The notes that fit `width` whole, then how many did not (`report` prints them all): a
/// note cut at the screen's edge read "…on this host; migrations count". A first note
/// longer than the line is cut with an ellipsis where 20 characters of it fit, else only
/// counted.
fn fitted_notes(notes: &[&str], width: usize) -> String {
    /// Shortest start of a note worth showing cut.
    const MIN_CUT_NOTE: usize = 20;
    let all = notes.join("; ");
    if all.chars().count() <= width {
        return all;
    }
    let more = |n: usize| format!("+{n} more");
    let mut out = String::new();
    for (i, note) in notes.iter().enumerate() {
        let sep = if i == 0 { "" } else { "; " };
        let after = notes.len() - i - 1;
        let reserve = if after > 0 { 2 + more(after).len() } else { 0 };
        let used = out.chars().count();
        if used + sep.len() + note.chars().count() + reserve <= width {
            out.push_str(sep);
            out.push_str(note);
        } else if i == 0 && width.saturating_sub(reserve + 1) < MIN_CUT_NOTE {
            // Too little room to say anything ("no gue…" at 80 columns): the count alone.
            out.push_str(&more(notes.len()));
            break;
        } else if i == 0 {
            let keep = width.saturating_sub(reserve + 1);
            out.extend(note.chars().take(keep));
            out.push('…');
            if after > 0 {
                out.push_str("; ");
                out.push_str(&more(after));
            }
            break;
        } else {
            out.push_str("; ");
            out.push_str(&more(notes.len() - i));
            break;
        }
    }
    out
}

impl Widget for &HealthLine<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let h = &self.app.snapshot.health;
        let t = self.theme;
        let style = |f: &HealthFigure| match (f.kind, f.value > 0) {
            (_, false) | (HealthKind::Info, true) => Style::new(),
            (HealthKind::Unobserved, true) => t.bad(),
            (HealthKind::Anomaly, true) => t.warn(),
        };
        let shown: Vec<HealthFigure> = h.shown().collect();
        let width = usize::from(area.width);
        let mut used = TITLE.len();
        let mut spans = vec![Span::styled(TITLE, t.title())];
        for (i, f) in shown.iter().enumerate() {
            let text = if i == 0 {
                figure_text(f)
            } else {
                format!("  {}", figure_text(f))
            };
            let after = shown.len() - i - 1;
            let room_for_more = if after > 0 { more_text(after).len() } else { 0 };
            // A figure that would push the rest off the line gives way to their count
            // (the previous figure left room for it); the report lists them all.
            if i > 0 && used + text.chars().count() + room_for_more > width {
                spans.push(Span::styled(more_text(shown.len() - i), t.warn()));
                break;
            }
            used += text.chars().count();
            spans.push(Span::styled(text, style(f)));
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
            used += 4;
            spans.push(Span::styled(
                fitted_notes(&notes, width.saturating_sub(used)),
                t.dim(),
            ));
        }
        Paragraph::new(Line::from(spans)).render(area, buf);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::app::{Mode, Update};
    use crate::snapshot_tests::draw;

    fn line_of(health: model::Health, width: u16) -> String {
        let mut app = App::new(Mode::Live, crate::fixture::host(), "test".into());
        app.update(Update {
            snapshot: Arc::new(model::Snapshot {
                health,
                ..Default::default()
            }),
            replay: None,
            ended: false,
        });
        let theme = Theme::plain();
        let text = draw(width, 1, |a, b| {
            HealthLine { app: &app, theme }.render(a, b)
        })
        .0;
        text.trim_end().to_string()
    }

    #[test]
    fn every_non_zero_figure_is_on_the_line_or_counted_as_more() {
        let health = model::synth::health_with_every_figure();
        let wide = line_of(health.clone(), 400);
        for f in health.figures() {
            assert!(wide.contains(&figure_text(&f)), "{f:?} not in {wide:?}");
        }
        let narrow = line_of(health.clone(), 120);
        let on_line = health
            .figures()
            .iter()
            .filter(|f| narrow.contains(&figure_text(f)))
            .count();
        assert!(on_line >= 2, "{narrow}");
        let more = more_text(health.figures().len() - on_line);
        assert!(
            narrow.ends_with(&more),
            "{narrow:?} should end with {more:?}"
        );
        assert!(narrow.chars().count() <= 120);
    }

    #[test]
    fn notes_that_do_not_fit_are_counted_not_cut() {
        let mut health = model::Health {
            events: 52_270,
            out_of_order: 152,
            ..Default::default()
        };
        for note in [
            "no guest entry/exit events seen on this host",
            "migrations counted from sched_migrate_task (= se.nr_migrations)",
            "152 events arrived later than the 50.0 ms reorder window and were folded in late",
        ] {
            health.notes.push(note.into());
        }
        let line = line_of(health, 120);
        assert!(line.chars().count() <= 120, "{line}");
        assert!(
            line.ends_with("│ no guest entry/exit events seen on this host; +2 more"),
            "{line}"
        );
        assert_eq!(
            fitted_notes(&["no guest entry/exit events seen on this host"], 24),
            "no guest entry/exit eve…"
        );
        assert_eq!(
            fitted_notes(&["no guest entry/exit events", "b"], 16),
            "+2 more",
            "not 'no gue…; +1 more'"
        );
        assert_eq!(fitted_notes(&["ab", "cd"], 6), "ab; cd");
    }

    #[test]
    fn a_clean_run_shows_events_and_lost_and_the_notes() {
        let mut health = model::Health {
            events: 42,
            ..Default::default()
        };
        health.notes.push("a note".into());
        assert_eq!(line_of(health, 120), " health events 42  lost 0  │ a note");
    }
}
