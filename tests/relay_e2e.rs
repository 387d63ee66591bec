//! End to end over loopback: miner-sim → relay → pool-sim, thousands of
//! messages both ways. Per connection the bytes each side received equal the
//! bytes the other side sent (length and digest), and the observer's counts
//! equal the simulators' own counts exactly.

mod common;
mod runner;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{Runtime, TestObserver, start_relay, within};
use rustix::process::Signal;
use smol::Timer;
use stratum_proxy::relay::{CloseReason, Direction, Limits};
use stratum_proxy::sim::RejectCode;
use stratum_proxy::sim::miner::{FleetReport, Garbage, MinerConfig, MinerReport, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};
use stratum_proxy::stratum::MAX_LINE_BYTES;

const M2P: Direction = Direction::MinerToPool;
const P2M: Direction = Direction::PoolToMiner;

#[test]
fn sims_through_relay_bytes_and_counts_match_exactly() {
    let rt = Runtime::new(2);
    let pool = PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig {
            difficulty: 2048.0,
            notify_interval: Some(Duration::from_millis(20)),
            reject_ratio: 0.2,
            reject_codes: RejectCode::ALL.to_vec(),
            latency: Duration::from_millis(1),
        },
    )
    .expect("start pool-sim");
    let observer = TestObserver::new(false);
    let relay = start_relay(&rt, pool.local_addr(), Limits::default(), observer.clone());

    // Fleet A: pipelined submits, configure, and one garbage and one
    // over-long line each. Fleet B: every submit with the same id.
    let mut a = MinerConfig::new(relay.addr, 12);
    a.accounts = vec!["alice".into(), "bob".into(), "carol".into()];
    a.rate_per_second = 0.0;
    a.submits = Some(150);
    a.pipeline = 4;
    a.configure = true;
    a.garbage = Garbage {
        non_json_line: true,
        long_line_bytes: MAX_LINE_BYTES + 5_000,
    };
    let mut b = MinerConfig::new(relay.addr, 4);
    b.accounts = vec!["dave".into()];
    b.rate_per_second = 0.0;
    b.submits = Some(100);
    b.same_id = true;
    let fleet_a = MinerSim::start(&rt.executor, a);
    let fleet_b = MinerSim::start(&rt.executor, b);

    let (report_a, report_b) = rt.block_on(async {
        // Clean-jobs bursts while the miners submit: load, not
        // synchronization (every assertion below holds whatever they hit).
        let burster = async {
            for _ in 0..5 {
                Timer::after(Duration::from_millis(15)).await;
                pool.clean_jobs_burst();
            }
            std::future::pending().await
        };
        let finished = async {
            let a = fleet_a.finish().await;
            let b = fleet_b.finish().await;
            (a, b)
        };
        within("the miners", smol::future::or(finished, burster)).await
    });
    let miners: Vec<&MinerReport> = report_a.miners.iter().chain(&report_b.miners).collect();
    let n = miners.len();
    assert_eq!(n, 16);

    let records = rt.block_on(async {
        let rx = pool.records();
        let mut out = Vec::new();
        for _ in 0..n {
            out.push(within("pool records", rx.recv()).await.unwrap());
        }
        out
    });
    let closed = rt.block_on(observer.closed(n));

    // Every miner did its whole run and saw the pool close after it.
    for m in &miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert!(m.authorized && m.eof, "{}", m.user);
        assert_eq!(m.unanswered, 0, "{}", m.user);
        assert_eq!(
            m.mismatched_ids, 0,
            "answers in request order for {}",
            m.user
        );
    }
    let totals = |r: &FleetReport| r.totals.clone();
    let (ta, tb) = (totals(&report_a), totals(&report_b));
    assert_eq!(ta.submits, 12 * 150);
    assert_eq!(tb.submits, 4 * 100);

    // Per connection, matched by user name: bytes equal both ways.
    let by_user: HashMap<_, _> = records
        .iter()
        .map(|r| (r.user.clone().expect("authorized"), r))
        .collect();
    let observed: HashMap<_, _> = closed
        .iter()
        .map(|c| (c.user.clone().expect("user seen"), c))
        .collect();
    assert_eq!(by_user.len(), n);
    assert_eq!(observed.len(), n);
    for m in &miners {
        let record = by_user[&m.user];
        assert_eq!(record.received, m.sent, "miner → pool bytes of {}", m.user);
        assert_eq!(record.sent, m.received, "pool → miner bytes of {}", m.user);
        let c = observed[&m.user];
        assert_eq!(c.reason, CloseReason::MinerClosed, "{}", m.user);
        assert_eq!(c.miner_to_pool_bytes, m.sent.bytes);
        assert_eq!(c.pool_to_miner_bytes, m.received.bytes);
        assert_eq!(c.relayed, [m.sent.bytes, m.received.bytes]);
    }

    // The observer's counts equal the simulators' own counts.
    let stats = pool.stats();
    let counts = observer.counts();
    let sum = |f: fn(&MinerReport) -> u64| miners.iter().map(|m| f(m)).sum::<u64>();
    assert_eq!(counts.accepted, n as u64);
    assert_eq!(counts.closed, n as u64);
    assert_eq!(counts.upstream_connected, n as u64);
    assert_eq!(stats.connections, n as u64);
    assert_eq!(counts.requests(M2P, "mining.configure"), stats.configures);
    assert_eq!(stats.configures, sum(|m| m.configures_sent));
    assert_eq!(counts.requests(M2P, "mining.subscribe"), stats.subscribes);
    assert_eq!(stats.subscribes, sum(|m| m.subscribes_sent));
    assert_eq!(counts.requests(M2P, "mining.authorize"), stats.authorizes);
    assert_eq!(stats.authorizes, sum(|m| m.authorizes_sent));
    assert_eq!(counts.requests(M2P, "mining.submit"), stats.submits);
    assert_eq!(stats.submits, ta.submits + tb.submits);
    assert_eq!(counts.responses[1], stats.responses_sent);
    assert_eq!(stats.responses_sent, ta.responses + tb.responses);
    assert_eq!(counts.responses[0], 0);
    // `true` answers: accepted submits plus the authorize answers.
    assert_eq!(counts.accepted_outcomes, stats.accepted + stats.authorizes);
    assert_eq!(stats.accepted, ta.accepted + tb.accepted);
    assert_eq!(counts.rejected_outcomes, stats.rejected);
    let mut rejected = ta.rejected;
    rejected.merge(&tb.rejected);
    assert_eq!(stats.rejected, rejected);
    assert!(
        stats.rejected.job_not_found > 0
            && stats.rejected.duplicate > 0
            && stats.rejected.low_difficulty > 0
            && stats.rejected.unauthorized > 0
    );
    assert_eq!(
        counts.notifications(P2M, "mining.notify"),
        stats.notifies_sent
    );
    assert_eq!(stats.notifies_sent, ta.notifies + tb.notifies);
    assert_eq!(
        counts.notifications(P2M, "mining.set_difficulty"),
        stats.set_difficulty_sent
    );
    assert_eq!(
        stats.set_difficulty_sent,
        ta.set_difficulty + tb.set_difficulty
    );
    assert_eq!(counts.parse_failures[0], stats.garbage_lines);
    assert_eq!(stats.garbage_lines, sum(|m| m.garbage_lines_sent));
    assert_eq!(stats.garbage_lines, 24);
    assert_eq!(counts.failures_by_kind.get("too_long"), Some(&12));
    assert_eq!(counts.parse_failures[1], 0);
    assert_eq!(counts.bytes[0], stats.bytes_in);
    assert_eq!(stats.bytes_in, ta.bytes_sent + tb.bytes_sent);
    assert_eq!(counts.bytes[1], stats.bytes_out);
    assert_eq!(stats.bytes_out, ta.bytes_received + tb.bytes_received);
    assert_eq!(relay.handle.active_connections(), 0);
}

/// The binaries: pool-sim prints its address first, miner-sim runs through
/// the relay and both print JSON summaries that agree.
#[test]
fn binaries_report_matching_summaries_through_relay() {
    let mut pool = runner::command(env!("CARGO_BIN_EXE_pool-sim"))
        .args(["--listen", "127.0.0.1:0", "--notify-interval-ms", "50"])
        .args(["--reject-ratio", "0.5", "--reject-codes", "21,23"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn pool-sim");
    let mut out = BufReader::new(pool.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    let addr: std::net::SocketAddr = first
        .trim()
        .strip_prefix("listening on ")
        .expect("first line names the address")
        .parse()
        .unwrap();

    let rt = Runtime::new(1);
    let observer = TestObserver::new(false);
    let relay = start_relay(&rt, addr, Limits::default(), observer.clone());
    let miners = runner::command(env!("CARGO_BIN_EXE_miner-sim"))
        .args(["--pool", &relay.addr.to_string(), "--miners", "3"])
        .args(["--rate", "0", "--submits", "40", "--pipeline", "2"])
        .args(["--accounts", "alice,bob"])
        .output()
        .expect("run miner-sim");
    assert!(miners.status.success(), "{miners:?}");
    let summary: serde_json::Value = serde_json::from_slice(&miners.stdout).unwrap();
    rt.block_on(observer.closed(3));

    // SIGTERM ends pool-sim, which then prints its counters.
    runner::signal(&pool, Signal::TERM);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    assert!(pool.wait().unwrap().success());
    let stats: serde_json::Value = serde_json::from_str(&rest).unwrap();

    let totals = &summary["totals"];
    assert_eq!(totals["submits"], 120);
    assert_eq!(stats["submits"], 120);
    assert_eq!(totals["accepted"], 60);
    assert_eq!(stats["accepted"], 60);
    assert_eq!(totals["rejected"]["job_not_found"], 30);
    assert_eq!(totals["rejected"]["low_difficulty"], 30);
    assert_eq!(stats["rejected"], totals["rejected"]);
    assert_eq!(stats["bytes_in"], totals["bytes_sent"]);
    assert_eq!(stats["bytes_out"], totals["bytes_received"]);
    assert_eq!(
        observer.counts().requests(M2P, "mining.submit"),
        120,
        "the relay saw every submit"
    );
}
