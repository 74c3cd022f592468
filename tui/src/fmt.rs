//! Number formatting shared by the views: short, fixed-width-friendly, unit-bearing.

/// Nanoseconds as `812ns`, `39.1µs`, `1.25ms`, `2.50s`.
pub fn ns(v: u64) -> String {
    let f = v as f64;
    if v < 1_000 {
        format!("{v}ns")
    } else if v < 1_000_000 {
        format!("{:.1}µs", f / 1e3)
    } else if v < 1_000_000_000 {
        format!("{:.2}ms", f / 1e6)
    } else {
        format!("{:.2}s", f / 1e9)
    }
}

/// Signed nanoseconds with an explicit sign (`+4.9µs`, `-1.20ms`, `0ns`).
pub fn signed_ns(v: i64) -> String {
    let mag = ns(v.unsigned_abs());
    match v.signum() {
        1 => format!("+{mag}"),
        -1 => format!("-{mag}"),
        _ => mag,
    }
}

/// A rate as `0`, `<0.1`, `3.2`, `45`, `1.2k`, `3.4M`: a rate above zero never reads `0.0`
/// (an exit reason seen twice in a 20 s recording is not "no exits").
pub fn rate(v: f64) -> String {
    if !v.is_finite() || v <= 0.0 {
        "0".into()
    } else if v < 0.05 {
        "<0.1".into()
    } else if v < 10.0 {
        format!("{v:.1}")
    } else if v < 1e3 {
        format!("{v:.0}")
    } else if v < 1e6 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{:.1}M", v / 1e6)
    }
}

/// A count as `812`, `45.6k`, `1.23M`.
pub fn count(v: u64) -> String {
    if v < 10_000 {
        v.to_string()
    } else if v < 1_000_000 {
        format!("{:.1}k", v as f64 / 1e3)
    } else {
        format!("{:.2}M", v as f64 / 1e6)
    }
}

/// A fraction 0..=1 as a percentage: one decimal below 10% (`8.6%`, `0.2%`: 512 vCPUs on
/// two pCPUs get 0.2% each, which a whole percentage shows as `0%` for every row), whole
/// above (`43%`), `<0.1%` for a share above zero that rounds to nothing, `0%` for none.
pub fn pct(v: f64) -> String {
    if !v.is_finite() {
        return "-".into();
    }
    let p = (v * 100.0).clamp(0.0, 999.0);
    if p == 0.0 {
        "0%".into()
    } else if p < 0.05 {
        "<0.1%".into()
    } else if p < 9.95 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// vruntime (ns of virtual time) in seconds with ms resolution.
pub fn vruntime(v: u64) -> String {
    format!("{:.3}s", v as f64 / 1e9)
}

/// Seconds as `12.3s` or `1m05s`.
pub fn secs(v: f64) -> String {
    if v < 60.0 {
        format!("{v:.1}s")
    } else {
        let m = (v / 60.0).floor();
        format!("{m:.0}m{:02.0}s", (v - m * 60.0).floor())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_pick_a_readable_unit() {
        assert_eq!(ns(812), "812ns");
        assert_eq!(ns(39_100), "39.1µs");
        assert_eq!(ns(1_250_000), "1.25ms");
        assert_eq!(ns(2_500_000_000), "2.50s");
        assert_eq!(signed_ns(-4_900), "-4.9µs");
        assert_eq!(signed_ns(4_900), "+4.9µs");
        assert_eq!(signed_ns(0), "0ns");
    }

    #[test]
    fn rates_and_counts_stay_short() {
        assert_eq!(rate(0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
        assert_eq!(rate(3.24), "3.2");
        assert_eq!(rate(1234.0), "1.2k");
        assert_eq!(count(45_600), "45.6k");
        assert_eq!(pct(0.426), "43%");
        assert_eq!(pct(0.086), "8.6%");
        assert_eq!(pct(0.002), "0.2%");
        assert_eq!(pct(0.0), "0%");
        assert_eq!(pct(0.0001), "<0.1%");
        assert_eq!(pct(0.0996), "10%");
        assert_eq!(rate(0.04), "<0.1");
        assert_eq!(rate(0.05), "0.1");
        assert_eq!(secs(65.2), "1m05s");
    }
}
