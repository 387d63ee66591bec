//! The stratum-proxy daemon: wiring, signals, shutdown and exit codes.
//!
//! Exit codes: 0 after a clean shutdown, 2 for a configuration error (the
//! systemd unit does not restart on it), 1 when the proxy cannot start or
//! when a second SIGINT/SIGTERM during the drain made it exit at once.

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use smol::{Executor, Timer};

use stratum_proxy::cli::{self, Command};
use stratum_proxy::config::{self, Config};
use stratum_proxy::http::{App, HttpServer};
use stratum_proxy::metrics::schema::build_recorder;
use stratum_proxy::metrics::{Collector, CollectorOptions};
use stratum_proxy::relay::{Pools, Server};
use stratum_proxy::reload::Reloader;
use stratum_proxy::{demo, logging, reactor, sdnotify};

/// Exit code when a second SIGINT/SIGTERM cut the drain short.
const EXIT_SECOND_SIGNAL: u8 = 1;
/// How often the exporter's upkeep runs (drains histogram samples).
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);
/// How often shutdown checks whether the last relay has finished.
const DRAIN_POLL_INTERVAL: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    // The unit's ProcSubset=pid hides /proc/stat (boot time), so the start
    // time is taken here rather than computed from /proc at scrape time.
    stratum_proxy::metrics::process::record_start();
    let top = cli::parse_from_env();
    if top.version {
        // Ignore a closed pipe (`stratum-proxy --version | head -c1`).
        let _ = writeln!(std::io::stdout(), "{}", cli::VERSION_LINE);
        return ExitCode::SUCCESS;
    }
    match &top.command {
        Some(Command::CheckConfig(_)) => cli::check_config(
            &top,
            &config::process_env,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Some(Command::Demo(args)) => demo(args),
        None => match top.load_config(&config::process_env) {
            Err(errors) => {
                cli::report_config_errors(&errors, &mut std::io::stderr());
                ExitCode::from(cli::EXIT_CONFIG_ERROR)
            }
            Ok(config) => run(config, top.flag_layer()),
        },
    }
}

/// Runs the proxy until SIGINT/SIGTERM and the drain that follows; `flags`
/// are kept for reloads (SIGHUP).
fn run(config: Config, flags: config::FlagLayer) -> ExitCode {
    if let Err(e) = logging::init(config.log_level, config.log_format) {
        eprintln!("stratum-proxy: cannot set up logging: {e}");
        return ExitCode::FAILURE;
    }
    let recorder = Arc::new(build_recorder());
    let prometheus = recorder.handle();
    let specs = config.pool_specs();
    let collector = Arc::new(Collector::new(
        recorder,
        CollectorOptions {
            pools: specs.iter().map(|spec| spec.name.clone()).collect(),
            client_id: config.client_id,
            client_id_cap: config.client_id_cap,
            request_timeout: config.request_timeout,
            health_interval: config.health_interval,
        },
    ));
    // The core owns pool choice and health; the collector hears of changes.
    let pools = Pools::with_routes(
        specs,
        config.routes.clone(),
        config.health_policy(),
        Box::new(collector.clone()),
    );
    let executor = Arc::new(Executor::new());
    let (stop_workers, workers_stopped) = smol::channel::bounded::<()>(1);
    let workers: Vec<_> = (1..config.threads)
        .map(|n| {
            let executor = executor.clone();
            let stopped = workers_stopped.clone();
            std::thread::Builder::new()
                .name(format!("relay-{n}"))
                .spawn(move || reactor::block_on(executor.run(stopped.recv())))
                .expect("spawn relay thread")
        })
        .collect();

    let started = Instant::now();
    let result = reactor::block_on(executor.run(serve(
        &config,
        flags,
        pools,
        collector.clone(),
        prometheus,
        executor.clone(),
        started,
    )));
    drop(stop_workers);
    for worker in workers {
        let _ = worker.join();
    }
    // Dropping the executor drops every relay still open after the grace
    // period; each reports its close (reason `shutdown`).
    drop(executor);
    let code = match result {
        Ok(()) => {
            info!("stopped after {:.1}s", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(message) => {
            error!("{message}");
            ExitCode::FAILURE
        }
    };
    logging::flush();
    code
}

/// Binds, serves and drains; returns when the proxy may exit.
async fn serve(
    config: &Config,
    flags: config::FlagLayer,
    pools: Arc<Pools>,
    collector: Arc<Collector>,
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    executor: Arc<Executor<'static>>,
    started: Instant,
) -> Result<(), String> {
    let server = Server::bind_all(
        &config.listen,
        pools.clone(),
        config.limits(),
        collector.clone(),
    )
    .await
    .map_err(|e| format!("cannot listen for miners on {:?}: {e}", config.listen))?;
    let relay = server.handle();
    let names: Vec<String> = pools
        .status()
        .iter()
        .map(|p| {
            format!(
                "{} ({}, priority {}, weight {})",
                p.spec.name, p.spec.addr, p.spec.priority, p.spec.weight
            )
        })
        .collect();
    info!(
        "listening for miners on {}, relaying to pool{} {}",
        server
            .local_addrs()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(" and "),
        if names.len() == 1 { "" } else { "s" },
        names.join(", ")
    );
    // One reloader for SIGHUP and the admin API's reload action.
    let reloader = Reloader::new(
        flags,
        config::process_env,
        config.clone(),
        pools.clone(),
        relay.clone(),
    );
    let app = Arc::new(App {
        collector: collector.clone(),
        prometheus: prometheus.clone(),
        config: config.effective_json(),
        token: config.metrics_token.clone(),
        started,
        active_connections: Box::new({
            let relay = relay.clone();
            move || relay.active_connections()
        }),
        pools: pools.clone(),
        reloader: Some(reloader.clone()),
    });
    let http = HttpServer::start(config.metrics_listen, config.http_threads, app)
        .map_err(|e| format!("cannot serve metrics on {}: {e}", config.metrics_listen))?;
    info!("serving metrics on http://{}/metrics", http.local_addr());

    spawn_housekeeping(
        prometheus,
        collector.clone(),
        sdnotify::watchdog_interval(),
        Arc::downgrade(&executor),
        started,
    );

    let (stop_tx, stop_rx) = smol::channel::bounded::<&'static str>(1);
    let signals =
        async_signal::Signals::new([async_signal::Signal::Int, async_signal::Signal::Term])
            .map_err(|e| format!("cannot handle signals: {e}"))?;
    executor
        .spawn(async move {
            use smol::stream::StreamExt;
            let mut signals = signals;
            if let Some(Ok(signal)) = signals.next().await {
                let _ = stop_tx.send(signal_name(signal)).await;
            }
            // A second signal during the drain: the operator (or a script
            // repeating Ctrl-C) does not want to wait for the grace period.
            if let Some(Ok(signal)) = signals.next().await {
                warn!(
                    "second {}: exiting at once, open relays are cut",
                    signal_name(signal)
                );
                logging::flush();
                std::process::exit(EXIT_SECOND_SIGNAL.into());
            }
        })
        .detach();
    spawn_reload_on_sighup(&executor, reloader)?;
    if let Err(e) = sdnotify::ready() {
        warn!("cannot notify systemd: {e}");
    }

    let (signal_tx, signal_rx) = smol::channel::bounded::<&'static str>(1);
    server
        .run(executor.clone(), async move {
            if let Ok(signal) = stop_rx.recv().await {
                let _ = signal_tx.try_send(signal);
            }
        })
        .await;
    let signal = signal_rx.try_recv().unwrap_or("stop");

    collector.set_draining();
    let _ = sdnotify::stopping();
    let grace = config.shutdown_grace;
    info!(
        "{signal}: not accepting miners; {} connections may finish within {:.1}s",
        relay.active_connections(),
        grace.as_secs_f64()
    );
    let deadline = Instant::now() + grace;
    while relay.active_connections() > 0 && Instant::now() < deadline {
        Timer::after(DRAIN_POLL_INTERVAL.min(deadline - Instant::now())).await;
    }
    let left = relay.active_connections();
    if left > 0 {
        warn!("grace period over: closing {left} connections");
    }
    http.stop();
    Ok(())
}

/// `SIGHUP` reloads the configuration (see `stratum_proxy::reload`); each
/// reload is logged with what it applied, or why it changed nothing.
fn spawn_reload_on_sighup(executor: &Executor<'static>, reloader: Reloader) -> Result<(), String> {
    let mut hangups = async_signal::Signals::new([async_signal::Signal::Hup])
        .map_err(|e| format!("cannot handle SIGHUP: {e}"))?;
    executor
        .spawn(async move {
            use smol::stream::StreamExt;
            while let Some(Ok(_)) = hangups.next().await {
                // Reading the file blocks: off the relay's threads.
                let outcome = smol::unblock({
                    let reloader = reloader.clone();
                    move || reloader.reload()
                })
                .await;
                match outcome {
                    Ok(done) if done.applied.is_empty() && done.needs_restart.is_empty() => {
                        info!("SIGHUP: configuration reloaded, nothing changed");
                    }
                    Ok(done) => {
                        info!(
                            "SIGHUP: configuration reloaded; applied: {}; needs a restart: {}",
                            list(&done.applied),
                            list(&done.needs_restart)
                        );
                    }
                    Err(e) => {
                        error!("SIGHUP: reload refused, the running configuration is kept: {e}")
                    }
                }
            }
        })
        .detach();
    Ok(())
}

fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "nothing".to_string()
    } else {
        keys.join(", ")
    }
}

fn signal_name(signal: async_signal::Signal) -> &'static str {
    match signal {
        async_signal::Signal::Int => "SIGINT",
        async_signal::Signal::Term => "SIGTERM",
        _ => "signal",
    }
}

/// Exporter upkeep and the hashrate history's samples on a timer, and WATCHDOG=1 while the relay executor runs:
/// each tick schedules a tiny task on it, and systemd is fed only if the
/// previous one ran. (A periodic timer on the executor instead would make
/// the reactor arm a timerfd before every epoll_wait.)
fn spawn_housekeeping(
    prometheus: metrics_exporter_prometheus::PrometheusHandle,
    collector: Arc<Collector>,
    watchdog: Option<Duration>,
    // Weak: main drops the executor at shutdown to close what is left.
    executor: Weak<Executor<'static>>,
    started: Instant,
) {
    let tick = watchdog.map_or(UPKEEP_INTERVAL, |w| w.min(UPKEEP_INTERVAL));
    let heartbeat = Arc::new(AtomicU64::new(0));
    std::thread::Builder::new()
        .name("housekeeping".into())
        .spawn(move || {
            // Woken early when histogram samples pile up (a busy gateway):
            // upkeep drains them, so their memory stays bounded.
            collector.set_upkeep_thread(std::thread::current());
            let mut last_upkeep = Instant::now();
            loop {
                if let (Some(_), Some(executor)) = (watchdog, executor.upgrade()) {
                    let heartbeat = heartbeat.clone();
                    executor
                        .spawn(async move {
                            heartbeat
                                .store(started.elapsed().as_millis() as u64, Ordering::Relaxed);
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
                    if collector.take_upkeep_request() {
                        prometheus.run_upkeep();
                        last_upkeep = Instant::now();
                    }
                }
                if last_upkeep.elapsed() >= UPKEEP_INTERVAL {
                    prometheus.run_upkeep();
                    last_upkeep = Instant::now();
                }
                // The status page's hashrate history (sampled when due).
                collector.sample_history();
                if let Some(interval) = watchdog {
                    let now_ms = started.elapsed().as_millis() as u64;
                    let beat_ms = heartbeat.load(Ordering::Relaxed);
                    // Fed only if the relay executor ran the last heartbeat.
                    if now_ms.saturating_sub(beat_ms)
                        <= interval.as_millis() as u64 + tick.as_millis() as u64
                    {
                        let _ = sdnotify::watchdog();
                    }
                }
            }
        })
        .expect("spawn housekeeping thread");
}

/// `stratum-proxy demo`: pool simulator, proxy and miners in one process,
/// with the real metrics collector as the relay's observer.
fn demo(args: &cli::DemoArgs) -> ExitCode {
    let _ = logging::init(log::LevelFilter::Warn, logging::LogFormat::Text);
    let recorder = Arc::new(build_recorder());
    let prometheus = recorder.handle();
    let collector = Arc::new(Collector::new(
        recorder,
        CollectorOptions {
            pools: vec!["pool-sim".into()],
            client_id: config::DEFAULT_CLIENT_ID,
            client_id_cap: config::DEFAULT_CLIENT_ID_CAP,
            request_timeout: config::DEFAULT_REQUEST_TIMEOUT,
            health_interval: config::DEFAULT_HEALTH_INTERVAL,
        },
    ));
    let upkeep = prometheus.clone();
    let exported = collector.clone();
    let options = demo::DemoOptions {
        miners: args.miners as usize,
        seconds: args.seconds,
        submit_rate: args.submit_rate,
        handle_signals: true,
        on_tick: Some(Arc::new(move || upkeep.run_upkeep())),
        ..Default::default()
    };
    match demo::run(collector, options) {
        Ok(_) => {
            // What a Prometheus scrape of this run would have seen.
            println!("\nexported metrics (excerpt):");
            let mut rendered = prometheus.render();
            exported.render(&mut rendered);
            rendered
                .lines()
                .filter(|l| {
                    !l.starts_with('#')
                        && (l.starts_with("stratum_submits_total")
                            || l.starts_with("stratum_accepted_shares_total")
                            || (l.starts_with("stratum_rejected_shares_total")
                                && !l.ends_with(" 0"))
                            || l.starts_with("stratum_accepted_difficulty_total"))
                        && !l.contains("client_id=\"_unknown\"")
                })
                .for_each(|l| println!("  {l}"));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stratum-proxy demo: {e}");
            ExitCode::FAILURE
        }
    }
}
