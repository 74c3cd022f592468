//! [`PcpuSet`]: a set of the simulated host's pCPUs, for any pCPU count the simulation takes
//! (a thread's allowed pCPUs, the pCPUs the engine must reschedule or re-arm).

use fixedbitset::FixedBitSet;

/// pCPUs `0..len` of the simulated host, one bit each; a pCPU at or past `len` is never in it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PcpuSet(FixedBitSet);

impl PcpuSet {
    /// No pCPU, with room for pCPUs `0..ncpus`.
    pub fn empty(ncpus: u32) -> Self {
        PcpuSet(FixedBitSet::with_capacity(ncpus as usize))
    }

    /// Every pCPU `0..ncpus`.
    pub fn all(ncpus: u32) -> Self {
        let mut s = Self::empty(ncpus);
        s.0.insert_range(..);
        s
    }

    /// The pCPUs of `cpus` below `ncpus` (the others are not on the simulated host).
    pub fn of<'a>(cpus: impl IntoIterator<Item = &'a u32>, ncpus: u32) -> Self {
        let mut s = Self::empty(ncpus);
        for &c in cpus {
            if c < ncpus {
                s.0.insert(c as usize);
            }
        }
        s
    }

    #[inline]
    pub fn contains(&self, cpu: u32) -> bool {
        self.0.contains(cpu as usize)
    }

    /// Adds `cpu`, which must be below the count the set was made for.
    #[inline]
    pub fn insert(&mut self, cpu: u32) {
        self.0.insert(cpu as usize);
    }

    #[inline]
    pub fn remove(&mut self, cpu: u32) {
        self.0.set(cpu as usize, false);
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.0.is_clear()
    }

    /// The lowest pCPU in the set.
    #[inline]
    pub fn first(&self) -> Option<u32> {
        self.next_from(0)
    }

    /// The lowest pCPU in the set at or after `cpu`: a walk over the set that may take out
    /// the pCPUs it has passed.
    #[inline]
    pub fn next_from(&self, cpu: u32) -> Option<u32> {
        let blocks = self.0.as_slice();
        let bits = u32::BITS;
        let mut i = (cpu / bits) as usize;
        let mut block = *blocks.get(i)? & (!0 << (cpu % bits));
        loop {
            if block != 0 {
                return Some(i as u32 * bits + block.trailing_zeros());
            }
            i += 1;
            block = *blocks.get(i)?;
        }
    }

    /// Takes the lowest pCPU out of the set.
    #[inline]
    pub fn pop_first(&mut self) -> Option<u32> {
        let c = self.first()?;
        self.remove(c);
        Some(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcpus_past_128_keep_their_own_bits() {
        let mut s = PcpuSet::of(&[3, 200, 255, 300], 256);
        assert!(s.contains(200) && s.contains(255) && s.contains(3));
        // 300 is not on a 256-pCPU host; 72 = 200 - 128 must not alias 200.
        assert!(!s.contains(300) && !s.contains(72) && !s.contains(256));
        assert_eq!(s.pop_first(), Some(3));
        assert_eq!(s.pop_first(), Some(200));
        s.insert(129);
        assert_eq!(s.first(), Some(129));
        s.remove(129);
        assert_eq!(s.pop_first(), Some(255));
        assert!(s.is_empty());
        assert_eq!(s.pop_first(), None);
        let s = PcpuSet::of(&[31, 32, 64, 250], 256);
        assert_eq!(s.next_from(0), Some(31));
        assert_eq!(s.next_from(32), Some(32));
        assert_eq!(s.next_from(33), Some(64));
        assert_eq!(s.next_from(65), Some(250));
        assert_eq!(s.next_from(251), None);
        assert_eq!(s.next_from(9999), None);
        let all = PcpuSet::all(300);
        assert!(all.contains(0) && all.contains(299) && !all.contains(300));
    }
}
