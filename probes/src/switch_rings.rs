//! The per-CPU rings that carry `sched_switch` records (`switch_chunks`, `switch_head` and
//! `switch_tail` in `ebpf/kvmscope.bpf.c`): their size, the chunk maps this side creates, and
//! draining them.
//!
//! CPU `n`'s ring is `chunks` chunk maps of [`abi::SWITCH_CHUNK_RECORDS`] records each, at
//! `switch_chunks[n * chunks ..]`; its record `i` (counting from the start of tracing) is
//! record `i % RECORDS` of chunk `(i / RECORDS) % chunks` (the BPF side keeps that split in
//! `switch_head` as it goes). The BPF program on that CPU writes record `head` and then
//! advances `head`; it never writes `capacity` or more ahead of `tail`, which only this reader
//! advances (it counts a record in `lost` instead). So a record between `tail` and `head` is
//! never rewritten while it is read, and nothing is lost without being counted.
//!
//! The chunks are small non-mmapable maps on purpose (the BPF side says why): this side reads
//! them with one map lookup per chunk that holds new records, a copy of under 30 KiB.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{fence, Ordering};

use aya::maps::{Array, ArrayOfMaps, Map, MapData, MapError};
use aya::sys::SyscallError;
use aya::Pod;

use crate::abi;

/// Bytes of one record in a chunk.
pub(crate) const RECORD_BYTES: usize = std::mem::size_of::<abi::Switch>();
/// Records per chunk.
const RECORDS: u64 = abi::SWITCH_CHUNK_RECORDS as u64;

/// A chunk's value as bytes: what a lookup of a chunk map copies out.
#[repr(C)]
#[derive(Clone, Copy)]
struct ChunkBytes([u8; std::mem::size_of::<abi::SwitchChunk>()]);
// SAFETY: a plain byte array: every bit pattern is valid, no padding, no pointers.
unsafe impl Pod for ChunkBytes {}

// SAFETY: `bytemuck::Pod` (derived, so checked by the compiler: `repr(C)`, integer fields,
// no padding) is what aya's `Pod` asks for; the function below fails the build if it goes.
unsafe impl Pod for abi::SwitchHead {}
// SAFETY: as above.
unsafe impl Pod for abi::SwitchTail {}
const _: fn() = || {
    fn plain_data<T: bytemuck::Pod>() {}
    plain_data::<abi::SwitchHead>();
    plain_data::<abi::SwitchTail>();
};

/// Chunks per CPU for a budget of `ring_bytes` shared by `cpus` CPUs: a power of two, at
/// least 8 (1 152 records: a tenth of a second of 10 000 tracked switches per second per
/// CPU) and at most 64 (each chunk is a map and holds a file descriptor here).
pub(crate) fn chunks_per_cpu(ring_bytes: u32, cpus: usize) -> u32 {
    let chunk = std::mem::size_of::<abi::SwitchChunk>();
    let per_cpu = ring_bytes as usize / cpus.max(1) / chunk;
    // The largest power of two that fits.
    (1usize << per_cpu.max(1).ilog2()).clamp(8, 64) as u32
}

/// The positions and every CPU's chunks.
pub(crate) struct SwitchRings {
    heads: Array<MapData, abi::SwitchHead>,
    tails: Array<MapData, abi::SwitchTail>,
    /// `chunks[n * per_cpu + c]`: chunk `c` of CPU `n`.
    chunks: Vec<Array<MapData, ChunkBytes>>,
    /// Kept open: programs are loaded after the rings are set up, referring to its fd.
    _outer: ArrayOfMaps<MapData, Array<MapData, ChunkBytes>>,
    /// Where this side has read up to, per CPU (what it last wrote to `tails`).
    read: Vec<u64>,
    per_cpu: u64,
}

impl SwitchRings {
    /// Creates `cpus * per_cpu` chunk maps and installs them in `outer`, the loaded
    /// `switch_chunks`, and sets up `heads` (`switch_head`); `tails` is `switch_tail`. Both
    /// have `cpus` entries. Call it before the sched_switch program is attached: until then
    /// the entries do not describe the chunks.
    pub(crate) fn create(
        outer: Map,
        heads: Map,
        tails: Map,
        cpus: usize,
        per_cpu: u32,
    ) -> Result<Self, MapError> {
        // A copy of the outer map's descriptor for the installers (see `install`).
        let outer_fd = match &outer {
            Map::ArrayOfMaps(data) => Some(data.fd().as_fd().try_clone_to_owned().map_err(
                |io_error| SyscallError {
                    call: "dup",
                    io_error,
                },
            )?),
            _ => None,
        };
        let outer: ArrayOfMaps<MapData, Array<MapData, ChunkBytes>> = outer.try_into()?;
        let total = cpus as u32 * per_cpu;
        let chunks = (0..total)
            .map(|_| Array::<MapData, ChunkBytes>::create(1, 0))
            .collect::<Result<Vec<_>, _>>()?;
        install(outer_fd.expect("an ArrayOfMaps"), &chunks)?;
        let mut heads: Array<MapData, abi::SwitchHead> = heads.try_into()?;
        for cpu in 0..cpus as u32 {
            let head = abi::SwitchHead {
                capacity: u64::from(per_cpu) * RECORDS,
                first_key: cpu * per_cpu,
                key_mask: per_cpu - 1,
                ..Default::default()
            };
            heads.set(cpu, head, 0)?;
        }
        Ok(SwitchRings {
            _outer: outer,
            heads,
            tails: tails.try_into()?,
            chunks,
            read: vec![0; cpus],
            per_cpu: u64::from(per_cpu),
        })
    }

    /// Hands every record written since the last call to `f` (CPU by CPU, each CPU's in the
    /// order written), then frees them for the writer.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(&[u8])) -> Result<(), MapError> {
        let capacity = self.per_cpu * RECORDS;
        for cpu in 0..self.read.len() {
            let head = self.heads.get(&(cpu as u32), 0)?.head;
            // The records below `head` were written before it was advanced; order the chunk
            // reads after the head read (the BPF side publishes with a store after them, or a
            // fully ordered atomic where stores may be reordered).
            fence(Ordering::Acquire);
            let mut at = self.read[cpu];
            // The writer never runs `capacity` ahead; should the word be corrupt, read at
            // most one ring's worth.
            if head.wrapping_sub(at) > capacity {
                at = head.wrapping_sub(capacity);
            }
            while at != head {
                let chunk_no = at / RECORDS;
                let index = cpu as u64 * self.per_cpu + chunk_no % self.per_cpu;
                let chunk = self.chunks[index as usize].get(&0, 0)?;
                let end = head.min((chunk_no + 1) * RECORDS);
                for i in at..end {
                    let offset = (i % RECORDS) as usize * RECORD_BYTES;
                    f(&chunk.0[offset..offset + RECORD_BYTES]);
                }
                at = end;
            }
            if at != self.read[cpu] {
                self.read[cpu] = at;
                let tail = abi::SwitchTail {
                    tail: at,
                    ..Default::default()
                };
                self.tails.set(cpu as u32, tail, 0)?;
            }
        }
        Ok(())
    }
}

/// Threads that install chunks at once (see [`install`]).
const INSTALLERS: usize = 32;

/// Puts `chunks[i]` at `outer[i]`. The kernel waits for an RCU grace period after every
/// update of a map-in-map from user space (`maybe_wait_bpf_programs`: `synchronize_rcu`), so
/// one thread installing 128 chunks (2 CPUs) waits 128 grace periods: 10 s of emulated time
/// under Bochs, seen as `__wait_rcu_gp` under `bpf(2)` in `record`'s set-up. Concurrent
/// waiters share grace periods, so [`INSTALLERS`] threads, each with its own handle on the
/// outer map, wait about `chunks / INSTALLERS` of them.
fn install(outer: OwnedFd, chunks: &[Array<MapData, ChunkBytes>]) -> Result<(), MapError> {
    let threads = INSTALLERS.min(chunks.len()).max(1);
    let outer = outer.as_fd();
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|first| {
                scope.spawn(move || -> Result<(), MapError> {
                    let fd = outer
                        .try_clone_to_owned()
                        .map_err(|io_error| SyscallError {
                            call: "dup",
                            io_error,
                        })?;
                    let mut map = Map::ArrayOfMaps(MapData::from_fd(fd)?);
                    let mut handle: ArrayOfMaps<&mut MapData, Array<MapData, ChunkBytes>> =
                        (&mut map).try_into()?;
                    for index in (first..chunks.len()).step_by(threads) {
                        handle.set(index as u32, &chunks[index], 0)?;
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .try_for_each(|w| w.join().expect("a chunk installer panicked"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_a_power_of_two_within_bounds() {
        assert_eq!(RECORD_BYTES, 208);
        assert_eq!(std::mem::size_of::<ChunkBytes>(), 144 * 208);
        // 16 MiB over 2 CPUs: 280 chunks fit, capped at 64.
        assert_eq!(chunks_per_cpu(16 << 20, 2), 64);
        // 4 MiB over 32 CPUs: 4.4 chunks fit, raised to 8.
        assert_eq!(chunks_per_cpu(4 << 20, 32), 8);
        // 8 MiB over 16 CPUs: 17.5 fit, so 16.
        assert_eq!(chunks_per_cpu(8 << 20, 16), 16);
        assert_eq!(chunks_per_cpu(4096, 0), 8);
        for cpus in 1..300 {
            assert!(chunks_per_cpu(16 << 20, cpus).is_power_of_two());
        }
    }
}
