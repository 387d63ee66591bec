//! Logs under hostile peers, through the real binary: a forged user name
//! stays one escaped line in every format, and a flood of connections is
//! rate-limited with an exact "N similar lines suppressed" account.

mod daemon;
mod runner;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;

use daemon::{Proxy, SimRuntime, WAIT, default_pool as pool};
use stratum_proxy::logging::PEER_LINE_BURST;

/// Subscribes and authorizes as `user` (JSON-escaped already); waits for
/// the authorize answer.
fn authorize(proxy: &Proxy, user_json: &str) {
    let mut miner = TcpStream::connect(proxy.listen).unwrap();
    miner.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        miner,
        "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}}\n\
         {{\"id\":2,\"method\":\"mining.authorize\",\"params\":[\"{user_json}\",\"x\"]}}\n"
    )
    .unwrap();
    let mut reader = BufReader::new(miner);
    let mut line = String::new();
    loop {
        line.clear();
        assert!(reader.read_line(&mut line).unwrap() > 0, "pool closed");
        if line.contains("\"id\":2") {
            return;
        }
    }
}

#[test]
fn a_forged_user_name_is_one_escaped_line_in_every_format() {
    let rt = SimRuntime::new();
    let pool = pool(&rt);
    for format in ["journald", "text", "json"] {
        let proxy = Proxy::start(pool.local_addr(), &["--log-format", format], &[]);
        authorize(&proxy, "evil\\n<3>forged\\r\\u001b[2J");
        let line = proxy.wait_for_log("authorizing user=");
        let log = proxy.log_text();
        assert!(
            !log.lines()
                .any(|l| l.starts_with("<3>") || l.starts_with("forged")),
            "{format}: a forged line:\n{log}"
        );
        let shown = if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            v["msg"].as_str().unwrap().to_owned()
        } else {
            line.clone()
        };
        assert!(
            shown.contains(r"user=evil\n<3>forged\r\u{1b}[2J"),
            "{format}: {shown:?}"
        );
        if format == "journald" {
            assert!(line.starts_with("<6>"), "{line}");
        }
    }
}

#[test]
fn a_connection_flood_is_rate_limited_and_what_was_held_back_is_counted() {
    const CONNECTIONS: usize = 3 * PEER_LINE_BURST as usize;
    let rt = SimRuntime::new();
    let pool = pool(&rt);
    // Every connection comes from 127.0.0.1: lift the per-address limits,
    // so each one is opened (and logged or suppressed), none refused.
    let proxy = Proxy::start(
        pool.local_addr(),
        &["--address-overrides", "127.0.0.1=100000/100000"],
        &[],
    );
    for _ in 0..CONNECTIONS {
        // Connect and close at once: one "opened" and one "closed" line each.
        drop(TcpStream::connect(proxy.listen).unwrap());
    }
    let deadline = std::time::Instant::now() + WAIT * 2;
    loop {
        let log = proxy.log_text();
        let written = log.lines().filter(|l| l.ends_with(" opened")).count();
        let suppressed: usize = log
            .lines()
            .filter(|l| l.contains("(connection opened)"))
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        if written + suppressed == CONNECTIONS {
            assert!(suppressed > 0, "nothing suppressed:\n{log}");
            assert!(written >= PEER_LINE_BURST as usize, "{written}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{written} written + {suppressed} suppressed != {CONNECTIONS}:\n{log}"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}
