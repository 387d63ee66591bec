//! The daemon end to end: the real binary between the simulators, checked
//! through its own `/metrics`, `/status`, `/healthz`, logs, sd_notify and
//! exit codes.

mod daemon;
mod runner;

use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use daemon::{Proxy, SimRuntime, WAIT, http, temp_path};
use rustix::process::Signal;
use serde_json::Value;
use stratum_proxy::sim::RejectCode;
use stratum_proxy::sim::miner::{FleetReport, MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

const DIFFICULTY: f64 = 512.0;

fn pool(rt: &SimRuntime, config: PoolConfig) -> PoolSim {
    PoolSim::start(&rt.executor, "127.0.0.1:0".parse().unwrap(), config).expect("pool-sim")
}

fn fleet(proxy: &Proxy, miners: usize, accounts: &[&str], submits: u64) -> MinerConfig {
    let mut config = MinerConfig::new(proxy.listen, miners);
    config.accounts = accounts.iter().map(|a| a.to_string()).collect();
    config.rate_per_second = 100.0;
    config.submits = Some(submits);
    config
}

fn run_fleet(rt: &SimRuntime, config: MinerConfig) -> FleetReport {
    let sim = MinerSim::start(&rt.executor, config);
    smol::block_on(sim.finish())
}

#[test]
fn metrics_equal_simulator_ground_truth() {
    let rt = SimRuntime::new();
    let pool = pool(
        &rt,
        PoolConfig {
            difficulty: DIFFICULTY,
            notify_interval: Some(Duration::from_millis(100)),
            reject_ratio: 0.25,
            reject_codes: vec![
                RejectCode::JobNotFound,
                RejectCode::Duplicate,
                RejectCode::LowDifficulty,
                RejectCode::Unauthorized,
            ],
            latency: Duration::ZERO,
        },
    );
    let proxy = Proxy::start(pool.local_addr(), &["--log-level", "info"], &[]);
    let mut config = fleet(&proxy, 6, &["alice", "bob", "carol"], 40);
    config.configure = true;
    let report = run_fleet(&rt, config);
    assert_eq!(
        report.totals.errors,
        0,
        "{:?}",
        report.miners.iter().map(|m| &m.error).collect::<Vec<_>>()
    );
    assert_eq!(report.totals.submits, 240);
    assert_eq!(report.totals.unanswered, 0);

    let m = proxy.scrape_until("every connection closed", |m| {
        m.sum("stratum_connection_duration_seconds_count", &[]) == 6.0
    });
    assert_eq!(m.sum("stratum_active_connections", &[]), 0.0);
    assert_eq!(m.sum("stratum_connections_total", &[]), 6.0);
    assert_eq!(m.sum("stratum_connect_latency_seconds_count", &[]), 6.0);
    assert_eq!(
        m.sum("stratum_bytes_sent_total", &[]),
        report.totals.bytes_sent as f64
    );
    assert_eq!(
        m.sum("stratum_bytes_received_total", &[]),
        report.totals.bytes_received as f64
    );
    assert_eq!(m.sum("stratum_parse_failures_total", &[]), 0.0);
    assert_eq!(m.sum("stratum_pending_requests", &[]), 0.0);
    assert_eq!(m.sum("stratum_expired_requests_total", &[]), 0.0);
    // Every response the miners got was correlated with its request.
    assert_eq!(
        m.sum("stratum_request_response_seconds_count", &[]),
        report.totals.responses as f64
    );
    assert_eq!(
        m.sum(
            "stratum_request_response_seconds_count",
            &[("method", "mining.submit")]
        ),
        240.0
    );

    for account in ["alice", "bob", "carol"] {
        let mine: Vec<_> = report
            .miners
            .iter()
            .filter(|r| r.user.starts_with(&format!("{account}.")))
            .collect();
        assert_eq!(mine.len(), 2);
        let client = [("client_id", account)];
        let submits: u64 = mine.iter().map(|r| r.submits_sent).sum();
        let accepted: u64 = mine.iter().map(|r| r.accepted).sum();
        let rejected = |f: fn(&stratum_proxy::sim::RejectCounts) -> u64| -> f64 {
            mine.iter().map(|r| f(&r.rejected)).sum::<u64>() as f64
        };
        assert_eq!(
            m.sum("stratum_submits_total", &client),
            submits as f64,
            "{account}"
        );
        assert_eq!(
            m.sum("stratum_accepted_shares_total", &client),
            accepted as f64,
            "{account}"
        );
        assert_eq!(
            m.sum("stratum_accepted_difficulty_total", &client),
            accepted as f64 * DIFFICULTY,
            "{account}"
        );
        assert_eq!(m.sum("stratum_current_difficulty", &client), DIFFICULTY);
        for (reason, count) in [
            ("stale", rejected(|r| r.job_not_found)),
            ("duplicate", rejected(|r| r.duplicate)),
            ("low_difficulty", rejected(|r| r.low_difficulty)),
            ("unauthorized", rejected(|r| r.unauthorized)),
            ("other", rejected(|r| r.other)),
        ] {
            assert_eq!(
                m.sum(
                    "stratum_rejected_shares_total",
                    &[("client_id", account), ("reason", reason)]
                ),
                count,
                "{account} {reason}"
            );
        }
    }
    // The simulators agree with each other too, and something was rejected.
    let stats = pool.stats();
    assert_eq!(stats.submits, 240);
    assert_eq!(stats.accepted, report.totals.accepted);
    assert_eq!(m.sum("stratum_rejected_shares_total", &[]), 60.0);
    assert_eq!(
        m.sum("stratum_submits_total", &[("client_id", "_unknown")]),
        0.0
    );
    assert_eq!(
        m.sum(
            "stratum_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        assert!(m.has(name), "{name} missing");
    }
}

#[test]
fn http_endpoints_status_health_errors_and_token() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    let proxy = Proxy::start(pool.local_addr(), &["--metrics-token", "tok-123"], &[]);

    let (status, body) = proxy.get("/healthz");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("pool reachable"), "{body}");
    assert_eq!(proxy.get("/nope").0, 404);
    assert_eq!(http(proxy.metrics, "POST", "/metrics", &[]).0, 405);
    assert_eq!(proxy.get("/metrics").0, 401);
    assert_eq!(proxy.get("/status").0, 401);
    let auth = [("Authorization", "Bearer tok-123")];
    let (status, text) = http(proxy.metrics, "GET", "/metrics", &auth);
    assert_eq!(status, 200);
    assert!(text.contains("# HELP stratum_connections_total"), "{text}");
    assert_eq!(
        http(
            proxy.metrics,
            "GET",
            "/metrics",
            &[("Authorization", "Bearer wrong")]
        )
        .0,
        401
    );

    let report = run_fleet(&rt, fleet(&proxy, 2, &["dave"], 5));
    assert_eq!(report.totals.accepted, 10);
    let (status, body) = http(proxy.metrics, "GET", "/status", &auth);
    assert_eq!(status, 200);
    let status: Value = serde_json::from_str(&body).expect("status is JSON");
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["config"]["pool"], pool.local_addr().to_string());
    assert_eq!(status["config"]["metrics_token"], "********");
    assert!(!body.contains("tok-123"));
    assert_eq!(status["connections"]["total"], 2);
    let dave = status["clients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == "dave")
        .cloned();
    let dave = dave.expect("dave in /status");
    assert_eq!(dave["submits"], 10);
    assert_eq!(dave["accepted"], 10);
    assert!(status["uptime_seconds"].as_f64().unwrap() > 0.0);
}

#[test]
fn healthz_turns_503_when_every_upstream_attempt_fails() {
    // A port with nothing listening: bind, read the port, close.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let proxy = Proxy::start(dead, &["--log-level", "info"], &[]);
    proxy.wait_for_log("is not reachable yet");
    let (status, body) = proxy.get("/healthz");
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("unreachable"), "{body}");
    let m = proxy.scrape();
    assert_eq!(m.sum("stratum_pool_reachable", &[]), 0.0);
}

#[test]
fn password_never_appears_in_logs_status_or_metrics() {
    const MARKER: &str = "pw-5e2b9d71-do-not-log";
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    for format in ["journald", "json", "text"] {
        let proxy = Proxy::start(
            pool.local_addr(),
            &["--log-level", "trace", "--log-format", format],
            &[],
        );
        let mut config = fleet(&proxy, 2, &["erin"], 3);
        config.password = MARKER.into();
        let report = run_fleet(&rt, config);
        assert_eq!(report.totals.accepted, 6);
        proxy.scrape_until("connections closed", |m| {
            m.sum("stratum_connection_duration_seconds_count", &[]) == 2.0
        });
        proxy.wait_for_log("closed by");
        let log = proxy.log_text();
        let (_, status) = proxy.get("/status");
        let (_, metrics) = proxy.get("/metrics");
        for (what, text) in [("log", &log), ("/status", &status), ("/metrics", &metrics)] {
            assert!(
                !text.contains(MARKER),
                "password in {what} ({format}):\n{text}"
            );
            // No raw JSON-RPC line: the method may be a label, its params never.
            assert!(
                !text.contains("\"params\""),
                "a raw message in {what} ({format})"
            );
        }
        // Connection lines carry the id and peer.
        let opened = proxy.wait_for_log(" opened");
        assert!(
            opened.contains("conn=") && opened.contains("peer=127.0.0.1:"),
            "{opened}"
        );
        if format == "journald" {
            assert!(
                opened.starts_with("<6>"),
                "info line without priority: {opened}"
            );
            assert!(
                log.lines().all(|l| l.starts_with('<')),
                "unprefixed line:\n{log}"
            );
        }
        if format == "json" {
            for line in log.lines() {
                let v: Value =
                    serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line}"));
                assert!(v["level"].is_string() && v["msg"].is_string(), "{line}");
            }
        }
    }
}

/// Receives sd_notify datagrams until one equals `want` (bounded).
fn expect_notify(socket: &UnixDatagram, want: &str) {
    let deadline = Instant::now() + WAIT;
    let mut buf = [0u8; 512];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let text = String::from_utf8_lossy(&buf[..n]);
            if text.lines().any(|l| l == want) {
                return;
            }
        }
    }
    panic!("no {want} from the proxy");
}

fn notify_socket() -> (UnixDatagram, String) {
    let path = temp_path("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind notify socket");
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    (socket, path.to_string_lossy().into_owned())
}

fn wait_connected(sim: &MinerSim, n: u64) {
    let deadline = Instant::now() + WAIT;
    while sim.live().connected < n || sim.live().accepted < n {
        assert!(Instant::now() < deadline, "miners did not connect");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn the_systemd_watchdog_is_fed_while_the_relay_runs() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    let (notify, notify_path) = notify_socket();
    // WatchdogSec=0.4 s: fed every 0.2 s while the relay executor runs
    // the housekeeping thread's heartbeats.
    let mut proxy = Proxy::start(
        pool.local_addr(),
        &[],
        &[("NOTIFY_SOCKET", &notify_path), ("WATCHDOG_USEC", "400000")],
    );
    expect_notify(&notify, "READY=1");
    for _ in 0..3 {
        expect_notify(&notify, "WATCHDOG=1");
    }
    proxy.signal(Signal::TERM);
    assert_eq!(proxy.wait_exit(), Some(0), "{}", proxy.log_text());
    let _ = std::fs::remove_file(notify_path);
}

#[test]
fn sigterm_lets_open_relays_finish_then_exits_zero() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    let (notify, notify_path) = notify_socket();
    let mut proxy = Proxy::start(pool.local_addr(), &[], &[("NOTIFY_SOCKET", &notify_path)]);
    expect_notify(&notify, "READY=1");

    let mut config = fleet(&proxy, 3, &["frank"], u64::MAX);
    config.submits = None;
    config.duration = Some(Duration::from_millis(1500));
    config.rate_per_second = 20.0;
    let sim = MinerSim::start(&rt.executor, config);
    wait_connected(&sim, 3);
    proxy.signal(Signal::TERM);
    expect_notify(&notify, "STOPPING=1");
    proxy.wait_for_log("SIGTERM: not accepting miners");
    // The listener is closed: a new miner is not accepted.
    assert!(
        std::net::TcpStream::connect(proxy.listen).is_err(),
        "listener still open after SIGTERM"
    );

    let report = smol::block_on(sim.finish());
    assert_eq!(proxy.wait_exit(), Some(0), "{}", proxy.log_text());
    // No relay was cut: every miner finished its session and got every answer.
    assert_eq!(report.totals.errors, 0);
    assert_eq!(report.totals.unanswered, 0);
    assert!(report.miners.iter().all(|m| m.eof));
    assert!(report.totals.submits > 3);
    let log = proxy.log_text();
    assert!(!log.contains("grace period over"), "{log}");
    let _ = std::fs::remove_file(notify_path);
}

#[test]
fn grace_period_expiry_closes_remaining_relays_and_exits_zero() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    let mut proxy = Proxy::start(pool.local_addr(), &["--shutdown-grace-seconds", "0.3"], &[]);
    let mut config = fleet(&proxy, 3, &["gina"], u64::MAX);
    config.submits = None;
    config.duration = Some(Duration::from_secs(60));
    config.rate_per_second = 5.0;
    let sim = MinerSim::start(&rt.executor, config);
    wait_connected(&sim, 3);
    proxy.signal(Signal::INT);
    assert_eq!(proxy.wait_exit(), Some(0), "{}", proxy.log_text());
    let log = proxy.log_text();
    assert!(
        log.contains("grace period over: closing 3 connections"),
        "{log}"
    );
    assert_eq!(log.matches("closed by Proxy: shutdown").count(), 3, "{log}");
    // The miners see their connections end although they wanted to go on.
    let report = smol::block_on(sim.finish());
    assert!(
        report.miners.iter().all(|m| m.eof || m.error.is_some()),
        "{:?}",
        report.miners
    );
}

#[test]
fn a_second_signal_during_the_drain_exits_at_once() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    // The largest grace: without the second signal the drain would wait 40 s.
    let mut proxy = Proxy::start(pool.local_addr(), &["--shutdown-grace-seconds", "40"], &[]);
    let mut config = fleet(&proxy, 2, &["ivy"], u64::MAX);
    config.submits = None;
    config.duration = Some(Duration::from_secs(120));
    config.rate_per_second = 5.0;
    let sim = MinerSim::start(&rt.executor, config);
    wait_connected(&sim, 2);
    proxy.signal(Signal::TERM);
    proxy.wait_for_log("SIGTERM: not accepting miners; 2 connections");
    proxy.signal(Signal::INT);
    // Exit code 1 (cut short) rather than 0 after the grace period.
    assert_eq!(proxy.wait_exit(), Some(1), "{}", proxy.log_text());
    let log = proxy.log_text();
    assert!(log.contains("second SIGINT: exiting at once"), "{log}");
    assert!(!log.contains("grace period over"), "{log}");
    let report = smol::block_on(sim.finish());
    assert!(report.miners.iter().all(|m| m.eof || m.error.is_some()));
}

#[test]
fn a_grace_beyond_the_units_stop_timeout_is_refused() {
    let output = runner::command(env!("CARGO_BIN_EXE_stratum-proxy"))
        .args([
            "check-config",
            "--pool",
            "127.0.0.1:1",
            "--shutdown-grace-seconds",
            "41",
        ])
        .output()
        .expect("run check-config");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("shutdown_grace_seconds") && stderr.contains("0 to 40"),
        "{stderr}"
    );
}

#[test]
fn silent_http_clients_neither_grow_threads_nor_stall_the_relay() {
    let rt = SimRuntime::new();
    let pool = pool(&rt, PoolConfig::default());
    let proxy = Proxy::start(pool.local_addr(), &[], &[]);
    let threads = || {
        std::fs::read_dir(format!("/proc/{}/task", proxy.child.id()))
            .expect("proc task dir")
            .count()
    };
    // Warm up first, so `before` counts every thread a working proxy has:
    // some start after the addresses are logged (housekeeping, the pool
    // probe) or on first use (the deadline sweeper). Counted right after
    // start, `before` was sometimes 7 instead of 11 and the bound too tight.
    let report = run_fleet(&rt, fleet(&proxy, 2, &["hank"], 4));
    assert_eq!(report.totals.errors, 0);
    proxy.wait_for_log("is reachable");
    assert_eq!(proxy.get("/healthz").0, 200);
    let before = threads();
    // Hostile clients: connect to the metrics port and never send a byte.
    let silent: Vec<std::net::TcpStream> = (0..50)
        .map(|_| std::net::TcpStream::connect(proxy.metrics).expect("connect metrics port"))
        .collect();
    // The relay is used while they hang on.
    let report = run_fleet(&rt, fleet(&proxy, 4, &["hank"], 10));
    assert_eq!(report.totals.errors, 0);
    assert_eq!(report.totals.accepted, 40);
    // The most threads seen while the clients hang on: tiny_http's readers
    // come and go, so sample for a second rather than once.
    let mut during = threads();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(20));
        during = during.max(threads());
    }
    // The gate reads heads itself; tiny_http (a thread per connection)
    // sees only complete requests, at most MAX_HTTP_CONNECTIONS of them.
    assert!(
        during <= before + stratum_proxy::http::MAX_HTTP_CONNECTIONS,
        "threads grew from {before} to {during} with 50 silent HTTP clients"
    );
    drop(silent);
}

#[test]
fn repeated_pool_flags_fail_over_to_the_backup_and_report_the_pools() {
    let rt = SimRuntime::new();
    let backup = pool(&rt, PoolConfig::default());
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // `--pool` given twice: the primary (dead), then the backup.
    let proxy = Proxy::start(
        dead,
        &[
            "--pool",
            &backup.local_addr().to_string(),
            "--pool-check-interval-seconds",
            "0.2",
        ],
        &[],
    );
    let report = run_fleet(&rt, fleet(&proxy, 4, &["frank"], 5));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert_eq!(m.sessions, 1, "{}", m.user);
    }
    assert_eq!(report.totals.accepted, 20);
    let primary = dead.to_string();
    let backup_label = backup.local_addr().to_string();
    let m = proxy.scrape_until("the primary down, shares on the backup", |m| {
        m.sum("stratum_pool_reachable", &[("pool_host", &primary)]) == 0.0
            && m.sum(
                "stratum_accepted_shares_total",
                &[("pool_host", &backup_label)],
            ) == 20.0
    });
    assert_eq!(
        m.sum("stratum_pool_reachable", &[("pool_host", &backup_label)]),
        1.0
    );
    assert_eq!(
        m.sum("stratum_accepted_shares_total", &[("pool_host", &primary)]),
        0.0
    );
    let (status, body) = proxy.get("/healthz");
    assert_eq!(status, 200, "{body}");
    let (_, body) = proxy.get("/status");
    let status: Value = serde_json::from_str(&body).unwrap();
    let pools = status["pools"].as_array().expect("pools in /status");
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[0]["address"], primary);
    assert_eq!(pools[0]["state"], "down");
    assert_eq!(pools[0]["priority"], 0);
    assert_eq!(pools[1]["address"], backup_label);
    assert_eq!(pools[1]["state"], "up");
    assert_eq!(pools[1]["priority"], 1);
    proxy.wait_for_log("is down: unreachable");
}

#[test]
fn sighup_adds_a_pool_and_changes_weights_without_closing_anyone_and_refuses_a_bad_file() {
    let rt = SimRuntime::new();
    let a = pool(&rt, PoolConfig::default());
    let b = pool(&rt, PoolConfig::default());
    let file = temp_path("reload.json");
    let write = |pools: serde_json::Value| {
        let config = serde_json::json!({ "pools": pools, "balance_tolerance": 1 });
        std::fs::write(&file, config.to_string()).unwrap();
    };
    write(serde_json::json!([{ "name": "a", "address": a.local_addr().to_string() }]));
    let proxy = Proxy::start_without_pool(&["--config", file.to_str().unwrap()], &[]);
    let mut config = fleet(&proxy, 6, &["gina"], 0);
    config.submits = None;
    config.rate_per_second = 10.0;
    let fleet_a = MinerSim::start(&rt.executor, config);
    let pools_of = |proxy: &Proxy| -> Vec<Value> {
        let (_, body) = proxy.get("/status");
        let status: Value = serde_json::from_str(&body).unwrap();
        status["pools"].as_array().unwrap().clone()
    };
    let miners_on = |pools: &[Value], name: &str| {
        pools
            .iter()
            .find(|p| p["name"] == name)
            .map(|p| p["miners"].as_u64().unwrap())
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while miners_on(&pools_of(&proxy), "a") != Some(6) {
        assert!(
            std::time::Instant::now() < deadline,
            "miners never on pool a"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Add pool b with three times a's weight, and reload.
    write(serde_json::json!([
        { "name": "a", "address": a.local_addr().to_string(), "weight": 1 },
        { "name": "b", "address": b.local_addr().to_string(), "weight": 3 },
    ]));
    proxy.signal(Signal::HUP);
    proxy.wait_for_log("configuration reloaded; applied: pools");
    let pools = pools_of(&proxy);
    assert_eq!(pools.len(), 2, "{pools:?}");
    assert_eq!(pools[1]["weight"], 3);
    // No relayed connection was closed by the reload.
    assert_eq!(miners_on(&pools, "a"), Some(6));
    // New miners go to the pool furthest below its share: b.
    let mut config = fleet(&proxy, 2, &["hank"], 0);
    config.submits = None;
    config.rate_per_second = 10.0;
    let fleet_b = MinerSim::start(&rt.executor, config);
    while miners_on(&pools_of(&proxy), "b") != Some(2) {
        assert!(
            std::time::Instant::now() < deadline,
            "new miners never on pool b"
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // A bad file changes nothing.
    write(serde_json::json!([
        { "name": "a", "address": a.local_addr().to_string() },
        { "name": "a", "address": b.local_addr().to_string() },
    ]));
    proxy.signal(Signal::HUP);
    proxy.wait_for_log("reload refused, the running configuration is kept");
    let pools = pools_of(&proxy);
    assert_eq!(pools.len(), 2);
    assert_eq!(pools[1]["name"], "b");
    assert_eq!(miners_on(&pools, "a"), Some(6));

    fleet_a.stop();
    fleet_b.stop();
    for report in [
        smol::block_on(fleet_a.finish()),
        smol::block_on(fleet_b.finish()),
    ] {
        for m in &report.miners {
            assert_eq!(m.error, None, "{}", m.user);
            assert_eq!(m.sessions, 1, "{} was reconnected", m.user);
        }
    }
}
