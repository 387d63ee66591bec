//! Shared helpers for the relay integration tests: an explicit executor on a
//! couple of threads, a counting/recording test observer, a relay started on
//! port 0, and a bound on every await (a test fails instead of hanging).
#![allow(dead_code)] // Each test binary uses a different subset.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use smol::channel::{Receiver, Sender};
use smol::{Executor, Timer};
use stratum_proxy::relay::{
    CloseReason, ConnectionInfo, Direction, Event, Limits, Observer, PoolAddr, Pools, RefuseReason,
    Server, ServerHandle, UpstreamFailure,
};
use stratum_proxy::sim::RejectCounts;
use stratum_proxy::stratum::{Message, Outcome, ParseFailure};

/// Bound on any single wait in a test: generous, only there to fail instead of hanging.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(20);

/// An explicit executor run by `threads` threads until dropped.
pub struct Runtime {
    pub executor: Arc<Executor<'static>>,
    shutdown: Sender<()>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    pub fn new(threads: usize) -> Runtime {
        let executor = Arc::new(Executor::new());
        let (shutdown, until) = smol::channel::bounded::<()>(1);
        let threads = (0..threads)
            .map(|i| {
                let executor = executor.clone();
                let until = until.clone();
                std::thread::Builder::new()
                    .name(format!("test-executor-{i}"))
                    .spawn(move || {
                        let _ = stratum_proxy::reactor::block_on(executor.run(until.recv()));
                    })
                    .expect("spawn executor thread")
            })
            .collect();
        Runtime {
            executor,
            shutdown,
            threads,
        }
    }

    /// Runs `future` to completion on the calling thread (tasks run on the executor threads).
    pub fn block_on<T>(&self, future: impl Future<Output = T>) -> T {
        smol::block_on(future)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.shutdown.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Awaits `future`, panicking with `what` if it takes longer than [`TEST_TIMEOUT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    smol::future::or(future, async {
        Timer::after(TEST_TIMEOUT).await;
        panic!("timed out waiting for {what}");
    })
    .await
}

/// A relay started on port 0 in front of `pool`; stopped (accepting) on drop.
pub struct Relay {
    pub addr: SocketAddr,
    /// Every listen address (`addr` is the first).
    pub addrs: Vec<SocketAddr>,
    pub handle: ServerHandle,
    stop: Sender<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.close();
    }
}

/// Binds a relay on 127.0.0.1:0 to `pool` with `limits` and runs it on `executor`.
pub fn start_relay<O: Observer>(
    runtime: &Runtime,
    pool: SocketAddr,
    limits: Limits,
    observer: Arc<O>,
) -> Relay {
    start_relay_to(
        runtime,
        Pools::single(PoolAddr::from(pool)),
        limits,
        observer,
    )
}

/// Binds a relay on 127.0.0.1:0 to `pools` with `limits` and runs it on `executor`.
pub fn start_relay_to<O: Observer>(
    runtime: &Runtime,
    pools: Arc<Pools>,
    limits: Limits,
    observer: Arc<O>,
) -> Relay {
    start_relay_on(
        runtime,
        &["127.0.0.1:0".parse().unwrap()],
        pools,
        limits,
        observer,
    )
}

/// Binds a relay on every address of `listens` (port 0 each) to `pools`.
pub fn start_relay_on<O: Observer>(
    runtime: &Runtime,
    listens: &[SocketAddr],
    pools: Arc<Pools>,
    limits: Limits,
    observer: Arc<O>,
) -> Relay {
    let server = runtime
        .block_on(Server::bind_all(listens, pools, limits, observer))
        .expect("bind relay");
    let addr = server.local_addr();
    let addrs = server.local_addrs().to_vec();
    let handle = server.handle();
    let (stop, stopped) = smol::channel::bounded::<()>(1);
    runtime
        .executor
        .spawn(server.run(runtime.executor.clone(), async move {
            let _ = stopped.recv().await;
        }))
        .detach();
    Relay {
        addr,
        addrs,
        handle,
        stop,
    }
}

/// One observed line, owned, comparable across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// A request: method name as sent, raw id.
    Request(String, String),
    /// A notification: method name as sent.
    Notification(String),
    /// A response: raw id (or "absent").
    Response(String),
    /// A line that did not parse, and its length.
    Failed(ParseFailure, usize),
}

impl Seen {
    /// What the relay reports for `message`.
    pub fn of(message: &Message<'_>) -> Seen {
        use stratum_proxy::stratum::Kind;
        let id = message
            .id()
            .map_or("absent".into(), |id| id.raw().to_owned());
        let method = message.method_name().unwrap_or("").to_owned();
        match message.kind() {
            Kind::Request => Seen::Request(method, id),
            Kind::Notification => Seen::Notification(method),
            Kind::Response => Seen::Response(id),
        }
    }
}

/// A closed connection, as the test observer saw it.
#[derive(Debug, Clone)]
pub struct Closed {
    pub id: u64,
    pub user: Option<String>,
    pub reason: CloseReason,
    pub miner_to_pool_bytes: u64,
    pub pool_to_miner_bytes: u64,
    /// Bytes summed from `Relayed` events, per direction.
    pub relayed: [u64; 2],
    /// Every line seen, per direction (only with `record_lines`).
    pub lines: [Vec<Seen>; 2],
}

/// Everything the test observer counted, over all connections.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub accepted: u64,
    pub closed: u64,
    pub refused: Vec<RefuseReason>,
    pub upstream_connected: u64,
    pub upstream_failed: u64,
    /// Upstream failures that were a pool closing before its first byte.
    pub reset_failures: u64,
    /// Miners closed by the proxy because their pool went down.
    pub pool_down_closes: u64,
    /// `client.reconnect` lines the proxy sent.
    pub reconnects_sent: u64,
    /// When each miner moved to a better pool (failback) was closed.
    pub moved_at: Vec<std::time::Instant>,
    /// Requests by (direction index, method name as sent).
    pub requests: HashMap<(usize, String), u64>,
    /// Notifications by (direction index, method name as sent).
    pub notifications: HashMap<(usize, String), u64>,
    /// Responses per direction.
    pub responses: [u64; 2],
    /// Pool → miner responses that said accepted.
    pub accepted_outcomes: u64,
    /// Pool → miner responses that said rejected, by code.
    pub rejected_outcomes: RejectCounts,
    /// Parse failures per direction.
    pub parse_failures: [u64; 2],
    /// Parse failures by kind, any direction.
    pub failures_by_kind: HashMap<&'static str, u64>,
    /// Bytes from `Relayed` events per direction.
    pub bytes: [u64; 2],
}

impl Counts {
    pub fn requests(&self, direction: Direction, method: &str) -> u64 {
        *self
            .requests
            .get(&(dir(direction), method.to_owned()))
            .unwrap_or(&0)
    }

    pub fn notifications(&self, direction: Direction, method: &str) -> u64 {
        *self
            .notifications
            .get(&(dir(direction), method.to_owned()))
            .unwrap_or(&0)
    }
}

/// Index of a direction: 0 miner → pool, 1 pool → miner.
pub fn dir(direction: Direction) -> usize {
    match direction {
        Direction::MinerToPool => 0,
        Direction::PoolToMiner => 1,
    }
}

/// A test observer: counts everything, remembers user names, optionally
/// records every line, and hands out a record per closed connection.
pub struct TestObserver {
    record_lines: bool,
    counts: Mutex<Counts>,
    closed_tx: Sender<Closed>,
    closed_rx: Receiver<Closed>,
    refused_tx: Sender<RefuseReason>,
    refused_rx: Receiver<RefuseReason>,
}

/// Per-connection state of [`TestObserver`].
pub struct TestConnection {
    id: u64,
    user: Option<String>,
    relayed: [u64; 2],
    lines: [Vec<Seen>; 2],
}

impl TestObserver {
    pub fn new(record_lines: bool) -> Arc<TestObserver> {
        let (closed_tx, closed_rx) = smol::channel::unbounded();
        let (refused_tx, refused_rx) = smol::channel::unbounded();
        Arc::new(TestObserver {
            record_lines,
            counts: Mutex::new(Counts::default()),
            closed_tx,
            closed_rx,
            refused_tx,
            refused_rx,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn counts(&self) -> Counts {
        self.lock().clone()
    }

    /// Awaits the next closed connection (bounded).
    pub async fn next_closed(&self) -> Closed {
        within("a Closed event", self.closed_rx.recv())
            .await
            .expect("observer channel open")
    }

    /// Awaits `n` closed connections (bounded).
    pub async fn closed(&self, n: usize) -> Vec<Closed> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.next_closed().await);
        }
        out
    }

    /// Awaits the next refusal (bounded).
    pub async fn next_refused(&self) -> RefuseReason {
        within("a refusal", self.refused_rx.recv())
            .await
            .expect("observer channel open")
    }

    /// Closed records already delivered but not awaited.
    pub fn closed_pending(&self) -> usize {
        self.closed_rx.len()
    }
}

impl Observer for TestObserver {
    type Connection = TestConnection;

    fn accepted(&self, info: &ConnectionInfo) -> TestConnection {
        self.lock().accepted += 1;
        TestConnection {
            id: info.id,
            user: None,
            relayed: [0, 0],
            lines: [Vec::new(), Vec::new()],
        }
    }

    fn event(&self, conn: &mut TestConnection, event: Event<'_>) {
        let mut counts = self.lock();
        let mut seen = None;
        match event {
            Event::UpstreamConnected { .. } => counts.upstream_connected += 1,
            Event::ReconnectSent { .. } => counts.reconnects_sent += 1,
            Event::UpstreamFailed { failure, .. } => {
                counts.upstream_failed += 1;
                counts.reset_failures += u64::from(failure == UpstreamFailure::Reset);
            }
            Event::Relayed { direction, bytes } => {
                counts.bytes[dir(direction)] += bytes as u64;
                conn.relayed[dir(direction)] += bytes as u64;
            }
            Event::Request {
                direction, message, ..
            } => {
                let name = message.method_name().unwrap_or("").to_owned();
                *counts.requests.entry((dir(direction), name)).or_default() += 1;
                if let Some(user) = message.user() {
                    conn.user = Some(user.into_owned());
                }
                seen = Some((direction, Seen::of(message)));
            }
            Event::Notification {
                direction, message, ..
            } => {
                let name = message.method_name().unwrap_or("").to_owned();
                *counts
                    .notifications
                    .entry((dir(direction), name))
                    .or_default() += 1;
                seen = Some((direction, Seen::of(message)));
            }
            Event::Response {
                direction, message, ..
            } => {
                counts.responses[dir(direction)] += 1;
                if direction == Direction::PoolToMiner {
                    match message.outcome() {
                        Outcome::Accepted => counts.accepted_outcomes += 1,
                        Outcome::Rejected(e) => counts.rejected_outcomes.add(e.code),
                        Outcome::Value => {}
                    }
                }
                seen = Some((direction, Seen::of(message)));
            }
            Event::ParseFailed {
                direction,
                failure,
                line_bytes,
            } => {
                counts.parse_failures[dir(direction)] += 1;
                *counts.failures_by_kind.entry(failure.as_str()).or_default() += 1;
                seen = Some((direction, Seen::Failed(failure, line_bytes)));
            }
            Event::Closed {
                miner_to_pool_bytes,
                pool_to_miner_bytes,
                reason,
                ..
            } => {
                counts.closed += 1;
                counts.pool_down_closes += u64::from(reason == CloseReason::PoolDown);
                if reason == CloseReason::Moved {
                    counts.moved_at.push(std::time::Instant::now());
                }
                drop(counts);
                let _ = self.closed_tx.try_send(Closed {
                    id: conn.id,
                    user: conn.user.clone(),
                    reason,
                    miner_to_pool_bytes,
                    pool_to_miner_bytes,
                    relayed: conn.relayed,
                    lines: std::mem::take(&mut conn.lines),
                });
                return;
            }
        }
        if let (true, Some((direction, seen))) = (self.record_lines, seen) {
            conn.lines[dir(direction)].push(seen);
        }
    }

    fn refused(&self, _peer: SocketAddr, reason: RefuseReason) {
        self.lock().refused.push(reason);
        let _ = self.refused_tx.try_send(reason);
    }
}

/// What the framer + message view report for `stream` parsed in one piece.
pub fn parse_whole(stream: &[u8]) -> Vec<Seen> {
    use stratum_proxy::stratum::LineFramer;
    let mut out = Vec::new();
    LineFramer::new().push(stream, |frame| out.push(seen_frame(frame)));
    out
}

/// What the relay reports for one frame.
pub fn seen_frame(frame: stratum_proxy::stratum::Frame<'_>) -> Seen {
    use stratum_proxy::stratum::Frame;
    match frame {
        Frame::Overlong(n) => Seen::Failed(ParseFailure::TooLong, n),
        Frame::Line(line) => match Message::parse(line) {
            Ok(message) => Seen::of(&message),
            Err(failure) => Seen::Failed(failure, line.len()),
        },
    }
}

/// A raw TCP peer for tests that need exact control of what is sent.
pub struct Peer {
    pub stream: smol::Async<std::net::TcpStream>,
    /// Bytes read but not yet consumed by `read_line`.
    unread: Vec<u8>,
    /// Every byte read so far.
    pub received: Vec<u8>,
}

impl Peer {
    /// Connects to `addr`.
    pub async fn connect(addr: SocketAddr) -> Peer {
        let stream = within("connect", smol::Async::<std::net::TcpStream>::connect(addr))
            .await
            .expect("connect");
        Peer::from_stream(stream)
    }

    /// Wraps an accepted stream.
    pub fn from_stream(stream: smol::Async<std::net::TcpStream>) -> Peer {
        Peer {
            stream,
            unread: Vec::new(),
            received: Vec::new(),
        }
    }

    /// Writes all of `bytes`.
    pub async fn send(&self, bytes: &[u8]) {
        use smol::io::AsyncWriteExt;
        let mut writer = &self.stream;
        within("a write", writer.write_all(bytes))
            .await
            .expect("write");
    }

    /// Reads one chunk; 0 at EOF or on a reset.
    async fn fill(&mut self) -> usize {
        use smol::io::AsyncReadExt;
        let mut chunk = [0u8; 16 * 1024];
        let mut reader = &self.stream;
        let n = within("a read", reader.read(&mut chunk)).await.unwrap_or(0);
        self.unread.extend_from_slice(&chunk[..n]);
        self.received.extend_from_slice(&chunk[..n]);
        n
    }

    /// The next line without its newline; `None` at EOF.
    pub async fn read_line(&mut self) -> Option<Vec<u8>> {
        loop {
            if let Some(pos) = self.unread.iter().position(|&b| b == b'\n') {
                let line = self.unread[..pos].to_vec();
                self.unread.drain(..=pos);
                return Some(line);
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Sends a `mining.subscribe` with `id` and reads lines until its answer.
    pub async fn roundtrip(&mut self, id: u64) {
        self.send(
            format!("{{\"id\":{id},\"method\":\"mining.subscribe\",\"params\":[]}}\n").as_bytes(),
        )
        .await;
        let prefix = format!("{{\"id\":{id},");
        while let Some(line) = self.read_line().await {
            if line.starts_with(prefix.as_bytes()) {
                return;
            }
        }
        panic!("connection closed before the answer to request {id}");
    }

    /// Reads until EOF (or a reset); returns how many bytes that was.
    pub async fn read_to_eof(&mut self) -> usize {
        let mut total = 0;
        loop {
            match self.fill().await {
                0 => return total,
                n => total += n,
            }
        }
    }

    /// Reads until `n` bytes in all have been received (or EOF).
    pub async fn read_until_total(&mut self, n: usize) {
        while self.received.len() < n {
            if self.fill().await == 0 {
                return;
            }
        }
    }
}

/// A loopback port with nothing listening on it (bound, read back, released).
pub fn unused_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// A blocking connection to `to` from the loopback address `from` (any of
/// 127.0.0.0/8), for tests of per-source behaviour.
pub fn connect_from(from: std::net::IpAddr, to: SocketAddr) -> std::net::TcpStream {
    use rustix::net::{AddressFamily, SocketType, bind, connect, socket};
    let socket = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
    bind(&socket, &SocketAddr::new(from, 0)).expect("bind a loopback source address");
    connect(&socket, &to).expect("connect");
    std::net::TcpStream::from(socket)
}

/// The metrics collector as the daemon builds it (one pool, client ids by
/// account), on a local recorder.
pub fn collector() -> Arc<stratum_proxy::metrics::collector::Collector> {
    use stratum_proxy::config::ClientIdMode;
    use stratum_proxy::metrics::collector::{Collector, CollectorOptions};
    Arc::new(Collector::new(
        Arc::new(stratum_proxy::metrics::schema::build_recorder()),
        CollectorOptions {
            pools: vec!["127.0.0.1:3333".into()],
            client_id: ClientIdMode::Account,
            client_id_cap: 1000,
            request_timeout: Duration::from_secs(60),
            health_interval: Duration::from_secs(60),
        },
    ))
}
