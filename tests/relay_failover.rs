//! Several pools over loopback with the simulators: a primary that is down
//! from the start, killed mid-run, hung (stalled), or that closes before
//! answering; every miner must end up submitting on the backup, and every
//! session must be byte-exact with the pool it was relayed to. Then
//! failback, routes, hashrate balancing, drains and disconnects.
//!
//! Waits are for conditions (bounded by `within`), never fixed sleeps.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use common::{
    Runtime, TestObserver, connect_from, start_relay_on, start_relay_to, unused_port, within,
};
use smol::Timer;
use stratum_proxy::relay::pools::{DownReason, ProbeKind, Route};
use stratum_proxy::relay::{
    CloseReason, HealthPolicy, Limits, PoolAddr, PoolHealth, PoolSpec, Pools,
};
use stratum_proxy::sim::miner::{FleetReport, MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{ConnectionRecord, PoolConfig, PoolSim};

/// Health checks fast enough for a test.
fn fast_policy() -> HealthPolicy {
    HealthPolicy {
        fall: 2,
        rise: 2,
        check_interval: Duration::from_millis(100),
        probe: ProbeKind::Subscribe,
        probe_timeout: Duration::from_secs(1),
        stall_factor: 3.0,
        stall_min: Duration::from_millis(500),
        failover_wait: Duration::from_millis(300),
        failback_after: None,
        move_rate_per_second: 5.0,
        reconnect_message: false,
        balance_tolerance: 0.05,
        rate_min_age: Duration::from_millis(500),
    }
}

fn spec(name: &str, addr: std::net::SocketAddr, priority: u32) -> PoolSpec {
    PoolSpec {
        name: name.into(),
        addr: PoolAddr::from(addr),
        priority,
        weight: 1,
    }
}

fn pool_sim(rt: &Runtime, notify_interval: Duration) -> PoolSim {
    PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig {
            notify_interval: Some(notify_interval),
            ..PoolConfig::default()
        },
    )
    .expect("start pool-sim")
}

/// A primary (priority 0) and a backup (priority 1) pool-sim, notifying
/// every `notify_interval`, behind a relay with `policy`.
struct Rig {
    rt: Runtime,
    primary: PoolSim,
    backup: PoolSim,
    pools: Arc<Pools>,
    observer: Arc<TestObserver>,
    relay: common::Relay,
}

fn rig(notify_interval: Duration, policy: HealthPolicy) -> Rig {
    let rt = Runtime::new(2);
    let primary = pool_sim(&rt, notify_interval);
    let backup = pool_sim(&rt, notify_interval);
    let pools = Pools::new(
        vec![
            spec("primary", primary.local_addr(), 0),
            spec("backup", backup.local_addr(), 1),
        ],
        policy,
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools.clone(), Limits::default(), observer.clone());
    Rig {
        rt,
        primary,
        backup,
        pools,
        observer,
        relay,
    }
}

/// Waits until `condition` holds (checked every 10 ms, bounded by `within`).
async fn eventually(what: &str, condition: impl Fn() -> bool) {
    within(what, async {
        while !condition() {
            Timer::after(Duration::from_millis(10)).await;
        }
    })
    .await;
}

/// The pool's records of connections that authorized (probes do not).
fn records_by_user(pool: &PoolSim) -> HashMap<String, ConnectionRecord> {
    let rx = pool.records();
    let mut out = HashMap::new();
    while let Ok(record) = rx.try_recv() {
        if let Some(user) = record.user.clone() {
            // A later connection of the same miner replaces an earlier one.
            out.insert(user, record);
        }
    }
    out
}

/// Every miner's last session equals the pool's record of it, both ways.
fn assert_byte_exact(report: &FleetReport, records: &HashMap<String, ConnectionRecord>) {
    for m in &report.miners {
        let record = records
            .get(&m.user)
            .unwrap_or_else(|| panic!("{} has no session on the pool", m.user));
        assert_eq!(record.received, m.sent, "miner → pool bytes of {}", m.user);
        assert_eq!(record.sent, m.received, "pool → miner bytes of {}", m.user);
    }
}

#[test]
fn primary_down_from_the_start_every_miner_is_relayed_to_the_backup_unnoticed() {
    let rt = Runtime::new(2);
    let backup = pool_sim(&rt, Duration::from_secs(5));
    let pools = Pools::new(
        vec![
            spec("primary", unused_port(), 0),
            spec("backup", backup.local_addr(), 1),
        ],
        fast_policy(),
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools.clone(), Limits::default(), observer.clone());

    let mut config = MinerConfig::new(relay.addr, 20);
    config.rate_per_second = 0.0;
    config.submits = Some(10);
    let report = rt.block_on(async {
        let fleet = MinerSim::start(&rt.executor, config);
        within("the fleet", fleet.finish()).await
    });
    for m in &report.miners {
        // No miner saw a close or an error, or needed a second connection.
        assert_eq!(m.error, None, "{}", m.user);
        assert_eq!(m.sessions, 1, "{}", m.user);
        assert_eq!(m.accepted, 10, "{}", m.user);
    }
    let closed = rt.block_on(observer.closed(20));
    assert!(
        closed.iter().all(|c| c.reason == CloseReason::MinerClosed),
        "{:?}",
        closed.iter().map(|c| c.reason).collect::<Vec<_>>()
    );
    // The primary was tried (and refused) before it was known to be down.
    assert!(observer.counts().upstream_failed >= 1);
    rt.block_on(eventually("the primary marked down", || {
        pools.status()[0].health == PoolHealth::Down(DownReason::Unreachable)
    }));
    rt.block_on(eventually("the backup's records", || {
        backup.stats().closed >= 20
    }));
    assert_byte_exact(&report, &records_by_user(&backup));
}

#[test]
fn primary_killed_mid_run_every_miner_submits_on_the_backup() {
    let Rig {
        rt,
        primary,
        backup,
        pools,
        observer: _observer,
        relay,
    } = rig(Duration::from_secs(5), fast_policy());

    let mut config = MinerConfig::new(relay.addr, 20);
    config.rate_per_second = 20.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    rt.block_on(async {
        eventually("every miner submitting on the primary", || {
            pools.status()[0].sessions == 20 && primary.stats().submits >= 40
        })
        .await;
        primary.kill();
        eventually("every miner relayed to the backup", || {
            let status = pools.status();
            status[0].sessions == 0 && status[1].sessions == 20
        })
        .await;
        let on_backup = backup.stats().submits;
        eventually("every miner submitting on the backup again", || {
            backup.stats().submits >= on_backup + 40 && backup.stats().authorizes >= 20
        })
        .await;
    });
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert!(m.sessions >= 2, "{} was never moved", m.user);
    }
    // Each miner's last session (on the backup, ended by the miner) is
    // byte-exact with the backup's record of it.
    rt.block_on(eventually("the backup's records", || {
        backup.stats().closed >= 20
    }));
    assert_byte_exact(&report, &records_by_user(&backup));
}

#[test]
fn a_silent_pool_is_detected_as_stalled_and_its_miners_move() {
    let Rig {
        rt,
        primary,
        backup,
        pools,
        observer,
        relay,
    } = rig(Duration::from_millis(100), fast_policy());

    let mut config = MinerConfig::new(relay.addr, 10);
    config.rate_per_second = 20.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    rt.block_on(async {
        eventually("miners on the primary, its notify interval learnt", || {
            let status = pools.status();
            status[0].sessions == 10 && status[0].notify_interval.is_some()
        })
        .await;
        // The pool hangs: connections stay open, nothing comes back.
        primary.set_silent(true);
        eventually("the primary detected as stalled", || {
            pools.status()[0].health == PoolHealth::Down(DownReason::Stalled)
        })
        .await;
        eventually("every miner relayed to the backup", || {
            let status = pools.status();
            status[0].sessions == 0 && status[1].sessions == 10
        })
        .await;
        let on_backup = backup.stats().submits;
        eventually("every miner submitting on the backup", || {
            backup.stats().submits >= on_backup + 20 && backup.stats().authorizes >= 10
        })
        .await;
    });
    // The proxy closed them (their pool was down), not the miners.
    let counts = observer.counts();
    assert!(counts.pool_down_closes >= 10, "{counts:?}");
    // A hung pool answers no probe: it stays down.
    assert_eq!(
        pools.status()[0].health,
        PoolHealth::Down(DownReason::Stalled)
    );
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert!(m.sessions >= 2, "{} was never moved", m.user);
    }
    rt.block_on(eventually("the backup's records", || {
        backup.stats().closed >= 10
    }));
    assert_byte_exact(&report, &records_by_user(&backup));
}

#[test]
fn a_pool_that_closes_before_answering_is_replaced_for_the_same_miner() {
    let rt = Runtime::new(2);
    // Accepts, then closes every connection at once (a proxy with no backend).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(100) {
            drop(stream);
        }
    });
    let backup = pool_sim(&rt, Duration::from_secs(5));
    let pools = Pools::new(
        vec![
            spec("closing", closing, 0),
            spec("backup", backup.local_addr(), 1),
        ],
        HealthPolicy {
            // Keep the closing pool "up": every miner is dialled to it first.
            fall: 100,
            probe: ProbeKind::Off,
            ..fast_policy()
        },
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools.clone(), Limits::default(), observer.clone());
    let mut config = MinerConfig::new(relay.addr, 5);
    config.rate_per_second = 0.0;
    config.submits = Some(5);
    let report = rt.block_on(async {
        let fleet = MinerSim::start(&rt.executor, config);
        within("the fleet", fleet.finish()).await
    });
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert_eq!(m.sessions, 1, "{}", m.user);
        assert_eq!(m.accepted, 5, "{}", m.user);
    }
    let counts = observer.counts();
    // Each miner: connected to the closing pool, then to the backup.
    assert_eq!(counts.upstream_connected, 10, "{counts:?}");
    assert_eq!(counts.upstream_failed, 5, "{counts:?}");
    assert_eq!(counts.reset_failures, 5, "{counts:?}");
    rt.block_on(eventually("the backup's records", || {
        backup.stats().closed >= 5
    }));
    assert_byte_exact(&report, &records_by_user(&backup));
    // Only the backup ever spoke to a miner: the closing pool stays "up"
    // here (fall 100) and is still first in the dial order.
    let (local, peer) = ("127.0.0.1:3333".parse().unwrap(), [127, 0, 0, 1].into());
    assert_eq!(pools.dial_order(local, peer)[0], 0);
}

#[test]
fn failback_waits_for_a_stable_primary_then_moves_miners_at_the_bounded_rate() {
    const MINERS: usize = 20;
    const RATE: f64 = 5.0;
    const FAILBACK_AFTER: Duration = Duration::from_secs(1);
    let Rig {
        rt,
        primary,
        backup: _backup,
        pools,
        observer,
        relay,
    } = rig(
        Duration::from_millis(100),
        HealthPolicy {
            failback_after: Some(FAILBACK_AFTER),
            move_rate_per_second: RATE,
            ..fast_policy()
        },
    );
    let mut config = MinerConfig::new(relay.addr, MINERS);
    config.rate_per_second = 10.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    let up_seen = rt.block_on(async {
        eventually("miners on the primary", || {
            let status = pools.status();
            status[0].sessions == MINERS && status[0].notify_interval.is_some()
        })
        .await;
        primary.set_silent(true);
        eventually("every miner on the backup", || {
            pools.status()[1].sessions == MINERS
        })
        .await;
        // The primary recovers: probes bring it up, failback waits, then moves.
        primary.set_silent(false);
        eventually("the primary up again", || {
            pools.status()[0].health == PoolHealth::Up
        })
        .await;
        let up_seen = std::time::Instant::now();
        eventually("every miner back on the primary", || {
            let status = pools.status();
            status[0].sessions == MINERS && status[1].sessions == 0
        })
        .await;
        up_seen
    });
    let moved = observer.counts().moved_at;
    assert_eq!(moved.len(), MINERS, "each miner moved back once");
    // Not before the primary was stable for the failback time (the pool
    // turned up at most one 10 ms poll before we saw it).
    assert!(
        moved[0] + Duration::from_millis(20) >= up_seen + FAILBACK_AFTER,
        "moved {:?} after the primary came up",
        moved[0].saturating_duration_since(up_seen)
    );
    // Never more than the rate allows: one second's burst plus the rate over
    // any span (a slower machine only moves fewer).
    for (i, first) in moved.iter().enumerate() {
        for (j, last) in moved.iter().enumerate().skip(i) {
            let span = last.duration_since(*first).as_secs_f64();
            let allowed = (RATE * (span + 0.1) + RATE).ceil() as usize;
            let moves = j - i + 1;
            assert!(
                moves <= allowed,
                "{moves} moves within {span:.2}s (rate {RATE}/s)"
            );
        }
    }
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
    }
}

#[test]
fn with_reconnect_message_a_move_is_one_client_reconnect_line_the_miner_obeys() {
    const MINERS: usize = 6;
    let Rig {
        rt,
        primary,
        backup: _backup,
        pools,
        observer,
        relay,
    } = rig(
        Duration::from_millis(100),
        HealthPolicy {
            failback_after: Some(Duration::from_millis(200)),
            move_rate_per_second: 20.0,
            reconnect_message: true,
            // Long enough that only the miner's own leaving ends its session.
            failover_wait: Duration::from_secs(10),
            ..fast_policy()
        },
    );
    let mut config = MinerConfig::new(relay.addr, MINERS);
    config.rate_per_second = 10.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    rt.block_on(async {
        eventually("miners on the primary", || {
            let status = pools.status();
            status[0].sessions == MINERS && status[0].notify_interval.is_some()
        })
        .await;
        // Hung: detected as stalled; its miners are closed (a down pool's
        // miners are always closed, never sent a line).
        primary.set_silent(true);
        eventually("every miner on the backup", || {
            pools.status()[1].sessions == MINERS
        })
        .await;
        assert_eq!(observer.counts().reconnects_sent, 0);
        primary.set_silent(false);
        eventually("every miner back on the primary", || {
            let status = pools.status();
            status[0].sessions == MINERS && status[1].sessions == 0
        })
        .await;
    });
    let counts = observer.counts();
    // One line per moved miner, and each left by itself (no Moved close).
    assert_eq!(counts.reconnects_sent, MINERS as u64, "{counts:?}");
    assert!(counts.moved_at.is_empty(), "{counts:?}");
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
        assert_eq!(m.reconnects_honoured, 1, "{}", m.user);
    }
}

#[test]
fn routes_by_listen_address_and_source_network_send_each_miner_where_they_say() {
    let rt = Runtime::new(2);
    let a = pool_sim(&rt, Duration::from_secs(5));
    let b = pool_sim(&rt, Duration::from_secs(5));
    let c = pool_sim(&rt, Duration::from_secs(5));
    let pools = Pools::with_routes(
        vec![
            spec("a", a.local_addr(), 0),
            spec("b", b.local_addr(), 1),
            spec("c", c.local_addr(), 1),
        ],
        Vec::new(),
        HealthPolicy {
            probe: ProbeKind::Off,
            ..fast_policy()
        },
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let any: std::net::SocketAddr = "127.0.0.1:0".parse().unwrap();
    let relay = start_relay_on(&rt, &[any, any], pools.clone(), Limits::default(), observer);
    let (first, second) = (relay.addrs[0], relay.addrs[1]);
    // Routes can name listen addresses only once they are bound.
    pools
        .reconfigure(
            vec![
                spec("a", a.local_addr(), 0),
                spec("b", b.local_addr(), 1),
                spec("c", c.local_addr(), 1),
            ],
            vec![
                Route {
                    listen: Some(second),
                    source: None,
                    pools: vec!["b".into()],
                },
                Route {
                    listen: None,
                    source: Some("127.0.0.2/32".parse().unwrap()),
                    pools: vec!["c".into()],
                },
            ],
        )
        .unwrap();
    let run = |listen: std::net::SocketAddr, n: usize| {
        let mut config = MinerConfig::new(listen, n);
        config.rate_per_second = 0.0;
        config.submits = Some(3);
        rt.block_on(async {
            within("the fleet", MinerSim::start(&rt.executor, config).finish()).await
        })
    };
    let on_first = run(first, 3);
    let on_second = run(second, 4);
    for m in on_first.miners.iter().chain(&on_second.miners) {
        assert_eq!(m.error, None, "{}", m.user);
        assert_eq!(m.accepted, 3, "{}", m.user);
    }
    // From 127.0.0.2 to the first listener: the source route wins.
    use std::io::{BufRead, BufReader, Write};
    let stream = connect_from([127, 0, 0, 2].into(), first);
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    (&stream)
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .unwrap();
    let mut answer = String::new();
    BufReader::new(&stream).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"id\":1"), "{answer}");
    drop(stream);
    assert_eq!(a.stats().subscribes, 3, "the default: the best priority");
    assert_eq!(b.stats().subscribes, 4, "the second listener's route");
    assert_eq!(c.stats().subscribes, 1, "127.0.0.2's route");
}

#[test]
fn weights_70_30_split_the_hashrate_of_unequal_miners_within_5_percent() {
    let rt = Runtime::new(2);
    let a = pool_sim(&rt, Duration::from_secs(5));
    let b = pool_sim(&rt, Duration::from_secs(5));
    // Equal weights first: the miners spread about half and half.
    let pools = Pools::new(
        vec![spec("a", a.local_addr(), 0), spec("b", b.local_addr(), 0)],
        HealthPolicy {
            probe: ProbeKind::Off,
            move_rate_per_second: 20.0,
            // Long enough that a session's rate is a few shares' worth.
            rate_min_age: Duration::from_secs(2),
            // The proxy balances on its own estimate of each miner's rate,
            // whole miners at a time (a fast one is 9% of the farm here):
            // aiming within 3 points keeps the pools' truth within 5.
            balance_tolerance: 0.03,
            ..fast_policy()
        },
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools.clone(), Limits::default(), observer);
    // Unequal miners: 8 fast (40 shares/s) and 24 slow (5 shares/s), all of
    // one difficulty, so shares per second is hashrate.
    let fleet = |rate: f64, n: usize, account: &str| {
        let mut config = MinerConfig::new(relay.addr, n);
        config.rate_per_second = rate;
        config.accounts = vec![account.into()];
        config.reconnect = true;
        MinerSim::start(&rt.executor, config)
    };
    let fast = fleet(40.0, 8, "fast");
    let slow = fleet(5.0, 24, "slow");
    rt.block_on(eventually("every miner relayed", || {
        pools.status().iter().map(|p| p.sessions).sum::<usize>() == 32
    }));
    // Now 70/30: only moving whole miners can get there.
    pools.set_weight_priority("a", Some(70), None).unwrap();
    pools.set_weight_priority("b", Some(30), None).unwrap();
    // Ground truth, at the pools: their submit counts over 2 s windows,
    // until two windows in a row are within 5 points of 70/30 (bounded).
    let mut in_a_row = 0;
    let mut seen = Vec::new();
    for _ in 0..15 {
        let (a0, b0) = (a.stats().submits, b.stats().submits);
        rt.block_on(Timer::after(Duration::from_secs(2)));
        let (da, db) = (a.stats().submits - a0, b.stats().submits - b0);
        let share = da as f64 / (da + db).max(1) as f64;
        seen.push(format!("{share:.3}"));
        in_a_row = if (share - 0.7).abs() <= 0.05 {
            in_a_row + 1
        } else {
            0
        };
        if in_a_row == 2 {
            break;
        }
    }
    assert_eq!(
        in_a_row, 2,
        "pool a's share of the hashrate per 2 s window: {seen:?}"
    );
    fast.stop();
    slow.stop();
    for fleet in [fast, slow] {
        let report = rt.block_on(within("the fleet", fleet.finish()));
        assert!(report.miners.iter().all(|m| m.error.is_none()));
    }
}

#[test]
fn a_drained_pool_loses_every_miner_at_the_rate_and_a_disconnect_closes_one() {
    const MINERS: usize = 10;
    let rt = Runtime::new(2);
    let a = pool_sim(&rt, Duration::from_secs(5));
    let b = pool_sim(&rt, Duration::from_secs(5));
    let pools = Pools::new(
        vec![spec("a", a.local_addr(), 0), spec("b", b.local_addr(), 1)],
        HealthPolicy {
            probe: ProbeKind::Off,
            move_rate_per_second: 10.0,
            ..fast_policy()
        },
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools.clone(), Limits::default(), observer.clone());
    let mut config = MinerConfig::new(relay.addr, MINERS);
    config.rate_per_second = 10.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    rt.block_on(async {
        eventually("miners on a", || pools.status()[0].sessions == MINERS).await;
        pools.set_draining("a", true).unwrap();
        eventually("every miner moved to b", || {
            let status = pools.status();
            status[0].sessions == 0 && status[1].sessions == MINERS
        })
        .await;
    });
    let moved = observer.counts().moved_at;
    assert_eq!(moved.len(), MINERS);
    let span = moved[MINERS - 1].duration_since(moved[0]).as_secs_f64();
    // 10 moves at 10/s with one second's burst: never all at once.
    assert!(
        MINERS as f64 <= 10.0 * (span + 0.1) + 10.0,
        "{MINERS} moves in {span:.2}s"
    );
    assert!(pools.set_draining("nope", true).is_err());
    // Put back, and disconnect one miner by its connection id: only it goes.
    pools.set_draining("a", false).unwrap();
    let before = observer.counts().closed;
    let some_conn = (1..=200)
        .find(|id| pools.disconnect(*id))
        .expect("a live connection");
    rt.block_on(eventually("the disconnected miner closed", || {
        observer.counts().closed == before + 1
    }));
    // Its registration goes with its task, just after the close is reported.
    rt.block_on(eventually("the disconnected connection's id gone", || {
        !pools.disconnect(some_conn)
    }));
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    assert!(report.miners.iter().all(|m| m.error.is_none()));
}

#[test]
fn a_miner_that_sent_its_line_and_closed_is_replayed_to_the_next_pool_with_its_fin() {
    use std::io::{Read, Write};
    let rt = Runtime::new(2);
    // The first pool accepts and closes at once; the second is a raw socket.
    let closing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closing_addr = closing.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in closing.incoming().take(10) {
            drop(stream);
        }
    });
    let next = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let next_addr = next.local_addr().unwrap();
    let pools = Pools::new(
        vec![spec("closing", closing_addr, 0), spec("next", next_addr, 1)],
        HealthPolicy {
            fall: 100,
            probe: ProbeKind::Off,
            ..fast_policy()
        },
        Box::new(()),
    );
    let observer = TestObserver::new(false);
    let relay = start_relay_to(&rt, pools, Limits::default(), observer);
    let line = b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n";
    let mut miner = std::net::TcpStream::connect(relay.addr).unwrap();
    miner.write_all(line).unwrap();
    miner.shutdown(std::net::Shutdown::Write).unwrap();
    let (mut pool, _) = next.accept().unwrap();
    pool.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut got = Vec::new();
    pool.read_to_end(&mut got).unwrap();
    assert_eq!(got, line, "the replay, then the miner's FIN");
    pool.write_all(b"{\"id\":1,\"result\":true,\"error\":null}\n")
        .unwrap();
    drop(pool);
    miner
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut answer = Vec::new();
    miner.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"{\"id\":1,\"result\":true,\"error\":null}\n");
}

#[test]
fn a_pool_that_sends_jobs_but_answers_nothing_is_taken_down_and_its_miners_move() {
    const MINERS: usize = 8;
    let Rig {
        rt,
        primary,
        backup,
        pools,
        observer,
        relay,
    } = rig(Duration::from_millis(100), fast_policy());
    let mut config = MinerConfig::new(relay.addr, MINERS);
    config.rate_per_second = 20.0;
    config.reconnect = true;
    let fleet = MinerSim::start(&rt.executor, config);
    let stop = fleet.stop_handle();
    rt.block_on(async {
        eventually("miners on the primary, its notify interval learnt", || {
            let status = pools.status();
            status[0].sessions == MINERS && status[0].notify_interval.is_some()
        })
        .await;
        // Jobs keep coming; shares are never answered.
        primary.set_mute(true);
        eventually("the primary taken down for unanswered requests", || {
            pools.status()[0].health == PoolHealth::Down(DownReason::Unanswered)
        })
        .await;
        eventually("every miner on the backup", || {
            let status = pools.status();
            status[0].sessions == 0 && status[1].sessions == MINERS
        })
        .await;
        let on_backup = backup.stats().submits;
        eventually("every miner submitting on the backup", || {
            backup.stats().submits >= on_backup + 2 * MINERS as u64
        })
        .await;
    });
    assert!(observer.counts().pool_down_closes >= 1);
    stop.stop();
    let report = rt.block_on(within("the fleet", fleet.finish()));
    for m in &report.miners {
        assert_eq!(m.error, None, "{}", m.user);
    }
}
