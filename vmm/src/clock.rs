//! Host TSC → CLOCK_MONOTONIC nanoseconds, by a least-squares line through (rdtsc,
//! clock_gettime) pairs the VMM takes at start and then periodically while the guests run.
//!
//! The guests timestamp their gaps with the TSC (the only clock they can read without an
//! exit); every kernel event kvmscope shows is in CLOCK_MONOTONIC. A fitted line rather than
//! a nominal frequency absorbs both the exact TSC rate and the clock's offset.

/// Reads the host TSC.
pub fn rdtsc() -> u64 {
    // SAFETY: RDTSC has no memory effects; every x86-64 CPU has it and user space may use
    // it unless CR4.TSD is set, which Linux does not do for ordinary processes.
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// CLOCK_MONOTONIC in ns, from the host-facts layer.
pub use hostfacts::monotonic_ns;

/// One (TSC, monotonic ns) pair, the TSC taken as the midpoint of the tightest of a few
/// rdtsc/clock_gettime/rdtsc brackets so that an interrupt in between does not skew it.
pub fn sample_pair() -> (u64, u64) {
    let mut best = (u64::MAX, 0, 0);
    for _ in 0..8 {
        let a = rdtsc();
        let ns = monotonic_ns();
        let b = rdtsc();
        if b.wrapping_sub(a) < best.0 {
            best = (b.wrapping_sub(a), a + (b - a) / 2, ns);
        }
    }
    (best.1, best.2)
}

/// Running least-squares fit of ns = a + b·tsc. Sums are kept relative to the first pair so
/// that f64 keeps sub-nanosecond precision over long runs.
#[derive(Clone, Debug)]
pub struct TscClock {
    tsc0: u64,
    ns0: u64,
    n: f64,
    sx: f64,
    sy: f64,
    sxx: f64,
    sxy: f64,
    slope: f64,
    intercept: f64,
}

impl TscClock {
    /// Starts from two pairs `calibrate` apart (the guests' gap threshold needs the TSC rate
    /// before they start).
    pub fn calibrate(span: std::time::Duration) -> TscClock {
        let first = sample_pair();
        let mut clock = TscClock::from_pair(first);
        std::thread::sleep(span);
        clock.add(sample_pair());
        clock
    }

    pub fn from_pair((tsc, ns): (u64, u64)) -> TscClock {
        TscClock {
            tsc0: tsc,
            ns0: ns,
            n: 1.0,
            sx: 0.0,
            sy: 0.0,
            sxx: 0.0,
            sxy: 0.0,
            // A placeholder until a second pair arrives: 1 GHz.
            slope: 1.0,
            intercept: 0.0,
        }
    }

    pub fn add(&mut self, (tsc, ns): (u64, u64)) {
        let x = tsc as f64 - self.tsc0 as f64;
        let y = ns as f64 - self.ns0 as f64;
        self.n += 1.0;
        self.sx += x;
        self.sy += y;
        self.sxx += x * x;
        self.sxy += x * y;
        let det = self.n * self.sxx - self.sx * self.sx;
        if det > 0.0 {
            self.slope = (self.n * self.sxy - self.sx * self.sy) / det;
            self.intercept = (self.sy - self.slope * self.sx) / self.n;
        }
    }

    /// Host TSC → CLOCK_MONOTONIC ns.
    pub fn to_ns(&self, tsc: u64) -> u64 {
        let x = tsc as f64 - self.tsc0 as f64;
        let y = self.intercept + self.slope * x;
        (self.ns0 as f64 + y).max(0.0).round() as u64
    }

    /// A TSC interval in ns.
    pub fn ticks_to_ns(&self, ticks: u64) -> u64 {
        (ticks as f64 * self.slope).round() as u64
    }

    /// TSC ticks per second.
    pub fn hz(&self) -> f64 {
        1e9 / self.slope
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_line() {
        // 2.5 GHz TSC, offset, with ±3 ns of jitter on the clock side.
        let mut c = TscClock::from_pair((1_000_000_000_000, 5_000_000_000));
        for i in 1..100u64 {
            let tsc = 1_000_000_000_000 + i * 25_000_000;
            let jitter = [0i64, 3, -3][(i % 3) as usize];
            c.add((tsc, (5_000_000_000 + i as i64 * 10_000_000 + jitter) as u64));
        }
        assert!((c.hz() - 2.5e9).abs() < 1e3, "{}", c.hz());
        assert!(
            c.to_ns(1_000_000_000_000 + 50 * 25_000_000)
                .abs_diff(5_500_000_000)
                <= 3
        );
        assert_eq!(c.ticks_to_ns(2_500), 1_000);
    }

    #[test]
    fn host_tsc_is_calibrated() {
        let c = TscClock::calibrate(std::time::Duration::from_millis(20));
        // Any x86-64 TSC of the last two decades runs between 0.5 and 6 GHz.
        assert!(c.hz() > 5e8 && c.hz() < 6e9, "{}", c.hz());
        let (tsc, ns) = sample_pair();
        assert!(
            c.to_ns(tsc).abs_diff(ns) < 100_000,
            "{} vs {ns}",
            c.to_ns(tsc)
        );
    }
}
