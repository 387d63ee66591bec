//! The relay's limits and failure paths, each in its own test, over loopback:
//! max connections, the new-connection rate limit, idle and handshake timeouts, unreachable pool, pool
//! closing mid-stream, a 10 MB line without newline, binary garbage.

mod common;

use std::time::Duration;

use common::{Peer, Runtime, Seen, TestObserver, parse_whole, start_relay, unused_port, within};
use smol::{Async, Timer};
use stratum_proxy::relay::keepalive::Keepalive;
use stratum_proxy::relay::{CloseReason, Limits, RefuseReason, UpstreamFailure};
use stratum_proxy::sim::Digest;
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};
use stratum_proxy::stratum::{Frame, LineFramer, MAX_LINE_BYTES, ParseFailure};

/// A pool-sim without periodic jobs, so raw peers see only answers.
fn quiet_pool(rt: &Runtime) -> PoolSim {
    PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig {
            notify_interval: None,
            ..PoolConfig::default()
        },
    )
    .expect("start pool-sim")
}

/// Keeps `peer` active with a round trip every 100 ms, at most 200 times.
async fn keep_busy(peer: &mut Peer, first_id: u64) {
    for i in 0..200 {
        peer.roundtrip(first_id + i).await;
        Timer::after(Duration::from_millis(100)).await;
    }
    std::future::pending::<()>().await
}

#[test]
fn connection_past_max_is_refused_and_counted_while_others_keep_working() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    let limits = Limits {
        max_connections: 2,
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr(), limits, observer.clone());
    rt.block_on(async {
        let mut a = Peer::connect(relay.addr).await;
        let mut b = Peer::connect(relay.addr).await;
        a.roundtrip(1).await;
        b.roundtrip(1).await;
        assert_eq!(relay.handle.active_connections(), 2);

        let mut c = Peer::connect(relay.addr).await;
        assert_eq!(observer.next_refused().await, RefuseReason::MaxConnections);
        assert_eq!(c.read_to_eof().await, 0, "the refused miner gets nothing");

        // The two relayed miners are untouched.
        a.roundtrip(2).await;
        b.roundtrip(2).await;
        // Checked while a and b are still open (dropping them closes them).
        let counts = observer.counts();
        assert_eq!(counts.refused, [RefuseReason::MaxConnections]);
        assert_eq!(counts.accepted, 2);
        assert_eq!(counts.closed, 0);
        assert_eq!(pool.stats().connections, 2);
    });
}

#[test]
fn connection_past_the_rate_limit_burst_is_refused_and_counted() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    // A burst of two and (practically) no refill during the test.
    let limits = Limits {
        accept_burst: 2,
        accept_rate_per_second: 0.001,
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr(), limits, observer.clone());
    rt.block_on(async {
        let mut a = Peer::connect(relay.addr).await;
        let mut b = Peer::connect(relay.addr).await;
        a.roundtrip(1).await;
        b.roundtrip(1).await;
        let mut c = Peer::connect(relay.addr).await;
        assert_eq!(observer.next_refused().await, RefuseReason::RateLimit);
        assert_eq!(c.read_to_eof().await, 0);
        a.roundtrip(2).await;
        b.roundtrip(2).await;
        let counts = observer.counts();
        assert_eq!(counts.refused, [RefuseReason::RateLimit]);
        assert_eq!(counts.accepted, 2);
    });
}

#[test]
fn idle_timeout_closes_only_the_idle_miner() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    let limits = Limits {
        idle_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr(), limits, observer.clone());
    rt.block_on(async {
        let mut idle = Peer::connect(relay.addr).await;
        let mut busy = Peer::connect(relay.addr).await;
        idle.roundtrip(1).await;
        busy.roundtrip(1).await;
        // The idle miner is closed while the busy one keeps relaying.
        within(
            "the idle miner's close",
            smol::future::or(
                async {
                    idle.read_to_eof().await;
                },
                keep_busy(&mut busy, 100),
            ),
        )
        .await;
        let closed = observer.next_closed().await;
        assert_eq!(closed.reason, CloseReason::IdleTimeout);
        busy.roundtrip(1_000).await;
        // Checked while `busy` is still open (dropping it closes it).
        assert_eq!(observer.counts().closed, 1);
    });
}

#[test]
fn handshake_timeout_closes_only_the_slow_miner() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    let limits = Limits {
        handshake_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr(), limits, observer.clone());
    rt.block_on(async {
        let mut fast = Peer::connect(relay.addr).await;
        fast.roundtrip(1).await;
        // Slowloris: bytes, but never a complete line.
        let mut slow = Peer::connect(relay.addr).await;
        let partial = b"{\"id\":1,\"method\":\"mining.subscr";
        slow.send(partial).await;
        slow.read_to_eof().await;
        let closed = observer.next_closed().await;
        assert_eq!(closed.reason, CloseReason::HandshakeTimeout);
        // The pool is dialled at the first complete line: a slowloris costs
        // the pool nothing, and its bytes were held, never relayed.
        assert_eq!(closed.miner_to_pool_bytes, 0);
        assert_eq!(pool.stats().connections, 1);
        // The miner that completed its handshake (and then idled) still works.
        fast.roundtrip(2).await;
        assert_eq!(observer.counts().closed, 1);
    });
}

#[test]
fn unreachable_pool_closes_miner_with_upstream_failed() {
    let rt = Runtime::new(1);
    let observer = TestObserver::new(false);
    let relay = start_relay(&rt, unused_port(), Limits::default(), observer.clone());
    rt.block_on(async {
        let mut miner = Peer::connect(relay.addr).await;
        // The pool is dialled at the miner's first complete line.
        miner
            .send(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
            .await;
        assert_eq!(miner.read_to_eof().await, 0);
        let closed = observer.next_closed().await;
        // Refused, not a connect timeout: the miner was closed at once.
        assert_eq!(
            closed.reason,
            CloseReason::UpstreamFailed(UpstreamFailure::Refused)
        );
    });
    let counts = observer.counts();
    assert_eq!(counts.upstream_failed, 1);
    assert_eq!(counts.upstream_connected, 0);
}

#[test]
fn pool_closing_mid_stream_closes_miner_with_pool_closed() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    let relay = start_relay(&rt, pool.local_addr(), Limits::default(), observer.clone());
    rt.block_on(async {
        let mut miner = Peer::connect(relay.addr).await;
        miner.roundtrip(1).await;
        miner
            .send(b"{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"alice.rig1\",\"x\"]}\n")
            .await;
        miner.read_line().await.expect("authorize answer");
        assert_eq!(pool.disconnect_all(), 1);
        miner.read_to_eof().await;
        drop(miner);
        let closed = observer.next_closed().await;
        assert_eq!(closed.reason, CloseReason::PoolClosed);
        let record = within("the pool's record", pool.records().recv())
            .await
            .unwrap();
        assert_eq!(record.user.as_deref(), Some("alice.rig1"));
        assert_eq!(record.sent.bytes, closed.pool_to_miner_bytes);
        assert_eq!(record.received.bytes, closed.miner_to_pool_bytes);
    });
}

#[test]
fn ten_megabyte_line_without_newline_is_relayed_and_memory_stays_bounded() {
    const LINE_BYTES: usize = 10 * 1024 * 1024;
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(true);
    let relay = start_relay(&rt, pool.local_addr(), Limits::default(), observer.clone());
    let line: Vec<u8> = (0..LINE_BYTES).map(|i| b'a' + (i % 26) as u8).collect();
    let mut sent = Digest::new();
    rt.block_on(async {
        let mut miner = Peer::connect(relay.addr).await;
        for chunk in line.chunks(64 * 1024) {
            miner.send(chunk).await;
            sent.update(chunk);
        }
        // The newline ends the line; framing resynchronises on the next one.
        let tail = b"\n{\"id\":7,\"method\":\"mining.subscribe\",\"params\":[]}\n";
        miner.send(tail).await;
        sent.update(tail);
        let answer = miner.read_line().await.expect("answer after the long line");
        assert!(answer.starts_with(b"{\"id\":7,"));
        miner
            .stream
            .get_ref()
            .shutdown(std::net::Shutdown::Write)
            .unwrap();
        miner.read_to_eof().await;
    });
    let closed = rt.block_on(observer.next_closed());
    assert_eq!(closed.reason, CloseReason::MinerClosed);
    assert_eq!(
        closed.lines[0],
        [
            Seen::Failed(ParseFailure::TooLong, LINE_BYTES),
            Seen::Request("mining.subscribe".into(), "7".into()),
        ]
    );
    let record = rt
        .block_on(within("the pool's record", pool.records().recv()))
        .unwrap();
    assert_eq!(
        record.received, sent,
        "every byte of the long line reached the pool"
    );
    assert_eq!(closed.miner_to_pool_bytes, sent.bytes);

    // The framer the relay uses holds at most one parse limit's worth of it.
    let mut framer = LineFramer::new();
    let mut most = 0;
    for chunk in line.chunks(64 * 1024) {
        framer.push(chunk, |_| panic!("no line before the newline"));
        most = most.max(framer.capacity_bytes());
    }
    assert!(
        most <= 2 * (MAX_LINE_BYTES + 1),
        "framer grew to {most} bytes"
    );
    let mut frames = Vec::new();
    framer.push(b"\n", |f| frames.push(format!("{f:?}")));
    assert_eq!(frames, [format!("{:?}", Frame::Overlong(LINE_BYTES))]);
}

#[test]
fn binary_garbage_is_relayed_byte_exact_both_ways_and_reported() {
    let rt = Runtime::new(2);
    let pool_listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let pool_addr = pool_listener.get_ref().local_addr().unwrap();
    let observer = TestObserver::new(true);
    let relay = start_relay(&rt, pool_addr, Limits::default(), observer.clone());

    // Invalid UTF-8 lines (never JSON), random bytes, \n and \r\n, empty lines.
    let garbage = |seed: u64| -> Vec<u8> {
        let mut state = seed;
        let mut out = Vec::new();
        for i in 0..300 {
            out.push(0xff);
            let len = (i * 37 + seed as usize) % 500;
            for _ in 0..len {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let b = (state >> 56) as u8;
                out.push(if b == b'\n' { 0 } else { b });
            }
            out.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
            if i % 50 == 0 {
                out.push(b'\n');
            }
        }
        out
    };
    let up = garbage(1);
    let down = garbage(2);
    rt.block_on(async {
        let mut miner = Peer::connect(relay.addr).await;
        // The pool is dialled once the miner's first line arrives.
        let both = smol::future::zip(
            async {
                miner.send(&up).await;
                miner.read_until_total(down.len()).await;
                miner
            },
            async {
                let (stream, _) = within("the relay's upstream connection", pool_listener.accept())
                    .await
                    .unwrap();
                let mut pool = Peer::from_stream(stream);
                pool.send(&down).await;
                pool.read_until_total(up.len()).await;
                pool
            },
        );
        let (miner, mut pool) = within("garbage both ways", both).await;
        assert!(pool.received == up, "miner → pool bytes changed");
        assert!(miner.received == down, "pool → miner bytes changed");
        drop(miner);
        pool.read_to_eof().await;
    });
    let closed = rt.block_on(observer.next_closed());
    let expected_up = parse_whole(&up);
    let expected_down = parse_whole(&down);
    assert_eq!(expected_up.len(), 300);
    assert!(
        expected_up
            .iter()
            .chain(&expected_down)
            .all(|s| matches!(s, Seen::Failed(ParseFailure::NotJson, _)))
    );
    assert_eq!(closed.lines[0], expected_up);
    assert_eq!(closed.lines[1], expected_down);
    let counts = observer.counts();
    assert_eq!(counts.parse_failures, [300, 300]);
    assert_eq!(counts.bytes, [up.len() as u64, down.len() as u64]);
}

/// Closes `peer`'s socket without a FIN or a reset, as a miner that lost
/// power does: in `TCP_REPAIR` mode the kernel drops the connection
/// silently. `false` where that is not allowed (it needs CAP_NET_ADMIN:
/// root on the host, not always in a container).
fn vanish(peer: Peer) -> bool {
    use std::os::fd::AsRawFd;
    let fd = peer.stream.get_ref().as_raw_fd();
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by `peer`, and the option value
    // is a live c_int of the size passed.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_REPAIR,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    } == 0;
    drop(peer);
    done
}

#[test]
fn keepalive_closes_the_relay_of_a_miner_that_vanished_without_a_fin() {
    let rt = Runtime::new(2);
    let pool = quiet_pool(&rt);
    let observer = TestObserver::new(false);
    let limits = Limits {
        keepalive: Keepalive {
            idle: Duration::from_secs(1),
            interval: Duration::from_secs(1),
            probes: 1,
            ..Keepalive::default()
        },
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr(), limits, observer.clone());
    rt.block_on(async {
        let mut gone = Peer::connect(relay.addr).await;
        let mut here = Peer::connect(relay.addr).await;
        gone.roundtrip(1).await;
        here.roundtrip(1).await;
        if !vanish(gone) {
            eprintln!("skipped: TCP_REPAIR is not allowed here (needs CAP_NET_ADMIN)");
            return;
        }
        // Nothing is sent to the vanished miner, so only keepalive can
        // notice: its first probe, after a second of silence, is answered
        // with a reset (the kernel no longer knows the connection).
        // Without keepalive (idle 0) this waits until the test's timeout.
        let closed = within("the vanished miner's close", observer.next_closed()).await;
        assert!(
            matches!(closed.reason, CloseReason::MinerError(_)),
            "{:?}",
            closed.reason
        );
        // The other miner, as silent, answered its probes and is relayed.
        here.roundtrip(1).await;
        assert_eq!(observer.counts().closed, 1);
    });
}
