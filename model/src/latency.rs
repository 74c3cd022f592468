//! Latency distributions: a log-linear histogram per figure, with the layout and figures of an
//! HDR histogram of two significant digits from 1 ns to one hour, held compactly.
//!
//! Values are kept in octaves of 128 sub-buckets (below 256 ns one per ns), so a value is
//! known to within 1/128 of itself: percentiles are within 1% of the recorded values. Only
//! the octaves from the lowest to the highest value recorded are held, with 32-bit counts (a
//! count that would pass `u32::MAX` turns the histogram's counts to 64 bits): a thread's
//! waits or resumes span a few octaves, ~512 bytes each, where a full HDR histogram of
//! 64-bit counts was 36 KiB. At 512 vCPUs and 1 M events/s (#15) the live dashboard's model
//! comes back from memory after every pause between folds, much of it histogram counts: the
//! compact counts took the live fold from 9-11% of a core to 6.5-7.5% (`render_cpu`), yet
//! the load of the count a value lands on is still a quarter of the live fold. Nothing is
//! allocated before the first recorded value (most tracked threads never produce most
//! distributions: no kvm_entry on PVM, no VMCLEAR off VT-x).
//!
//! Recording goes straight into the counts. Tried for the 512-vCPU dashboard (#15) and
//! dropped, each in a same-run A/B of `render_cpu`: a buffer of values added sorted when full
//! (its counts still missed one value at a time at flush; no faster live, 8% slower offline);
//! a queue of 64 values whose counts were prefetched before all were added (cold fold 55-61
//! vs 56-59 ns/event: no gain); 16-bit counts widening on overflow (no gain).

use crate::{LatencyBuckets, Percentiles, LATENCY_BUCKET_BOUNDS_NS};

/// Largest value kept exactly enough (one hour in ns); a value past the last octave that
/// holds it is clamped to it (as HDR's `saturating_record` does).
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// Sub-buckets per octave past the first (half of the 256 that two significant digits need).
const OCTAVE_BITS: u32 = 7;
const OCTAVE: usize = 1 << OCTAVE_BITS;
/// Octaves of counts: the first two hold 0..256 one per ns, octave `k` >= 2 holds
/// [2^(k+6), 2^(k+7)) in steps of 2^(k-1); the last is the one that holds `HIGHEST_NS`.
const OCTAVES: usize = octave_of(index_of_unclamped(HIGHEST_NS)) + 1;

/// The counts index of `ns` (HDR's `index_for` with 256 sub-buckets and unit 1 ns).
const fn index_of_unclamped(ns: u64) -> usize {
    // Octave-pair ("bucket") of the value: how many doublings past 0..256 it is.
    let bucket = 56 - (ns | 0xff).leading_zeros();
    (((bucket + 1) as usize) << OCTAVE_BITS) + (ns >> bucket) as usize - OCTAVE
}

const fn octave_of(index: usize) -> usize {
    index >> OCTAVE_BITS
}

/// `ns` as recorded: clamped to `HIGHEST_NS` past the last octave.
fn clamp(ns: u64) -> u64 {
    if octave_of(index_of_unclamped(ns)) < OCTAVES {
        ns
    } else {
        HIGHEST_NS
    }
}

/// The range of values counted at `index`: its lowest value and its width.
fn range_of(index: usize) -> (u64, u64) {
    let (bucket, sub) = match octave_of(index) {
        0 => (0, index),
        k => (k - 1, (index & (OCTAVE - 1)) + OCTAVE),
    };
    ((sub as u64) << bucket, 1u64 << bucket)
}

/// The highest value counted at `index` (what HDR reports a percentile as).
fn highest_of(index: usize) -> u64 {
    let (low, width) = range_of(index);
    low + (width - 1)
}

/// The middle of `index`'s range (what HDR weighs a count by for the mean).
fn median_of(index: usize) -> u64 {
    let (low, width) = range_of(index);
    low + width / 2
}

/// Counts of the octaves held, 32-bit until one would overflow.
#[derive(Clone, Debug)]
enum Counts {
    Narrow(Vec<u32>),
    Wide(Vec<u64>),
}

impl Default for Counts {
    fn default() -> Self {
        Counts::Narrow(Vec::new())
    }
}

impl Counts {
    fn len(&self) -> usize {
        match self {
            Counts::Narrow(c) => c.len(),
            Counts::Wide(c) => c.len(),
        }
    }

    fn get(&self, i: usize) -> u64 {
        match self {
            Counts::Narrow(c) => u64::from(c[i]),
            Counts::Wide(c) => c[i],
        }
    }

    #[inline]
    fn add(&mut self, i: usize, n: u64) {
        match self {
            Counts::Narrow(c) => {
                let sum = u64::from(c[i]) + n.min(u64::from(u32::MAX));
                if n <= u64::from(u32::MAX) && sum <= u64::from(u32::MAX) {
                    c[i] = sum as u32;
                    return;
                }
                self.widen();
                self.add(i, n);
            }
            Counts::Wide(c) => c[i] = c[i].saturating_add(n),
        }
    }

    fn widen(&mut self) {
        if let Counts::Narrow(c) = self {
            *self = Counts::Wide(c.iter().map(|&n| u64::from(n)).collect());
        }
    }

    /// Puts `before` zeroed sub-buckets in front and `after` behind.
    fn pad(&mut self, before: usize, after: usize) {
        fn pad<T: Copy + Default>(c: &mut Vec<T>, before: usize, after: usize) {
            if before > 0 {
                c.splice(0..0, std::iter::repeat_n(T::default(), before));
            }
            c.resize(c.len() + after, T::default());
        }
        match self {
            Counts::Narrow(c) => pad(c, before, after),
            Counts::Wide(c) => pad(c, before, after),
        }
    }
}

/// One latency distribution (ns). Public so that a sink summarising the model's transitions
/// (a test, an exporter) computes percentiles exactly as the model does.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    /// Sub-buckets of octaves `first..first + counts.len() / OCTAVE`; empty before the first
    /// value.
    counts: Counts,
    first: u8,
    total: u64,
    /// Largest value recorded (clamped like the rest).
    max: u64,
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `ns` `n` times (a histogram bucket folded in at its representative value).
    #[inline]
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        let ns = clamp(ns);
        let index = index_of_unclamped(ns);
        let at = self.hold(octave_of(index));
        self.counts.add(index - at, n);
        self.total = self.total.saturating_add(n);
        self.max = self.max.max(ns);
    }

    /// Makes room for `octave`; returns the index of the first sub-bucket held.
    #[inline]
    fn hold(&mut self, octave: usize) -> usize {
        let held = self.counts.len() / OCTAVE;
        let first = usize::from(self.first);
        if held == 0 {
            self.first = octave as u8;
            self.counts.pad(0, OCTAVE);
        } else if octave < first {
            self.counts.pad((first - octave) * OCTAVE, 0);
            self.first = octave as u8;
        } else if octave >= first + held {
            self.counts.pad(0, (octave + 1 - first - held) * OCTAVE);
        }
        usize::from(self.first) * OCTAVE
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.total
    }

    /// Folds `other` into `self` (for the all-vCPU headline figures).
    pub fn merge(&mut self, other: &Latency) {
        if other.total == 0 {
            return;
        }
        let from = usize::from(other.first) * OCTAVE;
        for i in 0..other.counts.len() {
            let n = other.counts.get(i);
            if n > 0 {
                let index = from + i;
                let at = self.hold(octave_of(index));
                self.counts.add(index - at, n);
            }
        }
        self.total = self.total.saturating_add(other.total);
        self.max = self.max.max(other.max);
    }

    /// Each sub-bucket with a count: its counts index and count, lowest values first.
    fn recorded(&self) -> impl Iterator<Item = (usize, u64)> + '_ {
        let from = usize::from(self.first) * OCTAVE;
        (0..self.counts.len())
            .map(move |i| (from + i, self.counts.get(i)))
            .filter(|&(_, n)| n > 0)
    }

    /// Counts per bucket of [`LATENCY_BUCKET_BOUNDS_NS`]; one pass over the recorded values.
    pub fn buckets(&self) -> LatencyBuckets {
        let mut out = LatencyBuckets::default();
        for (index, n) in self.recorded() {
            let value = range_of(index).0;
            let i = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&b| b < value);
            out.counts[i] = out.counts[i].saturating_add(n);
            out.sum_ns = out
                .sum_ns
                .saturating_add(median_of(index).saturating_mul(n));
        }
        out
    }

    /// p50, p90, p99, max and mean in one pass over the recorded sub-buckets, each as an HDR
    /// histogram of the same layout computes it (`value_at_quantile`: the highest value of the
    /// first sub-bucket whose running count reaches ceil(q x count); `max`: the highest value
    /// of the largest value's sub-bucket; `mean`: each sub-bucket at its middle value).
    pub fn percentiles(&self) -> Percentiles {
        if self.total == 0 {
            return Percentiles::default();
        }
        let total = self.total;
        let quantiles = [0.50, 0.90, 0.99];
        let targets = quantiles.map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
        let mut at = [0u64; 3];
        let mut seen = 0u64;
        let mut mean = 0.0;
        for (index, n) in self.recorded() {
            let top = highest_of(index);
            for (slot, &target) in at.iter_mut().zip(&targets) {
                if seen < target && seen + n >= target {
                    *slot = top;
                }
            }
            seen += n;
            mean += median_of(index) as f64 * n as f64 / total as f64;
        }
        Percentiles {
            count: total,
            p50: at[0],
            p90: at[1],
            p99: at[2],
            max: if self.max == 0 {
                0
            } else {
                highest_of(index_of_unclamped(self.max))
            },
            mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hdrhistogram::Histogram;
    use proptest::prelude::*;

    #[test]
    fn empty_is_all_zero_and_values_are_within_one_percent() {
        let mut l = Latency::default();
        assert_eq!(l.percentiles(), Percentiles::default());
        for v in 1..=100u64 {
            l.record(v * 1000);
        }
        let p = l.percentiles();
        assert_eq!(p.count, 100);
        assert!((p.p50 as f64 - 50_000.0).abs() <= 500.0, "{p:?}");
        assert!((p.p99 as f64 - 99_000.0).abs() <= 990.0, "{p:?}");
        let b = l.buckets();
        assert_eq!(b.count(), 100);
        // 1..=5 µs, 6..=10, 11..=25, 26..=50, 51..=100 µs.
        assert_eq!(&b.counts[..6], &[5, 5, 15, 25, 50, 0]);
        let sum = (1..=100u64).map(|v| v * 1000).sum::<u64>() as f64;
        assert!((b.sum_ns as f64 - sum).abs() <= sum * 0.01, "{b:?}");
        assert_eq!(Latency::default().buckets(), LatencyBuckets::default());
        let mut all = Latency::default();
        all.merge(&l);
        all.merge(&l);
        assert_eq!(all.count(), 200);
    }

    /// Every value recorded into one histogram.
    fn plain(values: &[u64]) -> Histogram<u64> {
        // Two significant digits: the precision this histogram states.
        let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, 2).expect("bounds");
        for &v in values {
            h.saturating_record(v);
        }
        h
    }

    fn plain_percentiles(h: &Histogram<u64>) -> Percentiles {
        Percentiles {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            max: h.max(),
            mean: h.mean(),
        }
    }

    /// The exact quantile of the recorded values: the smallest with ceil(q x n) at or below it.
    fn exact(sorted: &[u64], q: f64) -> u64 {
        let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
        sorted[rank - 1]
    }

    proptest! {
        /// Merged or alone, the figures equal those of an HDR histogram of two significant
        /// digits over the same values (the mean to float rounding; values past an hour
        /// clamped alike), and p50/p99 are within that precision (1%) of the exact quantiles
        /// of the recorded values.
        #[test]
        fn one_pass_figures_equal_the_histograms_own(
            values in prop::collection::vec(
                prop_oneof![
                    8 => 0u64..200_000,
                    8 => 1_000u64..20_000_000,
                    8 => 0u64..10_000_000_000,
                    1 => 3_000_000_000_000u64..u64::MAX,
                ],
                1..200,
            ),
            split in 0usize..200,
        ) {
            let split = split.min(values.len());
            let (mut a, mut b) = (Latency::default(), Latency::default());
            for &v in &values[..split] {
                a.record(v);
            }
            for &v in &values[split..] {
                b.record(v);
            }
            let mut merged = a.clone();
            merged.merge(&b);
            let h = plain(&values);
            let want = plain_percentiles(&h);
            let got = merged.percentiles();
            prop_assert_eq!(
                (got.count, got.p50, got.p90, got.p99, got.max),
                (want.count, want.p50, want.p90, want.p99, want.max)
            );
            prop_assert!((got.mean - want.mean).abs() <= want.mean.abs() * 1e-9 + 1e-6);
            let mut whole = Latency::default();
            for &v in &values {
                whole.record(v);
            }
            prop_assert_eq!(whole.percentiles().p99, want.p99);
            prop_assert_eq!(whole.buckets(), merged.buckets());
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for (q, p) in [(0.50, got.p50), (0.99, got.p99)] {
                let e = exact(&sorted, q).min(HIGHEST_NS) as f64;
                prop_assert!((p as f64 - e).abs() <= e * 0.01 + 1.0, "q {} got {} exact {}", q, p, e);
            }
        }
    }

    /// Counts past `u32::MAX` in one sub-bucket turn the counts to 64 bits, losing nothing.
    #[test]
    fn counts_past_32_bits_widen() {
        let mut l = Latency::default();
        l.record(1_000);
        l.record_n(2_000, u64::from(u32::MAX));
        l.record_n(2_000, 5);
        assert!(matches!(l.counts, Counts::Wide(_)));
        let mut h = plain(&[1_000]);
        h.saturating_record_n(2_000, u64::from(u32::MAX) + 5);
        assert_eq!(l.percentiles(), plain_percentiles(&h));
        let mut merged = Latency::default();
        merged.record(7);
        merged.merge(&l);
        assert_eq!(merged.count(), u64::from(u32::MAX) + 7);
    }

    /// Only the octaves between the lowest and the highest value are held: waits from 10 µs
    /// to 1 ms take 7 octaves of 128 32-bit counts, 3.5 KiB (a full HDR histogram is 36 KiB).
    #[test]
    fn holds_only_the_octaves_in_use() {
        let mut l = Latency::default();
        assert_eq!(l.counts.len(), 0);
        l.record(1_000_000);
        l.record(10_000);
        assert_eq!(l.counts.len() * 4, 3584);
        assert_eq!(
            OCTAVES * OCTAVE,
            4608,
            "the layout of HDR's 1 ns..1 h at 2 digits"
        );
    }
}
