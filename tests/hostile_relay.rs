//! The relay against one greedy LAN host, and against peers that vanish:
//! per-address caps (with a CIDR override) and TCP keepalive on both
//! sockets, through the real binary.

mod common;
mod daemon;
mod runner;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

use common::connect_from;
use daemon::{Proxy, SimRuntime, WAIT, default_pool as pool};

/// A TCP connection to `to` from the loopback address `from`.
fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

/// Subscribes and waits for the answer: the connection is relayed.
fn subscribe(stream: &TcpStream, proxy: &Proxy) {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    (&*stream)
        .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n")
        .unwrap();
    let mut line = String::new();
    if let Err(e) = BufReader::new(stream).read_line(&mut line) {
        panic!("{e} from {:?}\n{}", stream.local_addr(), proxy.log_text());
    }
    assert!(line.contains("\"id\":1"), "{line:?}\n{}", proxy.log_text());
}

/// Whether the proxy closed `stream` (end of stream or reset).
fn closed_by_proxy(stream: &mut TcpStream) -> bool {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut byte = [0u8; 1];
    matches!(stream.read(&mut byte), Ok(0) | Err(_))
}

#[test]
fn one_address_cannot_take_every_slot_and_an_override_gives_a_network_more() {
    let rt = SimRuntime::new();
    let pool = pool(&rt);
    let proxy = Proxy::start(
        pool.local_addr(),
        &[
            "--max-connections-per-address",
            "3",
            "--accept-rate-per-address",
            "0.001",
            "--address-overrides",
            "127.0.0.8/29=6/100",
        ],
        &[],
    );
    let greedy: Vec<TcpStream> = (0..3)
        .map(|_| connect_from(loopback(2), proxy.listen))
        .collect();
    for stream in &greedy {
        subscribe(stream, &proxy);
    }
    let mut fourth = connect_from(loopback(2), proxy.listen);
    assert!(closed_by_proxy(&mut fourth), "a fourth from one address");
    // Another address is not affected.
    let other = connect_from(loopback(3), proxy.listen);
    subscribe(&other, &proxy);
    // 127.0.0.8/29 may hold six each.
    let rack: Vec<TcpStream> = (0..6)
        .map(|_| connect_from(loopback(9), proxy.listen))
        .collect();
    for stream in &rack {
        subscribe(stream, &proxy);
    }
    let mut seventh = connect_from(loopback(9), proxy.listen);
    assert!(closed_by_proxy(&mut seventh), "a seventh from the rack");
    let m = proxy.scrape_until("two refusals counted", |m| {
        m.sum(
            "stratum_refused_connections_total",
            &[("reason", "max_connections_per_address")],
        ) == 2.0
    });
    assert_eq!(m.sum("stratum_active_connections", &[]), 10.0);
    // Closing frees the slots, but not the rate: an address that used its
    // burst (its cap) waits for its bucket (1 token per 1000 s here).
    drop(greedy);
    proxy.scrape_until("the greedy connections closed", |m| {
        m.sum("stratum_active_connections", &[]) == 7.0
    });
    let mut again = connect_from(loopback(2), proxy.listen);
    assert!(closed_by_proxy(&mut again), "reconnected past the rate");
    proxy.scrape_until("the rate refusal counted", |m| {
        m.sum(
            "stratum_refused_connections_total",
            &[("reason", "rate_limit_per_address")],
        ) == 1.0
    });
}

/// The keepalive timer of the socket `local` → `remote` in /proc/net/tcp:
/// (timer kind, remaining clock ticks), kind 2 being keepalive.
fn timer_of(local: SocketAddr, remote: SocketAddr) -> Option<(u32, u64)> {
    let hex = |a: SocketAddr| match a {
        SocketAddr::V4(v4) => format!(
            "{:08X}:{:04X}",
            u32::from_le_bytes(v4.ip().octets()),
            v4.port()
        ),
        SocketAddr::V6(_) => unreachable!("loopback IPv4 only"),
    };
    let (local, remote) = (hex(local), hex(remote));
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // State 01: established.
        if f.get(1) != Some(&local.as_str())
            || f.get(2) != Some(&remote.as_str())
            || f.get(3) != Some(&"01")
        {
            return None;
        }
        let (kind, when) = f.get(5)?.split_once(':')?;
        Some((kind.parse().ok()?, u64::from_str_radix(when, 16).ok()?))
    })
}

#[test]
fn both_sockets_of_a_relay_have_keepalive_armed() {
    let rt = SimRuntime::new();
    let pool = pool(&rt);
    let proxy = Proxy::start(
        pool.local_addr(),
        &["--tcp-keepalive-idle-seconds", "7"],
        &[],
    );
    let miner = TcpStream::connect(proxy.listen).unwrap();
    subscribe(&miner, &proxy);
    // The proxy's miner-side socket: proxy.listen -> our address.
    let miner_side = timer_of(proxy.listen, miner.local_addr().unwrap());
    // Its pool-side socket: some port of the proxy -> the pool. Found by
    // the pool's end of it, the only other connection to the pool.
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let pool_hex = format!("0100007F:{:04X}", pool.local_addr().port());
    let pool_side = table.lines().skip(1).find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.get(2) != Some(&pool_hex.as_str()) || f.get(3) != Some(&"01") {
            return None;
        }
        let (kind, when) = f.get(5)?.split_once(':')?;
        Some((
            kind.parse::<u32>().ok()?,
            u64::from_str_radix(when, 16).ok()?,
        ))
    });
    for (side, timer) in [("miner", miner_side), ("pool", pool_side)] {
        let (kind, ticks) = timer.unwrap_or_else(|| panic!("no {side}-side socket"));
        assert_eq!(kind, 2, "{side} side: no keepalive timer");
        // Remaining time at most the configured idle (100 ticks a second).
        assert!(ticks <= 700, "{side} side: {ticks} ticks");
    }
}
