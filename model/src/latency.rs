//! Latency distributions: a lazily allocated HDR histogram per figure, fed through a small
//! inline buffer.
//!
//! Most tracked threads never produce most distributions (no kvm_entry on PVM, no VMCLEAR
//! off VT-x), so the ~36 KiB of counts are only allocated on the first recorded value.
//!
//! Why the buffer: at 512 vCPUs the histograms of all threads are ~70 MB, so recording a
//! value straight into its counts slot missed the caches (and the TLB) nearly every time:
//! 45% of the live dashboard's fold (`render_cpu` bench profile, #15). A value is appended to
//! `pending` instead, which sits beside the thread's other state; a full buffer goes into the
//! histogram at once, sorted, so its header is read once per buffer and neighbouring values
//! share cache lines. Readers see the buffered values as if they were recorded: every figure
//! equals the plain histogram's (asserted in the tests below).

use hdrhistogram::Histogram;

use crate::{LatencyBuckets, Percentiles, LATENCY_BUCKET_BOUNDS_NS};

/// Largest value kept exactly enough (one hour in ns); larger values are clamped to it.
const HIGHEST_NS: u64 = 3_600_000_000_000;
/// Two significant digits: percentiles are within 1% of the recorded values.
const SIGFIG: u8 = 2;
/// Values buffered before they go into the histogram: with the length and the histogram's
/// pointer, one 64-byte cache line.
const PENDING: usize = 13;

/// One latency distribution (ns). Public so that a sink summarising the model's transitions
/// (a test, an exporter) computes percentiles exactly as the model does.
#[derive(Clone, Default)]
pub struct Latency {
    hist: Option<Box<Histogram<u64>>>,
    /// Values recorded but not yet in `hist`, in recording order (values above `u32::MAX`
    /// ns, 4.3 s, go straight in).
    pending: [u32; PENDING],
    pending_len: u8,
}

impl Latency {
    pub fn record(&mut self, ns: u64) {
        let Ok(v) = u32::try_from(ns) else {
            self.record_n(ns, 1);
            return;
        };
        if self.hist.is_none() {
            // Readers need its bucket boundaries for the buffered values too.
            self.histogram();
        }
        if usize::from(self.pending_len) == PENDING {
            self.flush();
        }
        self.pending[usize::from(self.pending_len)] = v;
        self.pending_len += 1;
    }

    /// Records `ns` `n` times (a histogram bucket folded in at its representative value).
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        if let Some(h) = self.histogram() {
            h.saturating_record_n(ns, n);
        }
    }

    /// The histogram, created on first use. Creation only fails on invalid bounds, which are
    /// constants here; if it ever did, the figure stays empty rather than panicking.
    fn histogram(&mut self) -> Option<&mut Histogram<u64>> {
        if self.hist.is_none() {
            self.hist = Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG)
                .ok()
                .map(Box::new);
        }
        self.hist.as_deref_mut()
    }

    /// Moves the buffered values into the histogram.
    fn flush(&mut self) {
        let len = usize::from(self.pending_len);
        self.pending_len = 0;
        let mut values = self.pending;
        let values = &mut values[..len];
        // Ascending, so values that share a cache line of counts are added one after another.
        values.sort_unstable();
        if let Some(h) = self.histogram() {
            for &v in values.iter() {
                h.saturating_record(u64::from(v));
            }
        }
    }

    fn pending(&self) -> &[u32] {
        &self.pending[..usize::from(self.pending_len)]
    }

    #[cfg(test)]
    pub(crate) fn count(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len()) + self.pending().len() as u64
    }

    /// Folds `other` into `self` (for the all-vCPU headline figures).
    pub fn merge(&mut self, other: &Latency) {
        if let Some(src) = other.hist.as_deref() {
            match self.hist.as_mut() {
                // Both histograms share bounds, so addition cannot fail; ignore if it did.
                Some(dst) => {
                    let _ = dst.add(src);
                }
                None => self.hist = Some(Box::new(src.clone())),
            }
        }
        for &v in other.pending() {
            self.record(u64::from(v));
        }
    }

    /// Every distinct bucket with values, ascending: (highest value of the bucket, count),
    /// the buffered values counted in the buckets the histogram would put them in. Empty
    /// without a histogram (`record` creates it with the first buffered value).
    fn for_each_bucket(&self, mut f: impl FnMut(&Histogram<u64>, u64, u64)) {
        let Some(h) = self.hist.as_deref() else {
            return;
        };
        let mut extra = [0u64; PENDING];
        let extra = &mut extra[..self.pending().len()];
        for (e, &v) in extra.iter_mut().zip(self.pending()) {
            *e = h.highest_equivalent(u64::from(v));
        }
        extra.sort_unstable();
        let mut extra = extra.iter().copied().peekable();
        for v in h.iter_recorded() {
            let top = v.value_iterated_to();
            while let Some(e) = extra.next_if(|&e| e < top) {
                let mut n = 1;
                while extra.next_if_eq(&e).is_some() {
                    n += 1;
                }
                f(h, e, n);
            }
            let mut n = v.count_at_value();
            while extra.next_if_eq(&top).is_some() {
                n += 1;
            }
            f(h, top, n);
        }
        while let Some(e) = extra.next() {
            let mut n = 1;
            while extra.next_if_eq(&e).is_some() {
                n += 1;
            }
            f(h, e, n);
        }
    }

    fn total(&self) -> u64 {
        self.hist.as_ref().map_or(0, |h| h.len()) + self.pending().len() as u64
    }

    /// Counts per bucket of [`LATENCY_BUCKET_BOUNDS_NS`]; one pass over the recorded values.
    pub fn buckets(&self) -> LatencyBuckets {
        let mut out = LatencyBuckets::default();
        self.for_each_bucket(|h, top, n| {
            let value = h.lowest_equivalent(top);
            let i = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&b| b < value);
            out.counts[i] = out.counts[i].saturating_add(n);
            out.sum_ns = out
                .sum_ns
                .saturating_add(h.median_equivalent(value).saturating_mul(n));
        });
        out
    }

    /// p50, p90, p99, max and mean in one pass, each as the HDR histogram computes it
    /// (`value_at_quantile`: the highest value of the first bucket whose running count reaches
    /// ceil(q x count); `mean`: each bucket at its median value).
    pub fn percentiles(&self) -> Percentiles {
        let total = self.total();
        if total == 0 {
            return Percentiles::default();
        }
        let quantiles = [0.50, 0.90, 0.99];
        let targets = quantiles.map(|q: f64| ((q * total as f64).ceil() as u64).max(1));
        let mut at = [None::<u64>; 3];
        let mut seen = 0u64;
        let mut max = 0;
        let mut mean = 0.0;
        self.for_each_bucket(|h, top, n| {
            seen += n;
            for (slot, &target) in at.iter_mut().zip(&targets) {
                if slot.is_none() && seen >= target {
                    *slot = Some(top);
                }
            }
            max = top;
            mean += h.median_equivalent(top) as f64 * n as f64 / total as f64;
        });
        Percentiles {
            count: total,
            p50: at[0].unwrap_or(0),
            p90: at[1].unwrap_or(0),
            p99: at[2].unwrap_or(0),
            max,
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

    /// What the figures were before the buffer: every value straight into one histogram.
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
        /// Buffered or not, mid-buffer or flushed, merged or alone: every figure equals the
        /// plain HDR histogram's (the mean to float rounding), and p50/p99 are within the
        /// histogram's stated precision (two significant digits: 1%) of the exact values.
        #[test]
        fn buffered_figures_equal_the_plain_histograms(
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
            let mut want_buckets = LatencyBuckets::default();
            for v in h.iter_recorded() {
                let value = h.lowest_equivalent(v.value_iterated_to());
                let i = LATENCY_BUCKET_BOUNDS_NS.partition_point(|&b| b < value);
                want_buckets.counts[i] += v.count_at_value();
                want_buckets.sum_ns += h.median_equivalent(value) * v.count_at_value();
            }
            prop_assert_eq!(whole.buckets(), want_buckets);
            let mut sorted = values.clone();
            sorted.sort_unstable();
            for (q, p) in [(0.50, got.p50), (0.99, got.p99)] {
                let e = exact(&sorted, q).min(HIGHEST_NS) as f64;
                prop_assert!((p as f64 - e).abs() <= e * 0.01 + 1.0, "q {} got {} exact {}", q, p, e);
            }
        }
    }
}
