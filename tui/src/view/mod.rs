//! The dashboard's panels. Each is a small widget over `&App` (`impl Widget for &Panel`), so a
//! panel can be drawn alone (tests) or as part of [`Dashboard`].

use std::collections::HashMap;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::widgets::Widget;

use crate::app::App;
use crate::theme::Theme;

mod chart;
mod header;
mod health;
mod help;
mod lanes;
mod pcpu_grid;
mod vcpus;
mod vmcs;

pub use chart::{VruntimeChart, CHART_LINES};
pub use header::Header;
pub use health::HealthLine;
pub use help::HelpPopup;
pub use lanes::PcpuLanes;
pub use vcpus::VcpuTable;
pub use vmcs::VmcsPanel;

/// The figures come from counter samples alone (no BPF): panels built on switch events have
/// nothing to draw and say so.
pub(crate) fn counters_only(s: &model::Snapshot) -> bool {
    s.health.counter_samples > 0 && s.pcpus.is_empty()
}

/// Why the run on screen has no guest exits to show, when it cannot have any: counters
/// mode reads none, and a simulation runs no guests. `None`: exits are measured (zero is
/// zero).
pub(crate) fn exits_not_measured(app: &App) -> Option<&'static str> {
    if counters_only(&app.snapshot) {
        Some("exits need the kvm:* tracepoints (BPF)")
    } else if app.showing_simulated() {
        Some("exits are not simulated")
    } else {
        None
    }
}

/// Letters for vCPUs in lanes and legends: one per vCPU, stable within a snapshot.
const LETTERS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// How each VM and vCPU is drawn, derived once per frame from the snapshot.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    vm_index: HashMap<String, usize>,
    /// tid -> (letter, VM index).
    vcpus: HashMap<u32, (char, usize)>,
    /// tids in legend order.
    pub order: Vec<u32>,
}

impl Keys {
    pub fn new(app: &App) -> Self {
        let mut keys = Keys::default();
        for (i, name) in app.vm_names().into_iter().enumerate() {
            keys.vm_index.insert(name, i);
        }
        let mut vcpus: Vec<_> = app
            .snapshot
            .vcpus
            .iter()
            .map(|v| {
                (
                    keys.vm_index
                        .get(&app.vm_label(&v.vm, v.pid))
                        .copied()
                        .unwrap_or(usize::MAX),
                    v,
                )
            })
            .collect();
        vcpus.sort_by(|(ia, a), (ib, b)| (ia, a.vcpu, a.tid).cmp(&(ib, b.vcpu, b.tid)));
        for (n, (vm, v)) in vcpus.iter().enumerate() {
            let letter = LETTERS.get(n).map_or('#', |&b| b as char);
            let vm = if *vm == usize::MAX { 0 } else { *vm };
            keys.vcpus.insert(v.tid, (letter, vm));
            keys.order.push(v.tid);
        }
        keys
    }

    /// Letter and VM index of a tracked tid.
    pub fn vcpu(&self, tid: u32) -> Option<(char, usize)> {
        self.vcpus.get(&tid).copied()
    }
}

/// `vm0/0` style label; threads that are not numbered vCPUs show their tid.
pub fn vcpu_label(vm: &str, vcpu: Option<u32>, tid: u32) -> String {
    match vcpu {
        Some(i) => format!("{vm}/{i}"),
        None => format!("{vm}/t{tid}"),
    }
}

/// The whole screen: header, vCPU table, pCPU lanes, vruntime chart beside the
/// migration/VMCS panel, health line, and the help popup on top when asked for.
pub struct Dashboard<'a> {
    pub app: &'a App,
    pub theme: Theme,
}

impl Widget for &Dashboard<'_> {
    fn render(self, area: Rect, buf: &mut Buffer) {
        let app = self.app;
        let theme = self.theme;
        let keys = Keys::new(app);
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Min(0),
            Constraint::Length(1),
        ])
        .areas(area);
        Header { app, theme }.render(head, buf);
        HealthLine { app, theme }.render(foot, buf);

        // Share the body between the table (as tall as its rows), the lanes (two rows per
        // pCPU when there is room) and the bottom row, which keeps at least a third.
        let rows = app.visible_vcpus().len() as u16;
        let pcpus = app.snapshot.pcpus.len().max(1) as u16;
        let h = body.height;
        let table_h = (rows + 3).min(h * 2 / 5).max(4.min(h));
        let rest = h.saturating_sub(table_h);
        let lanes_full = pcpus * 2 + 4;
        let lanes_h = if lanes_full <= rest * 2 / 5 + 1 {
            lanes_full
        } else if lanes::lanes_fit(
            pcpus as usize,
            (pcpus + 4)
                .min(rest * 2 / 5)
                .max(4.min(rest))
                .saturating_sub(2),
        ) {
            (pcpus + 4).min(rest * 2 / 5).max(4.min(rest))
        } else {
            // The compact grid: as many rows as it needs, up to half the rest.
            let grid = pcpu_grid::rows(pcpus as usize, body.width.saturating_sub(2)) as u16;
            (grid + 2).min(rest / 2).max(4.min(rest))
        };
        let [table, lanes, bottom] = Layout::vertical([
            Constraint::Length(table_h),
            Constraint::Length(lanes_h),
            Constraint::Min(0),
        ])
        .areas(body);
        VcpuTable {
            app,
            theme,
            keys: &keys,
        }
        .render(table, buf);
        PcpuLanes {
            app,
            theme,
            keys: &keys,
        }
        .render(lanes, buf);
        let [chart, vmcs] =
            Layout::horizontal([Constraint::Percentage(56), Constraint::Percentage(44)])
                .areas(bottom);
        VruntimeChart {
            app,
            theme,
            keys: &keys,
        }
        .render(chart, buf);
        VmcsPanel { app, theme }.render(vmcs, buf);

        if app.show_help {
            HelpPopup { app, theme }.render(area, buf);
        }
    }
}
