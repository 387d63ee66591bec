//! pool-sim: a Stratum V1 pool for tests, benchmarks and the demo.
//!
//! It answers subscribe, authorize, configure, extranonce.subscribe and
//! suggest_difficulty; sends `mining.set_difficulty` and realistic
//! `mining.notify` jobs on authorize, periodically and on demand; and answers
//! submits with accept or reject after a configurable latency. Each
//! connection has one writer fed by a FIFO of `(send_at, bytes)`, so answers
//! leave in request order. Everything it sees is counted ([`PoolStats`]) and
//! every closed connection yields a [`ConnectionRecord`] with digests of the
//! bytes it received and sent. When a miner half-closes, the pool sends what
//! is already queued, sends nothing new, and closes: byte totals are exact.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Task, Timer};

use super::{Digest, RejectCode, RejectCounts, SplitMix};
use crate::stratum::{Frame, Kind, LineFramer, Message, Method};

/// Default share difficulty sent with `mining.set_difficulty`.
pub const DEFAULT_DIFFICULTY: f64 = 1024.0;
/// Default interval between periodic jobs.
pub const DEFAULT_NOTIFY_INTERVAL: Duration = Duration::from_secs(30);
/// Merkle branches in every `mining.notify` (a block of a few thousand transactions).
pub const MERKLE_BRANCHES: usize = 12;
/// Extranonce2 size in bytes, as announced in the subscribe result.
pub const EXTRANONCE2_BYTES: usize = 4;
/// Hex length of coinbase part 1 (version, input, height, pool tag).
const COINB1_HEX_CHARS: usize = 120;
/// Hex length of coinbase part 2 (sequence, outputs with a witness commitment).
const COINB2_HEX_CHARS: usize = 310;
/// Size of each connection's read buffer, in bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;
/// Pause after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);

/// How the simulated pool behaves.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Difficulty sent with `mining.set_difficulty`.
    pub difficulty: f64,
    /// Interval between periodic set_difficulty + notify; `None` for none.
    pub notify_interval: Option<Duration>,
    /// Share of submits rejected, 0.0–1.0, spread evenly.
    pub reject_ratio: f64,
    /// Reasons given to rejected submits, in turn; empty means low difficulty.
    pub reject_codes: Vec<RejectCode>,
    /// Delay before each response is sent.
    pub latency: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            difficulty: DEFAULT_DIFFICULTY,
            notify_interval: Some(DEFAULT_NOTIFY_INTERVAL),
            reject_ratio: 0.0,
            reject_codes: vec![RejectCode::LowDifficulty],
            latency: Duration::ZERO,
        }
    }
}

/// A snapshot of everything the pool counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed (records produced).
    pub closed: u64,
    /// `mining.subscribe` requests.
    pub subscribes: u64,
    /// `mining.authorize` requests.
    pub authorizes: u64,
    /// `mining.configure` requests.
    pub configures: u64,
    /// `mining.extranonce.subscribe` requests.
    pub extranonce_subscribes: u64,
    /// `mining.suggest_difficulty` requests and notifications.
    pub suggest_difficulties: u64,
    /// `mining.submit` requests.
    pub submits: u64,
    /// Requests with a method the pool does not know (answered with an error).
    pub unknown_methods: u64,
    /// Other valid JSON-RPC lines from miners (notifications, responses).
    pub other_messages: u64,
    /// Lines that were not JSON-RPC (or were over-long); ignored.
    pub garbage_lines: u64,
    /// Responses written (all kinds).
    pub responses_sent: u64,
    /// Submits answered `true`.
    pub accepted: u64,
    /// Submits answered with an error, by code.
    pub rejected: RejectCounts,
    /// `mining.notify` written.
    pub notifies_sent: u64,
    /// `mining.set_difficulty` written.
    pub set_difficulty_sent: u64,
    /// Bytes received from miners.
    pub bytes_in: u64,
    /// Bytes written to miners.
    pub bytes_out: u64,
}

/// What the pool saw on one connection, produced when it closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConnectionRecord {
    /// The pool's connection number (1, 2, ...).
    pub id: u64,
    /// The miner's address.
    pub peer: SocketAddr,
    /// The user name of the last `mining.authorize`, if any.
    pub user: Option<String>,
    /// Every byte received from the miner.
    pub received: Digest,
    /// Every byte written to the miner.
    pub sent: Digest,
    /// `mining.submit` requests on this connection.
    pub submits: u64,
}

/// Lock-free counters behind [`PoolStats`].
#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    closed: AtomicU64,
    subscribes: AtomicU64,
    authorizes: AtomicU64,
    configures: AtomicU64,
    extranonce_subscribes: AtomicU64,
    suggest_difficulties: AtomicU64,
    submits: AtomicU64,
    unknown_methods: AtomicU64,
    other_messages: AtomicU64,
    garbage_lines: AtomicU64,
    responses_sent: AtomicU64,
    accepted: AtomicU64,
    rejected: [AtomicU64; 4],
    notifies_sent: AtomicU64,
    set_difficulty_sent: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
}

fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    fn snapshot(&self) -> PoolStats {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        PoolStats {
            connections: get(&self.connections),
            closed: get(&self.closed),
            subscribes: get(&self.subscribes),
            authorizes: get(&self.authorizes),
            configures: get(&self.configures),
            extranonce_subscribes: get(&self.extranonce_subscribes),
            suggest_difficulties: get(&self.suggest_difficulties),
            submits: get(&self.submits),
            unknown_methods: get(&self.unknown_methods),
            other_messages: get(&self.other_messages),
            garbage_lines: get(&self.garbage_lines),
            responses_sent: get(&self.responses_sent),
            accepted: get(&self.accepted),
            rejected: RejectCounts {
                job_not_found: get(&self.rejected[0]),
                duplicate: get(&self.rejected[1]),
                low_difficulty: get(&self.rejected[2]),
                unauthorized: get(&self.rejected[3]),
                other: 0,
            },
            notifies_sent: get(&self.notifies_sent),
            set_difficulty_sent: get(&self.set_difficulty_sent),
            bytes_in: get(&self.bytes_in),
            bytes_out: get(&self.bytes_out),
        }
    }
}

/// What a queued write is, for counting once it is written.
#[derive(Debug, Clone, Copy)]
enum Sent {
    Response,
    Accepted,
    Rejected(RejectCode),
    Notify,
    SetDifficulty,
    /// Not a write: close the connection.
    Close,
}

impl Sent {
    /// An answer to a miner's request (not a job or a difficulty).
    fn is_answer(&self) -> bool {
        matches!(self, Sent::Response | Sent::Accepted | Sent::Rejected(_))
    }
}

/// One queued write.
struct Outgoing {
    send_at: Instant,
    bytes: Arc<[u8]>,
    sent: Sent,
}

/// State shared by the listener, the job timer and every connection.
struct Shared {
    config: PoolConfig,
    counters: Counters,
    /// Writers of authorized connections, for broadcasts.
    authorized: Mutex<HashMap<u64, Sender<Outgoing>>>,
    /// Writers of every open connection, for [`PoolSim::disconnect_all`].
    open: Mutex<HashMap<u64, Sender<Outgoing>>>,
    next_connection: AtomicU64,
    job: AtomicU64,
    submit_seq: AtomicU64,
    reject_seq: AtomicU64,
    records: Sender<ConnectionRecord>,
    /// A hung pool: accepts and reads, answers and notifies nothing.
    silent: AtomicBool,
    /// A half-broken pool: keeps sending jobs, answers no request.
    mute: AtomicBool,
}

/// A running simulated pool. Dropping it stops accepting and the job timer;
/// open connections run until their miners leave.
pub struct PoolSim {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    records: Receiver<ConnectionRecord>,
    _accept: Task<()>,
    _jobs: Option<Task<()>>,
}

impl PoolSim {
    /// Binds `listen` (port 0 picks a free port) and starts serving on `executor`.
    pub fn start(
        executor: &Arc<Executor<'static>>,
        listen: SocketAddr,
        config: PoolConfig,
    ) -> io::Result<PoolSim> {
        // A real pool takes a whole farm reconnecting at once; std's backlog
        // of 128 would make the simulator, not the relay, drop SYNs.
        let listener = Async::new(crate::relay::server::bind_std_listener(listen)?)?;
        let local_addr = listener.get_ref().local_addr()?;
        let (records_tx, records) = smol::channel::unbounded();
        let notify_interval = config.notify_interval;
        let shared = Arc::new(Shared {
            config,
            counters: Counters::default(),
            authorized: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            job: AtomicU64::new(1),
            submit_seq: AtomicU64::new(0),
            reject_seq: AtomicU64::new(0),
            records: records_tx,
            silent: AtomicBool::new(false),
            mute: AtomicBool::new(false),
        });
        let accept = executor.spawn(accept_loop(listener, shared.clone(), executor.clone()));
        let jobs = notify_interval.filter(|d| !d.is_zero()).map(|interval| {
            let shared = shared.clone();
            executor.spawn(async move {
                loop {
                    Timer::after(interval).await;
                    shared.broadcast(false);
                }
            })
        });
        Ok(PoolSim {
            local_addr,
            shared,
            records,
            _accept: accept,
            _jobs: jobs,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> PoolStats {
        self.shared.counters.snapshot()
    }

    /// Sends set_difficulty and a new `clean_jobs` notify to every authorized
    /// connection now; returns how many connections it was queued for.
    pub fn clean_jobs_burst(&self) -> usize {
        self.shared.broadcast(true)
    }

    /// Closes every open connection (after what is already queued), as a
    /// pool restart would; returns how many.
    pub fn disconnect_all(&self) -> usize {
        let open = self.shared.open.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        open.values()
            .filter(|tx| {
                tx.try_send(Outgoing {
                    send_at: now,
                    bytes: Arc::from(&b""[..]),
                    sent: Sent::Close,
                })
                .is_ok()
            })
            .count()
    }

    /// Hangs (`true`): connections stay open and are read, but nothing is
    /// answered or notified any more, as a pool whose backend froze; or
    /// recovers (`false`).
    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::Relaxed);
    }

    /// Stops answering requests (`true`) while it keeps sending jobs, as a
    /// pool whose share backend froze; or answers again (`false`).
    pub fn set_mute(&self, mute: bool) {
        self.shared.mute.store(mute, Ordering::Relaxed);
    }

    /// Dies: closes every connection and stops accepting (new connections
    /// are refused), as a killed pool process would.
    pub fn kill(self) {
        self.disconnect_all();
    }

    /// Receives one [`ConnectionRecord`] per closed connection, in close order.
    pub fn records(&self) -> Receiver<ConnectionRecord> {
        self.records.clone()
    }
}

impl Shared {
    /// Queues set_difficulty and a new job to every authorized connection.
    fn broadcast(&self, clean_jobs: bool) -> usize {
        if self.silent.load(Ordering::Relaxed) {
            return 0;
        }
        let job = self.job.fetch_add(1, Ordering::Relaxed) + 1;
        let difficulty: Arc<[u8]> = set_difficulty_line(self.config.difficulty).into();
        let notify: Arc<[u8]> = notify_line(job, clean_jobs).into();
        let now = Instant::now();
        let authorized = self.authorized.lock().unwrap_or_else(|e| e.into_inner());
        authorized
            .values()
            .filter(|tx| {
                let a = tx.try_send(Outgoing {
                    send_at: now,
                    bytes: difficulty.clone(),
                    sent: Sent::SetDifficulty,
                });
                let b = tx.try_send(Outgoing {
                    send_at: now,
                    bytes: notify.clone(),
                    sent: Sent::Notify,
                });
                a.is_ok() && b.is_ok()
            })
            .count()
    }

    /// Accept or reject the next submit: evenly spread, `reject_ratio` of them.
    fn judge_submit(&self) -> Option<RejectCode> {
        let n = self.submit_seq.fetch_add(1, Ordering::Relaxed) as f64;
        let ratio = self.config.reject_ratio.clamp(0.0, 1.0);
        if ((n + 1.0) * ratio).floor() > (n * ratio).floor() {
            let codes = &self.config.reject_codes;
            if codes.is_empty() {
                return Some(RejectCode::LowDifficulty);
            }
            let i = self.reject_seq.fetch_add(1, Ordering::Relaxed) as usize % codes.len();
            Some(codes[i])
        } else {
            None
        }
    }
}

async fn accept_loop(
    listener: Async<TcpListener>,
    shared: Arc<Shared>,
    executor: Arc<Executor<'static>>,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let id = shared.next_connection.fetch_add(1, Ordering::Relaxed);
                bump(&shared.counters.connections);
                executor
                    .spawn(serve(stream, peer, id, shared.clone()))
                    .detach();
            }
            Err(_) => {
                Timer::after(ACCEPT_BACKOFF).await;
            }
        }
    }
}

/// Serves one miner until it leaves (or the pool closes it); sends its record.
async fn serve(stream: Async<TcpStream>, peer: SocketAddr, id: u64, shared: Arc<Shared>) {
    let _ = stream.get_ref().set_nodelay(true);
    let (tx, rx) = smol::channel::unbounded::<Outgoing>();
    lock(&shared.open).insert(id, tx.clone());
    let reader = read_side(&stream, id, &shared, tx);
    let writer = write_side(&stream, &shared, rx);
    let ((received, user, submits), sent) = smol::future::zip(reader, writer).await;
    lock(&shared.open).remove(&id);
    lock(&shared.authorized).remove(&id);
    let _ = stream.get_ref().shutdown(Shutdown::Both);
    bump(&shared.counters.closed);
    let _ = shared.records.try_send(ConnectionRecord {
        id,
        peer,
        user,
        received,
        sent,
        submits,
    });
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Reads and answers requests until EOF; then closes the write queue.
async fn read_side(
    stream: &Async<TcpStream>,
    id: u64,
    shared: &Shared,
    tx: Sender<Outgoing>,
) -> (Digest, Option<String>, u64) {
    let mut conn = PoolConnection {
        id,
        shared,
        tx: &tx,
        user: None,
        submits: 0,
        out: String::with_capacity(512),
    };
    let mut received = Digest::new();
    let mut framer = LineFramer::new();
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut reader = stream;
    loop {
        let n = match reader.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        received.update(&buffer[..n]);
        shared
            .counters
            .bytes_in
            .fetch_add(n as u64, Ordering::Relaxed);
        framer.push(&buffer[..n], |frame| conn.handle(frame));
    }
    // The miner is done: no new writes (broadcasts fail from now on), but
    // what is queued still goes out and then the writer ends.
    tx.close();
    (received, conn.user, conn.submits)
}

/// Writes queued items at their time, in order, until the queue is closed and empty.
async fn write_side(stream: &Async<TcpStream>, shared: &Shared, rx: Receiver<Outgoing>) -> Digest {
    let mut sent = Digest::new();
    let mut writer = stream;
    let counters = &shared.counters;
    while let Ok(item) = rx.recv().await {
        if item.send_at > Instant::now() {
            Timer::at(item.send_at).await;
        }
        if let Sent::Close = item.sent {
            break;
        }
        if writer.write_all(&item.bytes).await.is_err() {
            break;
        }
        sent.update(&item.bytes);
        counters
            .bytes_out
            .fetch_add(item.bytes.len() as u64, Ordering::Relaxed);
        match item.sent {
            Sent::Response => bump(&counters.responses_sent),
            Sent::Accepted => {
                bump(&counters.responses_sent);
                bump(&counters.accepted);
            }
            Sent::Rejected(code) => {
                bump(&counters.responses_sent);
                let i = RejectCode::ALL.iter().position(|c| *c == code).unwrap_or(2);
                bump(&counters.rejected[i]);
            }
            Sent::Notify => bump(&counters.notifies_sent),
            Sent::SetDifficulty => bump(&counters.set_difficulty_sent),
            Sent::Close => {}
        }
    }
    // Ends the reader too when the pool closes first.
    let _ = stream.get_ref().shutdown(Shutdown::Both);
    sent
}

/// Per-connection request handling.
struct PoolConnection<'a> {
    id: u64,
    shared: &'a Shared,
    tx: &'a Sender<Outgoing>,
    user: Option<String>,
    submits: u64,
    /// Reused buffer for building lines.
    out: String,
}

impl PoolConnection<'_> {
    fn handle(&mut self, frame: Frame<'_>) {
        let counters = &self.shared.counters;
        let line = match frame {
            Frame::Line(line) => line,
            Frame::Overlong(_) => return bump(&counters.garbage_lines),
        };
        let Ok(message) = Message::parse(line) else {
            return bump(&counters.garbage_lines);
        };
        let method = match (message.kind(), message.method()) {
            (Kind::Request, Some(method)) => method,
            (Kind::Notification, Some(Method::SuggestDifficulty)) => {
                return bump(&counters.suggest_difficulties);
            }
            _ => return bump(&counters.other_messages),
        };
        let id = message.id().map_or("null", |id| id.raw());
        let latency = self.shared.config.latency;
        let send_at = Instant::now() + latency;
        match method {
            Method::Subscribe => {
                bump(&counters.subscribes);
                let (subscription, extranonce1) = connection_ids(self.id);
                self.respond(
                    send_at,
                    id,
                    &format!(
                        "[[[\"mining.set_difficulty\",\"{subscription}\"],[\"mining.notify\",\"{subscription}\"]],\"{extranonce1}\",{EXTRANONCE2_BYTES}]"
                    ),
                    Sent::Response,
                );
            }
            Method::Authorize => {
                bump(&counters.authorizes);
                self.user = message.user().map(|u| u.into_owned());
                self.respond(send_at, id, "true", Sent::Response);
                self.queue(
                    send_at,
                    set_difficulty_line(self.shared.config.difficulty),
                    Sent::SetDifficulty,
                );
                let job = self.shared.job.load(Ordering::Relaxed);
                self.queue(send_at, notify_line(job, true), Sent::Notify);
                lock(&self.shared.authorized).insert(self.id, self.tx.clone());
            }
            Method::Configure => {
                bump(&counters.configures);
                self.respond(
                    send_at,
                    id,
                    "{\"version-rolling\":true,\"version-rolling.mask\":\"1fffe000\"}",
                    Sent::Response,
                );
            }
            Method::ExtranonceSubscribe => {
                bump(&counters.extranonce_subscribes);
                self.respond(send_at, id, "true", Sent::Response);
            }
            Method::SuggestDifficulty => {
                bump(&counters.suggest_difficulties);
                self.respond(send_at, id, "true", Sent::Response);
            }
            Method::Submit => {
                bump(&counters.submits);
                self.submits += 1;
                match self.shared.judge_submit() {
                    None => self.respond(send_at, id, "true", Sent::Accepted),
                    Some(code) => self.error(send_at, id, code.code(), code.message(), code),
                }
            }
            _ => {
                bump(&counters.unknown_methods);
                self.out.clear();
                let _ = writeln!(
                    self.out,
                    "{{\"id\":{id},\"result\":null,\"error\":[20,\"Unknown method\",null]}}"
                );
                let line = self.out.as_bytes().to_vec();
                self.queue(send_at, line, Sent::Response);
            }
        }
    }

    fn respond(&mut self, send_at: Instant, id: &str, result: &str, sent: Sent) {
        self.out.clear();
        let _ = writeln!(
            self.out,
            "{{\"id\":{id},\"result\":{result},\"error\":null}}"
        );
        let line = self.out.as_bytes().to_vec();
        self.queue(send_at, line, sent);
    }

    fn error(&mut self, send_at: Instant, id: &str, code: i64, text: &str, reason: RejectCode) {
        self.out.clear();
        let _ = writeln!(
            self.out,
            "{{\"id\":{id},\"result\":null,\"error\":[{code},\"{text}\",null]}}"
        );
        let line = self.out.as_bytes().to_vec();
        self.queue(send_at, line, Sent::Rejected(reason));
    }

    fn queue(&self, send_at: Instant, bytes: Vec<u8>, sent: Sent) {
        if self.shared.silent.load(Ordering::Relaxed) {
            return;
        }
        if self.shared.mute.load(Ordering::Relaxed) && sent.is_answer() {
            return;
        }
        let _ = self.tx.try_send(Outgoing {
            send_at,
            bytes: bytes.into(),
            sent,
        });
    }
}

/// Subscription id and extranonce1 of a connection: unique per connection
/// (multiplying by an odd constant is a bijection on `u32`).
fn connection_ids(id: u64) -> (String, String) {
    let mixed = (id as u32).wrapping_mul(0x9e37_79b1);
    (
        format!("{:016x}", id.wrapping_mul(0xa076_1d64_78bd_642f)),
        format!("{mixed:08x}"),
    )
}

/// `mining.set_difficulty` line (with its newline).
pub fn set_difficulty_line(difficulty: f64) -> Vec<u8> {
    format!("{{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[{difficulty}]}}\n")
        .into_bytes()
}

/// A realistic `mining.notify` line for job number `job` (with its newline).
pub fn notify_line(job: u64, clean_jobs: bool) -> Vec<u8> {
    let mut rng = SplitMix::new(job);
    let mut line = String::with_capacity(1400);
    let _ = write!(
        line,
        "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"{job:x}\",\""
    );
    // Previous block hashes start with zeros.
    line.push_str("00000000");
    rng.push_hex(&mut line, 56);
    line.push_str("\",\"");
    rng.push_hex(&mut line, COINB1_HEX_CHARS);
    line.push_str("\",\"");
    rng.push_hex(&mut line, COINB2_HEX_CHARS);
    line.push_str("\",[");
    for i in 0..MERKLE_BRANCHES {
        if i > 0 {
            line.push(',');
        }
        line.push('"');
        rng.push_hex(&mut line, 64);
        line.push('"');
    }
    let ntime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32);
    let _ = writeln!(
        line,
        "],\"20000000\",\"17034219\",\"{ntime:08x}\",{clean_jobs}]}}"
    );
    line.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stratum::MAX_LINE_BYTES;

    #[test]
    fn notify_is_a_realistic_mining_notify() {
        let line = notify_line(7, true);
        assert!(line.ends_with(b"\n") && line.len() < MAX_LINE_BYTES);
        let message = Message::parse(&line[..line.len() - 1]).expect("valid JSON-RPC");
        assert_eq!(message.kind(), Kind::Notification);
        assert_eq!(message.method(), Some(Method::Notify));
        let params: serde_json::Value =
            serde_json::from_str(message.params_raw().unwrap()).unwrap();
        let params = params.as_array().unwrap();
        assert_eq!(params.len(), 9);
        assert_eq!(params[0], "7");
        assert_eq!(params[1].as_str().unwrap().len(), 64);
        assert_eq!(params[4].as_array().unwrap().len(), MERKLE_BRANCHES);
        assert_eq!(params[8], true);
    }

    #[test]
    fn reject_ratio_is_spread_evenly() {
        let (tx, _rx) = smol::channel::unbounded();
        let shared = Shared {
            config: PoolConfig {
                reject_ratio: 0.25,
                reject_codes: vec![RejectCode::JobNotFound, RejectCode::LowDifficulty],
                ..PoolConfig::default()
            },
            counters: Counters::default(),
            authorized: Mutex::new(HashMap::new()),
            open: Mutex::new(HashMap::new()),
            next_connection: AtomicU64::new(1),
            job: AtomicU64::new(1),
            submit_seq: AtomicU64::new(0),
            reject_seq: AtomicU64::new(0),
            records: tx,
            silent: AtomicBool::new(false),
            mute: AtomicBool::new(false),
        };
        let verdicts: Vec<_> = (0..8).map(|_| shared.judge_submit()).collect();
        assert_eq!(verdicts.iter().filter(|v| v.is_some()).count(), 2);
        assert_eq!(verdicts[3], Some(RejectCode::JobNotFound));
        assert_eq!(verdicts[7], Some(RejectCode::LowDifficulty));
    }

    #[test]
    fn extranonce1_is_unique_per_connection() {
        let mut seen = std::collections::HashSet::new();
        for id in 1..10_000 {
            assert!(seen.insert(connection_ids(id).1));
        }
    }
}
