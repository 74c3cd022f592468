//! Tests of [`super::App`]: keys, scrolling, sorting and filtering, without a terminal.

use super::*;
use crate::fixture;

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn live_app() -> App {
    fixture::live_app(fixture::demo_snapshot())
}

#[test]
fn q_ctrl_c_and_esc_quit() {
    for k in [
        key(KeyCode::Char('q')),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
        key(KeyCode::Esc),
    ] {
        let mut app = live_app();
        assert_eq!(app.handle_key(k), Action::Quit);
        assert!(app.quit);
    }
}

#[test]
fn esc_closes_help_before_quitting() {
    let mut app = live_app();
    app.handle_key(key(KeyCode::Char('?')));
    assert!(app.show_help);
    assert_eq!(app.handle_key(key(KeyCode::Esc)), Action::None);
    assert!(!app.show_help && !app.quit);
}

#[test]
fn key_releases_are_ignored() {
    let mut app = live_app();
    let mut k = key(KeyCode::Char('q'));
    k.kind = KeyEventKind::Release;
    assert_eq!(app.handle_key(k), Action::None);
    assert!(!app.quit);
}

#[test]
fn live_pause_holds_the_picture_and_resume_takes_the_latest() {
    let mut app = live_app();
    let first = app.snapshot.clone();
    app.handle_key(key(KeyCode::Char(' ')));
    assert!(app.paused);
    let mut later = (*first).clone();
    later.ts += 1_000_000_000;
    app.update(Update {
        snapshot: Arc::new(later.clone()),
        replay: None,
        ended: false,
    });
    assert_eq!(app.snapshot.ts, first.ts, "paused view must not move");
    app.handle_key(key(KeyCode::Char(' ')));
    app.update(Update {
        snapshot: Arc::new(later.clone()),
        replay: None,
        ended: false,
    });
    assert_eq!(app.snapshot.ts, later.ts);
}

#[test]
fn zoom_steps_stop_at_both_ends() {
    let mut app = live_app();
    assert_eq!(app.window_s(), 10.0);
    app.handle_key(key(KeyCode::Char('+')));
    assert_eq!(app.window_s(), 5.0);
    for _ in 0..10 {
        app.handle_key(key(KeyCode::Char('+')));
    }
    assert_eq!(app.window_s(), 1.0);
    for _ in 0..10 {
        app.handle_key(key(KeyCode::Char('-')));
    }
    assert_eq!(app.window_s(), 10.0);
}

#[test]
fn the_widest_zoom_fits_the_history_the_model_keeps() {
    let kept_s = model::ModelConfig::default().history_ns as f64 / 1e9;
    for step in ZOOM_STEPS {
        assert!(
            step <= kept_s,
            "a {step} s window over {kept_s} s of history"
        );
    }
}

#[test]
fn tab_cycles_vms_and_back_to_all() {
    let mut app = live_app();
    let mut seen = vec![];
    for _ in 0..4 {
        app.handle_key(key(KeyCode::Tab));
        seen.push(app.vm_filter.clone());
    }
    assert_eq!(
        seen,
        vec![
            Some("vm0".to_string()),
            Some("vm1".to_string()),
            None,
            Some("vm0".to_string())
        ]
    );
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.vm_filter, None);
    app.handle_key(key(KeyCode::BackTab));
    assert_eq!(app.vm_filter.as_deref(), Some("vm1"));
    let vm1 = app.visible_vcpus();
    assert_eq!(vm1.len(), 2);
    assert!(vm1.iter().all(|v| v.vm == "vm1"));
}

#[test]
fn s_cycles_sort_keys_and_orders_rows() {
    let mut app = live_app();
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, SortKey::Share);
    let shares: Vec<f64> = app.visible_vcpus().iter().map(|v| v.cpu_share).collect();
    assert!(shares.windows(2).all(|w| w[0] >= w[1]), "{shares:?}");
    app.handle_key(key(KeyCode::Char('s')));
    assert_eq!(app.sort, SortKey::WaitP99);
    let waits: Vec<u64> = app.visible_vcpus().iter().map(|v| v.wait.p99).collect();
    assert!(waits.windows(2).all(|w| w[0] >= w[1]), "{waits:?}");
    for _ in 0..4 {
        app.handle_key(key(KeyCode::Char('s')));
    }
    assert_eq!(app.sort, SortKey::Vcpu);
    app.handle_key(key(KeyCode::Char('S')));
    assert_eq!(app.sort, SortKey::Exits);
}

#[test]
fn replay_keys_become_commands() {
    let mut app = App::new(Mode::Replay, fixture::host(), "replay: t.kst".into());
    let status = ReplayStatus {
        playing: true,
        speed: 1.0,
        position_ns: 0,
        length_ns: 10,
        simulated: false,
    };
    app.update(Update {
        snapshot: Arc::new(fixture::demo_snapshot()),
        replay: Some(status),
        ended: false,
    });
    assert_eq!(
        app.handle_key(key(KeyCode::Char(' '))),
        Action::Replay(ReplayCommand::Play(false))
    );
    assert!(app.paused);
    assert_eq!(
        app.handle_key(key(KeyCode::Right)),
        Action::Replay(ReplayCommand::SeekBy(SEEK_STEP_NS))
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Left)),
        Action::Replay(ReplayCommand::SeekBy(-SEEK_STEP_NS))
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Char('>'))),
        Action::Replay(ReplayCommand::Speed(2.0))
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Char('<'))),
        Action::Replay(ReplayCommand::Speed(1.0))
    );
    assert_eq!(
        app.handle_key(key(KeyCode::Home)),
        Action::Replay(ReplayCommand::SeekTo(0))
    );
    // An update the reader sent before it saw the pause does not flip the display back.
    let stale = ReplayStatus {
        playing: true,
        ..status
    };
    app.update(Update {
        snapshot: Arc::new(fixture::demo_snapshot()),
        replay: Some(stale),
        ended: false,
    });
    assert!(app.paused && !app.replay.unwrap().playing);
    // A paused replay still shows what a seek lands on.
    let mut moved = fixture::demo_snapshot();
    moved.ts += 5;
    let paused = ReplayStatus {
        playing: false,
        ..status
    };
    app.update(Update {
        snapshot: Arc::new(moved.clone()),
        replay: Some(paused),
        ended: false,
    });
    assert_eq!(app.snapshot.ts, moved.ts);
}

#[test]
fn vms_sharing_a_name_are_told_apart_by_pid() {
    // The demo (vm0 is process 1000, vm1 process 2000) beside a second process that also
    // calls its VM "vm0": two VMs of one name, as two bundled VMMs or two QEMUs would be.
    let mut config = model::synth::demo_config();
    config.tasks.push(model::synth::SimTask::vcpu(
        9001,
        9000,
        "vm0",
        0,
        0,
        model::synth::Behaviour::Spin,
    ));
    let mut app = fixture::live_app(fixture::snapshot_of(config, 1.0));
    assert_eq!(app.vm_label("vm0", 1000), "vm0@1000");
    assert_eq!(app.vm_label("vm0", 9000), "vm0@9000");
    assert_eq!(
        app.vm_label("vm1", 2000),
        "vm1",
        "a name of one process stays bare"
    );
    assert_eq!(app.vm_names(), vec!["vm0@1000", "vm1", "vm0@9000"]);
    app.vm_filter = Some("vm0@9000".into());
    let tids: Vec<u32> = app.visible_vcpus().iter().map(|v| v.tid).collect();
    assert_eq!(tids, vec![9001]);
}

#[test]
fn arrows_scroll_the_table_within_its_rows() {
    let mut app = live_app();
    app.handle_key(key(KeyCode::Up));
    assert_eq!(app.table_scroll, 0);
    for _ in 0..10 {
        app.handle_key(key(KeyCode::Down));
    }
    assert_eq!(
        app.table_scroll, 3,
        "4 vCPUs: the last row can be the first shown"
    );
    app.handle_key(key(KeyCode::Up));
    assert_eq!(app.table_scroll, 2);
    app.handle_key(key(KeyCode::Tab));
    assert_eq!(app.table_scroll, 0, "a new filter starts at the top");
}

/// Rows by VM, then vCPU, a VM's other tracked threads after its vCPUs: the text
/// report's order (`VcpuSnapshot::listing_key`), not the order threads were announced in.
#[test]
fn rows_are_listed_by_vm_then_vcpu_as_the_report_lists_them() {
    use model::synth::task_info;
    let app = fixture::live_app(fixture::snapshot_of_events(&[
        task_info(0, 15, 100, "vm0", None, 0),
        task_info(1, 14, 101, "vm1", Some(0), 0),
        task_info(2, 13, 100, "vm0", Some(1), 0),
        task_info(3, 12, 100, "vm0", Some(0), 0),
        // Past the reorder window, so that the model has taken all four.
        task_info(1_000_000_000, 16, 102, "vm2", Some(0), 0),
    ]));
    let tids: Vec<u32> = app.visible_vcpus().iter().map(|v| v.tid).collect();
    assert_eq!(tids[..4], [12, 13, 15, 14]);
}

#[test]
fn page_keys_scroll_the_table_ten_rows_within_its_rows() {
    let mut app = fixture::live_app(fixture::snapshot_of(
        model::synth::big_host_config(16, 4),
        2.0,
    ));
    assert_eq!(app.visible_vcpus().len(), 16);
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!(app.table_scroll, PAGE_ROWS);
    app.handle_key(key(KeyCode::PageDown));
    assert_eq!(app.table_scroll, 15, "the last row can be the first shown");
    app.handle_key(key(KeyCode::PageUp));
    assert_eq!(app.table_scroll, 5);
    app.handle_key(key(KeyCode::PageUp));
    assert_eq!(app.table_scroll, 0);
}

#[test]
fn live_mode_ignores_replay_keys() {
    let mut app = live_app();
    assert_eq!(app.handle_key(key(KeyCode::Right)), Action::None);
    assert_eq!(app.handle_key(key(KeyCode::Char('>'))), Action::None);
}
