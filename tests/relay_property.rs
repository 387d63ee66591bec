//! Property tests of framing and relaying: for random streams of messages
//! (valid Stratum lines of many kinds, other dialects, malformed JSON,
//! over-long lines, binary garbage, `\n` and `\r\n`, empty lines) cut at
//! random points, the observed message sequence equals the one parsed from
//! the whole stream in one piece, and through a real loopback relay the
//! bytes out equal the bytes in, both ways.

mod common;

use std::sync::Arc;

use common::{Peer, Runtime, TestObserver, parse_whole, seen_frame, start_relay, within};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use smol::Async;
use stratum_proxy::relay::{CloseReason, Limits};
use stratum_proxy::stratum::{LineFramer, MAX_LINE_BYTES};

/// A JSON-RPC id of any type.
fn id() -> impl Strategy<Value = String> {
    prop_oneof![
        (0u32..1_000_000).prop_map(|n| n.to_string()),
        "[a-z0-9]{1,8}".prop_map(|s| format!("\"{s}\"")),
        Just("null".to_string()),
    ]
}

/// A JSON (or JSON-looking) line of any dialect, valid or malformed.
fn json_line() -> impl Strategy<Value = String> {
    let user = "[a-z]{1,8}\\.[a-z0-9]{1,6}";
    prop_oneof![
        6 => id().prop_map(|id| format!(
            "{{\"id\":{id},\"method\":\"mining.subscribe\",\"params\":[\"cgminer/4.11\"]}}"
        )),
        4 => (id(), user).prop_map(|(id, u)| format!(
            "{{\"params\":[\"{u}\",\"x\"],\"id\":{id},\"method\":\"mining.authorize\"}}"
        )),
        10 => (id(), user, 0u32..u32::MAX).prop_map(|(id, u, n)| format!(
            "{{\"params\":[\"{u}\",\"1f\",\"00000001\",\"65f2a1b0\",\"{n:08x}\"],\"id\":{id},\"method\":\"mining.submit\"}}"
        )),
        4 => (any::<bool>(), "[0-9a-f]{64}").prop_map(|(clean, h)| format!(
            "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"2a\",\"{h}\",\"01000000\",\"ffffffff\",[\"{h}\",\"{h}\"],\"20000000\",\"17034219\",\"65f2a1b0\",{clean}]}}"
        )),
        3 => (1u32..100_000).prop_map(|d| format!(
            "{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{d}]}}"
        )),
        8 => (id(), prop_oneof![
            Just("\"result\":true,\"error\":null".to_string()),
            Just("\"result\":false,\"error\":null".to_string()),
            Just("\"result\":null,\"error\":[21,\"Job not found\",null]".to_string()),
            Just("\"result\":null,\"error\":[23,\"Low difficulty share\"]".to_string()),
            Just("\"result\":null,\"error\":{\"code\":22,\"message\":\"Duplicate share\"}".to_string()),
            Just("\"result\":null,\"error\":\"stale\"".to_string()),
            Just("\"result\":false,\"reject-reason\":\"Above target\"".to_string()),
            Just("\"result\":[[[\"mining.notify\",\"ae68\"]],\"08000002\",4],\"error\":null".to_string()),
        ]).prop_map(|(id, body)| format!("{{\"id\":{id},{body}}}")),
        2 => id().prop_map(|id| format!(
            "{{\"id\":{id},\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{{\"version-rolling.mask\":\"1fffe000\"}}]}}"
        )),
        1 => Just("{\"id\":null,\"method\":\"client.reconnect\",\"params\":[\"pool.example.net\",3333,0]}".to_string()),
        1 => id().prop_map(|id| format!("{{\"id\":{id},\"method\":\"mining.ping\",\"params\":[]}}")),
        1 => Just("{\"id\":null,\"method\":\"mining.set_extranonce\",\"params\":[\"08000002\",4]}".to_string()),
        2 => id().prop_map(|id| format!(
            "{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":\"eth_submitLogin\",\"params\":[\"0xabc.rig\",\"x\"]}}"
        )),
        2 => id().prop_map(|id| format!(
            "{{\"id\":{id},\"jsonrpc\":\"2.0\",\"method\":\"login\",\"params\":{{\"login\":\"wallet\",\"pass\":\"x\",\"agent\":\"xmrig/6.21\"}}}}"
        )),
        1 => Just("{\"jsonrpc\":\"2.0\",\"method\":\"job\",\"params\":{\"blob\":\"0707\",\"job_id\":\"q\",\"target\":\"b88d0600\"}}".to_string()),
        1 => id().prop_map(|id| format!("{{\"id\":{id},\"method\":\"mining.unknown_thing\",\"params\":[]}}")),
        2 => prop_oneof![
            Just("{\"id\":1,\"method\":".to_string()),
            Just("{\"foo\":1}".to_string()),
            Just("[1,2,3]".to_string()),
            Just("GET /metrics HTTP/1.1".to_string()),
            Just("   ".to_string()),
        ],
    ]
}

/// One line's content, without its line ending.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        40 => json_line().prop_map(String::into_bytes),
        // Binary garbage: any bytes but the newline.
        3 => proptest::collection::vec(any::<u8>(), 1..300)
            .prop_map(|v| v.into_iter().map(|b| if b == b'\n' { b'?' } else { b }).collect()),
        // Over-long lines, and lines right at the limit.
        1 => (0usize..3, 1usize..3000).prop_map(|(kind, extra)| match kind {
            0 => vec![b'x'; MAX_LINE_BYTES + extra],
            1 => vec![b'y'; MAX_LINE_BYTES],
            _ => {
                let mut v = b"{\"id\":1,\"method\":\"mining.submit\",\"params\":[\"".to_vec();
                v.resize(MAX_LINE_BYTES + extra, b'a');
                v.extend_from_slice(b"\"]}");
                v
            }
        }),
        2 => Just(Vec::new()),
    ]
}

/// A stream: lines with `\n` or `\r\n`, maybe an unterminated tail.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec((line(), any::<bool>()), 0..40),
        proptest::option::of("[a-z{\":]{0,30}"),
    )
        .prop_map(|(lines, tail)| {
            let mut out = Vec::new();
            for (line, crlf) in lines {
                out.extend_from_slice(&line);
                out.extend_from_slice(if crlf { b"\r\n" } else { b"\n" });
            }
            if let Some(tail) = tail {
                out.extend_from_slice(tail.as_bytes());
            }
            out
        })
}

/// Cuts `stream` into chunks of the given sizes (cycled).
fn chunks<'a>(stream: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = stream;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % sizes.len()].min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
        i += 1;
    }
    out
}

fn sizes() -> impl Strategy<Value = Vec<usize>> {
    proptest::collection::vec(
        prop_oneof![1usize..16, 16usize..2_000, 2_000usize..100_000],
        1..20,
    )
}

proptest! {
    #![proptest_config(Config { cases: 256, ..Config::default() })]

    /// Any chunking gives the framer and message view the same sequence as
    /// the whole stream, and the chunks put together are the stream.
    #[test]
    fn chunked_stream_is_observed_like_the_whole(stream in stream(), sizes in sizes()) {
        let pieces = chunks(&stream, &sizes);
        prop_assert_eq!(pieces.concat(), stream.clone());
        let mut framer = LineFramer::new();
        let mut seen = Vec::new();
        for piece in &pieces {
            framer.push(piece, |frame| seen.push(seen_frame(frame)));
            prop_assert!(framer.capacity_bytes() <= 2 * (MAX_LINE_BYTES + 1));
        }
        prop_assert_eq!(seen, parse_whole(&stream));
    }
}

/// Through a real loopback relay: random streams both ways, written in
/// random chunks; bytes out equal bytes in and the observer saw exactly the
/// whole-stream sequence in each direction.
#[test]
fn relay_preserves_bytes_and_observed_sequence_of_random_streams() {
    let rt = Runtime::new(2);
    let pool_listener = Async::<std::net::TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let pool_addr = pool_listener.get_ref().local_addr().unwrap();
    let observer = TestObserver::new(true);
    let relay = start_relay(&rt, pool_addr, Limits::default(), observer.clone());
    let observer = Arc::clone(&observer);

    let mut runner = TestRunner::new(Config {
        cases: 24,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = ((stream(), sizes()), (stream(), sizes()));
    runner
        .run(&strategy, |((up, up_sizes), (down, down_sizes))| {
            let closed = rt.block_on(async {
                let mut miner = Peer::connect(relay.addr).await;
                let miner_side = async {
                    for piece in chunks(&up, &up_sizes) {
                        miner.send(piece).await;
                    }
                    // FIN after the last byte: the pool reads to EOF.
                    let _ = miner.stream.get_ref().shutdown(std::net::Shutdown::Write);
                    miner.read_to_eof().await;
                    miner
                };
                // The pool is dialled at the miner's first line (or its last
                // bytes before its FIN): a miner that sends nothing costs
                // the pool no connection.
                let pool_side = async {
                    if up.is_empty() {
                        return None;
                    }
                    let (stream, _) = within("upstream connection", pool_listener.accept())
                        .await
                        .unwrap();
                    let mut pool = Peer::from_stream(stream);
                    for piece in chunks(&down, &down_sizes) {
                        pool.send(piece).await;
                    }
                    let _ = pool.stream.get_ref().shutdown(std::net::Shutdown::Write);
                    pool.read_to_eof().await;
                    Some(pool)
                };
                let (miner, pool) =
                    within("both streams", smol::future::zip(miner_side, pool_side)).await;
                match pool {
                    Some(pool) => {
                        assert!(pool.received == up, "miner → pool bytes changed");
                        assert!(miner.received == down, "pool → miner bytes changed");
                    }
                    None => assert!(miner.received.is_empty()),
                }
                observer.next_closed().await
            });
            prop_assert!(matches!(
                closed.reason,
                CloseReason::MinerClosed | CloseReason::PoolClosed
            ));
            let down = if up.is_empty() { Vec::new() } else { down };
            prop_assert_eq!(closed.miner_to_pool_bytes, up.len() as u64);
            prop_assert_eq!(closed.pool_to_miner_bytes, down.len() as u64);
            prop_assert_eq!(&closed.lines[0], &parse_whole(&up));
            prop_assert_eq!(&closed.lines[1], &parse_whole(&down));
            Ok(())
        })
        .unwrap();
}
