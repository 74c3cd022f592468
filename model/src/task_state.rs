//! The one decoding of a task's state: a switched-out task's (`prev_state` of `sched_switch`)
//! and a thread's state letter in `/proc/<pid>/task/<tid>/stat` when tracking began.
//!
//! The probes carry the raw `prev->__state` (0 when the switch was a preemption, as the
//! tracepoint itself reports), with bits from the kernel's `include/linux/sched.h`; a `stat`
//! letter becomes the same bits ([`TaskState::from_letter`]). Every reader asks this type:
//! the model (preempted or not, asleep when tracking began or not), `trace` (the `ps`
//! letter), the Perfetto exporter (the tracepoint's TASK_REPORT encoding) and live tracking
//! (dead or not).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The kernel's task state bits (`include/linux/sched.h`, stable since 5.14).
pub mod bits {
    pub const TASK_RUNNING: u64 = 0x0000;
    pub const TASK_INTERRUPTIBLE: u64 = 0x0001;
    pub const TASK_UNINTERRUPTIBLE: u64 = 0x0002;
    pub const TASK_STOPPED: u64 = 0x0004;
    pub const TASK_TRACED: u64 = 0x0008;
    pub const EXIT_DEAD: u64 = 0x0010;
    pub const EXIT_ZOMBIE: u64 = 0x0020;
    pub const TASK_PARKED: u64 = 0x0040;
    pub const TASK_DEAD: u64 = 0x0080;
    pub const TASK_WAKEKILL: u64 = 0x0100;
    pub const TASK_WAKING: u64 = 0x0200;
    pub const TASK_NOLOAD: u64 = 0x0400;
    pub const TASK_NEW: u64 = 0x0800;
    pub const TASK_RTLOCK_WAIT: u64 = 0x1000;
    /// `TASK_UNINTERRUPTIBLE | TASK_NOLOAD`: an idle kernel thread's sleep, shown as `I`.
    pub const TASK_IDLE: u64 = TASK_UNINTERRUPTIBLE | TASK_NOLOAD;
    /// The bits `ps` and the tracepoint report, one letter each (`TASK_REPORT`).
    pub const TASK_REPORT: u64 = 0x7f;
    /// The tracepoint's code for [`TASK_IDLE`], one past the reported bits.
    pub const TASK_REPORT_IDLE: u64 = TASK_REPORT + 1;
}

/// `ps`'s letters for the reported states, by index (`task_index_to_char`): R, then one per
/// [`bits::TASK_REPORT`] bit, then I for idle.
const STATE_LETTERS: &[u8; 9] = b"RSDTtXZPI";

/// Why a task left its CPU, from its state at the switch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SwitchOut {
    /// Still runnable: it waits on a run queue until it is switched back in.
    Preempted,
    /// Blocked (any sleep, stop or trace state): it waits for a wakeup.
    Sleeping,
    /// Its last switch: the thread is exiting.
    Dead,
}

/// A task's raw `__state` at a switch-out (or the bits of its `stat` letter).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct TaskState(pub u64);

impl TaskState {
    /// The state a `ps` / `/proc/.../stat` letter stands for (R S D T t X Z P I): the one
    /// reported bit of that letter, 0 for R, [`bits::TASK_IDLE`] for I. `None` for any other.
    pub fn from_letter(letter: char) -> Option<TaskState> {
        let i = STATE_LETTERS
            .iter()
            .position(|&c| char::from(c) == letter)?;
        Some(TaskState(match i {
            0 => bits::TASK_RUNNING,
            8 => bits::TASK_IDLE,
            i => 1 << (i - 1),
        }))
    }

    pub fn switch_out(self) -> SwitchOut {
        use bits::*;
        if self.0 == TASK_RUNNING {
            SwitchOut::Preempted
        } else if self.0 & (TASK_DEAD | EXIT_DEAD | EXIT_ZOMBIE) != 0 {
            SwitchOut::Dead
        } else {
            SwitchOut::Sleeping
        }
    }
    pub fn is_preempted(self) -> bool {
        self.switch_out() == SwitchOut::Preempted
    }
    pub fn is_dead(self) -> bool {
        self.switch_out() == SwitchOut::Dead
    }

    /// The kernel's state index (`__task_state_index`): 0 for R, 1 + the highest reported
    /// bit, or 8 for idle. A task whose `__state` is just TASK_DEAD (its exit state is not in
    /// `__state`) is reported dead (X). `None` for a state with no reported bit.
    fn index(self) -> Option<u32> {
        use bits::*;
        if self.0 == TASK_IDLE {
            return Some(8);
        }
        let mut reported = self.0 & TASK_REPORT;
        if self.0 & TASK_RTLOCK_WAIT != 0 {
            // A task blocked on an RT lock is shown uninterruptible, as the kernel does.
            reported = TASK_UNINTERRUPTIBLE;
        }
        if reported == 0 && self.0 & TASK_DEAD != 0 {
            reported = EXIT_DEAD;
        }
        match (self.0, reported) {
            (TASK_RUNNING, _) => Some(0),
            (_, 0) => None,
            (_, r) => Some(u64::BITS - r.leading_zeros()),
        }
    }

    /// The letter `ps` shows (R S D T t X Z P I), `None` for a state it has no letter for.
    pub fn letter(self) -> Option<char> {
        self.index().map(|i| STATE_LETTERS[i as usize] as char)
    }

    /// The value the `sched_switch` tracepoint's text format reports (one TASK_REPORT bit,
    /// [`bits::TASK_REPORT_IDLE`] for idle, 0 for R), which trace_processor decodes.
    pub fn report(self) -> u64 {
        match self.index() {
            None | Some(0) => {
                if self.0 == 0 {
                    0
                } else {
                    // No reported bit (TASK_NEW, TASK_WAKING, ...): asleep without a letter.
                    bits::TASK_INTERRUPTIBLE
                }
            }
            Some(i) => 1 << (i - 1),
        }
    }
}

/// The `ps` letter, or the raw value in hex when it has none.
impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.letter() {
            Some(c) => f.pad(c.encode_utf8(&mut [0; 4])),
            None => f.pad(&format!("0x{:x}", self.0)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bits::*;
    use super::*;

    #[test]
    fn letters_match_the_kernels_table() {
        let cases = [
            (TASK_RUNNING, 'R'),
            (TASK_INTERRUPTIBLE, 'S'),
            (TASK_UNINTERRUPTIBLE, 'D'),
            (TASK_WAKEKILL | TASK_UNINTERRUPTIBLE, 'D'), // TASK_KILLABLE
            (TASK_WAKEKILL | TASK_STOPPED, 'T'),
            (TASK_TRACED, 't'),
            (EXIT_DEAD, 'X'),
            (EXIT_ZOMBIE, 'Z'),
            (TASK_PARKED, 'P'),
            (TASK_IDLE, 'I'),
            (TASK_DEAD, 'X'),
            (TASK_RTLOCK_WAIT, 'D'),
        ];
        for (raw, letter) in cases {
            assert_eq!(TaskState(raw).letter(), Some(letter), "state 0x{raw:x}");
        }
        assert_eq!(TaskState(TASK_NEW).letter(), None);
        assert_eq!(TaskState(TASK_NEW).to_string(), "0x800");
    }

    #[test]
    fn stat_letters_read_back_as_their_states() {
        for &c in STATE_LETTERS {
            let letter = char::from(c);
            let st = TaskState::from_letter(letter).unwrap();
            assert_eq!(st.letter(), Some(letter), "{letter}");
        }
        let sleeping = |c| TaskState::from_letter(c).unwrap().switch_out();
        assert_eq!(sleeping('R'), SwitchOut::Preempted);
        for c in ['S', 'D', 'I', 'T', 't', 'P'] {
            assert_eq!(sleeping(c), SwitchOut::Sleeping, "{c}");
        }
        assert_eq!(sleeping('Z'), SwitchOut::Dead);
        assert_eq!(TaskState::from_letter('W'), None);
    }

    #[test]
    fn switch_out_kinds() {
        assert_eq!(TaskState(0).switch_out(), SwitchOut::Preempted);
        assert_eq!(
            TaskState(TASK_INTERRUPTIBLE).switch_out(),
            SwitchOut::Sleeping
        );
        assert_eq!(TaskState(TASK_IDLE).switch_out(), SwitchOut::Sleeping);
        assert_eq!(TaskState(TASK_DEAD).switch_out(), SwitchOut::Dead);
        assert_eq!(TaskState(EXIT_ZOMBIE).switch_out(), SwitchOut::Dead);
    }

    #[test]
    fn report_encoding_is_the_tracepoints() {
        // trace_processor reads these as R, S, D, X, I: a dead thread must not read as R.
        assert_eq!(TaskState(0).report(), 0);
        assert_eq!(TaskState(TASK_INTERRUPTIBLE).report(), 1);
        assert_eq!(TaskState(TASK_WAKEKILL | TASK_UNINTERRUPTIBLE).report(), 2);
        assert_eq!(TaskState(TASK_DEAD).report(), EXIT_DEAD);
        assert_eq!(TaskState(TASK_IDLE).report(), TASK_REPORT_IDLE);
        assert_eq!(TaskState(TASK_NOLOAD).report(), TASK_INTERRUPTIBLE);
    }
}
