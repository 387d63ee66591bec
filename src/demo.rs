//! `stratum-proxy demo`: pool-sim, the relay and miner-sims in one process.
//!
//! Everything runs on loopback with port 0 on an explicit executor: a
//! simulated pool, the relay in front of it reporting to the caller's
//! observer (the metrics collector in `main.rs`), and a few simulated miners
//! submitting through the relay. A live line is printed every second and a
//! summary at the end; the run is bounded by `seconds` and ends early (still
//! gracefully) on SIGINT or SIGTERM.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_signal::{Signal, Signals};
use serde::Serialize;
use smol::stream::StreamExt;
use smol::{Executor, Timer};

use crate::relay::{Limits, Observer, PoolAddr, Server};
use crate::sim::RejectCode;
use crate::sim::miner::{MinerConfig, MinerSim, RoundTrips, Totals};
use crate::sim::pool::{PoolConfig, PoolSim, PoolStats};

/// Default number of simulated miners.
pub const DEFAULT_MINERS: usize = 5;
/// Default run time.
pub const DEFAULT_SECONDS: f64 = 30.0;
/// Default submits per second per miner.
pub const DEFAULT_SUBMIT_RATE: f64 = 2.0;
/// Executor threads used by the demo.
const DEMO_THREADS: usize = 2;
/// Interval between live lines.
const TICK: Duration = Duration::from_secs(1);

/// A hook called once per second on the demo's executor (for example to run
/// the metrics exporter's upkeep); it must not block.
pub type TickHook = Arc<dyn Fn() + Send + Sync>;

/// What the demo runs.
#[derive(Clone)]
pub struct DemoOptions {
    /// Number of simulated miners.
    pub miners: usize,
    /// How long the miners submit, in seconds.
    pub seconds: f64,
    /// Submits per second per miner.
    pub submit_rate: f64,
    /// How the simulated pool behaves.
    pub pool: PoolConfig,
    /// Stop early on SIGINT/SIGTERM (off in tests).
    pub handle_signals: bool,
    /// Called every second, after the live line.
    pub on_tick: Option<TickHook>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            miners: DEFAULT_MINERS,
            seconds: DEFAULT_SECONDS,
            submit_rate: DEFAULT_SUBMIT_RATE,
            pool: PoolConfig {
                difficulty: 4096.0,
                notify_interval: Some(Duration::from_secs(5)),
                reject_ratio: 0.03,
                reject_codes: vec![RejectCode::JobNotFound, RejectCode::LowDifficulty],
                latency: Duration::from_millis(20),
            },
            handle_signals: true,
            on_tick: None,
        }
    }
}

impl std::fmt::Debug for DemoOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoOptions")
            .field("miners", &self.miners)
            .field("seconds", &self.seconds)
            .field("submit_rate", &self.submit_rate)
            .field("pool", &self.pool)
            .field("handle_signals", &self.handle_signals)
            .field("on_tick", &self.on_tick.is_some())
            .finish()
    }
}

/// What a demo run did.
#[derive(Debug, Clone, Serialize)]
pub struct DemoSummary {
    /// Where pool-sim listened.
    pub pool_addr: SocketAddr,
    /// Where the relay listened.
    pub proxy_addr: SocketAddr,
    /// Wall time of the run, in seconds.
    pub elapsed_seconds: f64,
    /// Ended early by SIGINT/SIGTERM.
    pub interrupted: bool,
    /// The miners' totals.
    pub miners: Totals,
    /// Submit round trips through the relay.
    pub round_trips: RoundTrips,
    /// The pool's counters.
    pub pool: PoolStats,
}

/// Runs the demo, printing to standard output; see [`run_with_output`].
pub fn run<O: Observer>(observer: Arc<O>, options: DemoOptions) -> io::Result<DemoSummary> {
    run_with_output(observer, options, &mut io::stdout())
}

/// Runs pool-sim, the relay (reporting to `observer`) and the miners until
/// the miners are done; prints a live line per second and a summary to `out`.
pub fn run_with_output<O: Observer, W: Write + Send>(
    observer: Arc<O>,
    options: DemoOptions,
    out: &mut W,
) -> io::Result<DemoSummary> {
    if !(options.seconds.is_finite() && options.seconds >= 0.0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "demo seconds must be 0 or more",
        ));
    }
    let executor = Arc::new(Executor::new());
    let (shutdown, until) = smol::channel::bounded::<()>(1);
    let helpers: Vec<_> = (1..DEMO_THREADS)
        .map(|i| {
            let executor = executor.clone();
            let until = until.clone();
            std::thread::Builder::new()
                .name(format!("demo-{i}"))
                .spawn(move || crate::reactor::block_on(executor.run(until.recv())))
        })
        .collect::<io::Result<_>>()?;
    let result = crate::reactor::block_on(executor.run(demo(&executor, observer, options, out)));
    shutdown.close();
    for helper in helpers {
        let _ = helper.join();
    }
    result
}

async fn demo<O: Observer, W: Write>(
    executor: &Arc<Executor<'static>>,
    observer: Arc<O>,
    options: DemoOptions,
    out: &mut W,
) -> io::Result<DemoSummary> {
    let started = Instant::now();
    let localhost: SocketAddr = ([127, 0, 0, 1], 0).into();
    let pool = PoolSim::start(executor, localhost, options.pool.clone())?;
    let server = Server::bind(
        localhost,
        PoolAddr::from(pool.local_addr()),
        Limits::default(),
        observer,
    )
    .await?;
    let proxy_addr = server.local_addr();
    let relay = server.handle();
    let (stop_relay, relay_stopped) = smol::channel::bounded::<()>(1);
    let relay_task = executor.spawn(server.run(executor.clone(), async move {
        let _ = relay_stopped.recv().await;
    }));
    writeln!(
        out,
        "demo: pool-sim on {}, stratum-proxy on {proxy_addr}, {} miners submitting {}/s each for {} s",
        pool.local_addr(),
        options.miners,
        options.submit_rate,
        options.seconds
    )?;
    out.flush()?;

    let mut config = MinerConfig::new(proxy_addr, options.miners);
    config.accounts = vec!["alice".into(), "bob".into(), "carol".into()];
    config.rate_per_second = options.submit_rate;
    config.duration = Some(Duration::from_secs_f64(options.seconds));
    config.configure = true;
    let fleet = MinerSim::start(executor, config);
    let stop = fleet.stop_handle();
    let live = fleet.live_counters();

    let mut signals = if options.handle_signals {
        Some(Signals::new([Signal::Int, Signal::Term])?)
    } else {
        None
    };
    let mut interrupted = false;
    let report = {
        let ticker = async {
            let mut tick = 0u64;
            loop {
                tick += 1;
                Timer::at(started + TICK * tick as u32).await;
                let now = live.snapshot();
                let _ = writeln!(
                    out,
                    "[{tick:>4}s] miners connected {}/{}  proxy connections {}  submits {}  accepted {}  rejected {}",
                    now.connected,
                    options.miners,
                    relay.active_connections(),
                    now.submits,
                    now.accepted,
                    now.rejected
                );
                let _ = out.flush();
                if let Some(hook) = &options.on_tick {
                    hook();
                }
            }
        };
        let on_signal = async {
            match signals.as_mut() {
                Some(signals) => {
                    let _ = signals.next().await;
                    interrupted = true;
                    // Stop submitting; the miners then end gracefully.
                    stop.stop();
                }
                None => std::future::pending::<()>().await,
            }
            std::future::pending::<()>().await
        };
        let background = async {
            smol::future::or(ticker, on_signal).await;
            unreachable!("the ticker and the signal watcher never end")
        };
        smol::future::or(fleet.finish(), background).await
    };
    stop_relay.close();
    relay_task.await;

    let summary = DemoSummary {
        pool_addr: pool.local_addr(),
        proxy_addr,
        elapsed_seconds: started.elapsed().as_secs_f64(),
        interrupted,
        miners: report.totals,
        round_trips: report.round_trips,
        pool: pool.stats(),
    };
    let m = &summary.miners;
    writeln!(
        out,
        "demo: {} miners, {} submits, {} accepted, {} rejected (stale {}, low difficulty {}, other {}), \
         {} jobs, round trip p50 {:.1} ms p99 {:.1} ms, {} bytes up, {} bytes down{}",
        m.miners,
        m.submits,
        m.accepted,
        m.rejected.total(),
        m.rejected.job_not_found,
        m.rejected.low_difficulty,
        m.rejected.total() - m.rejected.job_not_found - m.rejected.low_difficulty,
        m.notifies,
        summary.round_trips.p50_ms,
        summary.round_trips.p99_ms,
        m.bytes_sent,
        m.bytes_received,
        if interrupted { " (interrupted)" } else { "" }
    )?;
    out.flush()?;
    Ok(summary)
}
