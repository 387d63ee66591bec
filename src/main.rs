//! The stratum-proxy daemon's wiring: configuration in, the relay, the
//! collector, the HTTP server, housekeeping, signals and reloads started
//! and joined, exit codes out. The policies live in modules of their own
//! (`housekeeping`, `shutdown`, `reload`).
//!
//! Exit codes: 0 after a clean shutdown, 2 for a configuration error (the
//! systemd unit does not restart on it), 1 when the proxy cannot start or
//! when a second SIGINT/SIGTERM during the drain made it exit at once
//! (`shutdown::EXIT_SECOND_SIGNAL`).

use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use log::{error, info, warn};
use smol::Executor;

use stratum_proxy::cli::{self, Command};
use stratum_proxy::config::{self, Config};
use stratum_proxy::housekeeping::Housekeeping;
use stratum_proxy::http::{App, HttpServer};
use stratum_proxy::metrics::schema::build_recorder;
use stratum_proxy::metrics::{Collector, CollectorOptions};
use stratum_proxy::relay::{Pools, Server};
use stratum_proxy::reload::{self, Reloader};
use stratum_proxy::{demo, logging, reactor, sdnotify, shutdown};

/// Why the proxy could not start (exit code 1).
#[derive(Debug)]
enum StartError {
    Listen(Vec<SocketAddr>, io::Error),
    Metrics(SocketAddr, io::Error),
    Housekeeping(io::Error),
    Signals(io::Error),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::Listen(addrs, e) => write!(f, "cannot listen for miners on {addrs:?}: {e}"),
            StartError::Metrics(addr, e) => write!(f, "cannot serve metrics on {addr}: {e}"),
            StartError::Housekeeping(e) => write!(f, "cannot start the housekeeping thread: {e}"),
            StartError::Signals(e) => write!(f, "cannot handle signals: {e}"),
        }
    }
}

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
        Err(e) => {
            error!("{e}");
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
) -> Result<(), StartError> {
    let server = Server::bind_all(
        &config.listen,
        pools.clone(),
        config.limits(),
        collector.clone(),
    )
    .await
    .map_err(|e| StartError::Listen(config.listen.clone(), e))?;
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
        .map_err(|e| StartError::Metrics(config.metrics_listen, e))?;
    info!("serving metrics on http://{}/metrics", http.local_addr());

    Housekeeping {
        prometheus,
        collector: collector.clone(),
        watchdog: sdnotify::watchdog_interval(),
        // Weak: dropped at shutdown to close what is left open.
        executor: Arc::downgrade(&executor),
        started,
    }
    .spawn()
    .map_err(StartError::Housekeeping)?;
    let stop_rx = shutdown::watch_stop_signals(&executor).map_err(StartError::Signals)?;
    reload::reload_on_sighup(&executor, reloader).map_err(StartError::Signals)?;
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
    let left = shutdown::drain(|| relay.active_connections(), grace).await;
    if left > 0 {
        warn!("grace period over: closing {left} connections");
    }
    http.stop();
    Ok(())
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
