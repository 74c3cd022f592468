//! The replay reader: a recording, read from its file a chunk at a time (see [`Track`]),
//! played against a model at a chosen speed,
//! and optionally a simulated run of the same recording's demand (`replay FILE --simulate
//! POLICY`) played against a second model on the same clock. Both models are folded to the
//! same trace time; the UI is sent the snapshot of the run it asked for, so switching between
//! them is a snapshot swap, never a refold.

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use model::{Event, SourceError};

use crate::app::{ReplayCommand, ReplayStatus, Update};
pub use crate::replay_track::Track;
use crate::run::Feed;
use crate::summary_cache::SummaryCache;

/// A simulated run to show beside the recording: the events a policy produced from the
/// recording's demand, on the recording's timeline.
pub struct SimulatedRun {
    /// How the header names it ("simulated credit (Xen credit1)").
    pub label: String,
    pub events: Vec<Event>,
}

/// A recording played against the model at a chosen speed. Seeking forward folds ahead;
/// seeking back restarts from the track's nearest checkpoint.
pub struct ReplayFeed {
    recorded: Track,
    simulated: Option<Track>,
    show_simulated: bool,
    first_ts: u64,
    last_ts: u64,
    /// Trace time played up to, absolute ns.
    cursor: u64,
    playing: bool,
    speed: f64,
    last_wall: Instant,
    /// A read error met while seeking (commands return nothing), for the next pump.
    error: Option<SourceError>,
    /// The shown run's latency summaries; emptied when the run shown or the position jumps.
    summaries: SummaryCache,
}

impl ReplayFeed {
    /// `events` in file order (roughly time-ordered; the model's reorder window absorbs the
    /// rest).
    pub fn new(events: Vec<Event>, speed: f64) -> Self {
        Self::from_track(Track::from_events(events), speed)
    }

    /// Plays `recorded` (usually [`Track::from_file`]).
    pub fn from_track(recorded: Track, speed: f64) -> Self {
        let first_ts = recorded.first_ts();
        let last_ts = recorded.last_ts();
        ReplayFeed {
            recorded,
            simulated: None,
            show_simulated: false,
            first_ts,
            last_ts,
            cursor: first_ts,
            playing: true,
            speed: speed.clamp(1.0 / 64.0, 64.0),
            last_wall: Instant::now(),
            error: None,
            summaries: SummaryCache::default(),
        }
    }

    /// Play `events` (a simulated run of the same demand) beside the recording. The
    /// timeline covers both, so a run that ends later than the recording is played out.
    pub fn with_simulated(mut self, events: Vec<Event>) -> Self {
        if let Some(last) = events.iter().map(Event::ts).max() {
            self.last_ts = self.last_ts.max(last);
        }
        self.simulated = Some(Track::from_events(events));
        self
    }

    pub fn status(&self) -> ReplayStatus {
        ReplayStatus {
            playing: self.playing,
            speed: self.speed,
            position_ns: self.cursor - self.first_ts,
            length_ns: self.last_ts - self.first_ts,
            simulated: self.show_simulated,
        }
    }

    fn tracks(&mut self) -> impl Iterator<Item = &mut Track> {
        std::iter::once(&mut self.recorded).chain(self.simulated.as_mut())
    }

    fn fold_to(&mut self, ts: u64) {
        let failed = self.tracks().find_map(|t| t.fold_to(ts).err());
        self.error = self.error.take().or(failed.map(SourceError::from));
    }

    fn seek(&mut self, target: u64) {
        let target = target.clamp(self.first_ts, self.last_ts);
        if target < self.cursor {
            let failed = self.tracks().find_map(|t| t.seek_back(target).err());
            self.error = self.error.take().or(failed.map(SourceError::from));
        }
        self.cursor = target;
        self.fold_to(target);
    }
}

impl Feed for ReplayFeed {
    fn pump(&mut self, budget: Duration) -> Result<bool, SourceError> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        let now = Instant::now();
        let wall = now.duration_since(self.last_wall);
        self.last_wall = now;
        if self.playing && self.cursor < self.last_ts {
            let advance = (wall.as_nanos() as f64 * self.speed) as u64;
            self.cursor = self.cursor.saturating_add(advance).min(self.last_ts);
            self.fold_to(self.cursor);
        }
        if self.cursor >= self.last_ts {
            self.playing = false;
        }
        // Nothing else to wait for: sleep out the budget instead of spinning.
        thread::sleep(budget);
        Ok(true)
    }

    fn command(&mut self, command: ReplayCommand) {
        match command {
            ReplayCommand::Play(on) => {
                // Playing from the end starts over.
                if on && self.cursor >= self.last_ts {
                    self.seek(self.first_ts);
                }
                self.playing = on;
                self.last_wall = Instant::now();
            }
            ReplayCommand::Speed(s) => self.speed = s.clamp(1.0 / 64.0, 64.0),
            ReplayCommand::SeekBy(d) => {
                let target = if d < 0 {
                    self.cursor.saturating_sub(d.unsigned_abs())
                } else {
                    self.cursor.saturating_add(d as u64)
                };
                self.seek(target);
            }
            ReplayCommand::SeekTo(off) => self.seek(self.first_ts.saturating_add(off)),
            ReplayCommand::ShowSimulated(on) => {
                self.show_simulated = on && self.simulated.is_some();
            }
        }
        if !matches!(command, ReplayCommand::Play(_) | ReplayCommand::Speed(_)) {
            self.summaries = SummaryCache::default();
        }
    }

    fn update(&mut self, ended: bool) -> Update {
        Update {
            snapshot: Arc::new({
                let shown = match &self.simulated {
                    Some(sim) if self.show_simulated => sim,
                    _ => &self.recorded,
                };
                self.summaries.snapshot(shown.model())
            }),
            replay: Some(self.status()),
            ended: ended || self.tracks().all(|t| t.done()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::synth;

    const S: u64 = 1_000_000_000;

    #[test]
    fn replay_seeks_forward_and_back_to_the_same_picture() {
        let events = synth::demo_stream(4.0);
        let mut feed = ReplayFeed::new(events.clone(), 1.0);
        feed.command(ReplayCommand::SeekTo(3 * S));
        assert_eq!(feed.status().position_ns, 3 * S);
        feed.command(ReplayCommand::SeekBy(-2 * S as i64));
        assert_eq!(feed.status().position_ns, S);
        let back = feed.update(false).snapshot;

        let mut direct = ReplayFeed::new(events, 1.0);
        direct.command(ReplayCommand::SeekTo(S));
        let fresh = direct.update(false).snapshot;
        assert_eq!(
            back, fresh,
            "seeking back must refold to exactly the same state"
        );
        assert!(!fresh.vcpus.is_empty());
        assert!(fresh.ts > fresh.start);
    }

    #[test]
    fn replay_pause_holds_position_and_play_at_end_restarts() {
        let mut feed = ReplayFeed::new(synth::demo_stream(2.0), 64.0);
        feed.command(ReplayCommand::Play(false));
        feed.command(ReplayCommand::SeekTo(S / 2));
        thread::sleep(Duration::from_millis(20));
        feed.pump(Duration::ZERO).unwrap();
        assert_eq!(
            feed.status().position_ns,
            S / 2,
            "paused replay must not move"
        );
        assert!(!feed.status().playing);

        feed.command(ReplayCommand::SeekTo(u64::MAX));
        let status = feed.status();
        assert_eq!(status.position_ns, status.length_ns);
        assert!(feed.update(false).ended);
        feed.command(ReplayCommand::Play(true));
        assert_eq!(feed.status().position_ns, 0, "play at the end starts over");
        assert!(feed.status().playing);
    }

    #[test]
    fn replay_plays_at_the_chosen_speed() {
        let mut feed = ReplayFeed::new(synth::demo_stream(3.0), 1.0);
        feed.command(ReplayCommand::Speed(32.0));
        feed.command(ReplayCommand::Play(true));
        thread::sleep(Duration::from_millis(30));
        feed.pump(Duration::ZERO).unwrap();
        // 30+ ms at 32x is about a second of trace time; allow for a slow machine.
        let pos = feed.status().position_ns;
        assert!(pos >= 900_000_000, "position after 30 ms at 32x: {pos} ns");
    }

    /// The events of `events` with every switch's vruntime replaced, so the two runs are
    /// told apart by their snapshots.
    fn shifted_vruntimes(events: &[Event]) -> Vec<Event> {
        events
            .iter()
            .cloned()
            .map(|mut e| {
                if let Event::SchedSwitch(s) = &mut e {
                    for se in [&mut s.prev_se, &mut s.next_se].into_iter().flatten() {
                        se.vruntime += 1 << 40;
                    }
                }
                e
            })
            .collect()
    }

    #[test]
    fn the_simulated_run_is_folded_on_the_same_clock_and_shown_on_request() {
        let recorded = synth::demo_stream(3.0);
        let simulated = shifted_vruntimes(&recorded);
        let mut feed = ReplayFeed::new(recorded.clone(), 1.0).with_simulated(simulated.clone());
        feed.command(ReplayCommand::SeekTo(2 * S));
        let rec = feed.update(false);
        assert!(!rec.replay.unwrap().simulated);

        feed.command(ReplayCommand::ShowSimulated(true));
        let sim = feed.update(false);
        assert!(sim.replay.unwrap().simulated);
        assert_ne!(
            rec.snapshot, sim.snapshot,
            "the switch shows the other model"
        );

        // Each is what its own stream folds to at the same position.
        let mut alone = ReplayFeed::new(simulated, 1.0);
        alone.command(ReplayCommand::SeekTo(2 * S));
        assert_eq!(sim.snapshot, alone.update(false).snapshot);
        let mut alone = ReplayFeed::new(recorded, 1.0);
        alone.command(ReplayCommand::SeekTo(2 * S));
        assert_eq!(rec.snapshot, alone.update(false).snapshot);

        // Seeking back refolds both; switching back is immediate.
        feed.command(ReplayCommand::SeekBy(-(S as i64)));
        feed.command(ReplayCommand::ShowSimulated(false));
        let back = feed.update(false);
        assert!(!back.replay.unwrap().simulated);
        assert_eq!(back.replay.unwrap().position_ns, S);
    }

    #[test]
    fn without_a_simulated_run_the_switch_keeps_the_recording() {
        let mut feed = ReplayFeed::new(synth::demo_stream(1.0), 1.0);
        feed.command(ReplayCommand::ShowSimulated(true));
        assert!(!feed.status().simulated);
    }
}
