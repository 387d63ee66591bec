//! Hashrate history: a fixed number of samples of cumulative accepted share
//! difficulty, for the farm, each pool and each client, from which the
//! status page draws its charts and the API its "now / 5 min / 1 h" rates.
//!
//! Why samples of a cumulative sum: one number per series and sample, no
//! per-share work, and any rate over any window is a difference of two
//! samples. The policy (how often, how many) is here; the housekeeping
//! thread in `main.rs` only calls [`History::due`] and records on its
//! tick. Memory is fixed: [`HISTORY_POINTS`] + 1 samples per pool and for
//! the farm, [`CLIENT_POINTS`] + 1 per client (clients are capped by
//! `client_id_cap`, pools by the relay's pool id limit).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between two samples.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(10);
/// Chart points kept per pool and for the farm: one hour at
/// [`SAMPLE_INTERVAL`].
pub const HISTORY_POINTS: usize = 360;
/// Points kept per client: five minutes.
pub const CLIENT_POINTS: usize = 30;
/// The window of the "now" rate.
pub const NOW_WINDOW: Duration = Duration::from_secs(60);
/// The window of the "5 min" rate.
pub const FIVE_MINUTES: Duration = Duration::from_secs(300);
/// The window of the "1 h" rate.
pub const ONE_HOUR: Duration = Duration::from_secs(3600);
/// Hashes per unit of share difficulty.
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    /// Cumulative accepted share difficulty.
    value: f64,
}

/// One series of cumulative accepted difficulty, at most `points` + 1
/// samples (`points` intervals).
#[derive(Debug, Clone)]
pub struct Series {
    samples: VecDeque<Sample>,
    points: usize,
}

impl Series {
    fn new(points: usize) -> Series {
        Series {
            samples: VecDeque::with_capacity(points + 1),
            points,
        }
    }

    fn push(&mut self, at: Instant, value: f64) {
        if self.samples.len() > self.points {
            self.samples.pop_front();
        }
        self.samples.push_back(Sample { at, value });
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is held.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// Hashes per second over about `window` before `now`, given the
    /// cumulative value `current` at `now`: from the oldest sample inside
    /// the window (or the newest one, if all are older); 0 without samples.
    pub fn hashrate(&self, now: Instant, current: f64, window: Duration) -> f64 {
        let inside = self
            .samples
            .iter()
            .find(|s| now.saturating_duration_since(s.at) <= window);
        let Some(from) = inside.or(self.samples.back()) else {
            return 0.0;
        };
        let seconds = now.saturating_duration_since(from.at).as_secs_f64();
        if seconds <= 0.0 {
            return 0.0;
        }
        ((current - from.value) / seconds).max(0.0) * HASHES_PER_DIFFICULTY
    }

    /// Hashes per second since the newest sample, given the cumulative
    /// value `current` at `now` (the chart's live end); `None` within a
    /// second of it.
    pub fn live(&self, now: Instant, current: f64) -> Option<f64> {
        let last = self.samples.back()?;
        let seconds = now.saturating_duration_since(last.at).as_secs_f64();
        (seconds >= 1.0)
            .then(|| ((current - last.value) / seconds).max(0.0) * HASHES_PER_DIFFICULTY)
    }

    /// Hashes per second between consecutive samples, oldest first (at
    /// most `points` values).
    pub fn points(&self) -> Vec<f64> {
        self.samples
            .iter()
            .zip(self.samples.iter().skip(1))
            .map(|(a, b)| {
                let seconds = b.at.saturating_duration_since(a.at).as_secs_f64();
                if seconds <= 0.0 {
                    0.0
                } else {
                    ((b.value - a.value) / seconds).max(0.0) * HASHES_PER_DIFFICULTY
                }
            })
            .collect()
    }
}

/// Cumulative accepted difficulty at one moment: what a sample records.
#[derive(Debug, Clone, Default)]
pub struct Totals {
    /// The whole farm.
    pub farm: f64,
    /// Per pool, by pool id.
    pub pools: Vec<f64>,
    /// Per client id (over every pool).
    pub clients: Vec<(Arc<str>, f64)>,
}

/// The farm's, each pool's and each client's series.
#[derive(Debug, Clone)]
pub struct History {
    started: Instant,
    last: Instant,
    farm: Series,
    pools: Vec<Series>,
    clients: HashMap<Arc<str>, Series>,
}

impl History {
    /// An empty history of the farm and `pools` pools starting at `now`
    /// (every series starts at 0 then).
    pub fn new(now: Instant, pools: usize) -> History {
        let start = || {
            let mut series = Series::new(HISTORY_POINTS);
            series.push(now, 0.0);
            series
        };
        History {
            started: now,
            last: now,
            farm: start(),
            pools: (0..pools).map(|_| start()).collect(),
            clients: HashMap::new(),
        }
    }

    /// Like [`Series::hashrate`]; a series not sampled yet (a client or a
    /// pool that appeared since the last sample) counts from the start.
    pub fn hashrate(
        &self,
        series: Option<&Series>,
        now: Instant,
        current: f64,
        window: Duration,
    ) -> f64 {
        match series {
            Some(series) if !series.is_empty() => series.hashrate(now, current, window),
            _ => {
                let seconds = now.saturating_duration_since(self.started).as_secs_f64();
                if seconds <= 0.0 {
                    0.0
                } else {
                    current.max(0.0) / seconds * HASHES_PER_DIFFICULTY
                }
            }
        }
    }

    /// Whether a sample is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.last) >= SAMPLE_INTERVAL
    }

    /// Records `totals` as of `now`. A series seen for the first time
    /// starts at 0 at the previous sample (pools and clients are
    /// registered with nothing accepted).
    pub fn record(&mut self, now: Instant, totals: &Totals) {
        let previous = self.last;
        let start = |points: usize| {
            let mut series = Series::new(points);
            series.push(previous, 0.0);
            series
        };
        self.farm.push(now, totals.farm);
        while self.pools.len() < totals.pools.len() {
            self.pools.push(start(HISTORY_POINTS));
        }
        for (series, value) in self.pools.iter_mut().zip(&totals.pools) {
            series.push(now, *value);
        }
        for (client, value) in &totals.clients {
            self.clients
                .entry(client.clone())
                .or_insert_with(|| start(CLIENT_POINTS))
                .push(now, *value);
        }
        self.last = now;
    }

    /// The farm's series.
    pub fn farm(&self) -> &Series {
        &self.farm
    }

    /// Pool `id`'s series, once sampled.
    pub fn pool(&self, id: usize) -> Option<&Series> {
        self.pools.get(id)
    }

    /// A client's series, once sampled.
    pub fn client(&self, id: &str) -> Option<&Series> {
        self.clients.get(id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn totals(farm: f64, pools: &[f64]) -> Totals {
        Totals {
            farm,
            pools: pools.to_vec(),
            clients: vec![(Arc::from("alice"), farm)],
        }
    }

    #[test]
    fn memory_is_fixed_whatever_the_uptime() {
        let t0 = Instant::now();
        let mut history = History::new(t0, 1);
        // Ten hours of samples.
        for i in 1..=3600u64 {
            let now = t0 + SAMPLE_INTERVAL * i as u32;
            assert!(history.due(now));
            history.record(now, &totals(i as f64, &[i as f64, 0.0]));
            assert!(!history.due(now));
        }
        assert_eq!(history.farm().len(), HISTORY_POINTS + 1);
        assert_eq!(history.pool(0).unwrap().len(), HISTORY_POINTS + 1);
        assert_eq!(history.pool(0).unwrap().points().len(), HISTORY_POINTS);
        assert_eq!(history.client("alice").unwrap().len(), CLIENT_POINTS + 1);
    }

    #[test]
    fn rates_are_differences_of_samples_over_their_window() {
        let t0 = Instant::now();
        let mut history = History::new(t0, 1);
        // 1 difficulty per second for 10 minutes, then 3 per second.
        let mut value = 0.0;
        let mut now = t0;
        for i in 1..=120u32 {
            now = t0 + SAMPLE_INTERVAL * i;
            value += if i <= 60 { 10.0 } else { 30.0 };
            history.record(now, &totals(value, &[value]));
        }
        let farm = history.farm();
        assert_eq!(
            farm.hashrate(now, value, NOW_WINDOW),
            3.0 * HASHES_PER_DIFFICULTY
        );
        assert_eq!(
            farm.hashrate(now, value, FIVE_MINUTES),
            3.0 * HASHES_PER_DIFFICULTY
        );
        // 20 minutes: 10 at 1/s and 10 at 3/s.
        assert_eq!(
            farm.hashrate(now, value, ONE_HOUR),
            2.0 * HASHES_PER_DIFFICULTY
        );
        let points = history.pool(0).unwrap().points();
        assert_eq!(points.len(), 120);
        assert_eq!(points[0], HASHES_PER_DIFFICULTY);
        assert_eq!(points[119], 3.0 * HASHES_PER_DIFFICULTY);
        let later = now + Duration::from_secs(5);
        assert_eq!(
            farm.live(later, value + 10.0),
            Some(2.0 * HASHES_PER_DIFFICULTY)
        );
        assert_eq!(farm.live(now + Duration::from_millis(500), value), None);
    }

    #[test]
    fn a_pool_added_later_starts_at_zero_at_the_previous_sample() {
        let t0 = Instant::now();
        let mut history = History::new(t0, 1);
        let t1 = t0 + SAMPLE_INTERVAL;
        history.record(t1, &totals(5.0, &[5.0]));
        let t2 = t1 + SAMPLE_INTERVAL;
        history.record(t2, &totals(15.0, &[5.0, 10.0]));
        let added = history.pool(1).unwrap();
        assert_eq!(added.points(), vec![HASHES_PER_DIFFICULTY]);
        assert_eq!(Series::new(3).hashrate(t2, 1.0, NOW_WINDOW), 0.0);
        // Not sampled yet: from the start.
        let rate = history.hashrate(None, t0 + Duration::from_secs(4), 2.0, NOW_WINDOW);
        assert_eq!(rate, 0.5 * HASHES_PER_DIFFICULTY);
    }
}
