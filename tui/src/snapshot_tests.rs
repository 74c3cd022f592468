//! Snapshot tests of every panel, drawn from the dashboard's snapshot of synthetic streams
//! folded by the real model (`fixture`). CI runs them with `INSTA_UPDATE=no`, so a changed
//! picture fails until the new one is reviewed and accepted.

use std::sync::Arc;

use ratatui::backend::TestBackend;
use ratatui::style::Color;
use ratatui::widgets::Widget;
use ratatui::Terminal;

use crate::app::{App, Mode, ReplayStatus, SortKey, Update, VruntimeMode};
use crate::fixture::{self, live_app as app_with};
use crate::theme::Theme;
use crate::view::{
    Dashboard, Header, HealthLine, Keys, PcpuLanes, VcpuTable, VmcsPanel, VruntimeChart,
};

/// The characters of a buffer, one line per row, trailing spaces trimmed.
fn buffer_text(buf: &ratatui::buffer::Buffer) -> String {
    let area = buf.area;
    let mut out = String::new();
    for y in area.top()..area.bottom() {
        let mut line = String::new();
        for x in area.left()..area.right() {
            line.push_str(buf[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn demo_app() -> App {
    app_with(fixture::demo_snapshot())
}

pub(crate) fn draw(
    width: u16,
    height: u16,
    render: impl FnOnce(ratatui::layout::Rect, &mut ratatui::buffer::Buffer),
) -> (String, ratatui::buffer::Buffer) {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    let mut once = Some(render);
    terminal
        .draw(|f| {
            let area = f.area();
            if let Some(r) = once.take() {
                r(area, f.buffer_mut());
            }
        })
        .unwrap();
    let buf = terminal.backend().buffer().clone();
    (buffer_text(&buf), buf)
}

pub(crate) fn dashboard(app: &App, theme: Theme, w: u16, h: u16) -> String {
    draw(w, h, |area, buf| Dashboard { app, theme }.render(area, buf)).0
}

#[test]
fn dashboard_120x40() {
    insta::assert_snapshot!(dashboard(&demo_app(), Theme::coloured(), 120, 40));
}

#[test]
fn dashboard_80x24() {
    insta::assert_snapshot!(dashboard(&demo_app(), Theme::coloured(), 80, 24));
}

#[test]
fn dashboard_16_vcpus_120x40() {
    let mut app = app_with(fixture::snapshot_of(
        model::synth::big_host_config(16, 4),
        12.0,
    ));
    app.host.cpus = 4;
    let screen = dashboard(&app, Theme::coloured(), 120, 40);
    // The key fits its line: the letters that fit, how many more, and the other/idle marks
    // (it was cut after "M vm3", hiding them).
    let key = screen.lines().find(|l| l.contains("key  ")).unwrap();
    assert!(
        key.contains("(letters in the vCPU table)") && key.contains("░ other  · idle"),
        "{key}"
    );
    insta::assert_snapshot!(screen);
}

/// Past the end, ↑ moves the table at once: ↓ and PgDn stop where the last row shows at
/// the bottom (they went on to where it was the first row, and ↑ then did nothing ten times).
#[test]
fn up_moves_the_table_at_once_after_paging_past_its_end() {
    use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let mut app = app_with(fixture::snapshot_of(
        model::synth::big_host_config(16, 4),
        2.0,
    ));
    let press = |app: &mut App, code| app.handle_key(KeyEvent::new(code, KeyModifiers::NONE));
    let shows = |app: &App, rows: &str| {
        let screen = dashboard(app, Theme::coloured(), 120, 40);
        assert!(
            screen.contains(&format!("{rows} of 16, ↑↓ scroll")),
            "not {rows}:\n{screen}"
        );
    };
    shows(&app, "1-11");
    press(&mut app, KeyCode::PageDown);
    press(&mut app, KeyCode::PageDown);
    shows(&app, "6-16");
    press(&mut app, KeyCode::Up);
    shows(&app, "5-15");
    for _ in 0..3 {
        press(&mut app, KeyCode::Down);
    }
    press(&mut app, KeyCode::PageUp);
    shows(&app, "1-11");
}

#[test]
fn dashboard_before_any_event() {
    let app = App::new(Mode::Live, fixture::host(), "live".into());
    insta::assert_snapshot!(dashboard(&app, Theme::coloured(), 100, 30));
}

#[test]
fn header_paused_filtered_sorted() {
    let mut app = demo_app();
    app.paused = true;
    app.vm_filter = Some("vm1".into());
    app.sort = SortKey::WaitP99;
    app.clock = Some("12:34:56".into());
    let theme = Theme::coloured();
    insta::assert_snapshot!(draw(120, 2, |a, b| Header { app: &app, theme }.render(a, b)).0);
}

#[test]
fn header_replay() {
    let mut app = App::new(Mode::Replay, fixture::host(), "replay: demo.kst".into());
    let status = ReplayStatus {
        playing: true,
        speed: 0.5,
        position_ns: 12_500_000_000,
        length_ns: 60_000_000_000,
        simulated: false,
    };
    app.update(Update {
        snapshot: Arc::new(fixture::demo_snapshot()),
        replay: Some(status),
        ended: false,
    });
    let theme = Theme::coloured();
    insta::assert_snapshot!(draw(120, 2, |a, b| Header { app: &app, theme }.render(a, b)).0);
}

/// A replay of a simulation at its end, and a paused demo, at 120 columns: the settings
/// that do not fit are left out whole (the line ended "vruntime progre" and "? hel").
#[test]
fn a_header_too_narrow_for_its_settings_leaves_them_out_whole() {
    let theme = Theme::coloured();
    let second_line = |app: &App| {
        let text = draw(120, 2, |a, b| Header { app, theme }.render(a, b)).0;
        text.lines().nth(1).unwrap().trim_end().to_string()
    };
    let mut replay = App::new(Mode::Replay, fixture::host(), "replay: t.trace".into());
    replay.simulated_label = Some("simulated credit (Xen credit1)".into());
    replay.update(Update {
        snapshot: Arc::new(fixture::demo_snapshot()),
        replay: Some(ReplayStatus {
            playing: false,
            speed: 1.0,
            position_ns: 20_100_000_000,
            length_ns: 20_100_000_000,
            simulated: true,
        }),
        ended: true,
    });
    let line = second_line(&replay);
    assert!(
        line.contains("SIMULATED run (m: recorded)  end of recording"),
        "{line}"
    );
    assert!(line.ends_with("? help  q quit"), "{line}");
    assert!(
        !line.contains("vruntime"),
        "the first setting to go: {line}"
    );

    let mut demo = demo_app();
    demo.source_label = "live: bundled VMM (--demo)".into();
    demo.paused = true;
    demo.vm_filter = Some("interactive".into());
    demo.clock = Some("21:13:26".into());
    let line = second_line(&demo);
    assert!(line.contains("PAUSED (events still folded)"), "{line}");
    assert!(line.contains("vm interactive"), "{line}");
    assert!(line.ends_with("? help  q quit"), "{line}");
}

#[test]
fn vcpu_table_wide_and_sorted_by_share() {
    let mut app = demo_app();
    app.sort = SortKey::Share;
    let keys = Keys::new(&app);
    let theme = Theme::coloured();
    let (text, _) = draw(120, 9, |a, b| {
        VcpuTable {
            app: &app,
            theme,
            keys: &keys,
        }
        .render(a, b)
    });
    // The sorted column says so, as every other sort column does (its cell was one short).
    assert!(text.contains("share/entitled▼"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn vcpu_table_narrow_filtered() {
    let mut app = demo_app();
    app.vm_filter = Some("vm1".into());
    let keys = Keys::new(&app);
    let theme = Theme::coloured();
    insta::assert_snapshot!(
        draw(80, 6, |a, b| VcpuTable {
            app: &app,
            theme,
            keys: &keys
        }
        .render(a, b))
        .0
    );
}

#[test]
fn pcpu_lanes_10s() {
    let app = demo_app();
    let keys = Keys::new(&app);
    let theme = Theme::coloured();
    insta::assert_snapshot!(
        draw(120, 8, |a, b| PcpuLanes {
            app: &app,
            theme,
            keys: &keys
        }
        .render(a, b))
        .0
    );
}

#[test]
fn pcpu_lanes_zoomed_in_2s() {
    let mut app = demo_app();
    app.zoom = 1;
    let keys = Keys::new(&app);
    let theme = Theme::coloured();
    insta::assert_snapshot!(
        draw(100, 8, |a, b| PcpuLanes {
            app: &app,
            theme,
            keys: &keys
        }
        .render(a, b))
        .0
    );
}

#[test]
fn vruntime_chart_per_line() {
    let app = demo_app();
    let keys = Keys::new(&app);
    let theme = Theme::coloured();
    insta::assert_snapshot!(
        draw(66, 16, |a, b| VruntimeChart {
            app: &app,
            theme,
            keys: &keys
        }
        .render(a, b))
        .0
    );
}

#[test]
fn vruntime_chart_common_minimum_plain() {
    let mut app = demo_app();
    app.vruntime_mode = VruntimeMode::Common;
    let keys = Keys::new(&app);
    let theme = Theme::plain();
    insta::assert_snapshot!(
        draw(66, 16, |a, b| VruntimeChart {
            app: &app,
            theme,
            keys: &keys
        }
        .render(a, b))
        .0
    );
}

#[test]
fn vmcs_panel_with_guest_gaps() {
    let app = demo_app();
    let theme = Theme::coloured();
    let (text, _) = draw(54, 16, |a, b| VmcsPanel { app: &app, theme }.render(a, b));
    // Which span its rates cover, since the table's exits/s column covers another.
    assert!(text.contains("exits/s by reason (whole run)"), "{text}");
    insta::assert_snapshot!(text);
}

#[test]
fn vmcs_panel_without_guest_timing_says_so() {
    let app = app_with(fixture::no_guest_timing_snapshot());
    let theme = Theme::coloured();
    let (text, _) = draw(54, 12, |a, b| VmcsPanel { app: &app, theme }.render(a, b));
    // Whole at the panel's width in a 120-column dashboard (53) and before the first event
    // (43): a longer line is cut, not wrapped ("...no guest gaps from this h").
    for width in [43, 53] {
        let (narrow, _) = draw(width, 12, |a, b| {
            VmcsPanel { app: &app, theme }.render(a, b)
        });
        let words: Vec<&str> = narrow
            .lines()
            .flat_map(|l| l.trim_matches(|c| c == '│' || c == ' ').split_whitespace())
            .collect();
        assert!(
            words.join(" ").contains(
                "no guest entries or guest gaps seen: the resume latency after a migration \
                 cannot be measured (on a PVM host, only the guests of --demo report their \
                 gaps)."
            ),
            "{narrow}"
        );
    }
    assert!(
        !text.contains("p50"),
        "no zero percentiles when nothing was measured:\n{text}"
    );
    insta::assert_snapshot!(text);
}

#[test]
fn vmcs_panel_on_vtx_shows_vmclear_ipis_or_why_not() {
    let theme = Theme::coloured();
    // Every migrated resume came with one VMCLEAR, delivered in 21 µs and run in 9 µs, of
    // a migration cost of 72 µs.
    let snapshot = fixture::vtx_snapshot();
    let resume = &snapshot.resume;
    assert!(resume.migrated.count > 0, "{resume:?}");
    assert!(resume.vmclear_calls >= resume.migrated.count, "{resume:?}");
    assert_eq!(resume.vmclear_delivery.p50 / 1_000, 21, "{resume:?}");
    assert_eq!(resume.vmclear_run.p50 / 1_000, 9, "{resume:?}");
    let explains = resume
        .vmclear_explains
        .expect("VMCLEARs and migrated resumes");
    assert!((0.35..0.5).contains(&explains), "{explains}");
    let calls = resume.vmclear_calls;
    let app = app_with(snapshot);
    let (text, _) = draw(54, 16, |a, b| VmcsPanel { app: &app, theme }.render(a, b));
    assert!(text.contains(&format!("VMCLEAR IPIs {calls}")), "{text}");
    assert!(text.contains("delivery 21"), "{text}");
    let share = format!("{:.0}% of the migrated", explains * 100.0);
    assert!(text.contains(&share), "{text}");

    // VT-x on Linux 6.1: no csd:* tracepoints, no VMCLEARs to show, and the panel says why.
    let mut app = app_with(fixture::demo_snapshot());
    app.host.kvm_flavour = model::KvmFlavour::Vmx;
    app.host.kernel = "6.1.0-50-amd64".into();
    app.host.csd_tracepoints = Some(false);
    let (text, _) = draw(54, 16, |a, b| VmcsPanel { app: &app, theme }.render(a, b));
    assert!(
        text.contains("VMCLEAR attribution needs Linux 6.4"),
        "{text}"
    );
}

#[test]
fn health_line() {
    // pCPU 0's switches from 6 s to 6.005 s lost in the ring buffer, as a live source reports
    // it: the events missing, then a `Lost` record counting them.
    let mut events = model::synth::stream(model::synth::demo_config(), fixture::DEMO_SECONDS);
    let from = events[0].ts() + 6_000_000_000;
    let to = from + 5_000_000;
    let before = events.len();
    events.retain(
        |e| !matches!(e, model::Event::SchedSwitch(s) if s.cpu == 0 && (from..to).contains(&s.ts)),
    );
    let lost = (before - events.len()) as u64;
    assert!(lost > 0, "pCPU 0 switches in 5 ms");
    let at = events.partition_point(|e| e.ts() < to);
    events.insert(at, model::synth::lost(to, 0, lost));
    let app = app_with(fixture::snapshot_of_events(&events));
    assert_eq!(app.snapshot.health.lost_events, lost);
    assert!(app.snapshot.health.uncertain_ns > 0);
    let theme = Theme::coloured();
    insta::assert_snapshot!(draw(120, 1, |a, b| HealthLine { app: &app, theme }.render(a, b)).0);
}

#[test]
fn help_popup_over_replay() {
    let mut app = App::new(Mode::Replay, fixture::host(), "replay: demo.kst".into());
    app.update(Update {
        snapshot: Arc::new(fixture::demo_snapshot()),
        replay: None,
        ended: false,
    });
    app.show_help = true;
    insta::assert_snapshot!(dashboard(&app, Theme::coloured(), 100, 32));
}

#[test]
fn no_color_paints_no_colours() {
    let app = demo_app();
    let plain = draw(120, 40, |a, b| {
        Dashboard {
            app: &app,
            theme: Theme::plain(),
        }
        .render(a, b)
    })
    .1;
    for cell in plain.content() {
        assert_eq!(
            cell.fg,
            Color::Reset,
            "fg colour in NO_COLOR mode at {:?}",
            cell.symbol()
        );
        assert_eq!(
            cell.bg,
            Color::Reset,
            "bg colour in NO_COLOR mode at {:?}",
            cell.symbol()
        );
    }
    let coloured = draw(120, 40, |a, b| {
        Dashboard {
            app: &app,
            theme: Theme::coloured(),
        }
        .render(a, b)
    })
    .1;
    assert!(coloured.content().iter().any(|c| c.bg != Color::Reset));
}

#[test]
fn frames_move_with_the_model() {
    let a = app_with(fixture::snapshot_of(model::synth::demo_config(), 12.0));
    let b = app_with(fixture::snapshot_of(model::synth::demo_config(), 13.0));
    assert_ne!(
        dashboard(&a, Theme::coloured(), 120, 40),
        dashboard(&b, Theme::coloured(), 120, 40)
    );
}

/// Counters mode (no BPF) observes no guest exits: the table's exits/s and the panel say so
/// instead of 0 and "no exits seen" (the demo's exiting vCPUs make 50-100 a second).
#[test]
fn counters_mode_says_exits_are_not_measured() {
    const S: u64 = 1_000_000_000;
    let mut events = vec![];
    for (tid, vcpu) in [(11, 0), (12, 1)] {
        events.push(model::Event::TaskInfo(model::TaskInfo {
            ts: S,
            tid,
            pid: 100,
            comm: model::Comm::new(&format!("vm0-vcpu{vcpu}")),
            vm: "vm0".into(),
            vcpu: Some(vcpu),
            nice: 0,
            schedstat: Some(model::Schedstat {
                run_ns: 0,
                wait_ns: 0,
            }),
            start: None,
        }));
    }
    for step in 1..=3u64 {
        for tid in [11, 12] {
            events.push(model::Event::CounterSample(model::CounterSample {
                ts: S + step * S,
                cpu: tid - 11,
                tid,
                pid: 100,
                run_ns: step * S / 2,
                wait_ns: step * S / 4,
                timeslices: step * 10,
                task_clock_ns: Some(step * S / 2),
                voluntary_switches: step * 5,
                involuntary_switches: step * 5,
                migrations: step,
                vruntime: step * S / 2,
                weight: 1024,
                allowed_cpus: 2,
            }));
        }
    }
    let app = app_with(fixture::snapshot_of_events(&events));
    assert!(crate::view::counters_only(&app.snapshot));
    let theme = Theme::plain();
    let (panel, _) = draw(54, 14, |a, b| VmcsPanel { app: &app, theme }.render(a, b));
    assert!(
        panel.contains("exits need the kvm:* tracepoints (BPF)"),
        "{panel}"
    );
    let keys = Keys::new(&app);
    let (table, _) = draw(120, 5, |a, b| {
        VcpuTable {
            app: &app,
            theme,
            keys: &keys,
        }
        .render(a, b)
    });
    for row in table.lines().filter(|l| l.contains("vm0/")) {
        let exits = row.trim_end_matches(['│', ' ']).split_whitespace().last();
        assert_eq!(exits, Some("-"), "{row}");
    }
}
