//! The siege: honest miners mine through the real binary and a scraper
//! scrapes every second, while an attacker from another loopback address
//! throws at it, all at once, what issue 10 lists: slowloris miners, a
//! connection flood, a 10 MB line, binary garbage, 5000 invented user
//! names, log-forging names, idle and endless-head HTTP connections.
//!
//! Pass: every scrape answered, no honest miner cut or any of its shares
//! lost, honest counters equal to the simulators' own, the proxy's memory
//! bounded, no forged log line. Every attack is bounded in count; each
//! thread stops when the honest fleet has finished.

mod daemon;
mod runner;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use daemon::{Proxy, SimRuntime, WAIT};
use stratum_proxy::sim::miner::{MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

const ATTACKER: [u8; 4] = [127, 0, 0, 2];
const ACCOUNTS: [&str; 3] = ["alice", "bob", "carol"];

fn connect_from(from: IpAddr, to: SocketAddr) -> Option<TcpStream> {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).ok()?;
    bind(&socket, &SocketAddr::new(from, 0)).ok()?;
    connect(&socket, &to).ok()?;
    let stream = TcpStream::from(socket);
    stream
        .set_write_timeout(Some(Duration::from_secs(5)))
        .ok()?;
    Some(stream)
}

fn attacker() -> IpAddr {
    IpAddr::from(ATTACKER)
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Runs `attack` on a thread of its own until `done` (it checks `done`
/// between bounded steps).
fn spawn(
    done: &Arc<AtomicBool>,
    attack: impl FnOnce(&AtomicBool) + Send + 'static,
) -> JoinHandle<()> {
    let done = done.clone();
    std::thread::spawn(move || attack(&done))
}

#[test]
fn honest_miners_and_scrapes_are_untouched_by_a_hostile_lan_host() {
    let rt = SimRuntime::new();
    let pool = PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig::default(),
    )
    .expect("pool-sim");
    // The honest miners all come from 127.0.0.1, as through an upstream
    // proxy: the override lets that address hold them all.
    let proxy = Proxy::start(
        pool.local_addr(),
        &[
            "--address-overrides",
            "127.0.0.1=1000/1000",
            "--log-format",
            "journald",
        ],
        &[],
    );
    let (listen, metrics) = (proxy.listen, proxy.metrics);
    assert_eq!(proxy.get("/healthz").0, 200);
    let rss_before = vm_rss_kib(proxy.child.id());
    let done = Arc::new(AtomicBool::new(false));
    let mut attacks = Vec::new();
    // The long-lived attackers connect before the flood takes the
    // address's remaining tokens.
    let (connected, early) = mpsc::channel::<()>();
    let mut early_count = 0;

    // Slowloris miners: a byte at a time, never a newline.
    for _ in 0..20 {
        let connected = connected.clone();
        early_count += 1;
        attacks.push(spawn(&done, move |done| {
            let s = connect_from(attacker(), listen);
            let _ = connected.send(());
            let Some(mut s) = s else { return };
            for _ in 0..600 {
                if done.load(Ordering::Relaxed) || s.write_all(b"{").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }));
    }
    // A 10 MB line, then binary garbage with newlines.
    early_count += 1;
    let signal = connected.clone();
    attacks.push(spawn(&done, move |_| {
        let s = connect_from(attacker(), listen);
        let _ = signal.send(());
        let Some(mut s) = s else { return };
        let chunk = vec![b'7'; 1 << 20];
        for _ in 0..10 {
            if s.write_all(&chunk).is_err() {
                return;
            }
        }
        let _ = s.write_all(b"\n");
    }));
    early_count += 1;
    let signal = connected.clone();
    attacks.push(spawn(&done, move |_| {
        let s = connect_from(attacker(), listen);
        let _ = signal.send(());
        let Some(mut s) = s else { return };
        let mut x: u32 = 0x2545_f491;
        let garbage: Vec<u8> = (0..1 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let _ = s.write_all(&garbage);
    }));
    // Log-forging names, in authorize lines.
    early_count += 1;
    let signal = connected.clone();
    attacks.push(spawn(&done, move |_| {
        let s = connect_from(attacker(), listen);
        let _ = signal.send(());
        let Some(mut s) = s else { return };
        let _ = s.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n");
        for n in 0..50 {
            let line = format!(
                "{{\"id\":{},\"method\":\"mining.authorize\",\"params\":[\"evil{n}\\n<3>forged\\r<0>x\",\"p\"]}}\n",
                n + 2
            );
            if s.write_all(line.as_bytes()).is_err() {
                return;
            }
        }
    }));
    // HTTP: idle connections and endless heads.
    attacks.push(spawn(&done, move |done| {
        let idle: Vec<_> = (0..40)
            .filter_map(|_| connect_from(attacker(), metrics))
            .collect();
        let mut heads: Vec<_> = (0..16)
            .filter_map(|_| connect_from(attacker(), metrics))
            .collect();
        let junk = [b'a'; 16 * 1024];
        for head in &mut heads {
            let _ = head.write_all(b"GET /metrics HTTP/1.1\r\nX: ");
        }
        for _ in 0..256 {
            if done.load(Ordering::Relaxed) {
                break;
            }
            for head in &mut heads {
                let _ = head.write_all(&junk);
            }
        }
        drop(idle);
    }));
    for _ in 0..early_count {
        early.recv_timeout(WAIT).expect("an attacker connected");
    }
    // A connection flood: bounded count, each closed at once.
    attacks.push(spawn(&done, move |done| {
        for _ in 0..2000 {
            if done.load(Ordering::Relaxed) {
                return;
            }
            drop(connect_from(attacker(), listen));
        }
    }));

    // The scraper: every second, from 127.0.0.1, until the miners finish.
    let scrapes = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut answers = Vec::new();
            while !done.load(Ordering::Relaxed) && answers.len() < 120 {
                answers.push(daemon::try_http(metrics, "GET", "/metrics", &[]).map(|(s, _)| s));
                std::thread::sleep(Duration::from_secs(1));
            }
            answers
        })
    };

    // The honest fleet.
    let mut config = MinerConfig::new(listen, 200);
    config.accounts = ACCOUNTS.iter().map(|a| a.to_string()).collect();
    config.submits = Some(30);
    config.rate_per_second = 10.0;
    let sim = MinerSim::start(&rt.executor, config);
    // 5000 invented names once the real accounts hold their labels (the
    // pool-sim accepts any name; a real pool would refuse them).
    proxy.scrape_until("the honest accounts labelled", |m| {
        ACCOUNTS.iter().all(|a| {
            let label = format!("client_id=\"{a}\"");
            m.samples
                .keys()
                .any(|k| k.starts_with("stratum_submits_total{") && k.contains(&label))
        })
    });
    attacks.push(spawn(&done, move |_| {
        let Some(mut s) = connect_from(attacker(), listen) else { return };
        let _ = s.write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[]}\n");
        let mut sink = s.try_clone().unwrap();
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 65536];
            let _ = sink.set_read_timeout(Some(WAIT));
            while matches!(sink.read(&mut buf), Ok(n) if n > 0) {}
        });
        for n in 0..5000 {
            let line = format!(
                "{{\"id\":{},\"method\":\"mining.authorize\",\"params\":[\"made-up-{n}\",\"p\"]}}\n",
                n + 2
            );
            if s.write_all(line.as_bytes()).is_err() {
                break;
            }
        }
        let _ = s.shutdown(std::net::Shutdown::Write);
        let _ = reader.join();
    }));

    let report = smol::block_on(sim.finish());
    done.store(true, Ordering::Relaxed);
    let answers = scrapes.join().unwrap();
    for attack in attacks {
        attack.join().unwrap();
    }
    let rss_after = vm_rss_kib(proxy.child.id());
    eprintln!(
        "siege: VmRSS {rss_before} KiB before, {rss_after} KiB after; {} scrapes",
        answers.len()
    );

    // Every scrape answered.
    assert!(!answers.is_empty());
    assert!(answers.iter().all(|a| *a == Some(200)), "{answers:?}");
    // No honest miner cut, no share lost.
    assert_eq!(
        report.totals.errors,
        0,
        "{:?}",
        report
            .miners
            .iter()
            .filter_map(|m| m.error.as_ref())
            .collect::<Vec<_>>()
    );
    assert_eq!(report.totals.unanswered, 0);
    assert_eq!(report.totals.submits, 200 * 30);
    assert_eq!(pool.stats().accepted, report.totals.accepted);
    // Honest counters equal the simulators' counts, account by account.
    let m = proxy.scrape();
    for account in ACCOUNTS {
        let mine: Vec<_> = report
            .miners
            .iter()
            .filter(|r| r.user.starts_with(&format!("{account}.")))
            .collect();
        let client = [("client_id", account)];
        assert_eq!(
            m.sum("stratum_submits_total", &client),
            mine.iter().map(|r| r.submits_sent).sum::<u64>() as f64,
            "{account}"
        );
        assert_eq!(
            m.sum("stratum_accepted_shares_total", &client),
            mine.iter().map(|r| r.accepted).sum::<u64>() as f64,
            "{account}"
        );
    }
    // Memory: the attacker's bytes were never buffered.
    assert!(
        rss_after.saturating_sub(rss_before) < 24 * 1024,
        "VmRSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    // No forged log line: every line has its own priority prefix and none
    // is the attacker's.
    let log = proxy.log_text();
    assert!(
        log.contains(r"evil0\n<3>forged\r<0>x"),
        "no escaped forgery logged"
    );
    for line in log.lines() {
        assert!(
            line.starts_with("<") && !line.starts_with("<3>forged") && !line.starts_with("<0>x"),
            "forged: {line:?}"
        );
    }
}
