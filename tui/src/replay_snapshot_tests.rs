//! Snapshot tests of `replay FILE --simulate POLICY`: the dashboard over a real simulated run
//! (credit, from the synthetic demo recording's demand) and over the recording at the same
//! position, and the key that switches between them.

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::app::{Action, App, Mode, ReplayCommand};
use crate::replay::ReplayFeed;
use crate::run::Feed;
use crate::snapshot_tests::dashboard;
use crate::theme::Theme;
use crate::{fixture, SimulatedRun};

const S: u64 = 1_000_000_000;

fn simulated_credit(recorded: &[model::Event]) -> SimulatedRun {
    let (_, demand) = model::demand::fold_events(recorded, 2);
    let params = simulate::Params::default();
    let (events, _) =
        simulate::simulate(simulate::PolicyKind::Credit, &demand, 2, &params).unwrap();
    SimulatedRun {
        label: "simulated credit".into(),
        events,
    }
}

/// The app and feed of `replay demo.kst --simulate credit`, 6 s in.
fn replay_with_credit() -> (App, ReplayFeed) {
    let recorded = model::synth::demo_stream(8.0);
    let sim = simulated_credit(&recorded);
    let mut app = App::new(Mode::Replay, fixture::host(), "replay: demo.kst".into());
    app.simulated_label = Some(sim.label);
    let mut feed = ReplayFeed::new(recorded, 1.0).with_simulated(sim.events);
    feed.command(ReplayCommand::Play(false));
    feed.command(ReplayCommand::SeekTo(6 * S));
    app.update(feed.update(false));
    (app, feed)
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn m_switches_to_the_simulated_run_and_back() {
    let (mut app, mut feed) = replay_with_credit();
    let recorded = dashboard(&app, Theme::plain(), 120, 40);
    assert!(
        recorded.contains("recorded run (m: simulated)"),
        "{recorded}"
    );
    assert!(recorded.contains("EEVDF"), "{recorded}");

    let Action::Replay(c) = app.handle_key(key(KeyCode::Char('m'))) else {
        panic!("m must ask the reader for the other run");
    };
    assert_eq!(c, ReplayCommand::ShowSimulated(true));
    feed.command(c);
    app.update(feed.update(false));
    let simulated = dashboard(&app, Theme::plain(), 120, 40);
    assert!(app.showing_simulated());
    assert!(
        simulated.contains("simulated credit") && simulated.contains("SIMULATED run"),
        "{simulated}"
    );
    assert_ne!(recorded, simulated, "the lanes and chart must change");
    // A simulation runs no guests: its panels say so, not that this host hides them ("no
    // guest entries or guest gaps seen", "no exits seen", exits/s 0).
    assert!(
        simulated.contains("simulated run: no guests run in it")
            && simulated.contains("exits are not simulated"),
        "{simulated}"
    );
    assert!(
        !simulated.contains("guest gaps seen") && !simulated.contains("no exits seen"),
        "{simulated}"
    );
    insta::assert_snapshot!("replay_simulated_credit_120x40", simulated);

    let Action::Replay(c) = app.handle_key(key(KeyCode::Char('m'))) else {
        panic!("m again must ask for the recording");
    };
    assert_eq!(c, ReplayCommand::ShowSimulated(false));
    feed.command(c);
    app.update(feed.update(false));
    assert_eq!(dashboard(&app, Theme::plain(), 120, 40), recorded);
}

#[test]
fn without_a_simulation_m_does_nothing_and_help_leaves_it_out() {
    let (mut app, _) = replay_with_credit();
    app.show_help = true;
    let help = dashboard(&app, Theme::plain(), 100, 32);
    assert!(
        help.contains("show the recorded / the simulated run"),
        "{help}"
    );

    app.simulated_label = None;
    assert_eq!(app.handle_key(key(KeyCode::Char('m'))), Action::None);
    app.show_help = true;
    let help = dashboard(&app, Theme::plain(), 100, 32);
    assert!(!help.contains("simulated run"), "{help}");
}
