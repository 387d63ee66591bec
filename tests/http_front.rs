//! The metrics port under a hostile LAN: the real binary (or the real
//! server, in process) over loopback, attacked the ways issue 10 found.

mod daemon;
mod runner;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use daemon::{Proxy, SimRuntime, WAIT};
use stratum_proxy::http::{
    App, HttpServer, MAX_HEAD_BYTES, MAX_HTTP_CONNECTIONS, MAX_HTTP_CONNECTIONS_PER_ADDRESS,
};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

fn proxy(rt: &SimRuntime) -> (PoolSim, Proxy) {
    let pool = PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig::default(),
    )
    .expect("pool-sim");
    let proxy = Proxy::start(pool.local_addr(), &[], &[]);
    (pool, proxy)
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&socket, &SocketAddr::new(from, 0)).expect("bind a loopback source address");
    connect(&socket, &to).expect("connect");
    TcpStream::from(socket)
}

/// GET `path` from `to` over a connection from `from`: (status, body).
fn get_from(from: IpAddr, to: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = connect_from(from, to);
    stream.set_read_timeout(Some(WAIT)).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP answer from {to} to {from}: {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

fn loopback(last: u8) -> IpAddr {
    IpAddr::from([127, 0, 0, last])
}

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status")
}

/// What an endless-head client got back before it was cut off.
fn answer_of(stream: &mut TcpStream) -> String {
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

#[test]
fn endless_head_clients_get_431_and_the_proxy_memory_stays_bounded() {
    // Each client may send this much; bounded in count so that the unfixed
    // proxy (which buffered every byte) fails on memory, not on time.
    const PER_CLIENT_BYTES: usize = 16 << 20;
    const CLIENTS: usize = 16;
    let rt = SimRuntime::new();
    let (_pool, proxy) = proxy(&rt);
    assert_eq!(proxy.get("/healthz").0, 200);
    let pid = proxy.child.id();
    let before = vm_rss_kib(pid);
    let clients: Vec<_> = (0..CLIENTS)
        .map(|n| {
            let to = proxy.metrics;
            std::thread::spawn(move || {
                let mut stream = connect_from(loopback(10 + n as u8), to);
                let junk = [b'a'; 64 * 1024];
                let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nX-Junk: ");
                let mut sent = 0;
                while sent < PER_CLIENT_BYTES {
                    match stream.write(&junk) {
                        Ok(n) => sent += n,
                        Err(_) => break, // cut off by the proxy
                    }
                }
                (sent, answer_of(&mut stream))
            })
        })
        .collect();
    let results: Vec<(usize, String)> = clients.into_iter().map(|c| c.join().unwrap()).collect();
    let after = vm_rss_kib(pid);
    eprintln!("VmRSS before {before} KiB, after {CLIENTS} endless heads {after} KiB");
    // The unfixed proxy held every byte sent (16 x 16 MiB here, 2.9 GiB in
    // the 20 s run); a few MiB of growth is allocator noise.
    assert!(
        after.saturating_sub(before) < 32 * 1024,
        "VmRSS grew from {before} KiB to {after} KiB"
    );
    for (sent, answer) in &results {
        assert!(
            answer.starts_with("HTTP/1.1 431 ") || answer.is_empty(),
            "sent {sent}: {answer:?}"
        );
    }
    // The reset may beat the 431 to some clients, never to all.
    assert!(results.iter().any(|(_, a)| a.starts_with("HTTP/1.1 431 ")));
    assert_eq!(proxy.get("/healthz").0, 200);
}

#[test]
fn idle_connections_from_one_address_do_not_stop_a_scrape_from_another() {
    let rt = SimRuntime::new();
    let (_pool, proxy) = proxy(&rt);
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| connect_from(loopback(1), proxy.metrics))
        .collect();
    for path in ["/metrics", "/healthz"] {
        let (status, body) = get_from(loopback(2), proxy.metrics, path);
        assert_eq!(status, 200, "{path}: {body}");
    }
    // The attacker's own address still gets a scrape through: its oldest
    // idle connection is evicted for it.
    assert_eq!(get_from(loopback(1), proxy.metrics, "/healthz").0, 200);
    drop(idle);
}

#[test]
fn a_table_full_of_waiting_connections_still_admits_a_new_scraper() {
    let rt = SimRuntime::new();
    let (_pool, proxy) = proxy(&rt);
    // More idle connections than the table holds, from enough addresses
    // that the per-address cap alone would not stop them.
    let addresses = MAX_HTTP_CONNECTIONS.div_ceil(MAX_HTTP_CONNECTIONS_PER_ADDRESS) + 1;
    let idle: Vec<TcpStream> = (0..addresses)
        .flat_map(|a| {
            (0..MAX_HTTP_CONNECTIONS_PER_ADDRESS)
                .map(move |_| connect_from(loopback(20 + a as u8), proxy.metrics))
        })
        .collect();
    assert!(idle.len() > MAX_HTTP_CONNECTIONS);
    for _ in 0..3 {
        assert_eq!(get_from(loopback(1), proxy.metrics, "/metrics").0, 200);
    }
}

#[test]
fn a_head_too_slow_gets_408_and_one_too_long_431() {
    let rt = SimRuntime::new();
    let (_pool, proxy) = proxy(&rt);
    let mut slow = connect_from(loopback(3), proxy.metrics);
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let answer = answer_of(&mut slow);
    assert!(answer.starts_with("HTTP/1.1 408 "), "{answer:?}");

    let mut long = connect_from(loopback(3), proxy.metrics);
    let head = format!(
        "GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n",
        "a".repeat(MAX_HEAD_BYTES)
    );
    let _ = long.write_all(head.as_bytes());
    let answer = answer_of(&mut long);
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer:?}");
    // A head that fits is served, with the bytes after it ignored.
    let mut ok = connect_from(loopback(3), proxy.metrics);
    ok.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\ntrailing junk without end")
        .unwrap();
    let answer = answer_of(&mut ok);
    assert!(answer.starts_with("HTTP/1.1 200 "), "{answer:?}");
}

fn app() -> Arc<App> {
    use stratum_proxy::metrics::schema::build_recorder;
    use stratum_proxy::metrics::{Collector, CollectorOptions};
    let recorder = Arc::new(build_recorder());
    let prometheus = recorder.handle();
    let collector = Arc::new(Collector::new(
        recorder,
        CollectorOptions {
            pools: vec!["pool:3333".into()],
            client_id: stratum_proxy::config::DEFAULT_CLIENT_ID,
            client_id_cap: 10,
            request_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(60),
        },
    ));
    Arc::new(App {
        collector,
        prometheus,
        config: serde_json::json!({}),
        token: None,
        started: Instant::now(),
        active_connections: Box::new(|| 0),
        pools: stratum_proxy::relay::Pools::single("pool:3333".parse().unwrap()),
        reloader: None,
    })
}

#[test]
fn a_dead_tiny_http_accept_thread_is_restarted() {
    let server = HttpServer::start("127.0.0.1:0".parse().unwrap(), 2, app()).expect("start");
    let addr = server.local_addr();
    assert_eq!(daemon::http(addr, "GET", "/healthz", &[]).0, 200);
    // tiny_http's accept thread ends on its first accept error (EMFILE on
    // a busy gateway); its workers would then wait forever.
    server.break_backend_accept();
    let deadline = Instant::now() + WAIT;
    while server.restarts() == 0 {
        assert!(Instant::now() < deadline, "tiny_http was not restarted");
        std::thread::sleep(Duration::from_millis(10));
    }
    for _ in 0..3 {
        assert_eq!(daemon::http(addr, "GET", "/healthz", &[]).0, 200);
    }
    server.stop();
}
