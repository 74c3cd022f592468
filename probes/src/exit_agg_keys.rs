//! The exit aggregates' reader bookkeeping (`exit_aggs.rs`): each key's totals at the last
//! read, and which keys each thread has, so that a thread that stops being tracked takes its
//! keys out of the kernel's maps and out of this book without a walk of a whole map (goal 7
//! of issue #15: VMs that come and go must not fill the maps nor grow the book).

use std::collections::HashMap;
use std::hash::Hash;

use crate::abi::{ExitKey, PioKey};

/// A key of an aggregation map, which names the thread it counts for.
pub(crate) trait AggKey: Copy + Eq + Hash {
    fn tid(&self) -> u32;
}

impl AggKey for ExitKey {
    fn tid(&self) -> u32 {
        self.tid
    }
}

impl AggKey for PioKey {
    fn tid(&self) -> u32 {
        self.tid
    }
}

/// Totals `T` of each key at its last read, and each thread's keys.
pub(crate) struct KeyBook<K, T> {
    seen: HashMap<K, T>,
    by_tid: HashMap<u32, Vec<K>>,
}

impl<K: AggKey, T: Copy + PartialEq> KeyBook<K, T> {
    pub(crate) fn new() -> Self {
        KeyBook {
            seen: HashMap::new(),
            by_tid: HashMap::new(),
        }
    }

    /// Notes `key`'s totals read now; returns those of the previous read, `None` for a key
    /// not read before (its growth is then all of `total`).
    pub(crate) fn note(&mut self, key: K, total: T) -> Option<T> {
        let before = self.seen.insert(key, total);
        if before.is_none() {
            self.by_tid.entry(key.tid()).or_default().push(key);
        }
        before
    }

    /// Takes thread `tid`'s keys out: each one `delete` removed from its kernel map (true)
    /// is forgotten; one it could not remove stays with its totals, so a later read never
    /// counts again what was read already, and the thread's next removal tries it again.
    /// Returns how many keys it forgot.
    pub(crate) fn remove_thread(&mut self, tid: u32, mut delete: impl FnMut(&K) -> bool) -> usize {
        let Some(keys) = self.by_tid.remove(&tid) else {
            return 0;
        };
        let mut kept = Vec::new();
        let mut forgotten = 0;
        for key in keys {
            if delete(&key) {
                self.seen.remove(&key);
                forgotten += 1;
            } else {
                kept.push(key);
            }
        }
        if !kept.is_empty() {
            self.by_tid.insert(tid, kept);
        }
        forgotten
    }

    /// Keys known.
    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(tid: u32, port: u32) -> PioKey {
        PioKey { tid, port, rw: 1 }
    }

    #[test]
    fn a_key_is_new_once_then_gives_its_previous_totals() {
        let mut book = KeyBook::<PioKey, u64>::new();
        assert_eq!(book.note(key(7, 0x80), 3), None);
        assert_eq!(book.note(key(7, 0x80), 5), Some(3));
        assert_eq!(book.note(key(7, 0x81), 1), None);
        assert_eq!(book.len(), 2);
    }

    #[test]
    fn a_removed_thread_takes_only_its_own_keys_and_is_new_again_after() {
        let mut book = KeyBook::<PioKey, u64>::new();
        book.note(key(7, 0x80), 3);
        book.note(key(7, 0x81), 4);
        book.note(key(8, 0x80), 9);
        let mut deleted = Vec::new();
        assert_eq!(
            book.remove_thread(7, |k| {
                deleted.push(*k);
                true
            }),
            2
        );
        deleted.sort_by_key(|k| k.port);
        assert_eq!(deleted, vec![key(7, 0x80), key(7, 0x81)]);
        assert_eq!(book.len(), 1);
        assert_eq!(book.note(key(8, 0x80), 10), Some(9));
        // The tid reused: its keys start from nothing, as the kernel's fresh keys do.
        assert_eq!(book.note(key(7, 0x80), 2), None);
        // Nothing left of a thread removed twice.
        assert_eq!(book.remove_thread(8, |_| true), 1);
        assert_eq!(book.remove_thread(8, |_| true), 0);
    }

    #[test]
    fn a_key_the_kernel_kept_keeps_its_totals_and_is_tried_again() {
        let mut book = KeyBook::<PioKey, u64>::new();
        book.note(key(7, 0x80), 3);
        book.note(key(7, 0x81), 4);
        assert_eq!(book.remove_thread(7, |k| k.port == 0x81), 1);
        // Not counted again from zero: its totals stay.
        assert_eq!(book.note(key(7, 0x80), 3), Some(3));
        let mut tried = Vec::new();
        assert_eq!(
            book.remove_thread(7, |k| {
                tried.push(*k);
                true
            }),
            1
        );
        assert_eq!(tried, vec![key(7, 0x80)]);
        assert_eq!(book.len(), 0);
    }
}
