//! stratum-bench: measures a Stratum relay process between an in-process
//! pool and a fleet of miners (not installed on the gateway).
//!
//! The relay under test (the *target*) is started by the caller
//! (`benches/compare.sh`), listening on `--target` and forwarding to
//! `127.0.0.1:--pool-port`, where this program starts its pool. Given
//! `--target-pid`, it reports from /proc the target's CPU time per relayed
//! message, resident memory per miner connection and wakeups; from the
//! miners it reports submit round trips, notify fan-out and a byte-exact
//! cross-check of every connection (miner digests against pool digests, both
//! ways). `--target direct` connects the miners straight to the pool, as the
//! baseline. Every scenario also reports this program's own CPU use over
//! the window (`gen_cpu_pct`, getrusage; 100% = its whole core, and then the
//! figures measure the generator, not the target). Output: one human line,
//! then one JSON line. Exit status 1 when the cross-check fails or miners
//! did not all connect.
//!
//! Two generators:
//! - **the simulators** (`sim::pool`, `sim::miner` on one smol executor) for
//!   steady (1000 miners over 100 accounts, `accountK.workerN`), scale,
//!   idle and the outages: realistic sessions at modest rates.
//! - **the flood generator** (`flood`: one thread, its own sockets and epoll
//!   loop) for saturation, burst and burst9500. Why: with the simulators
//!   every target moved ~200k msg/s in saturation (BENCHMARKS.md run 7): a
//!   task wakeup, a write and a read per line, serde per line, FNV-1a per
//!   byte. The flood generator writes every line a connection may send in
//!   one call; measured (indicative: 2 shared cores, builds running beside)
//!   it reaches 10.5–12M msg/s with no relay (`direct`), 32 lines per write
//!   and 0.063 of its own system calls per line, and HAProxy moved
//!   2.0–6.0M msg/s through it at 0.14–0.16 µs of HAProxy CPU per message.
//!   In the bursts the simulators timed the fan-out as pool-queue →
//!   miner-read inside one executor, so the executor's own scheduling of
//!   5000 tasks dominated (143–164 ms p99 for every target, direct
//!   included); the flood generator takes the kernel's receive time of the
//!   notify (`SO_TIMESTAMPNS`) against the pool's send time of that
//!   connection: direct is then a few µs at p99.
//!
//! Two scenarios take a second, backup pool (`--backup-pool-port`): in
//! `failover` the primary pool dies (every connection closed, new ones
//! refused), in `stall` it hangs (connections stay open, nothing comes back,
//! notifies every 10 s before). The miners reconnect at once when dropped,
//! as firmware does. Reported: the time from the outage until 50%, 99% and
//! 100% of miners hold a job from the backup (their first `mining.notify`
//! on a connection made after the outage) and until they have a share
//! accepted again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argh::FromArgs;
use serde_json::{Value, json};
use smol::{Executor, Timer};
use stratum_proxy::sim::miner::{FleetReport, MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{ConnectionRecord, PoolConfig, PoolSim, PoolStats};

mod digest;
mod flood;
mod procfs;
mod stamp;

use procfs::{Sample, clock_ticks_per_second, rss_kib, window_json};

/// Poll interval while waiting for miners to connect or notifies to go out.
const POLL_INTERVAL: Duration = Duration::from_millis(50);
/// Pause after the last miner authorized, before measuring.
const SETTLE: Duration = Duration::from_secs(2);
/// Extra bound on every wait beyond what the scenario needs.
const SLACK: Duration = Duration::from_secs(60);
/// Pause between starting the pools and the miners in the failover scenarios.
const POOLS_SETTLE: Duration = Duration::from_secs(3);
/// Accounts the steady scenario's miners are spread over (a hosting farm).
const STEADY_ACCOUNTS: usize = 100;

/// Benchmark one Stratum relay process (or the pool directly) in a scenario.
#[derive(FromArgs)]
struct Args {
    /// steady, scale, burst, burst9500, saturation, idle, failover or stall
    #[argh(option)]
    scenario: String,
    /// loopback port of the backup pool (failover and stall scenarios)
    #[argh(option)]
    backup_pool_port: Option<u16>,
    /// address the target listens on, or "direct" for the pool itself
    #[argh(option)]
    target: String,
    /// loopback port the bench's pool listens on (the target forwards there)
    #[argh(option)]
    pool_port: u16,
    /// process id of the target, for /proc figures (none for direct)
    #[argh(option)]
    target_pid: Option<u32>,
    /// name of the target in the output (default: the --target value)
    #[argh(option)]
    name: Option<String>,
    /// short windows and fewer miners, for a smoke run
    #[argh(switch)]
    quick: bool,
    /// override the scenario's miner count
    #[argh(option)]
    miners: Option<usize>,
    /// override the scenario's measured window, in seconds
    #[argh(option)]
    seconds: Option<f64>,
    /// new miner connections per second (default 2000)
    #[argh(option, default = "2000.0")]
    connect_rate: f64,
    /// override the scenario's accounts (steady: 100, others: 1): the miners
    /// are spread over them round-robin, each a `client_id` with its own series
    #[argh(option)]
    accounts: Option<usize>,
}

/// What a scenario runs.
#[derive(Debug, Clone)]
struct Plan {
    miners: usize,
    /// Submits per second per miner; 0 = as fast as the pipeline allows.
    rate: f64,
    pipeline: usize,
    notify_interval: Option<Duration>,
    window: Duration,
    /// Miners authorize and then stay silent.
    idle: bool,
    /// Run on the flood generator (see `flood`) instead of the simulators.
    flood: Option<flood::Mode>,
    /// Accounts the miners are spread over (`accountK.workerN`); 0: one, `account`.
    accounts: usize,
    /// Take the primary pool out (failover scenarios); `window` bounds the wait.
    outage: Option<Outage>,
}

/// How the primary pool fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Killed: connections closed, new ones refused.
    Kill,
    /// Hung: connections open, silent.
    Hang,
}

fn plan(args: &Args) -> Result<Plan, String> {
    let q = args.quick;
    let mut plan = match args.scenario.as_str() {
        "steady" => Plan {
            miners: if q { 200 } else { 1000 },
            rate: 1.0,
            pipeline: 1,
            notify_interval: Some(Duration::from_secs(5)),
            window: Duration::from_secs(if q { 5 } else { 20 }),
            idle: false,
            flood: None,
            accounts: STEADY_ACCOUNTS,
            outage: None,
        },
        "scale" => Plan {
            // 2 fds per miner in each process under a 20,000 open-files limit.
            miners: if q { 1000 } else { 9500 },
            rate: 0.2,
            pipeline: 1,
            notify_interval: Some(Duration::from_secs(5)),
            window: Duration::from_secs(if q { 5 } else { 20 }),
            idle: false,
            flood: None,
            accounts: 0,
            outage: None,
        },
        "burst" | "burst9500" => Plan {
            // burst9500: 2 fds per miner in this process, under 20,000.
            miners: match (q, args.scenario.as_str()) {
                (true, "burst") => 500,
                (true, _) => 1000,
                (false, "burst") => 5000,
                (false, _) => 9500,
            },
            rate: 0.0,
            pipeline: 1,
            notify_interval: None,
            window: Duration::ZERO,
            idle: true,
            flood: Some(flood::Mode::Burst),
            accounts: 0,
            outage: None,
        },
        "saturation" => Plan {
            miners: 50,
            rate: 0.0,
            pipeline: 32,
            notify_interval: None,
            window: Duration::from_secs(if q { 3 } else { 10 }),
            idle: false,
            flood: Some(flood::Mode::Flood {
                pipeline: 32,
                window: Duration::ZERO,
            }),
            accounts: 0,
            outage: None,
        },
        "idle" => Plan {
            miners: if q { 200 } else { 1000 },
            rate: 0.0,
            pipeline: 1,
            notify_interval: None,
            window: Duration::from_secs(if q { 3 } else { 10 }),
            idle: true,
            flood: None,
            accounts: 0,
            outage: None,
        },
        "failover" => Plan {
            miners: if q { 200 } else { 1000 },
            rate: 1.0,
            pipeline: 1,
            notify_interval: Some(Duration::from_secs(5)),
            window: Duration::from_secs(if q { 20 } else { 60 }),
            idle: false,
            flood: None,
            accounts: 0,
            outage: Some(Outage::Kill),
        },
        "stall" => Plan {
            miners: if q { 200 } else { 1000 },
            rate: 1.0,
            pipeline: 1,
            // Pools send a job every 10 s or so: the stall is judged from it.
            notify_interval: Some(Duration::from_secs(10)),
            window: Duration::from_secs(if q { 40 } else { 60 }),
            idle: false,
            flood: None,
            accounts: 0,
            outage: Some(Outage::Hang),
        },
        other => {
            return Err(format!(
                "unknown scenario {other:?}: use steady, scale, burst, burst9500, saturation, idle, failover or stall"
            ));
        }
    };
    if let Some(n) = args.miners {
        plan.miners = n.max(1);
    }
    if let Some(n) = args.accounts {
        plan.accounts = n;
    }
    if let Some(s) = args.seconds {
        if !(s.is_finite() && s >= 0.0) {
            return Err("--seconds must be 0 or more".into());
        }
        plan.window = Duration::from_secs_f64(s);
    }
    if let Some(flood::Mode::Flood { pipeline, window }) = &mut plan.flood {
        *pipeline = plan.pipeline;
        *window = plan.window;
    }
    Ok(plan)
}

/// Lines the pool received (miner → pool).
fn lines_up(s: &PoolStats) -> u64 {
    s.subscribes
        + s.authorizes
        + s.configures
        + s.extranonce_subscribes
        + s.suggest_difficulties
        + s.submits
        + s.unknown_methods
        + s.other_messages
        + s.garbage_lines
}

/// Lines the pool wrote (pool → miner).
fn lines_down(s: &PoolStats) -> u64 {
    s.responses_sent + s.notifies_sent + s.set_difficulty_sent
}

/// The `q`-th quantile (0.0–1.0) of sorted microseconds, in milliseconds.
pub(crate) fn quantile_ms(sorted_us: &[u64], q: f64) -> Option<f64> {
    if sorted_us.is_empty() {
        return None;
    }
    let i = ((sorted_us.len() - 1) as f64 * q).round() as usize;
    Some(sorted_us[i.min(sorted_us.len() - 1)] as f64 / 1000.0)
}

/// Byte-exact check: each pool record against the miner with the same user.
struct CrossCheck {
    matched: u64,
    mismatched: u64,
    missing: u64,
}

fn cross_check(fleet: &FleetReport, records: &[ConnectionRecord]) -> CrossCheck {
    let by_user: HashMap<&str, &ConnectionRecord> = records
        .iter()
        .filter_map(|r| r.user.as_deref().map(|u| (u, r)))
        .collect();
    let mut check = CrossCheck {
        matched: 0,
        mismatched: 0,
        missing: 0,
    };
    for miner in &fleet.miners {
        match by_user.get(miner.user.as_str()) {
            Some(r) if r.received == miner.sent && r.sent == miner.received => check.matched += 1,
            Some(_) => check.mismatched += 1,
            None => check.missing += 1,
        }
    }
    check
}

async fn wait_for(deadline: Instant, mut done: impl FnMut() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        Timer::after(POLL_INTERVAL).await;
    }
    true
}

/// Milliseconds from `since` until each miner held a job (`notify`) or had a
/// share accepted on a connection made at or after `since`; `None` for a
/// miner that never did.
fn after_outage(report: &FleetReport, since: Instant, accept: bool) -> Vec<Option<u64>> {
    report
        .miners
        .iter()
        .map(|m| {
            m.session_times
                .iter()
                .filter(|t| t.connected_at >= since)
                .filter_map(|t| {
                    if accept {
                        t.first_accept_at
                    } else {
                        t.first_notify_at
                    }
                })
                .min()
                .map(|at| (at - since).as_millis() as u64)
        })
        .collect()
}

/// 50%, 99% and 100% of `times` (ms), counting missing ones as never.
fn outage_quantiles(times: &[Option<u64>]) -> serde_json::Value {
    let mut done: Vec<u64> = times.iter().flatten().copied().collect();
    done.sort_unstable();
    let n = times.len();
    let at = |q: f64| {
        let k = ((n as f64 * q).ceil() as usize).max(1);
        done.get(k - 1).copied()
    };
    json!({
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "p100_ms": at(1.0),
        "done": done.len(),
        "of": n,
    })
}

/// The failover scenarios: see the module docs.
async fn run_outage(
    executor: &Arc<Executor<'static>>,
    args: &Args,
    plan: &Plan,
    outage: Outage,
) -> Result<serde_json::Value, String> {
    let primary_addr: SocketAddr = ([127, 0, 0, 1], args.pool_port).into();
    let backup_port = args
        .backup_pool_port
        .ok_or("the failover scenarios need --backup-pool-port")?;
    let backup_addr: SocketAddr = ([127, 0, 0, 1], backup_port).into();
    let target: SocketAddr = args
        .target
        .parse()
        .map_err(|e| format!("--target {:?}: {e}", args.target))?;
    let pool_config = PoolConfig {
        notify_interval: plan.notify_interval,
        ..PoolConfig::default()
    };
    let primary = PoolSim::start(executor, primary_addr, pool_config.clone())
        .map_err(|e| format!("primary cannot listen on {primary_addr}: {e}"))?;
    let backup = PoolSim::start(executor, backup_addr, pool_config)
        .map_err(|e| format!("backup cannot listen on {backup_addr}: {e}"))?;
    // The target was started before these pools listened: let its health
    // checks see both up (HAProxy: rise 2 × inter 1 s) before any miner
    // connects, or it would send them all to the backup from the start.
    Timer::after(POOLS_SETTLE).await;
    let connect_time = Duration::from_secs_f64(plan.miners as f64 / args.connect_rate.max(1.0));
    let mut config = MinerConfig::new(target, plan.miners);
    config.rate_per_second = plan.rate;
    config.connect_per_second = args.connect_rate;
    config.response_timeout = Duration::from_secs(30);
    config.reconnect = true;
    let fleet = MinerSim::start(executor, config);
    let ready = wait_for(Instant::now() + connect_time + SLACK, || {
        primary.stats().authorizes >= plan.miners as u64
            && fleet.live().connected >= plan.miners as u64
    })
    .await;
    Timer::after(SETTLE).await;
    // Let the relay learn the primary's notify interval before it hangs.
    if outage == Outage::Hang {
        Timer::after(plan.notify_interval.unwrap_or_default() * 2).await;
    }
    let backup_before = backup.stats().authorizes;
    let sample0 = Sample::take(None);
    let since = Instant::now();
    match outage {
        Outage::Kill => primary.kill(),
        Outage::Hang => primary.set_silent(true),
    }
    let moved = wait_for(since + plan.window, || {
        backup.stats().authorizes >= backup_before + plan.miners as u64
    })
    .await;
    // Until every moved miner had a share accepted (bounded).
    let accepted_before = backup.stats().accepted;
    wait_for(Instant::now() + Duration::from_secs(5), || {
        backup.stats().accepted >= accepted_before + plan.miners as u64
    })
    .await;
    let sample1 = Sample::take(None);
    fleet.stop();
    let report = fleet.finish().await;
    let jobs = after_outage(&report, since, false);
    let shares = after_outage(&report, since, true);
    let name = args.name.clone().unwrap_or_else(|| args.target.clone());
    let job = outage_quantiles(&jobs);
    let ok = ready && moved && job["done"] == json!(plan.miners);
    let window = window_json(&sample0, &sample1, 0, clock_ticks_per_second());
    Ok(json!({
        "scenario": args.scenario,
        "target": name,
        "ok": ok,
        "window_s": window["window_s"],
        "gen_cpu_pct": window["gen_cpu_pct"],
        "miners": plan.miners,
        "all_connected": ready,
        "all_moved": moved,
        "job_from_backup": job,
        "share_accepted_on_backup": outage_quantiles(&shares),
        "backup_connections": backup.stats().connections,
    }))
}

async fn run(executor: &Arc<Executor<'static>>, args: &Args, plan: &Plan) -> Result<Value, String> {
    if let Some(outage) = plan.outage {
        return run_outage(executor, args, plan, outage).await;
    }
    let pool_addr: SocketAddr = ([127, 0, 0, 1], args.pool_port).into();
    let target = target_addr(args, pool_addr)?;
    let pid = args.target_pid;
    let rss_idle = pid.and_then(rss_kib);
    let pool = PoolSim::start(
        executor,
        pool_addr,
        PoolConfig {
            notify_interval: plan.notify_interval,
            ..PoolConfig::default()
        },
    )
    .map_err(|e| format!("pool cannot listen on {pool_addr}: {e}"))?;
    let records_rx = pool.records();

    let connect_time = Duration::from_secs_f64(plan.miners as f64 / args.connect_rate.max(1.0));
    let mut config = MinerConfig::new(target, plan.miners);
    if plan.accounts > 0 {
        config.accounts = (0..plan.accounts).map(|k| format!("account{k}")).collect();
    }
    config.rate_per_second = plan.rate;
    config.pipeline = plan.pipeline;
    config.idle = plan.idle;
    config.connect_per_second = args.connect_rate;
    config.response_timeout = Duration::from_secs(30);
    // A safety bound only: the bench stops the fleet itself.
    config.duration = Some(connect_time + SETTLE + plan.window + SLACK);
    let fleet = MinerSim::start(executor, config);

    let ready = wait_for(Instant::now() + connect_time + SLACK, || {
        pool.stats().authorizes >= plan.miners as u64
            && fleet.live().connected >= plan.miners as u64
    })
    .await;
    Timer::after(SETTLE).await;
    let rss_loaded = pid.and_then(rss_kib);

    let ticks = clock_ticks_per_second();
    let s0 = pool.stats();
    let sample0 = Sample::take(pid);
    Timer::after(plan.window).await;
    let s1 = pool.stats();
    let sample1 = Sample::take(pid);

    fleet.stop();
    let report = fleet.finish().await;
    let connected = pool.stats().connections;
    let mut records = Vec::new();
    let deadline = Instant::now() + SLACK;
    while (records.len() as u64) < connected && Instant::now() < deadline {
        let next = smol::future::or(async { records_rx.recv().await.ok() }, async {
            Timer::at(deadline).await;
            None
        })
        .await;
        match next {
            Some(r) => records.push(r),
            None => break,
        }
    }
    let check = cross_check(&report, &records);

    let up = lines_up(&s1) - lines_up(&s0);
    let down = lines_down(&s1) - lines_down(&s0);
    let rss_per_miner_kib = match (rss_idle, rss_loaded) {
        (Some(idle), Some(loaded)) => {
            Some((loaded as f64 - idle as f64) / plan.miners.max(1) as f64)
        }
        _ => None,
    };
    let mut rtts: Vec<u64> = report
        .miners
        .iter()
        .flat_map(|m| m.round_trips_us.iter().copied())
        .collect();
    rtts.sort_unstable();
    let name = args.name.clone().unwrap_or_else(|| args.target.clone());
    let ok = ready
        && report.totals.errors == 0
        && check.matched == plan.miners as u64
        && check.mismatched == 0;
    let mut result = json!({
        "scenario": args.scenario,
        "target": name,
        "generator": "sim",
        "ok": ok,
        "miners": plan.miners,
        "accounts": plan.accounts.max(1),
        "all_connected": ready,
        "miner_errors": report.totals.errors,
        "messages_up": up,
        "messages_down": down,
        "submits_total": report.totals.submits,
        "pool_submits_total": pool.stats().submits,
        "rss_idle_kib": rss_idle,
        "rss_loaded_kib": rss_loaded,
        "rss_per_miner_kib": rss_per_miner_kib,
        "rtt_count": rtts.len(),
        "rtt_p50_ms": quantile_ms(&rtts, 0.50),
        "rtt_p99_ms": quantile_ms(&rtts, 0.99),
        "rtt_p999_ms": quantile_ms(&rtts, 0.999),
        "bytes_match": check.matched,
        "bytes_mismatch": check.mismatched,
        "bytes_missing": check.missing,
    });
    if let (Some(result), Value::Object(window)) = (
        result.as_object_mut(),
        window_json(&sample0, &sample1, up + down, ticks),
    ) {
        result.extend(window);
    }
    Ok(result)
}

/// Where the miners connect: the target, or the pool itself for "direct".
fn target_addr(args: &Args, pool: SocketAddr) -> Result<SocketAddr, String> {
    if args.target == "direct" {
        return Ok(pool);
    }
    args.target
        .parse()
        .map_err(|e| format!("--target {:?}: {e}", args.target))
}

/// The saturation and burst scenarios, on the flood generator (no executor).
fn run_flood(args: &Args, plan: &Plan, mode: flood::Mode) -> Result<Value, String> {
    let pool: SocketAddr = ([127, 0, 0, 1], args.pool_port).into();
    flood::run(&flood::Setup {
        scenario: args.scenario.clone(),
        name: args.name.clone().unwrap_or_else(|| args.target.clone()),
        target: target_addr(args, pool)?,
        pool,
        target_pid: args.target_pid,
        miners: plan.miners,
        connect_per_second: args.connect_rate,
        settle: SETTLE,
        slack: SLACK,
        mode,
    })
}

fn fmt(v: &serde_json::Value, key: &str) -> String {
    match v.get(key).and_then(|x| x.as_f64()) {
        Some(x) => format!("{x:.3}"),
        None => "-".into(),
    }
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let plan = match plan(&args) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("stratum-bench: {e}");
            return ExitCode::from(2);
        }
    };
    let result = match plan.flood {
        Some(mode) => run_flood(&args, &plan, mode),
        None => {
            let executor = Arc::new(Executor::new());
            smol::block_on(executor.run(run(&executor, &args, &plan)))
        }
    };
    match result {
        Ok(v) if v.get("job_from_backup").is_some() => {
            let q = |k: &str, p: &str| match v[k][p].as_u64() {
                Some(ms) => format!("{ms}"),
                None => "never".into(),
            };
            println!(
                "{} {}: ok={} miners={} job from backup p50/p99/p100 ms={}/{}/{} share accepted p50/p99/p100 ms={}/{}/{} gen_cpu%={}",
                v["scenario"].as_str().unwrap_or(""),
                v["target"].as_str().unwrap_or(""),
                v["ok"],
                v["miners"],
                q("job_from_backup", "p50_ms"),
                q("job_from_backup", "p99_ms"),
                q("job_from_backup", "p100_ms"),
                q("share_accepted_on_backup", "p50_ms"),
                q("share_accepted_on_backup", "p99_ms"),
                q("share_accepted_on_backup", "p100_ms"),
                fmt(&v, "gen_cpu_pct"),
            );
            println!("{v}");
            if v["ok"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Ok(v) => {
            println!(
                "{} {}: ok={} miners={} msgs/s={} cpu_us/msg={} rss_kib/miner={} rtt p50/p99/p999 ms={}/{}/{} fanout p50/p99/max ms={}/{}/{} (p99 from first send {}) wakeups/s={} gen_cpu%={} bytes match={}/{}",
                v["scenario"].as_str().unwrap_or(""),
                v["target"].as_str().unwrap_or(""),
                v["ok"],
                v["miners"],
                fmt(&v, "messages_per_s"),
                fmt(&v, "cpu_us_per_msg"),
                fmt(&v, "rss_per_miner_kib"),
                fmt(&v, "rtt_p50_ms"),
                fmt(&v, "rtt_p99_ms"),
                fmt(&v, "rtt_p999_ms"),
                fmt(&v, "fanout_p50_ms"),
                fmt(&v, "fanout_p99_ms"),
                fmt(&v, "fanout_max_ms"),
                fmt(&v, "fanout_from_first_p99_ms"),
                fmt(&v, "wakeups_per_s"),
                fmt(&v, "gen_cpu_pct"),
                v["bytes_match"],
                v["miners"],
            );
            println!("{v}");
            for error in v["errors"].as_array().into_iter().flatten() {
                eprintln!("stratum-bench: {}", error.as_str().unwrap_or_default());
            }
            if v["ok"].as_bool() == Some(true) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("stratum-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
