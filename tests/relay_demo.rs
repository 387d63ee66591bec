//! `stratum-proxy demo` as a library call: pool-sim, the relay and miners in
//! one process, reporting to a test observer whose counts must match the
//! demo's own summary.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use common::TestObserver;
use stratum_proxy::demo::{self, DemoOptions};
use stratum_proxy::relay::{CloseReason, Direction};

#[test]
fn demo_runs_sims_through_the_relay_and_summarises() {
    let observer = TestObserver::new(false);
    let ticks = Arc::new(AtomicU64::new(0));
    let options = DemoOptions {
        miners: 3,
        seconds: 1.2,
        submit_rate: 20.0,
        handle_signals: false,
        on_tick: Some({
            let ticks = ticks.clone();
            Arc::new(move || {
                ticks.fetch_add(1, Ordering::Relaxed);
            })
        }),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let summary = demo::run_with_output(observer.clone(), options, &mut out).expect("demo runs");
    let out = String::from_utf8(out).unwrap();
    eprintln!("{out}");

    assert!(!summary.interrupted);
    assert_eq!(summary.miners.miners, 3);
    assert_eq!(summary.miners.authorized, 3);
    assert_eq!(summary.miners.errors, 0);
    assert!(summary.miners.submits >= 3, "each miner submits at start");
    assert_eq!(summary.miners.submits, summary.pool.submits);
    assert_eq!(
        summary.miners.accepted + summary.miners.rejected.total(),
        summary.miners.submits
    );
    assert_eq!(summary.miners.bytes_sent, summary.pool.bytes_in);
    assert_eq!(summary.miners.bytes_received, summary.pool.bytes_out);

    // The observer saw what the demo's miners did, through the relay.
    let closed = smol::block_on(observer.closed(3));
    assert!(closed.iter().all(|c| c.reason == CloseReason::MinerClosed));
    let counts = observer.counts();
    assert_eq!(
        counts.requests(Direction::MinerToPool, "mining.submit"),
        summary.miners.submits
    );
    assert_eq!(
        counts.bytes,
        [summary.pool.bytes_in, summary.pool.bytes_out]
    );

    let first = out.lines().next().unwrap();
    assert!(first.starts_with("demo: pool-sim on 127.0.0.1:"), "{out}");
    let last = out.lines().last().unwrap();
    assert!(
        last.contains(&format!("{} submits", summary.miners.submits)),
        "{out}"
    );
    // One live line per tick, each followed by the hook.
    let live_lines = out
        .lines()
        .filter(|l| l.contains("miners connected"))
        .count();
    assert_eq!(live_lines as u64, ticks.load(Ordering::Relaxed));
}
