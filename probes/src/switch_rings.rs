//! The per-CPU rings that carry `sched_switch` records (`switch_pos` and `switch_ring` in
//! `ebpf/kvmscope.bpf.c`): their size, their mapping into this process, and draining them.
//!
//! Each CPU has `slots` fixed-size slots of `struct ks_switch` and a `struct ks_switch_pos`.
//! The BPF program on that CPU writes slot `head % slots` and then advances `head`; it never
//! writes more than `slots` ahead of `tail`, which only this reader advances (it counts a
//! record in `lost` instead). So a slot between `tail` and `head` is never rewritten while it
//! is read, and nothing is lost without being counted.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use aya::maps::MapData;
use memmap2::{MmapOptions, MmapRaw};

use crate::abi;

/// Bytes of one slot: the kernel lays array values out at multiples of 8.
pub(crate) const SLOT_BYTES: usize = std::mem::size_of::<abi::Switch>().next_multiple_of(8);
const POS_BYTES: usize = std::mem::size_of::<abi::SwitchPos>();
const HEAD: usize = std::mem::offset_of!(abi::SwitchPos, head);
const TAIL: usize = std::mem::offset_of!(abi::SwitchPos, tail);

/// Slots per CPU for a budget of `ring_bytes` shared by `cpus` CPUs: a power of two, at least
/// 1024 (a tenth of a second of 10 000 tracked switches per second per CPU) and at most
/// 65 536.
pub(crate) fn slots_per_cpu(ring_bytes: u32, cpus: usize) -> u32 {
    let per_cpu = ring_bytes as usize / cpus.max(1) / SLOT_BYTES;
    let pow2 = match per_cpu {
        0 => 1,
        n if n.is_power_of_two() => n,
        n => n.next_power_of_two() / 2,
    };
    pow2.clamp(1024, 65_536) as u32
}

/// Both maps, mapped into this process. Dropping it unmaps them and closes the maps.
pub(crate) struct SwitchRings {
    pos: MmapRaw,
    ring: MmapRaw,
    cpus: usize,
    slots: u64,
    /// The map descriptors, kept open as long as the mappings are used.
    _maps: (MapData, MapData),
}

impl SwitchRings {
    /// Maps `switch_pos` (read-write: this side advances `tail`) and `switch_ring`
    /// (read-only), created by the loader with `cpus` and `cpus * slots` entries.
    pub(crate) fn map(pos: MapData, ring: MapData, cpus: usize, slots: u32) -> io::Result<Self> {
        let pos_len = cpus * POS_BYTES;
        let ring_len = cpus * slots as usize * SLOT_BYTES;
        let pos_map = MmapOptions::new()
            .len(pos_len)
            .map_raw(pos.fd().as_fd().as_raw_fd())?;
        let ring_map = MmapOptions::new()
            .len(ring_len)
            .map_raw_read_only(ring.fd().as_fd().as_raw_fd())?;
        Ok(SwitchRings {
            pos: pos_map,
            ring: ring_map,
            cpus,
            slots: u64::from(slots),
            _maps: (pos, ring),
        })
    }

    fn position(&self, cpu: usize, field: usize) -> &AtomicU64 {
        debug_assert!(cpu < self.cpus);
        // SAFETY: `cpu < self.cpus`, so the 8 bytes at `field` of entry `cpu` lie inside the
        // mapping of `cpus` entries; the mapping is page-aligned and entries and fields are
        // multiples of 8 bytes, so the address suits an AtomicU64. The kernel side accesses
        // this word only as an aligned 8-byte value too, and the mapping lives as long as
        // `self`.
        unsafe { &*(self.pos.as_mut_ptr().add(cpu * POS_BYTES + field) as *const AtomicU64) }
    }

    /// Hands every record written since the last call to `f` (CPU by CPU, each CPU's in the
    /// order written), then frees their slots.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&[u8])) {
        let mut slot = [0u8; SLOT_BYTES];
        for cpu in 0..self.cpus {
            // Acquire: the records below `head` were written before it was advanced.
            let head = self.position(cpu, HEAD).load(Ordering::Acquire);
            let mut tail = self.position(cpu, TAIL).load(Ordering::Relaxed);
            // The writer never runs more than `slots` ahead; should the words be corrupt,
            // read at most one ring's worth.
            if head.wrapping_sub(tail) > self.slots {
                tail = head.wrapping_sub(self.slots);
            }
            while tail != head {
                let index = cpu as u64 * self.slots + (tail & (self.slots - 1));
                let at = index as usize * SLOT_BYTES;
                // SAFETY: `index < cpus * slots`, so `at + SLOT_BYTES` is within the ring
                // mapping; the slot lies between `tail` and `head`, which the writer does not
                // touch until `tail` moves past it (module docs), so the copy sees a whole
                // record. `slot` is a distinct local buffer of the same length.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.ring.as_ptr().add(at),
                        slot.as_mut_ptr(),
                        SLOT_BYTES,
                    )
                };
                f(&slot);
                tail = tail.wrapping_add(1);
            }
            // Release: the slots are read before the writer may reuse them.
            self.position(cpu, TAIL).store(tail, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_a_power_of_two_within_bounds() {
        assert_eq!(SLOT_BYTES, 208);
        // 16 MiB over 2 CPUs: 40 329 slots fit, so 32 768.
        assert_eq!(slots_per_cpu(16 << 20, 2), 32_768);
        assert_eq!(slots_per_cpu(16 << 20, 256), 1024);
        assert_eq!(slots_per_cpu(1 << 30, 1), 65_536);
        assert_eq!(slots_per_cpu(4096, 0), 1024);
        for cpus in 1..300 {
            assert!(slots_per_cpu(16 << 20, cpus).is_power_of_two());
        }
    }
}
