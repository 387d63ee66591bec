//! Housekeeping: the work that keeps the exporter and the status page
//! current and tells systemd the relay is alive, on one thread of its own.
//!
//! - The exporter's upkeep (it drains histogram samples) every
//!   [`UPKEEP_INTERVAL`], and earlier when the collector asks (samples pile
//!   up on a busy gateway: their memory stays bounded).
//! - The status page's hashrate history, sampled when due.
//! - `WATCHDOG=1` while the relay executor runs: each tick schedules a tiny
//!   task on it, and systemd is fed only if the previous one ran (see
//!   [`watchdog_fed`]). A periodic timer on the executor instead would make
//!   the reactor arm a timerfd before every `epoll_wait`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use smol::Executor;

use crate::metrics::Collector;
use crate::sdnotify;

/// How often the exporter's upkeep runs (drains histogram samples).
pub const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

/// What the housekeeping thread looks after.
pub struct Housekeeping {
    pub prometheus: PrometheusHandle,
    pub collector: Arc<Collector>,
    /// systemd's `WatchdogSec` (from `WATCHDOG_USEC`), if the unit set one.
    pub watchdog: Option<Duration>,
    /// The relay executor. Weak: `main` drops it at shutdown to close what
    /// is left open.
    pub executor: Weak<Executor<'static>>,
    /// When the proxy started (the heartbeat's clock).
    pub started: Instant,
}

impl Housekeeping {
    /// The time between two ticks: the upkeep interval, or the watchdog's
    /// if shorter.
    fn tick(&self) -> Duration {
        self.watchdog
            .map_or(UPKEEP_INTERVAL, |w| w.min(UPKEEP_INTERVAL))
    }

    /// Starts the thread; it runs until the process exits.
    pub fn spawn(self) -> std::io::Result<()> {
        std::thread::Builder::new()
            .name("housekeeping".into())
            .spawn(move || self.run())
            .map(drop)
    }

    fn run(self) {
        let tick = self.tick();
        let heartbeat = Arc::new(AtomicU64::new(0));
        self.collector.set_upkeep_thread(std::thread::current());
        let mut last_upkeep = Instant::now();
        loop {
            if let (Some(_), Some(executor)) = (self.watchdog, self.executor.upgrade()) {
                let (heartbeat, started) = (heartbeat.clone(), self.started);
                executor
                    .spawn(async move {
                        heartbeat.store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
                    })
                    .detach();
            }
            let next_tick = Instant::now() + tick;
            loop {
                let now = Instant::now();
                if now >= next_tick {
                    break;
                }
                std::thread::park_timeout(next_tick - now);
                if self.collector.take_upkeep_request() {
                    self.prometheus.run_upkeep();
                    last_upkeep = Instant::now();
                }
            }
            if last_upkeep.elapsed() >= UPKEEP_INTERVAL {
                self.prometheus.run_upkeep();
                last_upkeep = Instant::now();
            }
            self.collector.sample_history();
            if let Some(interval) = self.watchdog {
                let now = self.started.elapsed();
                let beat = Duration::from_millis(heartbeat.load(Ordering::Relaxed));
                if watchdog_fed(now, beat, interval, tick) {
                    let _ = sdnotify::watchdog();
                }
            }
        }
    }
}

/// Whether systemd is fed at `now` (since start) when the relay executor
/// last ran a heartbeat at `beat`: only if that was within one watchdog
/// interval and one tick (the heartbeat is scheduled a tick before it is
/// read). A relay executor stuck for longer starves the watchdog, and
/// systemd restarts the proxy.
pub fn watchdog_fed(now: Duration, beat: Duration, interval: Duration, tick: Duration) -> bool {
    now.saturating_sub(beat) <= interval + tick
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn the_watchdog_is_fed_only_while_the_executor_runs_heartbeats() {
        // WatchdogSec=20 → interval 10 s, tick 5 s.
        assert!(watchdog_fed(S(100), S(95), S(10), S(5)));
        assert!(watchdog_fed(S(100), S(85), S(10), S(5)));
        assert!(!watchdog_fed(S(100), S(84), S(10), S(5)));
        // No heartbeat yet: fed during the first interval and tick only.
        assert!(watchdog_fed(S(15), S(0), S(10), S(5)));
        assert!(!watchdog_fed(S(16), S(0), S(10), S(5)));
    }
}
