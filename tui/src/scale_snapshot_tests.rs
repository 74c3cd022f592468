//! The dashboard on a big host (issue #15): 512 vCPUs in 128 VMs on 128 pCPUs, folded by the
//! real model from the synthetic big-host stream and drawn at 120x40 from the snapshot the
//! dashboard itself takes. The lanes give way to the compact pCPU grid, and the vCPU table
//! scrolls, filters by VM and sorts by wait.

use model::synth;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{App, SortKey};
use crate::fixture;
use crate::snapshot_tests::dashboard;
use crate::theme::Theme;

const VCPUS: u32 = 512;
const PCPUS: u32 = 128;

/// 40 ms of the host: every vCPU has run or waited (4 vCPUs per pCPU, 3 ms slices), and the
/// debug build generates and folds it in seconds.
const SECONDS: f64 = 0.04;

fn big_host_app() -> App {
    let snapshot = fixture::snapshot_of(synth::big_host_config(VCPUS, PCPUS), SECONDS);
    assert_eq!(snapshot.vcpus.len(), VCPUS as usize);
    assert_eq!(snapshot.pcpus.len(), PCPUS as usize);
    assert!(
        snapshot.pcpus.iter().all(|p| p.lane.is_empty()),
        "past MAX_LANE_PCPUS the dashboard's snapshot leaves the lanes out"
    );
    fixture::live_app(snapshot)
}

fn key(app: &mut App, code: KeyCode) {
    app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
}

#[test]
fn dashboard_512_vcpus_on_128_pcpus_120x40_scrolls_filters_and_sorts_by_wait() {
    let app = big_host_app();
    let text = dashboard(&app, Theme::coloured(), 120, 40);
    assert!(
        text.contains("1-"),
        "the table says which rows it shows:\n{text}"
    );
    assert!(text.contains("of 512, ↑↓ scroll, tab VM, s sort"), "{text}");
    assert!(text.contains("128 pCPUs, too many for lanes"), "{text}");
    // Every pCPU has its cell: the grid's row labels run to the last pCPU.
    assert!(text.contains("cpu 120"), "{text}");
    insta::assert_snapshot!(text);

    // The table scrolls, filters by VM and sorts by wait (one test: the host is built once).
    let mut app = app;
    for _ in 0..20 {
        key(&mut app, KeyCode::Down);
    }
    let text = dashboard(&app, Theme::coloured(), 120, 40);
    assert!(text.contains("21-"), "scrolled 20 rows down:\n{text}");
    insta::assert_snapshot!("scrolled", text);

    key(&mut app, KeyCode::Tab);
    assert_eq!(app.vm_filter.as_deref(), Some("vm0"));
    assert!(app.visible_vcpus().iter().all(|v| v.vm == "vm0"));
    assert_eq!(app.visible_vcpus().len(), 4);
    let text = dashboard(&app, Theme::coloured(), 120, 40);
    assert!(text.contains("(vm0, 4 shown"), "{text}");

    key(&mut app, KeyCode::BackTab);
    key(&mut app, KeyCode::Char('s'));
    key(&mut app, KeyCode::Char('s'));
    assert_eq!(app.sort, SortKey::WaitP99);
    let waits: Vec<u64> = app.visible_vcpus().iter().map(|v| v.wait.p99).collect();
    assert!(waits.windows(2).all(|w| w[0] >= w[1]));
    assert!(waits[0] > 0, "vCPUs overcommitted 4:1 wait");
    let text = dashboard(&app, Theme::coloured(), 120, 40);
    insta::assert_snapshot!("sorted_by_wait", text);
}
