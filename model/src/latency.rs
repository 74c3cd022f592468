//! Latency distributions: a lazily allocated HDR histogram per figure.
//!
//! Most tracked threads never produce most distributions (no kvm_entry on PVM, no VMCLEAR
//! off VT-x), so the ~36 KiB of counts are only allocated on the first recorded value.
//!
//! Recording goes straight into the histogram. A buffer of values added sorted when full
//! was tried for the 512-vCPU dashboard (#15): its counts still missed the caches one value at
//! a time at flush, and in a same-run A/B of `render_cpu` it folded no faster live and 8%
//! slower in the live loop's batches offline.

use hdrhistogram::Histogram;

use crate::{LatencyBuckets, Percentiles, LATENCY_BUCKET_BOUNDS_NS};

/// Largest value kept exactly enough (one hour in ns); larger values are clamped to it.
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// Two significant digits: percentiles are within 1% of the recorded values.
const SIGFIG: u8 = 2;
/// One latency distribution (ns). Public so that a sink summarising the model's transitions
/// (a test, an exporter) computes percentiles exactly as the model does.
#[derive(Clone, Default)]
pub struct Latency(Option<Box<Histogram<u64>>>);

impl Latency {
    pub fn record(&mut self, ns: u64) {
        self.record_n(ns, 1);
    }

    /// Records `ns` `n` times (a histogram bucket folded in at its representative value).
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        if self.0.is_none() {
            // Creation only fails on invalid bounds, which are constants here; if it ever
            // did, the figure stays empty rather than panicking.
            self.0 = Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG)
                .ok()
                .map(Box::new);
        }
        if let Some(h) = self.0.as_mut() {
            h.saturating_record_n(ns, n);
        }
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.0.as_ref().map_or(0, |h| h.len())
    }

    /// Folds `other` into `self` (for the all-vCPU headline figures).
    pub fn merge(&mut self, other: &Latency) {
        let Some(src) = other.0.as_ref() else { return };
        match self.0.as_mut() {
            Some(dst) => {
                // Both histograms share bounds, so addition cannot fail; ignore if it did.
                let _ = dst.add(src.as_ref());
            }
            None => self.0 = Some(src.clone()),
        }
    }

    /// Counts per bucket of [`LATENCY_BUCKET_BOUNDS_NS`]; one pass over the recorded values.
    pub fn buckets(&self) -> LatencyBuckets {
        let mut out = LatencyBuckets::default();
        let Some(h) = self.0.as_ref() else { return out };
        for v in h.iter_recorded() {
            let value = h.lowest_equivalent(v.value_iterated_to());
            let n = v.count_at_value();
            let i = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&b| b < value);
            out.counts[i] = out.counts[i].saturating_add(n);
            out.sum_ns = out
                .sum_ns
                .saturating_add(h.median_equivalent(value).saturating_mul(n));
        }
        out
    }

    /// p50, p90, p99, max and mean in one pass over the recorded buckets (instead of three
    /// quantile scans of every count and a fourth for the mean: 30% less CPU for the
    /// dashboard's once-a-second refresh at 512 vCPUs), each as the HDR histogram computes it
    /// (`value_at_quantile`: the highest value of the first bucket whose running count reaches
    /// ceil(q x count); `mean`: each bucket at its median value).
    pub fn percentiles(&self) -> Percentiles {
        let Some(h) = self.0.as_deref().filter(|h| !h.is_empty()) else {
            return Percentiles::default();
        };
        let total = h.len();
        let quantiles = [0.50, 0.90, 0.99];
        let targets = quantiles.map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
        let mut at = [0u64; 3];
        let mut seen = 0u64;
        let mut mean = 0.0;
        for v in h.iter_recorded() {
            let top = v.value_iterated_to();
            let n = v.count_at_value();
            for (slot, &target) in at.iter_mut().zip(&targets) {
                if seen < target && seen + n >= target {
                    *slot = top;
                }
            }
            seen += n;
            mean += h.median_equivalent(top) as f64 * n as f64 / total as f64;
        }
        Percentiles {
            count: total,
            p50: at[0],
            p90: at[1],
            p99: at[2],
            max: h.max(),
            mean,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let mut h = Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("bounds");
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
        /// Merged or alone, the one-pass figures equal the histogram's own (the mean to float
        /// rounding), and p50/p99 are within its stated precision (two significant digits:
        /// 1%) of the exact quantiles of the recorded values.
        #[test]
        fn one_pass_figures_equal_the_histograms_own(
            values in prop::collection::vec(
                prop_oneof![0u64..200_000, 1_000u64..20_000_000, 0u64..10_000_000_000],
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
}
