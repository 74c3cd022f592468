//! The set of pCPUs a thread has run on, for any number of pCPUs.

use fixedbitset::FixedBitSet;

/// pCPUs a thread has run on; grows with the highest pCPU number seen.
#[derive(Clone, Debug, Default)]
pub(super) struct CpuSet(FixedBitSet);

impl CpuSet {
    #[inline]
    pub(super) fn insert(&mut self, cpu: u32) {
        let i = cpu as usize;
        if i >= self.0.len() {
            self.0.grow(i + 1);
        }
        self.0.insert(i);
    }

    pub(super) fn is_empty(&self) -> bool {
        self.0.is_clear()
    }

    pub(super) fn intersects(&self, other: &CpuSet) -> bool {
        !self.0.is_disjoint(&other.0)
    }

    pub(super) fn union_with(&mut self, other: &CpuSet) {
        self.0.union_with(&other.0);
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.0.ones().map(|i| i as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_pcpus_keep_their_own_bits() {
        let mut a = CpuSet::default();
        let mut b = CpuSet::default();
        assert!(a.is_empty());
        a.insert(127);
        a.insert(511);
        b.insert(128);
        assert!(!a.intersects(&b));
        b.insert(511);
        assert!(a.intersects(&b));
        a.union_with(&b);
        assert_eq!(a.iter().collect::<Vec<_>>(), vec![127, 128, 511]);
    }
}
