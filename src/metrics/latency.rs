//! `stratum_request_response_seconds`, kept by the collector itself rather
//! than by the exporter.
//!
//! The exporter's histograms read a clock for every sample and push it into
//! a lock-free queue that `run_upkeep()` later drains into buckets. At
//! saturation (3.6 million lines a second through one core, an answer every
//! other line) that cost 7.5% of the proxy's CPU in `perf`
//! (`AtomicBucket::push`, `quanta::Clock::now`, `crossbeam_epoch::pin`, the
//! drain), and the queued samples were the largest memory that grew with
//! the message rate. Here a sample is a search over the fixed bounds and two
//! relaxed atomic adds; nothing is queued. The exposition is the same:
//! cumulative `_bucket` series with `le`, `_sum` in seconds and `_count`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use super::schema::REQUEST_RESPONSE_BUCKETS;

/// Number of finite bucket bounds.
const BOUNDS: usize = REQUEST_RESPONSE_BUCKETS.len();

/// The bounds in whole microseconds (every bound is a multiple of 1 µs), so
/// that a sample is placed with integer comparisons.
const BOUNDS_US: [u64; BOUNDS] = {
    let mut us = [0u64; BOUNDS];
    let mut i = 0;
    while i < BOUNDS {
        us[i] = (REQUEST_RESPONSE_BUCKETS[i] * 1e6 + 0.5) as u64;
        i += 1;
    }
    us
};

/// One request → response histogram (one pool, one method).
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Samples per bucket, not cumulative: one per bound, then `+Inf`.
    counts: [AtomicU64; BOUNDS + 1],
    /// Sum of the samples, in microseconds.
    sum_us: AtomicU64,
}

impl LatencyHistogram {
    /// Records one request answered after `waited_us` microseconds.
    #[inline]
    pub fn record_us(&self, waited_us: u64) {
        // Prometheus buckets hold the samples at or below their bound.
        let bucket = BOUNDS_US
            .iter()
            .position(|&bound| waited_us <= bound)
            .unwrap_or(BOUNDS);
        self.counts[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(waited_us, Ordering::Relaxed);
    }

    /// Appends this histogram's series, labelled `labels` (already escaped,
    /// without braces), to a text exposition.
    pub fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, count) in REQUEST_RESPONSE_BUCKETS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        cumulative += self.counts[BOUNDS].load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {cumulative}");
        let sum_seconds = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum_seconds}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {cumulative}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(h: &LatencyHistogram) -> Vec<String> {
        let mut out = String::new();
        h.render(&mut out, "x", "pool_host=\"p\"");
        out.lines().map(str::to_owned).collect()
    }

    #[test]
    fn bounds_are_exact_microseconds() {
        for (us, seconds) in BOUNDS_US.iter().zip(REQUEST_RESPONSE_BUCKETS) {
            assert_eq!(*us as f64 / 1e6, *seconds);
        }
    }

    #[test]
    fn samples_fall_in_the_first_bucket_at_or_above_them() {
        let h = LatencyHistogram::default();
        h.record_us(1_000); // exactly 0.001: in le="0.001"
        h.record_us(1_001); // just above: le="0.0025"
        h.record_us(0);
        h.record_us(61_000_000); // past the last bound: +Inf only
        let lines = rendered(&h);
        assert_eq!(lines[0], "x_bucket{pool_host=\"p\",le=\"0.001\"} 2");
        assert_eq!(lines[1], "x_bucket{pool_host=\"p\",le=\"0.0025\"} 3");
        assert_eq!(lines[BOUNDS - 1], "x_bucket{pool_host=\"p\",le=\"60\"} 3");
        assert_eq!(lines[BOUNDS], "x_bucket{pool_host=\"p\",le=\"+Inf\"} 4");
        assert_eq!(lines[BOUNDS + 1], "x_sum{pool_host=\"p\"} 61.002001");
        assert_eq!(lines[BOUNDS + 2], "x_count{pool_host=\"p\"} 4");
    }
}
