//! pCPU lanes: a timeline per pCPU over the chosen window, each column showing who held the
//! CPU most in that slice of time (a vCPU's letter on its VM's colour, `░` another task, `·`
//! idle), a row below counting tracked tasks waiting in that CPU's run queue, and on the right
//! who runs and who waits right now.

use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::Style;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Widget};

use model::{LaneOwner, PcpuSnapshot, VcpuState};

use super::{vcpu_label, Keys};
use crate::app::App;
use crate::theme::Theme;

/// Characters for "not tracked but busy" and "idle".
pub const OTHER: char = '░';
pub const IDLE: char = '·';

pub struct PcpuLanes<'a> {
    pub app: &'a App,
    pub theme: Theme,
    pub keys: &'a Keys,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cellowner {
    Idle,
    Other,
    Vcpu(u32),
}

/// What one lane column shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    owner: Option<Cellowner>,
    waiting: u32,
}

/// Fold a lane into `cols` columns covering `[t0, t1)`. Columns no segment covers (before
/// tracking began) stay empty.
pub fn columns(pcpu: &PcpuSnapshot, t0: u64, t1: u64, cols: usize) -> Vec<Column> {
    let mut out = vec![
        Column {
            owner: None,
            waiting: 0
        };
        cols
    ];
    if cols == 0 || t1 <= t0 {
        return out;
    }
    let span = (t1 - t0) as f64;
    let bucket = |ts: u64| (((ts - t0) as f64 / span) * cols as f64).floor() as usize;
    let edge = |b: usize| t0 + ((b as f64 / cols as f64) * span) as u64;
    // Per column: up to a handful of (owner, ns) tallies; slices are short next to a column.
    let mut tallies: Vec<Vec<(Cellowner, u64)>> = vec![Vec::new(); cols];
    let first = pcpu.lane.partition_point(|s| s.end <= t0);
    for seg in &pcpu.lane[first..] {
        if seg.start >= t1 {
            break;
        }
        let (s, e) = (seg.start.max(t0), seg.end.min(t1));
        if e <= s {
            continue;
        }
        let owner = match &seg.owner {
            LaneOwner::Idle => Cellowner::Idle,
            LaneOwner::Other { .. } => Cellowner::Other,
            LaneOwner::Vcpu { tid, .. } => Cellowner::Vcpu(*tid),
        };
        let (b0, b1) = (bucket(s), bucket(e - 1).min(cols - 1));
        for (b, tally) in tallies.iter_mut().enumerate().take(b1 + 1).skip(b0) {
            let overlap = e.min(edge(b + 1)).saturating_sub(s.max(edge(b)));
            match tally.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, ns)) => *ns += overlap.max(1),
                None => tally.push((owner, overlap.max(1))),
            }
            out[b].waiting = out[b].waiting.max(seg.waiting);
        }
    }
    // A column is usually far longer than a time slice, so "who held it most" would paint
    // the busiest vCPU everywhere. Instead each owner accumulates its share of every column
    // and a column goes to the owner (among those that ran in it) with the most credit: over
    // a stretch of columns each owner gets cells in proportion to its time, and when zoomed
    // in far enough the real sequence shows.
    let mut credit: Vec<(Cellowner, f64)> = vec![];
    for (col, tally) in out.iter_mut().zip(&tallies) {
        let total: u64 = tally.iter().map(|(_, ns)| ns).sum();
        if total == 0 {
            continue;
        }
        for &(owner, ns) in tally {
            let share = ns as f64 / total as f64;
            match credit.iter_mut().find(|(o, _)| *o == owner) {
                Some((_, c)) => *c += share,
                None => credit.push((owner, share)),
            }
        }
        let pick = credit
            .iter_mut()
            .filter(|(o, _)| tally.iter().any(|(t, _)| t == o))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((owner, c)) = pick {
            *c -= 1.0;
            col.owner = Some(*owner);
        }
    }
    out
}

impl Widget for &PcpuLanes<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let t = self.theme;
        let window = app.window_s();
        let title = Line::from(vec![
            Span::styled(" pCPU lanes ", t.title()),
            Span::styled(
                format!("(last {window}s, who ran; rq = tracked tasks waiting) "),
                t.dim(),
            ),
        ]);
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        let s = &app.snapshot;
        if inner.height == 0 || inner.width < 20 {
            return;
        }
        if s.pcpus.is_empty() && super::counters_only(s) {
            let why = "counters mode (no BPF): the pCPU lanes need switch events, which need BPF";
            buf.set_string(inner.x + 1, inner.y, why, t.warn());
            return;
        }
        if s.pcpus.is_empty() {
            buf.set_string(inner.x + 1, inner.y, "no pCPU activity seen yet", t.dim());
            return;
        }
        // Legend and time axis take two rows; each pCPU takes one, plus an rq row if room.
        let pcpus = s.pcpus.len() as u16;
        let rows_left = inner.height.saturating_sub(2);
        if !lanes_fit(s.pcpus.len(), inner.height) {
            self.render_grid(area, buf);
            return;
        }
        let rq_rows = rows_left >= pcpus * 2;
        let label_w = 6u16;
        let status_w = if inner.width >= 100 { 24 } else { 14 };
        let lane_w = inner.width.saturating_sub(label_w + status_w + 1) as usize;
        let t1 = s.ts;
        let t0 = t1.saturating_sub((window * 1e9) as u64);
        let mut y = inner.y;
        let bottom = inner.y + inner.height;
        for p in &s.pcpus {
            if y >= bottom {
                break;
            }
            let cols = columns(p, t0, t1, lane_w);
            buf.set_string(inner.x, y, format!("cpu{:<2}", p.cpu), t.title());
            for (i, c) in cols.iter().enumerate() {
                let (ch, style) = match c.owner {
                    None => (' ', Style::new()),
                    Some(Cellowner::Idle) => (IDLE, t.lane_idle()),
                    Some(Cellowner::Other) => (OTHER, t.lane_other()),
                    Some(Cellowner::Vcpu(tid)) => match self.keys.vcpu(tid) {
                        Some((letter, vm)) => (letter, t.lane_vcpu(vm)),
                        None => ('?', Style::new()),
                    },
                };
                buf[(inner.x + label_w + i as u16, y)]
                    .set_char(ch)
                    .set_style(style);
            }
            let status = self.status(p);
            buf.set_line(inner.x + label_w + lane_w as u16 + 1, y, &status, status_w);
            y += 1;
            if rq_rows && y < bottom {
                buf.set_string(inner.x, y, "  rq", t.dim());
                for (i, c) in cols.iter().enumerate() {
                    let ch = match c.waiting {
                        0 => ' ',
                        n @ 1..=9 => char::from_digit(n, 10).unwrap_or('+'),
                        _ => '+',
                    };
                    buf[(inner.x + label_w + i as u16, y)]
                        .set_char(ch)
                        .set_style(t.warn());
                }
                y += 1;
            }
        }
        if y < bottom {
            let axis = axis_line(lane_w, window);
            buf.set_string(inner.x + label_w, y, axis, t.dim());
            y += 1;
        }
        if y < bottom {
            buf.set_line(inner.x, y, &self.legend(inner.width as usize), inner.width);
        }
    }
}

/// Whether `pcpus` lanes fit `height` rows inside the border (one row each; the time axis
/// and the legend only where there is room) and the snapshot carries them (see
/// `run::MAX_LANE_PCPUS`); else the panel shows the compact grid.
pub fn lanes_fit(pcpus: usize, height: u16) -> bool {
    pcpus <= crate::run::MAX_LANE_PCPUS && pcpus <= height as usize
}

impl PcpuLanes<'_> {
    /// The compact grid in place of the lanes, with its own title.
    fn render_grid(&self, area: Rect, buf: &mut Buffer) {
        let t = self.theme;
        let s = &self.app.snapshot;
        let waiting: u32 = s.pcpus.iter().map(|p| p.waiting).sum();
        let title = Line::from(vec![
            Span::styled(" pCPUs now ", t.title()),
            Span::styled(
                format!(
                    "({} pCPUs, too many for lanes: who runs on each, digit = tracked tasks \
                     waiting; {waiting} waiting in all) ",
                    s.pcpus.len()
                ),
                t.dim(),
            ),
        ]);
        let block = Block::bordered().title(title);
        let inner = block.inner(area);
        block.render(area, buf);
        super::pcpu_grid::render(self.app, self.keys, t, &s.pcpus, inner, buf);
    }

    fn letter(&self, tid: u32) -> Span<'static> {
        match self.keys.vcpu(tid) {
            Some((letter, vm)) => Span::styled(letter.to_string(), self.theme.lane_vcpu(vm)),
            None => Span::raw("?"),
        }
    }

    /// "run A  wait B C" for right now.
    fn status(&self, p: &PcpuSnapshot) -> Line<'static> {
        let t = self.theme;
        let mut spans = vec![Span::styled("run ", t.dim())];
        match p.current_tid {
            Some(tid) => spans.push(self.letter(tid)),
            None => spans.push(Span::styled("-", t.dim())),
        }
        let waiting: Vec<u32> = self
            .app
            .snapshot
            .vcpus
            .iter()
            .filter(|v| v.state == Some(VcpuState::Waiting) && v.pcpu == Some(p.cpu))
            .map(|v| v.tid)
            .collect();
        spans.push(Span::styled("  wait ", t.dim()));
        if waiting.is_empty() {
            spans.push(Span::styled(
                if p.waiting > 0 {
                    format!("{}", p.waiting)
                } else {
                    "-".into()
                },
                t.dim(),
            ));
        }
        for tid in waiting {
            spans.push(self.letter(tid));
            spans.push(Span::raw(" "));
        }
        Line::from(spans)
    }

    /// The key, fitted to `width`: as many lettered vCPUs as fit, then how many more (their
    /// letters are in the vCPU table's first column), `#` for vCPUs past the letters, and
    /// always the other and idle marks. A key cut at the panel's edge hid those marks and
    /// every letter past the first dozen (18 vCPUs at 120 columns).
    fn legend(&self, width: usize) -> Line<'static> {
        let t = self.theme;
        let mut tail = vec![];
        let mut lettered = vec![];
        for &tid in &self.keys.order {
            let Some(v) = self.app.snapshot.vcpus.iter().find(|v| v.tid == tid) else {
                continue;
            };
            if self.keys.vcpu(tid).is_some_and(|(letter, _)| letter == '#') {
                if tail.is_empty() {
                    tail.push(Span::styled("#", t.dim()));
                    tail.push(Span::raw(" more vCPUs  "));
                }
                continue;
            }
            let label = vcpu_label(&self.app.vm_label(&v.vm, v.pid), v.vcpu, v.tid);
            lettered.push((self.letter(tid), format!(" {label}  ")));
        }
        tail.push(Span::styled(format!("{OTHER}"), t.lane_other()));
        tail.push(Span::raw(" other  "));
        tail.push(Span::styled(format!("{IDLE}"), t.lane_idle()));
        tail.push(Span::raw(" idle"));
        let rest_note = |n: usize| format!("+{n} (letters in the vCPU table)  ");
        let mut spans = vec![Span::styled("key  ", t.dim())];
        let mut used = 5 + Line::from(tail.clone()).width();
        let total = lettered.len();
        for (i, (letter, text)) in lettered.into_iter().enumerate() {
            let after = total - i - 1;
            let reserve = if after > 0 { rest_note(after).len() } else { 0 };
            let w = 1 + text.chars().count();
            if used + w + reserve > width {
                spans.push(Span::styled(rest_note(total - i), t.dim()));
                break;
            }
            used += w;
            spans.push(letter);
            spans.push(Span::raw(text));
        }
        spans.extend(tail);
        Line::from(spans)
    }
}

/// `-10s      -5s      now` spread over `width` columns.
fn axis_line(width: usize, window: f64) -> String {
    let mut line = vec![' '; width];
    let mut put = |at: usize, text: &str| {
        for (i, ch) in text.chars().enumerate() {
            if let Some(c) = line.get_mut(at + i) {
                *c = ch;
            }
        }
    };
    let fmt_s = |v: f64| {
        if v.fract() == 0.0 {
            format!("-{v:.0}s")
        } else {
            format!("-{v:.1}s")
        }
    };
    put(0, &fmt_s(window));
    if width > 30 {
        let mid = fmt_s(window / 2.0);
        put(width / 2 - mid.len() / 2, &mid);
    }
    put(width.saturating_sub(3), "now");
    line.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::LaneSegment;

    fn seg(start: u64, end: u64, owner: LaneOwner, waiting: u32) -> LaneSegment {
        LaneSegment {
            start,
            end,
            owner,
            waiting,
        }
    }

    #[test]
    fn columns_follow_owners_and_max_waiting() {
        let a = LaneOwner::Vcpu {
            vm: "vm0".into(),
            vcpu: Some(0),
            tid: 11,
        };
        let p = PcpuSnapshot {
            cpu: 0,
            lane: vec![
                seg(0, 30, a.clone(), 1),
                seg(30, 45, LaneOwner::Other { comm: "x".into() }, 0),
                seg(45, 100, LaneOwner::Idle, 2),
            ],
            ..PcpuSnapshot::default()
        };
        let cols = columns(&p, 0, 100, 4);
        let owners: Vec<_> = cols.iter().map(|c| c.owner).collect();
        assert_eq!(
            owners,
            vec![
                Some(Cellowner::Vcpu(11)),
                Some(Cellowner::Other),
                Some(Cellowner::Idle),
                Some(Cellowner::Idle)
            ]
        );
        assert_eq!(cols[0].waiting, 1);
        assert_eq!(
            cols[1].waiting, 2,
            "column 1 overlaps the idle segment with 2 waiting"
        );
    }

    #[test]
    fn columns_before_tracking_stay_empty() {
        let p = PcpuSnapshot {
            lane: vec![seg(50, 100, LaneOwner::Idle, 0)],
            ..PcpuSnapshot::default()
        };
        let cols = columns(&p, 0, 100, 4);
        assert_eq!(cols[0].owner, None);
        assert_eq!(cols[3].owner, Some(Cellowner::Idle));
        assert!(columns(&p, 100, 100, 4).iter().all(|c| c.owner.is_none()));
    }

    #[test]
    fn axis_marks_both_ends() {
        let a = axis_line(40, 10.0);
        assert!(a.starts_with("-10s"));
        assert!(a.ends_with("now"));
        assert!(a.contains("-5s"));
    }
}

#[cfg(test)]
mod dither_tests {
    use super::*;
    use model::LaneSegment;

    #[test]
    fn columns_share_out_in_proportion_to_time() {
        // A 3 ms, B 1 ms, repeated: every column holds both, A three times as long.
        let mut lane = vec![];
        let mut t = 0;
        while t < 4_000 {
            lane.push(LaneSegment {
                start: t,
                end: t + 3,
                owner: LaneOwner::Vcpu {
                    vm: "a".into(),
                    vcpu: Some(0),
                    tid: 1,
                },
                waiting: 0,
            });
            lane.push(LaneSegment {
                start: t + 3,
                end: t + 4,
                owner: LaneOwner::Vcpu {
                    vm: "b".into(),
                    vcpu: Some(0),
                    tid: 2,
                },
                waiting: 0,
            });
            t += 4;
        }
        let p = PcpuSnapshot {
            lane,
            ..PcpuSnapshot::default()
        };
        let cols = columns(&p, 0, 4_000, 100);
        let a = cols
            .iter()
            .filter(|c| c.owner == Some(Cellowner::Vcpu(1)))
            .count();
        let b = cols
            .iter()
            .filter(|c| c.owner == Some(Cellowner::Vcpu(2)))
            .count();
        assert_eq!(a + b, 100);
        assert!(
            (74..=76).contains(&a),
            "A should get about 75 of 100 columns, got {a}"
        );
    }
}
