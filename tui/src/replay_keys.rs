//! The replay-only keys: one table that both [`App`](crate::App)'s key handling and the help
//! popup read, so a key and its help line cannot drift apart.

use ratatui::crossterm::event::KeyCode;

/// What a replay key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayKey {
    SeekBack,
    SeekForward,
    Start,
    End,
    Slower,
    Faster,
    /// Recorded run ↔ simulated run (`replay FILE --simulate POLICY`).
    SwitchRun,
}

pub struct ReplayBinding {
    pub codes: &'static [KeyCode],
    /// The keys as the help popup shows them, at most 8 columns.
    pub keys: &'static str,
    pub help: &'static str,
    pub key: ReplayKey,
    /// Only there when a simulated run was given.
    pub needs_simulation: bool,
}

pub const REPLAY_KEYS: &[ReplayBinding] = &[
    ReplayBinding {
        codes: &[KeyCode::Left, KeyCode::Right],
        keys: "← / →",
        help: "seek 5 s back / forward",
        key: ReplayKey::SeekBack,
        needs_simulation: false,
    },
    ReplayBinding {
        codes: &[KeyCode::Home, KeyCode::End],
        keys: "home/end",
        help: "jump to start / end",
        key: ReplayKey::Start,
        needs_simulation: false,
    },
    ReplayBinding {
        codes: &[
            KeyCode::Char('<'),
            KeyCode::Char(','),
            KeyCode::Char('>'),
            KeyCode::Char('.'),
        ],
        keys: "< / >",
        help: "half / double speed",
        key: ReplayKey::Slower,
        needs_simulation: false,
    },
    ReplayBinding {
        codes: &[KeyCode::Char('m')],
        keys: "m",
        help: "show the recorded / the simulated run",
        key: ReplayKey::SwitchRun,
        needs_simulation: true,
    },
];

/// The replay key `code` is, if any. A binding lists its keys in pairs (back, forward):
/// the second half of its codes are the forward variant.
pub fn lookup(code: KeyCode) -> Option<ReplayKey> {
    REPLAY_KEYS.iter().find_map(|b| {
        let i = b.codes.iter().position(|&c| c == code)?;
        let forward = b.codes.len() > 1 && i >= b.codes.len() / 2;
        Some(match (b.key, forward) {
            (ReplayKey::SeekBack, true) => ReplayKey::SeekForward,
            (ReplayKey::Start, true) => ReplayKey::End,
            (ReplayKey::Slower, true) => ReplayKey::Faster,
            (k, _) => k,
        })
    })
}

/// The help popup's lines for the replay keys.
pub fn help_lines(simulation: bool) -> impl Iterator<Item = String> {
    REPLAY_KEYS
        .iter()
        .filter(move |b| simulation || !b.needs_simulation)
        .map(|b| format!("{:<9}{}", b.keys, b.help))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_maps_to_its_own_direction() {
        assert_eq!(lookup(KeyCode::Left), Some(ReplayKey::SeekBack));
        assert_eq!(lookup(KeyCode::Right), Some(ReplayKey::SeekForward));
        assert_eq!(lookup(KeyCode::Home), Some(ReplayKey::Start));
        assert_eq!(lookup(KeyCode::End), Some(ReplayKey::End));
        assert_eq!(lookup(KeyCode::Char(',')), Some(ReplayKey::Slower));
        assert_eq!(lookup(KeyCode::Char('>')), Some(ReplayKey::Faster));
        assert_eq!(lookup(KeyCode::Char('m')), Some(ReplayKey::SwitchRun));
        assert_eq!(lookup(KeyCode::Char('z')), None);
    }

    #[test]
    fn help_lists_the_switch_only_with_a_simulation() {
        assert!(!help_lines(false).any(|l| l.starts_with("m ")));
        assert!(help_lines(true).any(|l| l.starts_with("m ")));
        assert!(help_lines(false).all(|l| l.chars().nth(8) == Some(' ')));
    }
}
