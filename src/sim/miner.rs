//! miner-sim: a fleet of simulated Stratum V1 miners.
//!
//! Each miner connects, optionally sends `mining.configure`, subscribes,
//! authorizes as `account.workerN` and then submits shares at a set rate
//! (or as fast as a pipeline of outstanding submits allows) for a count or a
//! duration. Responses are matched to requests first-in first-out, which is
//! how Stratum V1 pools answer. A miner ends gracefully: it stops submitting,
//! waits (bounded) for outstanding answers, half-closes, and reads until the
//! pool closes, so its byte totals and digests cover everything both ways.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io;
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use smol::channel::{Receiver, Sender};
use smol::io::{AsyncReadExt, AsyncWriteExt};
use smol::{Async, Executor, Task, Timer};

use super::{Digest, RejectCounts, SplitMix, StopHandle, StopSignal};
use crate::stratum::{Frame, Kind, LineFramer, Message, Method, Outcome};

/// Default bound on every wait for the pool (connect, handshake, answers, EOF).
pub const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(10);
/// The id every submit carries with [`MinerConfig::same_id`].
pub const SAME_SUBMIT_ID: u64 = 4;
/// Size of each miner's read buffer, in bytes.
const READ_BUFFER_BYTES: usize = 16 * 1024;

/// Optional misbehaviour, sent once after authorizing (for tests).
#[derive(Debug, Clone, Default)]
pub struct Garbage {
    /// Send one line that is not JSON.
    pub non_json_line: bool,
    /// Send one line of this many bytes (0: none); longer than the parse limit
    /// makes it an over-long line.
    pub long_line_bytes: usize,
}

/// How the fleet behaves.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// The pool (or the proxy) to connect to.
    pub pool: SocketAddr,
    /// Number of miners.
    pub miners: usize,
    /// Accounts, spread over miners round-robin; user names are `account.workerN`.
    pub accounts: Vec<String>,
    /// Password sent with `mining.authorize`.
    pub password: String,
    /// Submits per second per miner; 0 means as fast as the pipeline allows.
    pub rate_per_second: f64,
    /// Stop after this many submits per miner.
    pub submits: Option<u64>,
    /// Stop submitting after this long.
    pub duration: Option<Duration>,
    /// Most submits outstanding (sent, not answered) at once; at least 1.
    pub pipeline: usize,
    /// Send every submit with the same id ([`SAME_SUBMIT_ID`]).
    pub same_id: bool,
    /// Send `mining.configure` (version rolling) before subscribing.
    pub configure: bool,
    /// Misbehaviour to inject after authorizing.
    pub garbage: Garbage,
    /// Bound on every wait for the pool.
    pub response_timeout: Duration,
    /// New connections opened per second over the fleet; 0 means all at once.
    pub connect_per_second: f64,
    /// Connect and authorize, then send nothing more until stopped or the
    /// duration ends (idle and fan-out benchmarks).
    pub idle: bool,
    /// Reconnect at once when the connection ends before the miner is done
    /// (stopped, its submits sent or its duration over), as common firmware
    /// does after a dropped connection; the handshake is repeated.
    pub reconnect: bool,
}

impl MinerConfig {
    /// A fleet of `miners` miners for `pool`, one submit per second, no end
    /// (set [`submits`](Self::submits) or [`duration`](Self::duration)).
    pub fn new(pool: SocketAddr, miners: usize) -> Self {
        MinerConfig {
            pool,
            miners,
            accounts: vec!["account".into()],
            password: "x".into(),
            rate_per_second: 1.0,
            submits: None,
            duration: None,
            pipeline: 1,
            same_id: false,
            configure: false,
            garbage: Garbage::default(),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            connect_per_second: 0.0,
            idle: false,
            reconnect: false,
        }
    }

    /// The user name of miner `index`.
    pub fn user(&self, index: usize) -> String {
        let account = match self.accounts.len() {
            0 => "account",
            n => self.accounts[index % n].as_str(),
        };
        format!("{account}.worker{index}")
    }
}

/// What one miner sent and got back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MinerReport {
    /// Index in the fleet.
    pub index: usize,
    /// The user name it authorized with.
    pub user: String,
    /// Why it stopped early, if it did (connect failure, no answer, ...).
    pub error: Option<String>,
    /// The pool answered `mining.authorize` with `true`.
    pub authorized: bool,
    /// `mining.configure` requests sent.
    pub configures_sent: u64,
    /// `mining.subscribe` requests sent.
    pub subscribes_sent: u64,
    /// `mining.authorize` requests sent.
    pub authorizes_sent: u64,
    /// `mining.submit` requests sent.
    pub submits_sent: u64,
    /// Injected garbage lines sent.
    pub garbage_lines_sent: u64,
    /// Responses received (all requests).
    pub responses: u64,
    /// Submits answered `true`.
    pub accepted: u64,
    /// Submits rejected, by code.
    pub rejected: RejectCounts,
    /// Requests never answered.
    pub unanswered: u64,
    /// Answers whose id was not the id of the oldest outstanding request.
    pub mismatched_ids: u64,
    /// `mining.notify` received.
    pub notifies: u64,
    /// `mining.set_difficulty` received.
    pub set_difficulty: u64,
    /// Other lines received (requests from the pool, unmatched responses, garbage).
    pub other_lines: u64,
    /// The last difficulty the pool set.
    pub last_difficulty: Option<f64>,
    /// Every byte sent.
    pub sent: Digest,
    /// Every byte received.
    pub received: Digest,
    /// The pool closed its side (EOF seen).
    pub eof: bool,
    /// Submit round-trip times (send → answer), in microseconds.
    #[serde(skip)]
    pub round_trips_us: Vec<u64>,
    /// `client.reconnect` messages obeyed (the connection was left).
    pub reconnects_honoured: u64,
    /// Connections made (1 without reconnects); `sent`, `received` and
    /// `eof` are the last connection's.
    pub sessions: u64,
    /// Each connection's timeline (failover measurements).
    #[serde(skip)]
    pub session_times: Vec<SessionTimes>,
    /// When the last `mining.notify` was received (fan-out measurements).
    #[serde(skip)]
    pub last_notify_at: Option<Instant>,
}

/// When one connection of a miner was made, got its first job and its
/// first accepted share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimes {
    /// Connected.
    pub connected_at: Instant,
    /// First `mining.notify` on it.
    pub first_notify_at: Option<Instant>,
    /// First share accepted on it.
    pub first_accept_at: Option<Instant>,
}

/// Totals over a fleet.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Miners run.
    pub miners: u64,
    /// Miners that authorized.
    pub authorized: u64,
    /// Miners that stopped with an error.
    pub errors: u64,
    /// `mining.submit` sent.
    pub submits: u64,
    /// Submits accepted.
    pub accepted: u64,
    /// Submits rejected, by code.
    pub rejected: RejectCounts,
    /// Responses received.
    pub responses: u64,
    /// Requests never answered.
    pub unanswered: u64,
    /// Answers out of request order (see [`MinerReport::mismatched_ids`]).
    pub mismatched_ids: u64,
    /// `mining.notify` received.
    pub notifies: u64,
    /// `mining.set_difficulty` received.
    pub set_difficulty: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
    /// Bytes received.
    pub bytes_received: u64,
}

/// Submit round-trip percentiles, in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RoundTrips {
    /// Round trips measured.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Largest.
    pub max_ms: f64,
}

/// Per-miner reports and their totals.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FleetReport {
    /// Sums over all miners.
    pub totals: Totals,
    /// Submit round trips over all miners.
    pub round_trips: RoundTrips,
    /// One report per miner, by index.
    pub miners: Vec<MinerReport>,
}

impl FleetReport {
    fn from_miners(miners: Vec<MinerReport>) -> Self {
        let mut totals = Totals::default();
        let mut rtts = Vec::new();
        for m in &miners {
            totals.miners += 1;
            totals.authorized += u64::from(m.authorized);
            totals.errors += u64::from(m.error.is_some());
            totals.submits += m.submits_sent;
            totals.accepted += m.accepted;
            totals.rejected.merge(&m.rejected);
            totals.responses += m.responses;
            totals.unanswered += m.unanswered;
            totals.mismatched_ids += m.mismatched_ids;
            totals.notifies += m.notifies;
            totals.set_difficulty += m.set_difficulty;
            totals.bytes_sent += m.sent.bytes;
            totals.bytes_received += m.received.bytes;
            rtts.extend_from_slice(&m.round_trips_us);
        }
        rtts.sort_unstable();
        let pick = |q: usize| {
            rtts.get((rtts.len().saturating_sub(1)) * q / 100)
                .map_or(0.0, |&us| us as f64 / 1000.0)
        };
        let round_trips = RoundTrips {
            count: rtts.len() as u64,
            p50_ms: pick(50),
            p99_ms: pick(99),
            max_ms: pick(100),
        };
        FleetReport {
            totals,
            round_trips,
            miners,
        }
    }
}

/// Live counters over the fleet, for progress lines.
#[derive(Debug, Default)]
pub struct LiveCounters {
    connected: AtomicU64,
    submits: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
}

/// A snapshot of [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct LiveSnapshot {
    /// Miners connected now.
    pub connected: u64,
    /// Submits sent so far.
    pub submits: u64,
    /// Submits accepted so far.
    pub accepted: u64,
    /// Submits rejected so far.
    pub rejected: u64,
}

impl LiveCounters {
    /// Reads the counters.
    pub fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            connected: self.connected.load(Ordering::Relaxed),
            submits: self.submits.load(Ordering::Relaxed),
            accepted: self.accepted.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// A running fleet of miners.
pub struct MinerSim {
    tasks: Vec<Task<MinerReport>>,
    live: Arc<LiveCounters>,
    stop: StopHandle,
}

impl MinerSim {
    /// Starts `config.miners` miners on `executor`.
    pub fn start(executor: &Arc<Executor<'static>>, config: MinerConfig) -> MinerSim {
        let config = Arc::new(config);
        let live = Arc::new(LiveCounters::default());
        let (stop, signal) = StopSignal::new();
        let tasks = (0..config.miners)
            .map(|index| {
                executor.spawn(run_miner(
                    index,
                    config.clone(),
                    signal.clone(),
                    live.clone(),
                ))
            })
            .collect();
        MinerSim { tasks, live, stop }
    }

    /// Live counters (connected, submits, accepted, rejected).
    pub fn live(&self) -> LiveSnapshot {
        self.live.snapshot()
    }

    /// Asks every miner to stop submitting and end gracefully.
    pub fn stop(&self) {
        self.stop.stop();
    }

    /// The live counters themselves, readable after [`finish`](Self::finish) took the fleet.
    pub fn live_counters(&self) -> Arc<LiveCounters> {
        self.live.clone()
    }

    /// A handle that stops the fleet, usable while [`finish`](Self::finish) runs.
    pub fn stop_handle(&self) -> StopHandle {
        self.stop.clone()
    }

    /// Waits for every miner to end and returns their reports.
    pub async fn finish(self) -> FleetReport {
        let mut reports = Vec::with_capacity(self.tasks.len());
        for task in self.tasks {
            reports.push(task.await);
        }
        FleetReport::from_miners(reports)
    }
}

/// A request waiting for its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Request {
    Configure,
    Subscribe,
    Authorize,
    Submit,
}

/// What the reader learns, shared with the driver.
#[derive(Default)]
struct State {
    /// Outstanding requests: what, with which id, sent when.
    pending: VecDeque<(Request, u64, Instant)>,
    job_id: Option<String>,
    report: MinerReport,
    /// The pool (or proxy) sent `client.reconnect`: this connection ends.
    reconnect_requested: bool,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

async fn run_miner(
    index: usize,
    config: Arc<MinerConfig>,
    stop: StopSignal,
    live: Arc<LiveCounters>,
) -> MinerReport {
    let user = config.user(index);
    let state = Mutex::new(State {
        report: MinerReport {
            index,
            user: user.clone(),
            ..MinerReport::default()
        },
        ..State::default()
    });
    // Bounded connect rate: miner `index` waits its turn (stoppable).
    if config.connect_per_second > 0.0 && config.connect_per_second.is_finite() {
        let delay = Duration::from_secs_f64(index as f64 / config.connect_per_second);
        let stopped = smol::future::or(
            async {
                Timer::after(delay).await;
                false
            },
            async {
                stop.wait().await;
                true
            },
        )
        .await;
        if stopped {
            let mut report = state.into_inner().unwrap_or_else(|e| e.into_inner()).report;
            report.error = Some("stopped before connecting".into());
            return report;
        }
    }
    let mut next_id = 1;
    loop {
        let session = run_session(index, &config, &stop, &live, &user, &state, next_id).await;
        let again = {
            let mut guard = lock(&state);
            guard.report.sessions += 1;
            let done = stop.is_stopped()
                || config
                    .submits
                    .is_some_and(|k| guard.report.submits_sent >= k)
                || !config.reconnect;
            let finished = match session {
                Ok((ids, sent)) => {
                    next_id = ids;
                    guard.report.sent = sent;
                    done || !guard.report.eof
                }
                Err(e) => {
                    if done {
                        guard.report.error = Some(e);
                    }
                    done
                }
            };
            if !finished {
                // Dropped before the miner was done: start again, as firmware does.
                guard.pending.clear();
                guard.job_id = None;
            }
            !finished
        };
        if !again {
            break;
        }
        Timer::after(RECONNECT_PAUSE).await;
    }
    let mut state = state.into_inner().unwrap_or_else(|e| e.into_inner());
    let mut report = state.report;
    report.unanswered = state.pending.len() as u64;
    state.pending.clear();
    report
}

/// Pause before a reconnect (firmware reconnects at once; this only keeps a
/// refused connect from spinning).
const RECONNECT_PAUSE: Duration = Duration::from_millis(50);

/// One connection: connect, handshake, submit; `Ok` with the next request
/// id and the digest of what was sent, or what went wrong.
async fn run_session(
    index: usize,
    config: &MinerConfig,
    stop: &StopSignal,
    live: &LiveCounters,
    user: &str,
    state: &Mutex<State>,
    next_id: u64,
) -> Result<(u64, Digest), String> {
    let connect = async { Async::<TcpStream>::connect(config.pool).await };
    let timeout = async {
        Timer::after(config.response_timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))
    };
    let stream = smol::future::or(connect, timeout)
        .await
        .map_err(|e| format!("connect to {}: {e}", config.pool))?;
    let _ = stream.get_ref().set_nodelay(true);
    {
        let mut state = lock(state);
        state.report.eof = false;
        state.report.received = Digest::new();
        state.report.session_times.push(SessionTimes {
            connected_at: Instant::now(),
            first_notify_at: None,
            first_accept_at: None,
        });
    }
    live.connected.fetch_add(1, Ordering::Relaxed);
    let (wake_tx, wake_rx) = smol::channel::bounded::<()>(1);
    let (closing_tx, closing_rx) = smol::channel::bounded::<()>(1);
    let reader = read_loop(&stream, state, wake_tx, closing_rx, config, live);
    let driver = async {
        let mut driver = Driver {
            stream: &stream,
            state,
            wake: &wake_rx,
            config,
            stop,
            live,
            user,
            sent: Digest::new(),
            next_id,
            line: String::with_capacity(256),
            rng: SplitMix::new(index as u64 + 1 + (next_id << 32)),
        };
        let result = driver.run().await;
        // Half-close: the pool sees EOF, answers nothing new, and closes.
        let _ = stream.get_ref().shutdown(Shutdown::Write);
        closing_tx.close();
        (result.map(|()| driver.next_id), driver.sent)
    };
    let ((), (result, sent)) = smol::future::zip(reader, driver).await;
    live.connected.fetch_sub(1, Ordering::Relaxed);
    result.map(|ids| (ids, sent))
}

/// Reads until EOF (or until the drain bound after the driver finished).
async fn read_loop(
    stream: &Async<TcpStream>,
    state: &Mutex<State>,
    wake: Sender<()>,
    closing: Receiver<()>,
    config: &MinerConfig,
    live: &LiveCounters,
) {
    let mut buffer = vec![0u8; READ_BUFFER_BYTES];
    let mut framer = LineFramer::new();
    let mut reader = stream;
    loop {
        let read = async { reader.read(&mut buffer).await.map(Some) };
        let drained = async {
            let _ = closing.recv().await;
            Timer::after(config.response_timeout).await;
            Ok(None)
        };
        let n = match smol::future::or(read, drained).await {
            Ok(Some(0)) => {
                lock(state).report.eof = true;
                break;
            }
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => break,
        };
        let mut state = lock(state);
        state.report.received.update(&buffer[..n]);
        framer.push(&buffer[..n], |frame| on_frame(&mut state, frame, live));
        if std::mem::take(&mut state.reconnect_requested) {
            break;
        }
        drop(state);
        let _ = wake.try_send(());
    }
}

/// Accounts for one line from the pool.
fn on_frame(state: &mut State, frame: Frame<'_>, live: &LiveCounters) {
    let line = match frame {
        Frame::Line(line) => line,
        Frame::Overlong(_) => {
            state.report.other_lines += 1;
            return;
        }
    };
    let Ok(message) = Message::parse(line) else {
        state.report.other_lines += 1;
        return;
    };
    match message.kind() {
        Kind::Response => {
            let Some((request, id, sent_at)) = state.pending.pop_front() else {
                state.report.other_lines += 1;
                return;
            };
            let report = &mut state.report;
            report.responses += 1;
            if message.id().and_then(|i| i.as_u64()) != Some(id) {
                report.mismatched_ids += 1;
            }
            let outcome = message.outcome();
            match request {
                Request::Submit => {
                    report
                        .round_trips_us
                        .push(sent_at.elapsed().as_micros() as u64);
                    match outcome {
                        Outcome::Accepted => {
                            report.accepted += 1;
                            if let Some(times) = report.session_times.last_mut() {
                                times.first_accept_at.get_or_insert_with(Instant::now);
                            }
                            live.accepted.fetch_add(1, Ordering::Relaxed);
                            log::debug!("{}: share accepted", report.user);
                        }
                        Outcome::Rejected(error) => {
                            report.rejected.add(error.code);
                            live.rejected.fetch_add(1, Ordering::Relaxed);
                            log::debug!(
                                "{}: share rejected: {:?} {}",
                                report.user,
                                error.code,
                                error.message.as_deref().unwrap_or("")
                            );
                        }
                        Outcome::Value => report.rejected.add(None),
                    }
                }
                Request::Authorize => report.authorized = outcome == Outcome::Accepted,
                Request::Configure | Request::Subscribe => {}
            }
        }
        Kind::Notification => match message.method() {
            Some(Method::Notify) => {
                state.report.notifies += 1;
                state.report.last_notify_at = Some(Instant::now());
                if let Some(times) = state.report.session_times.last_mut() {
                    times.first_notify_at.get_or_insert_with(Instant::now);
                }
                let job = message
                    .params_raw()
                    .and_then(|p| serde_json::from_str::<serde_json::Value>(p).ok())
                    .and_then(|p| p.get(0).and_then(|j| j.as_str().map(str::to_owned)));
                if job.is_some() {
                    state.job_id = job;
                }
            }
            Some(Method::SetDifficulty) => {
                state.report.set_difficulty += 1;
                state.report.last_difficulty = message.difficulty();
            }
            Some(Method::Reconnect) => {
                // As firmware does: leave, and (with `reconnect`) come back.
                state.report.reconnects_honoured += 1;
                state.reconnect_requested = true;
            }
            _ => state.report.other_lines += 1,
        },
        Kind::Request => state.report.other_lines += 1,
    }
}

/// How a wait between two shares ended.
enum Pause {
    /// Time for the next share.
    Due,
    /// The fleet was stopped.
    Stopped,
    /// The connection closed.
    Closed,
}

/// The sending side of one miner.
struct Driver<'a> {
    stream: &'a Async<TcpStream>,
    state: &'a Mutex<State>,
    wake: &'a Receiver<()>,
    config: &'a MinerConfig,
    stop: &'a StopSignal,
    live: &'a LiveCounters,
    user: &'a str,
    sent: Digest,
    next_id: u64,
    line: String,
    rng: SplitMix,
}

impl Driver<'_> {
    async fn run(&mut self) -> Result<(), String> {
        let timeout = self.config.response_timeout;
        if self.config.configure {
            self.line.clear();
            let _ = writeln!(
                self.line,
                "{{\"id\":{},\"method\":\"mining.configure\",\"params\":[[\"version-rolling\"],{{\"version-rolling.mask\":\"ffffffff\",\"version-rolling.min-bit-count\":2}}]}}",
                self.next_id
            );
            self.request(Request::Configure).await?;
            lock(self.state).report.configures_sent += 1;
        }
        self.line.clear();
        let _ = writeln!(
            self.line,
            "{{\"id\":{},\"method\":\"mining.subscribe\",\"params\":[\"miner-sim/{}\"]}}",
            self.next_id,
            env!("CARGO_PKG_VERSION")
        );
        self.request(Request::Subscribe).await?;
        lock(self.state).report.subscribes_sent += 1;
        if !self.wait_until(timeout, |s| s.pending.is_empty()).await {
            return Err("no answer to mining.subscribe".into());
        }
        self.line.clear();
        let _ = writeln!(
            self.line,
            "{{\"params\":[\"{}\",\"{}\"],\"id\":{},\"method\":\"mining.authorize\"}}",
            self.user, self.config.password, self.next_id
        );
        self.request(Request::Authorize).await?;
        lock(self.state).report.authorizes_sent += 1;
        if !self
            .wait_until(timeout, |s| s.pending.is_empty() && s.job_id.is_some())
            .await
        {
            return Err("no answer to mining.authorize or no job".into());
        }
        self.inject_garbage().await?;
        self.submit_loop().await?;
        // Graceful end: let outstanding answers arrive (bounded).
        self.wait_until(timeout, |s| s.pending.is_empty()).await;
        Ok(())
    }

    async fn inject_garbage(&mut self) -> Result<(), String> {
        let garbage = &self.config.garbage;
        let mut lines: Vec<Vec<u8>> = Vec::new();
        if garbage.non_json_line {
            lines.push(b"GET / HTTP/1.1 this is not json\n".to_vec());
        }
        if garbage.long_line_bytes > 0 {
            let mut long = vec![b'x'; garbage.long_line_bytes];
            long.push(b'\n');
            lines.push(long);
        }
        for line in lines {
            self.write(&line).await?;
            lock(self.state).report.garbage_lines_sent += 1;
        }
        Ok(())
    }

    async fn submit_loop(&mut self) -> Result<(), String> {
        let config = self.config;
        let start = Instant::now();
        let end = config.duration.map(|d| start + d);
        let interval = (config.rate_per_second > 0.0 && config.rate_per_second.is_finite())
            .then(|| Duration::from_secs_f64(1.0 / config.rate_per_second));
        let pipeline = config.pipeline.max(1);
        if config.idle {
            // Hold the connection, silent, until stopped or the duration ends.
            let stopped = async {
                self.stop.wait().await;
            };
            match end {
                Some(end) => {
                    smol::future::or(stopped, async {
                        Timer::at(end).await;
                    })
                    .await
                }
                None => stopped.await,
            }
            return Ok(());
        }
        let mut sent: u64 = 0;
        loop {
            if self.stop.is_stopped() || config.submits.is_some_and(|k| sent >= k) {
                return Ok(());
            }
            let now = Instant::now();
            if end.is_some_and(|end| now >= end) {
                return Ok(());
            }
            if let Some(interval) = interval {
                let at = start + interval.mul_f64(sent as f64);
                if end.is_some_and(|end| at >= end) {
                    return Ok(());
                }
                if at > now {
                    let waited = smol::future::or(
                        smol::future::or(
                            async {
                                Timer::at(at).await;
                                Pause::Due
                            },
                            async {
                                self.stop.wait().await;
                                Pause::Stopped
                            },
                        ),
                        async {
                            // Lines woke us: go on waiting. The reader ended
                            // (the connection closed): react at once, as
                            // firmware does, rather than at the next share.
                            while self.wake.recv().await.is_ok() {}
                            Pause::Closed
                        },
                    )
                    .await;
                    match waited {
                        Pause::Due => {}
                        Pause::Stopped => return Ok(()),
                        Pause::Closed => return Err("the connection closed".into()),
                    }
                }
            }
            let limit = end.map_or(config.response_timeout, |end| {
                end.saturating_duration_since(Instant::now())
                    .max(Duration::from_millis(1))
                    .min(config.response_timeout)
            });
            if !self.wait_until(limit, |s| s.pending.len() < pipeline).await {
                if end.is_some_and(|end| Instant::now() >= end) || self.stop.is_stopped() {
                    return Ok(());
                }
                return Err("no answer to outstanding submits".into());
            }
            self.submit().await?;
            sent += 1;
        }
    }

    async fn submit(&mut self) -> Result<(), String> {
        let job = lock(self.state).job_id.clone().unwrap_or_default();
        let ntime = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as u32);
        let extranonce2 = self.rng.next_u64() as u32;
        let nonce = self.rng.next_u64() as u32;
        let id = if self.config.same_id {
            SAME_SUBMIT_ID
        } else {
            self.next_id
        };
        self.line.clear();
        let _ = writeln!(
            self.line,
            "{{\"params\":[\"{}\",\"{job}\",\"{extranonce2:08x}\",\"{ntime:08x}\",\"{nonce:08x}\"],\"id\":{id},\"method\":\"mining.submit\"}}",
            self.user
        );
        self.request(Request::Submit).await?;
        lock(self.state).report.submits_sent += 1;
        self.live.submits.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Sends `self.line` as a request of type `request`.
    async fn request(&mut self, request: Request) -> Result<(), String> {
        let id = if request == Request::Submit && self.config.same_id {
            SAME_SUBMIT_ID
        } else {
            self.next_id
        };
        // Registered before writing: the answer may arrive before write returns.
        lock(self.state)
            .pending
            .push_back((request, id, Instant::now()));
        self.next_id += 1;
        let line = std::mem::take(&mut self.line);
        let result = self.write(line.as_bytes()).await;
        self.line = line;
        result
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        let mut writer = self.stream;
        writer
            .write_all(bytes)
            .await
            .map_err(|e| format!("write to pool: {e}"))?;
        self.sent.update(bytes);
        Ok(())
    }

    /// Waits until `condition` holds or `timeout` passes (or the reader ends).
    async fn wait_until(&self, timeout: Duration, condition: impl Fn(&State) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(&lock(self.state)) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            let woke = smol::future::or(async { self.wake.recv().await.is_ok() }, async {
                Timer::at(deadline).await;
                true
            })
            .await;
            if !woke {
                // The reader ended: nothing more will arrive.
                return condition(&lock(self.state));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_spread_over_accounts_round_robin() {
        let mut config = MinerConfig::new("127.0.0.1:1".parse().unwrap(), 4);
        config.accounts = vec!["alice".into(), "bob".into()];
        assert_eq!(config.user(0), "alice.worker0");
        assert_eq!(config.user(1), "bob.worker1");
        assert_eq!(config.user(2), "alice.worker2");
    }

    #[test]
    fn percentiles_over_all_miners() {
        let miners = vec![
            MinerReport {
                round_trips_us: (1..=50).map(|i| i * 1000).collect(),
                submits_sent: 50,
                ..MinerReport::default()
            },
            MinerReport {
                round_trips_us: (51..=100).map(|i| i * 1000).collect(),
                submits_sent: 50,
                ..MinerReport::default()
            },
        ];
        let fleet = FleetReport::from_miners(miners);
        assert_eq!(fleet.totals.submits, 100);
        assert_eq!(fleet.round_trips.count, 100);
        assert_eq!(fleet.round_trips.p50_ms, 50.0);
        assert_eq!(fleet.round_trips.p99_ms, 99.0);
        assert_eq!(fleet.round_trips.max_ms, 100.0);
    }
}
