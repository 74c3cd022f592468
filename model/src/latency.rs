//! Latency distributions: a lazily allocated HDR histogram per figure.
//!
//! Most tracked threads never produce most distributions (no kvm_entry on PVM, no VMCLEAR
//! off VT-x), so the ~40 KiB of counts are only allocated on the first recorded value.

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
        if self.0.is_none() {
            // Creation only fails on invalid bounds, which are constants here; if it ever
            // did, the figure stays empty rather than panicking.
            self.0 = Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG)
                .ok()
                .map(Box::new);
        }
        if let Some(h) = self.0.as_mut() {
            h.saturating_record(ns);
        }
    }

    /// Records `ns` `n` times (a histogram bucket folded in at its representative value).
    pub fn record_n(&mut self, ns: u64, n: u64) {
        if n == 0 {
            return;
        }
        self.record(ns);
        if let Some(h) = self.0.as_mut() {
            h.saturating_record_n(ns, n - 1);
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

    pub fn percentiles(&self) -> Percentiles {
        match self.0.as_ref() {
            None => Percentiles::default(),
            Some(h) if h.is_empty() => Percentiles::default(),
            Some(h) => Percentiles {
                count: h.len(),
                p50: h.value_at_quantile(0.50),
                p90: h.value_at_quantile(0.90),
                p99: h.value_at_quantile(0.99),
                max: h.max(),
                mean: h.mean(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
