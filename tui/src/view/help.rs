//! The `?` popup: every key, and what the panels mean.

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::text::Line;
use ratatui::widgets::{Block, Clear, Paragraph, Widget, Wrap};

use crate::app::{App, Mode};
use crate::replay_keys;
use crate::theme::Theme;

pub struct HelpPopup<'a> {
    pub app: &'a App,
    pub theme: Theme,
}

impl Widget for &HelpPopup<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let mut lines: Vec<Line> = vec![
            Line::from("?        this help (esc closes)"),
            Line::from("space    pause / resume"),
            Line::from("+ / -    zoom time window in / out (1 to 10 s)"),
            Line::from("tab      next VM filter (shift-tab: previous)"),
            Line::from("s / S    next / previous sort column"),
            Line::from("v        vruntime lines: own progress / minus common minimum"),
            Line::from("↑ / ↓    scroll the vCPU table (also k / j)"),
            Line::from("PgUp/PgDn scroll it ten rows at a time"),
            Line::from("q        quit (also ctrl-c)"),
        ];
        if self.app.mode == Mode::Replay {
            lines.extend(
                replay_keys::help_lines(self.app.simulated_label.is_some()).map(Line::from),
            );
        }
        lines.extend([
            Line::from(""),
            Line::from("lanes: one letter per vCPU (legend below them), ░ other tasks,"),
            Line::from("· idle; the rq row counts tracked tasks waiting on that pCPU."),
            Line::from("lag: vruntime minus the run queue's smallest tracked vruntime."),
            Line::from("resume: switch-in to guest running, same pCPU vs migrated."),
        ]);
        let h = (lines.len() as u16 + 2).min(area.height);
        let w = 70.min(area.width);
        let [row] = Layout::vertical([Constraint::Length(h)])
            .flex(Flex::Center)
            .areas(area);
        let [popup] = Layout::horizontal([Constraint::Length(w)])
            .flex(Flex::Center)
            .areas(row);
        Clear.render(popup, buf);
        Paragraph::new(lines)
            .wrap(Wrap { trim: false })
            .block(
                Block::bordered()
                    .title(" keys ")
                    .title_style(self.theme.title()),
            )
            .render(popup, buf);
    }
}
