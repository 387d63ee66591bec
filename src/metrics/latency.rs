//! `stratum_request_response_seconds`, kept by the collector itself rather
//! than by the exporter.
//!
//! The exporter's histograms read a clock for every sample and push it into
//! a lock-free queue that `run_upkeep()` later drains into buckets. At
//! saturation (3.6 million lines a second through one core, an answer every
//! other line) that cost 7.5% of the proxy's CPU in `perf`
//! (`AtomicBucket::push`, `quanta::Clock::now`, `crossbeam_epoch::pin`, the
//! drain), and the queued samples were the largest memory that grew with
//! the message rate. Here a sample is a search over the fixed bounds and an
//! add to a thread's [`LocalSamples`], whose counts reach the histogram's
//! relaxed atomics once per read; nothing is queued. The exposition is the same:
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

/// The bucket of a sample: Prometheus buckets hold the samples at or below
/// their bound.
#[inline]
fn bucket(waited_us: u64) -> usize {
    BOUNDS_US
        .iter()
        .position(|&bound| waited_us <= bound)
        .unwrap_or(BOUNDS)
}

/// Samples gathered on one thread, then added to a [`LatencyHistogram`] in
/// one go: at saturation the two atomic adds per answer were half of the
/// collector's own time (2% of the relay's CPU); added per read, the
/// sixteen or so answers of one read cost two or three.
#[derive(Debug, Clone, Copy)]
pub struct LocalSamples {
    counts: [u32; BOUNDS + 1],
    sum_us: u64,
    /// How many were recorded (the sum of `counts`, kept so that an empty
    /// batch is told with one compare).
    samples: u32,
}

impl LocalSamples {
    pub const EMPTY: LocalSamples = LocalSamples {
        counts: [0; BOUNDS + 1],
        sum_us: 0,
        samples: 0,
    };

    /// Records one request answered after `waited_us` microseconds.
    #[inline]
    pub fn record_us(&mut self, waited_us: u64) {
        self.counts[bucket(waited_us)] += 1;
        self.sum_us += waited_us;
        self.samples += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.samples == 0
    }

    /// Adds what was gathered to `histogram`, if anything, and starts over.
    pub fn flush_into(&mut self, histogram: &LatencyHistogram) {
        if !self.is_empty() {
            histogram.add(self);
            *self = Self::EMPTY;
        }
    }
}

impl LatencyHistogram {
    /// Adds samples gathered elsewhere.
    fn add(&self, samples: &LocalSamples) {
        for (count, &local) in self.counts.iter().zip(&samples.counts) {
            if local > 0 {
                count.fetch_add(u64::from(local), Ordering::Relaxed);
            }
        }
        self.sum_us.fetch_add(samples.sum_us, Ordering::Relaxed);
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

    impl LatencyHistogram {
        /// One sample straight into the histogram: what the tests compare
        /// gathered samples against.
        fn record_us(&self, waited_us: u64) {
            self.counts[bucket(waited_us)].fetch_add(1, Ordering::Relaxed);
            self.sum_us.fetch_add(waited_us, Ordering::Relaxed);
        }
    }

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

    /// Samples gathered locally and added render exactly as the same
    /// samples recorded one by one, added twice included.
    #[test]
    fn local_samples_add_up_to_the_same_histogram() {
        let waits = [0, 1_000, 1_001, 2_500, 40_000, 61_000_000, 7, 1_000];
        let direct = LatencyHistogram::default();
        let gathered = LatencyHistogram::default();
        for half in waits.chunks(4) {
            let mut local = LocalSamples::EMPTY;
            assert!(local.is_empty());
            for &us in half {
                direct.record_us(us);
                local.record_us(us);
            }
            assert!(!local.is_empty());
            gathered.add(&local);
        }
        assert_eq!(rendered(&gathered), rendered(&direct));
        assert!(rendered(&direct)[BOUNDS + 2].ends_with(" 8"));
    }
}
