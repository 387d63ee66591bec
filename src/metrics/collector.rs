//! The service's observer: turns relay events into metrics, `/status`
//! totals and connection log lines.
//!
//! Handles are registered once (per pool at start, per client on its first
//! authorize) and stored; per-connection state lives in the relay task. A
//! relayed message costs a few relaxed atomic adds, most of them once per
//! read (see `Batch`): no key building, no lock, no allocation. The
//! request → response histogram is the collector's own (`latency.rs`); the
//! exporter's histograms (connect latency, connection duration) take a
//! sample per connect or close.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use ::metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Recorder};
use log::{info, warn};

use crate::logging::{PeerLine, peer_line};

/// Whether a line about a peer at `level` of `kind` is to be written: the
/// level is enabled and the kind's rate limit allows it.
fn log_peer(level: log::Level, kind: PeerLine) -> bool {
    log::log_enabled!(level) && peer_line(kind)
}
use metrics_exporter_prometheus::PrometheusRecorder;
use serde_json::{Value, json};

use super::history::{History, Totals as HistoryTotals};
use super::latency::{LatencyHistogram, LocalSamples};
use super::miners::{MinerRecord, MinerRegistry};
use super::schema::*;
use crate::config::ClientIdMode;
use crate::relay::{
    CloseReason, ConnectionInfo, Direction, Event, Observer, PoolHealth, PoolId, PoolListener,
    PoolSpec, RefuseReason, UpstreamFailure,
};
use crate::stratum::{Message, Method, Outcome, RpcError};

/// Most requests per connection waiting for a response; past it the oldest
/// is counted as expired. Miners pipeline a handful of submits at most.
pub const MAX_PENDING_REQUESTS: usize = 64;

/// Longest `client_id` label value, in bytes; longer names are cut.
pub const MAX_CLIENT_ID_BYTES: usize = 64;

/// `client_id` once the cap of distinct ids is reached.
pub const CLIENT_ID_OTHER: &str = "_other";
/// `client_id` of a connection that has not been authorized (yet).
pub const CLIENT_ID_UNKNOWN: &str = "_unknown";
/// `client_id` when per-client labels are off (`client_id: none`).
pub const CLIENT_ID_ALL: &str = "_all";

/// Why a share was rejected: the fixed `reason` label set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Job not found / stale (code 21).
    Stale,
    /// Duplicate share (22).
    Duplicate,
    /// Low difficulty / high-hash (23).
    LowDifficulty,
    /// Unauthorized worker (24).
    Unauthorized,
    /// Not subscribed (25).
    NotSubscribed,
    /// Anything else.
    Other,
}

impl RejectReason {
    /// Every reason, in label order.
    pub const ALL: [RejectReason; 6] = [
        RejectReason::Stale,
        RejectReason::Duplicate,
        RejectReason::LowDifficulty,
        RejectReason::Unauthorized,
        RejectReason::NotSubscribed,
        RejectReason::Other,
    ];

    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            RejectReason::Stale => "stale",
            RejectReason::Duplicate => "duplicate",
            RejectReason::LowDifficulty => "low_difficulty",
            RejectReason::Unauthorized => "unauthorized",
            RejectReason::NotSubscribed => "not_subscribed",
            RejectReason::Other => "other",
        }
    }

    /// Maps the codes and messages pools use to a reason: a Stratum code
    /// 21–25 wins; otherwise the text is searched ("Stale", "high-hash", ...).
    pub fn classify(error: &RpcError<'_>) -> RejectReason {
        match error.code {
            Some(21) => return RejectReason::Stale,
            Some(22) => return RejectReason::Duplicate,
            Some(23) => return RejectReason::LowDifficulty,
            Some(24) => return RejectReason::Unauthorized,
            Some(25) => return RejectReason::NotSubscribed,
            _ => {}
        }
        let Some(text) = error.message.as_deref() else {
            return RejectReason::Other;
        };
        const PATTERNS: &[(&str, RejectReason)] = &[
            ("stale", RejectReason::Stale),
            ("job not found", RejectReason::Stale),
            ("old job", RejectReason::Stale),
            ("duplicate", RejectReason::Duplicate),
            ("low difficulty", RejectReason::LowDifficulty),
            ("low-difficulty", RejectReason::LowDifficulty),
            ("low diff", RejectReason::LowDifficulty),
            ("high-hash", RejectReason::LowDifficulty),
            ("above target", RejectReason::LowDifficulty),
            ("unauthori", RejectReason::Unauthorized),
            ("not subscribed", RejectReason::NotSubscribed),
        ];
        PATTERNS
            .iter()
            .find(|(pattern, _)| contains_ignore_ascii_case(text, pattern))
            .map_or(RejectReason::Other, |&(_, reason)| reason)
    }
}

fn contains_ignore_ascii_case(haystack: &str, needle: &str) -> bool {
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle.as_bytes()))
}

/// How the collector labels and times things.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    /// The `pool_host` label of each pool, in [`PoolId`] order: the pool
    /// as configured (`host:port`).
    pub pools: Vec<String>,
    /// Where `client_id` comes from.
    pub client_id: ClientIdMode,
    /// Most distinct `client_id` values; later ones are `_other`.
    pub client_id_cap: usize,
    /// Pending requests older than this are expired.
    pub request_timeout: Duration,
    /// Window for "the pool was reachable recently".
    pub health_interval: Duration,
}

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

/// Registers metric handles on one recorder.
struct Registrar<'r> {
    recorder: &'r PrometheusRecorder,
}

impl Registrar<'_> {
    fn key(name: &'static str, labels: &[(&'static str, &str)]) -> Key {
        let labels: Vec<Label> = labels
            .iter()
            .map(|(k, v)| Label::new(*k, (*v).to_owned()))
            .collect();
        Key::from_parts(name, labels)
    }
    fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Counter {
        self.recorder
            .register_counter(&Self::key(name, labels), &METADATA)
    }
    fn gauge(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Gauge {
        self.recorder
            .register_gauge(&Self::key(name, labels), &METADATA)
    }
    fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        self.recorder
            .register_histogram(&Self::key(name, labels), &METADATA)
    }
}

/// Per-pool handles, registered once.
struct PoolMetrics {
    /// The pool ([`POOL_HOST_NONE`]'s: none).
    id: Option<PoolId>,
    /// The `pool_host` label.
    label: String,
    /// Its `_unknown` (or `_all`) client.
    unknown_client: Arc<ClientMetrics>,
    connections: Counter,
    active: Gauge,
    bytes_sent: Counter,
    bytes_received: Counter,
    duration: Histogram,
    connect_latency: Histogram,
    /// Indexed like [`Method::ALL`].
    request_response: Box<[LatencyHistogram]>,
    /// Indexed by direction (miner→pool, pool→miner).
    parse_failures: [Counter; 2],
    /// Indexed like [`UpstreamFailure::ALL`].
    upstream_failures: [Counter; 4],
    /// handshake, idle.
    timeouts: [Counter; 2],
    pending: Gauge,
    expired: Counter,
    reachable: Gauge,
    /// Whether the core says the pool is up.
    up: AtomicBool,
    /// Whether a probe's verdict was logged yet.
    probed: AtomicBool,
    /// Miners closed because the pool went down.
    failovers: Counter,
    /// Requests in flight lost when a miner was moved off a down pool.
    failover_lost: Counter,
    /// Miners moved to a better pool (failback).
    moves: Counter,
    /// `client.reconnect` lines the proxy wrote itself.
    reconnects_sent: Counter,
}

/// One client's figures on one pool: the totals `/status` shows, which
/// [`Collector::render_clients`] also exports (per-client series are not
/// registered with the exporter: its registry costs about 450 bytes per
/// series, ten series per client and pool).
pub struct ClientMetrics {
    id: Arc<str>,
    pool: String,
    totals: ClientTotals,
}

#[derive(Default)]
struct ClientTotals {
    submits: AtomicU64,
    accepted: AtomicU64,
    rejected: AtomicU64,
    /// Indexed like [`RejectReason::ALL`].
    rejected_by_reason: [AtomicU64; 6],
    /// f64 bits: the exact (fractional) sum; the counter shows its floor.
    accepted_difficulty: AtomicU64,
    /// f64 bits: the last difficulty the pool set for the client.
    difficulty: AtomicU64,
}

impl ClientMetrics {
    /// A client of `pool`. Exported once it is in [`Collector::clients`];
    /// the placeholder of miners not yet relayed never is (nothing is
    /// metered before their pool is connected).
    fn new(id: &str, pool: &str) -> ClientMetrics {
        ClientMetrics {
            id: Arc::from(id),
            pool: pool.to_owned(),
            totals: ClientTotals::default(),
        }
    }

    /// The pool set this difficulty for the client.
    fn set_difficulty(&self, difficulty: f64) {
        self.totals
            .difficulty
            .store(difficulty.to_bits(), Ordering::Relaxed);
    }

    fn add_accepted_difficulty(&self, difficulty: f64) {
        let mut current = self.totals.accepted_difficulty.load(Ordering::Relaxed);
        loop {
            let next = f64::from_bits(current) + difficulty;
            match self.totals.accepted_difficulty.compare_exchange_weak(
                current,
                next.to_bits(),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(actual) => current = actual,
            }
        }
    }
}

/// Share counts of a client or a pool.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shares {
    /// Submits.
    pub submits: u64,
    /// Accepted shares.
    pub accepted: u64,
    /// Rejected shares, indexed like [`RejectReason::ALL`].
    pub rejected: [u64; 6],
    /// Sum of accepted share difficulty.
    pub accepted_difficulty: f64,
}

impl Shares {
    fn of(totals: &ClientTotals) -> Shares {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Shares {
            submits: load(&totals.submits),
            accepted: load(&totals.accepted),
            rejected: totals.rejected_by_reason.each_ref().map(load),
            accepted_difficulty: f64::from_bits(load(&totals.accepted_difficulty)),
        }
    }

    fn add(&mut self, other: &Shares) {
        self.submits += other.submits;
        self.accepted += other.accepted;
        for (a, b) in self.rejected.iter_mut().zip(other.rejected) {
            *a += b;
        }
        self.accepted_difficulty += other.accepted_difficulty;
    }

    /// Rejected shares, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Rejected / (accepted + rejected); 0 before any answer.
    pub fn reject_rate(&self) -> f64 {
        let answered = self.accepted + self.rejected_total();
        if answered == 0 {
            0.0
        } else {
            self.rejected_total() as f64 / answered as f64
        }
    }
}

/// [`Shares`] per pool (by pool id) and per client id.
#[derive(Debug, Clone, Default)]
pub struct ShareTotals {
    /// By pool id.
    pub pools: Vec<Shares>,
    /// By client id, sorted.
    pub clients: Vec<(Arc<str>, Shares)>,
}

/// Process-wide totals for `/status`.
#[derive(Default)]
struct Totals {
    connections: AtomicU64,
    active: AtomicU64,
    refused: AtomicU64,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    upstream_failures: AtomicU64,
}

/// Upstream reachability, for `/healthz` and `stratum_pool_reachable`.
struct Health {
    /// Milliseconds since `start` of the last successful connect, 0 = never.
    last_success_ms: AtomicU64,
    /// Milliseconds since `start` of the last failed connect, 0 = never.
    last_failure_ms: AtomicU64,
    draining: AtomicBool,
}

/// Histogram samples between two early upkeeps. The exporter buffers every
/// sample until `run_upkeep()` (about 8 bytes each, in blocks of 64): at
/// 65,000 answers per second, a 5 s upkeep interval held 2.5 MB of samples.
/// Asking for an upkeep every 16,384 samples bounds that to about 150 KB
/// whatever the rate, and costs an idle gateway nothing.
pub const UPKEEP_EVERY_SAMPLES: u64 = 16_384;

/// The `pool_host` label of miners not (yet) relayed to any pool (their
/// handshake timeouts and lifetimes).
pub const POOL_HOST_NONE: &str = "_none";

/// The metrics observer. Create one per process (or per test).
pub struct Collector {
    recorder: Arc<PrometheusRecorder>,
    options: CollectorOptions,
    /// One per pool in [`PoolId`] order (a reload may add pools).
    pools: RwLock<Vec<Arc<PoolMetrics>>>,
    /// Miners not (yet) relayed: [`POOL_HOST_NONE`].
    none: Arc<PoolMetrics>,
    /// `_unknown`, or `_all` when per-client metrics are off.
    unknown_id: &'static str,
    /// Indexed like [`RefuseReason`]: max_connections, rate_limit,
    /// max_connections_per_address, rate_limit_per_address.
    refused: [Counter; 4],
    /// By client id, then by pool.
    clients: Mutex<HashMap<String, Vec<Option<Arc<ClientMetrics>>>>>,
    totals: Totals,
    health: Health,
    start: Instant,
    /// Histogram samples recorded, for [`UPKEEP_EVERY_SAMPLES`].
    samples: AtomicU64,
    /// The thread that runs upkeep, woken when samples pile up.
    upkeep_thread: OnceLock<Thread>,
    upkeep_requested: AtomicBool,
    /// Every open miner connection, for the status page.
    miners: MinerRegistry,
    /// Accepted difficulty over the last hour, for the status page.
    history: Mutex<History>,
}

/// What the collector keeps per connection (in the relay's task: its id,
/// address and difficulty are read from its registry record, not copied).
pub struct ConnectionMeter {
    /// The metrics of the pool relayed to ([`POOL_HOST_NONE`]'s before
    /// there is one; `metrics.id` says which).
    metrics: Arc<PoolMetrics>,
    client: Arc<ClientMetrics>,
    pending: VecDeque<Pending>,
    /// The latest login in flight (kept apart from `pending`, which it
    /// would double in size). The label is registered only when the pool
    /// accepts it: a refused or unanswered name never takes one of the
    /// capped slots.
    login: Option<Box<Login>>,
    /// Its entry in the live miner registry.
    record: Arc<MinerRecord>,
}

/// What the lines of one read add to the shared counters, applied once per
/// read ([`Observer::lines_done`]) instead of once per line: each shared
/// update is an atomic instruction (a compare-and-swap loop for the float
/// ones), and at saturation one read holds dozens of lines.
///
/// Kept per executor thread, not per connection (where it would cost 32
/// bytes a miner): the relay reports the lines of one read without a pause
/// and then calls `lines_done`, so the thread's batch only ever holds one
/// connection's lines.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Batch {
    submits: u32,
    accepted: u32,
    /// Requests added minus requests answered or expired (the pending gauge).
    pending: i32,
    expired: u32,
    /// Sum of the difficulty of the accepted shares.
    accepted_difficulty: f64,
}

impl Batch {
    const EMPTY: Batch = Batch {
        submits: 0,
        accepted: 0,
        pending: 0,
        expired: 0,
        accepted_difficulty: 0.0,
    };
}

thread_local! {
    /// The batch of the read being metered on this thread.
    static BATCH: Cell<Batch> = const { Cell::new(Batch::EMPTY) };
    /// The read's request → response samples, for one method at a time
    /// (a read that answers two methods adds the first when the second
    /// starts); added to the connection's pool at `apply_batch`, like
    /// [`BATCH`].
    static LATENCY: RefCell<(Method, LocalSamples)> =
        const { RefCell::new((Method::Other, LocalSamples::EMPTY)) };
    /// The last instant converted by `us_since_start`: (the collector's
    /// start, the instant, microseconds between them).
    static LAST_CLOCK: Cell<Option<(Instant, Instant, u64)>> = const { Cell::new(None) };
}

/// Adds to this thread's batch.
#[inline]
fn batch(add: impl FnOnce(&mut Batch)) {
    BATCH.with(|cell| {
        let mut batch = cell.get();
        add(&mut batch);
        cell.set(batch);
    });
}

/// An authorize waiting for its answer.
struct Login {
    /// Hash of its request id.
    id_hash: u64,
    /// The user name (never the password), cut to
    /// [`super::miners::MAX_WORKER_BYTES`].
    user: Box<str>,
    /// The `client_id` it becomes, if names decide it.
    client_id: Option<Box<str>>,
}

/// A request waiting for its response (32 bytes: one per submit in flight).
struct Pending {
    id_hash: u64,
    /// Microseconds since the collector started.
    sent_us: u64,
    /// Difficulty in force when a share was submitted.
    difficulty: f64,
    method: Method,
}

impl Collector {
    /// Registers the per-pool metrics on `recorder` and returns the collector.
    pub fn new(recorder: Arc<PrometheusRecorder>, options: CollectorOptions) -> Self {
        let r = Registrar {
            recorder: &recorder,
        };
        let unknown_id = if options.client_id == ClientIdMode::None {
            CLIENT_ID_ALL
        } else {
            CLIENT_ID_UNKNOWN
        };
        let pools: Vec<Arc<PoolMetrics>> = options
            .pools
            .iter()
            .enumerate()
            .map(|(id, label)| Arc::new(register_pool(&r, id, label, unknown_id)))
            .collect();
        let none = Arc::new(register_pool_scoped(&r, None, POOL_HOST_NONE, unknown_id));
        let pools_len = pools.len();
        let refused = [
            RefuseReason::MaxConnections,
            RefuseReason::RateLimit,
            RefuseReason::AddressConnections,
            RefuseReason::AddressRateLimit,
        ]
        .map(|reason| r.counter(REFUSED_CONNECTIONS_TOTAL, &[("reason", reason.as_str())]));
        r.gauge(BUILD_INFO, &[("version", env!("CARGO_PKG_VERSION"))])
            .set(1.0);
        for pool in &pools {
            pool.reachable.set(1.0);
        }
        let mut clients = HashMap::new();
        clients.insert(
            unknown_id.to_owned(),
            pools
                .iter()
                .map(|p| Some(p.unknown_client.clone()))
                .collect(),
        );
        Collector {
            options,
            pools: RwLock::new(pools),
            none,
            unknown_id,
            refused,
            clients: Mutex::new(clients),
            totals: Totals::default(),
            health: Health {
                last_success_ms: AtomicU64::new(0),
                last_failure_ms: AtomicU64::new(0),
                draining: AtomicBool::new(false),
            },
            start: Instant::now(),
            recorder,
            samples: AtomicU64::new(0),
            upkeep_thread: OnceLock::new(),
            upkeep_requested: AtomicBool::new(false),
            miners: MinerRegistry::default(),
            history: Mutex::new(History::new(Instant::now(), pools_len)),
        }
    }

    /// Makes `thread` the one that runs the exporter's upkeep: it is unparked
    /// every [`UPKEEP_EVERY_SAMPLES`] histogram samples and should then call
    /// [`take_upkeep_request`](Self::take_upkeep_request). Only the first
    /// call takes effect.
    pub fn set_upkeep_thread(&self, thread: Thread) {
        let _ = self.upkeep_thread.set(thread);
    }

    /// Whether samples piled up since the last call (and clears that).
    pub fn take_upkeep_request(&self) -> bool {
        self.upkeep_requested.swap(false, Ordering::Relaxed)
    }

    /// Counts `count` histogram samples; wakes the upkeep thread every
    /// [`UPKEEP_EVERY_SAMPLES`].
    #[inline]
    fn sampled(&self, count: u64) {
        let before = self.samples.fetch_add(count, Ordering::Relaxed);
        if before / UPKEEP_EVERY_SAMPLES != (before + count) / UPKEEP_EVERY_SAMPLES
            && let Some(thread) = self.upkeep_thread.get()
        {
            self.upkeep_requested.store(true, Ordering::Relaxed);
            thread.unpark();
        }
    }

    /// The handles of `client_id` on `pool` (registered on first use; the
    /// cap counts distinct ids over all pools).
    fn client(&self, client_id: &str, pool: PoolId) -> Arc<ClientMetrics> {
        let client_id = truncate(client_id, MAX_CLIENT_ID_BYTES);
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        // The cap counts real ids; `_unknown`/`_all` and `_other` come on top.
        let id = if clients.contains_key(client_id) || clients.len() <= self.options.client_id_cap {
            client_id
        } else {
            CLIENT_ID_OTHER
        };
        let per_pool = clients.entry(id.to_owned()).or_default();
        if per_pool.len() <= pool {
            per_pool.resize(pool + 1, None);
        }
        if let Some(client) = &per_pool[pool] {
            return client.clone();
        }
        let client = Arc::new(ClientMetrics::new(id, &self.pool(pool).label));
        per_pool[pool] = Some(client.clone());
        client
    }

    /// The metrics of `pool` (registered by [`PoolListener::added`] for a
    /// pool a reload added).
    fn pool(&self, pool: PoolId) -> Arc<PoolMetrics> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.get(pool).unwrap_or(&self.none).clone()
    }

    /// The `client_id` a login name would get, per the configured mode
    /// (not registered: see [`ConnectionMeter::login`]).
    fn client_id_for_user<'u>(&self, user: &'u str) -> Option<&'u str> {
        let id = match self.options.client_id {
            ClientIdMode::Account => user.split('.').next().unwrap_or(user),
            ClientIdMode::Worker => user,
            ClientIdMode::PeerIp | ClientIdMode::None => return None,
        };
        Some(truncate(id, MAX_CLIENT_ID_BYTES))
    }

    /// Microseconds from the collector's start to `at`. The lines of one
    /// read share their `at`, so the last conversion is kept per thread:
    /// converting for each line was 1.2% of the relay's CPU at saturation
    /// (perf: `sub_timespec`).
    fn us_since_start(&self, at: Instant) -> u64 {
        LAST_CLOCK.with(|last| match last.get() {
            Some((start, seen, us)) if seen == at && start == self.start => us,
            _ => {
                let us = at.saturating_duration_since(self.start).as_micros() as u64;
                last.set(Some((self.start, at, us)));
                us
            }
        })
    }

    /// Applies what the lines of one read counted (see [`Batch`]).
    fn apply_batch(&self, conn: &mut ConnectionMeter, at: Instant) {
        let batch = BATCH.with(|cell| cell.replace(Batch::EMPTY));
        LATENCY.with(|cell| {
            let (method, samples) = &mut *cell.borrow_mut();
            samples.flush_into(&conn.metrics.request_response[*method as usize]);
        });
        let client = &conn.client;
        if batch.submits > 0 {
            client
                .totals
                .submits
                .fetch_add(u64::from(batch.submits), Ordering::Relaxed);
        }
        if batch.accepted > 0 {
            client
                .totals
                .accepted
                .fetch_add(u64::from(batch.accepted), Ordering::Relaxed);
            if batch.accepted_difficulty > 0.0 {
                client.add_accepted_difficulty(batch.accepted_difficulty);
            }
            conn.record
                .accepted(batch.accepted, batch.accepted_difficulty, at);
        }
        if batch.pending != 0 {
            conn.metrics.pending.increment(f64::from(batch.pending));
        }
        if batch.expired > 0 {
            conn.metrics.expired.increment(u64::from(batch.expired));
        }
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "never".
        self.start.elapsed().as_millis() as u64 + 1
    }

    /// Records an upstream reachability probe made outside the relay.
    pub fn record_probe(&self, reachable: bool) {
        let slot = if reachable {
            &self.health.last_success_ms
        } else {
            &self.health.last_failure_ms
        };
        slot.store(self.now_ms(), Ordering::Relaxed);
    }

    /// Marks the proxy as draining (shutdown started): `/healthz` turns 503.
    pub fn set_draining(&self) {
        self.health.draining.store(true, Ordering::Relaxed);
    }

    /// Health for `/healthz`: `Ok(reason)` or `Err(reason)`.
    pub fn health(&self) -> Result<&'static str, String> {
        if self.health.draining.load(Ordering::Relaxed) {
            return Err("draining: shutting down, not accepting miners".into());
        }
        let window = self.options.health_interval.as_millis() as u64;
        let now = self.now_ms();
        let success = self.health.last_success_ms.load(Ordering::Relaxed);
        let failure = self.health.last_failure_ms.load(Ordering::Relaxed);
        let recent = |t: u64| t != 0 && now.saturating_sub(t) <= window;
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        if !pools.iter().any(|p| p.up.load(Ordering::Relaxed)) {
            let labels: Vec<&str> = pools.iter().map(|p| p.label.as_str()).collect();
            return Err(format!("every pool is down: {}", labels.join(", ")));
        }
        drop(pools);
        if recent(failure) && failure > success && !recent(success) {
            return Err(format!(
                "pool unreachable: every upstream attempt in the last {}s failed",
                self.options.health_interval.as_secs()
            ));
        }
        Ok("ok: listening, pool reachable")
    }

    /// Totals for `/status`.
    pub fn status(&self) -> Value {
        let t = &self.totals;
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let all: Vec<&Arc<ClientMetrics>> = clients.values().flatten().flatten().collect();
        let mut per_client: Vec<Value> = all
            .iter()
            .map(|c| {
                json!({
                    "client_id": c.id.as_ref(),
                    "pool_host": c.pool,
                    "submits": load(&c.totals.submits),
                    "accepted": load(&c.totals.accepted),
                    "rejected": load(&c.totals.rejected),
                    "accepted_difficulty": f64::from_bits(load(&c.totals.accepted_difficulty)),
                })
            })
            .collect();
        per_client.sort_by(|a, b| {
            let key = |v: &Value| (v["client_id"].to_string(), v["pool_host"].to_string());
            key(a).cmp(&key(b))
        });
        let submits: u64 = all.iter().map(|c| load(&c.totals.submits)).sum();
        let accepted: u64 = all.iter().map(|c| load(&c.totals.accepted)).sum();
        let rejected: u64 = all.iter().map(|c| load(&c.totals.rejected)).sum();
        json!({
            "connections": {
                "active": load(&t.active),
                "total": load(&t.connections),
                "refused": load(&t.refused),
            },
            "relay": {
                "bytes_sent": load(&t.bytes_sent),
                "bytes_received": load(&t.bytes_received),
                "upstream_connect_failures": load(&t.upstream_failures),
                "submits": submits,
                "accepted": accepted,
                "rejected": rejected,
                "healthy": self.health().is_ok(),
            },
            "clients": per_client,
        })
    }

    /// The live miner registry.
    pub fn miners(&self) -> &MinerRegistry {
        &self.miners
    }

    /// Cumulative accepted share difficulty now: the farm's, each pool's
    /// (by pool id) and each client id's (over every pool).
    pub fn accepted_difficulty(&self) -> HistoryTotals {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner()).len();
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut totals = HistoryTotals {
            farm: 0.0,
            pools: vec![0.0; pools],
            clients: Vec::with_capacity(clients.len()),
        };
        for per_pool in clients.values() {
            let mut client_total = 0.0;
            let mut name = None;
            for (pool, client) in per_pool.iter().enumerate() {
                let Some(client) = client else { continue };
                let value =
                    f64::from_bits(client.totals.accepted_difficulty.load(Ordering::Relaxed));
                if let Some(slot) = totals.pools.get_mut(pool) {
                    *slot += value;
                }
                client_total += value;
                name.get_or_insert_with(|| client.id.clone());
            }
            totals.farm += client_total;
            if let Some(name) = name {
                totals.clients.push((name, client_total));
            }
        }
        totals
    }

    /// Takes a history sample if one is due (called by the housekeeping
    /// thread on each tick; see [`super::history`] for the policy).
    pub fn sample_history(&self) {
        let now = Instant::now();
        if !self.history().due(now) {
            return;
        }
        let totals = self.accepted_difficulty();
        self.history().record(now, &totals);
    }

    /// The hashrate history (a copy is cheap enough for a page refresh;
    /// callers hold the lock only while reading).
    pub fn history(&self) -> std::sync::MutexGuard<'_, History> {
        self.history.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Share totals per client id over every pool, and per pool over every
    /// client, for the status page.
    pub fn share_totals(&self) -> ShareTotals {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner()).len();
        let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = ShareTotals {
            pools: vec![Shares::default(); pools],
            clients: Vec::with_capacity(clients.len()),
        };
        for per_pool in clients.values() {
            let mut client_shares = Shares::default();
            let mut name = None;
            for (pool, client) in per_pool.iter().enumerate() {
                let Some(client) = client else { continue };
                let shares = Shares::of(&client.totals);
                if let Some(slot) = out.pools.get_mut(pool) {
                    slot.add(&shares);
                }
                client_shares.add(&shares);
                name.get_or_insert_with(|| client.id.clone());
            }
            if let Some(name) = name {
                out.clients.push((name, client_shares));
            }
        }
        out.clients.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Appends what the collector exports itself (not through the
    /// exporter's registry) to a Prometheus text exposition: the per-client
    /// series and the request → response histograms.
    pub fn render(&self, out: &mut String) {
        self.render_clients(out);
        self.render_latency(out);
    }

    /// Appends `stratum_request_response_seconds` of every pool relayed to
    /// (see [`LatencyHistogram`]).
    fn render_latency(&self, out: &mut String) {
        use metrics_exporter_prometheus::formatting::{
            sanitize_label_value, write_help_line, write_type_line,
        };
        let pools: Vec<Arc<PoolMetrics>> = self
            .pools
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| p.id.is_some())
            .cloned()
            .collect();
        if pools.is_empty() {
            return;
        }
        let help = METRICS
            .iter()
            .find(|m| m.name == REQUEST_RESPONSE_SECONDS)
            .map_or("", |m| m.help);
        write_help_line(out, REQUEST_RESPONSE_SECONDS, None, None, help);
        write_type_line(out, REQUEST_RESPONSE_SECONDS, None, None, "histogram");
        for pool in &pools {
            let pool_host = sanitize_label_value(&pool.label);
            for (method, histogram) in Method::ALL.iter().zip(&pool.request_response) {
                let labels = format!("pool_host=\"{pool_host}\",method=\"{}\"", method.as_str());
                histogram.render(out, REQUEST_RESPONSE_SECONDS, &labels);
            }
        }
        out.push('\n');
    }

    /// Appends the per-client series (`client_id` and `pool_host` labels:
    /// submits, accepted and rejected shares, difficulty, accepted
    /// difficulty) to a Prometheus text exposition, in the exporter's
    /// format. They are kept as plain atomics in [`ClientMetrics`] rather
    /// than registered with the exporter (see there).
    pub fn render_clients(&self, out: &mut String) {
        use metrics_exporter_prometheus::formatting::{
            sanitize_label_value, write_help_line, write_type_line,
        };
        use std::fmt::Write as _;
        let mut all: Vec<Arc<ClientMetrics>> = {
            let clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            clients.values().flatten().flatten().cloned().collect()
        };
        if all.is_empty() {
            return;
        }
        all.sort_by(|a, b| (&a.id, &a.pool).cmp(&(&b.id, &b.pool)));
        let labels: Vec<String> = all
            .iter()
            .map(|c| {
                format!(
                    "client_id=\"{}\",pool_host=\"{}\"",
                    sanitize_label_value(&c.id),
                    sanitize_label_value(&c.pool)
                )
            })
            .collect();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let family = |out: &mut String, name: &str, kind: &str| {
            let help = METRICS
                .iter()
                .find(|m| m.name == name)
                .map_or("", |m| m.help);
            write_help_line(out, name, None, None, help);
            write_type_line(out, name, None, None, kind);
        };
        type Value = fn(&ClientTotals) -> u64;
        let counters: [(&str, Value); 3] = [
            (SUBMITS_TOTAL, |t| t.submits.load(Ordering::Relaxed)),
            (ACCEPTED_SHARES_TOTAL, |t| {
                t.accepted.load(Ordering::Relaxed)
            }),
            // Counters are integers: the floor of the exact sum.
            (ACCEPTED_DIFFICULTY_TOTAL, |t| {
                f64::from_bits(t.accepted_difficulty.load(Ordering::Relaxed)) as u64
            }),
        ];
        for (name, value) in counters {
            family(out, name, "counter");
            for (client, labels) in all.iter().zip(&labels) {
                let _ = writeln!(out, "{name}{{{labels}}} {}", value(&client.totals));
            }
            out.push('\n');
        }
        family(out, REJECTED_SHARES_TOTAL, "counter");
        for (client, labels) in all.iter().zip(&labels) {
            for reason in RejectReason::ALL {
                let _ = writeln!(
                    out,
                    "{REJECTED_SHARES_TOTAL}{{{labels},reason=\"{}\"}} {}",
                    reason.as_str(),
                    load(&client.totals.rejected_by_reason[reason as usize])
                );
            }
        }
        out.push('\n');
        family(out, CURRENT_DIFFICULTY, "gauge");
        for (client, labels) in all.iter().zip(&labels) {
            let difficulty = f64::from_bits(load(&client.totals.difficulty));
            let _ = writeln!(out, "{CURRENT_DIFFICULTY}{{{labels}}} {difficulty}");
        }
        out.push('\n');
    }

    /// Counts one admin action (`stratum_admin_actions_total`): both labels
    /// come from fixed sets.
    pub fn count_admin_action(&self, action: &'static str, result: &'static str) {
        Registrar {
            recorder: &self.recorder,
        }
        .counter(
            ADMIN_ACTIONS_TOTAL,
            &[("action", action), ("result", result)],
        )
        .increment(1);
    }

    /// Expires pending requests older than the request timeout.
    fn expire(&self, conn: &mut ConnectionMeter, now_us: u64) {
        while let Some(front) = conn.pending.front() {
            if now_us.saturating_sub(front.sent_us)
                < self.options.request_timeout.as_micros() as u64
            {
                break;
            }
            conn.pending.pop_front();
            batch(|b| {
                b.pending -= 1;
                b.expired += 1;
            });
        }
    }

    fn request(&self, conn: &mut ConnectionMeter, message: &Message<'_>, at: Instant) {
        let method = message.method().unwrap_or(Method::Other);
        // Counted as the pool counts it, whatever its id: a submit with a
        // null or missing id is still a share to the pool.
        if method.is_share_submit() {
            batch(|b| b.submits += 1);
        }
        // No id: no answer can be matched to it. A null id is tracked like
        // any other (a pool that answers with id null is matched oldest first).
        let Some(id) = message.id() else { return };
        let now_us = self.us_since_start(at);
        self.expire(conn, now_us);
        if conn.pending.len() >= MAX_PENDING_REQUESTS {
            conn.pending.pop_front();
            batch(|b| {
                b.pending -= 1;
                b.expired += 1;
            });
        }
        let id_hash = hash_id(id.raw_bytes());
        if method.is_login() {
            conn.login = message.user().map(|user| {
                let (id, peer) = (conn.record.id, conn.record.peer);
                if log_peer(log::Level::Info, PeerLine::Authorizing) {
                    info!(
                        "conn={id} peer={peer} authorizing user={}",
                        truncate(&user, 128)
                    );
                }
                Box::new(Login {
                    id_hash,
                    user: Box::from(truncate(&user, super::miners::MAX_WORKER_BYTES)),
                    client_id: self.client_id_for_user(&user).map(Box::from),
                })
            });
        }
        if conn.pending.capacity() == 0 {
            // Most miners keep one request in flight; one that pipelines
            // grows this once and keeps it.
            conn.pending.reserve_exact(1);
        }
        conn.pending.push_back(Pending {
            id_hash,
            sent_us: now_us,
            difficulty: conn.record.difficulty(),
            method,
        });
        batch(|b| b.pending += 1);
    }

    fn response(&self, conn: &mut ConnectionMeter, message: &Message<'_>, at: Instant) {
        let Some(id) = message.id() else { return };
        let id_hash = hash_id(id.raw_bytes());
        // Same ids may be in flight at once: answer the oldest first.
        let Some(index) = conn.pending.iter().position(|p| p.id_hash == id_hash) else {
            return;
        };
        // Almost always the oldest: `pop_front` is cheaper than `remove`.
        let taken = if index == 0 {
            conn.pending.pop_front()
        } else {
            conn.pending.remove(index)
        };
        let Some(pending) = taken else {
            return;
        };
        batch(|b| b.pending -= 1);
        let waited_us = self.us_since_start(at).saturating_sub(pending.sent_us);
        LATENCY.with(|cell| {
            let (method, samples) = &mut *cell.borrow_mut();
            if *method != pending.method {
                // `Method::ALL` lists the variants in declaration order.
                samples.flush_into(&conn.metrics.request_response[*method as usize]);
                *method = pending.method;
            }
            samples.record_us(waited_us);
        });
        let outcome = message.outcome();
        if pending.method.is_share_submit() {
            match outcome {
                Outcome::Accepted => {
                    batch(|b| {
                        b.accepted += 1;
                        if pending.difficulty > 0.0 {
                            b.accepted_difficulty += pending.difficulty;
                        }
                    });
                }
                Outcome::Rejected(ref error) => {
                    self.reject(conn, RejectReason::classify(error));
                }
                Outcome::Value => self.reject(conn, RejectReason::Other),
            }
        } else if pending.method.is_login()
            && let Some(login) = conn.login.take_if(|login| login.id_hash == id_hash)
            && outcome == Outcome::Accepted
            && let Some(pool) = conn.metrics.id
        {
            if let Some(client_id) = &login.client_id
                && let client = self.client(client_id, pool)
                && !Arc::ptr_eq(&client, &conn.client)
            {
                if log_peer(log::Level::Info, PeerLine::Authorized) {
                    info!(
                        "conn={} peer={} authorized client_id={}",
                        conn.record.id, conn.record.peer, client.id
                    );
                }
                let difficulty = conn.record.difficulty();
                if difficulty > 0.0 {
                    client.set_difficulty(difficulty);
                }
                // What this read counted so far was the previous client's.
                self.apply_batch(conn, at);
                conn.client = client;
            }
            conn.record.set_worker(&login.user, conn.client.id.clone());
        }
    }

    fn reject(&self, conn: &ConnectionMeter, reason: RejectReason) {
        let client = &conn.client;
        // `RejectReason::ALL` lists the variants in declaration order.
        client.totals.rejected.fetch_add(1, Ordering::Relaxed);
        client.totals.rejected_by_reason[reason as usize].fetch_add(1, Ordering::Relaxed);
        conn.record.rejected(reason);
    }

    fn closed(
        &self,
        conn: &mut ConnectionMeter,
        duration: Duration,
        up: u64,
        down: u64,
        reason: CloseReason,
    ) {
        if conn.metrics.id.is_some() {
            conn.metrics.active.decrement(1.0);
        }
        self.totals.active.fetch_sub(1, Ordering::Relaxed);
        self.miners.close(conn.record.id);
        conn.metrics.duration.record(duration.as_secs_f64());
        self.sampled(1);
        match reason {
            CloseReason::HandshakeTimeout => conn.metrics.timeouts[0].increment(1),
            CloseReason::IdleTimeout => conn.metrics.timeouts[1].increment(1),
            _ => {}
        }
        let left = conn.pending.len();
        if reason == CloseReason::Moved {
            conn.metrics.moves.increment(1);
        }
        if reason == CloseReason::PoolDown {
            let pool = &conn.metrics;
            pool.failovers.increment(1);
            pool.failover_lost.increment(left as u64);
        }
        if left > 0 {
            conn.metrics.pending.decrement(left as f64);
            conn.metrics.expired.increment(left as u64);
            conn.pending.clear();
        }
        let detail = match reason {
            CloseReason::MinerError(kind) | CloseReason::PoolError(kind) => format!(" ({kind})"),
            _ => String::new(),
        };
        if !log_peer(log::Level::Info, PeerLine::Closed) {
            return;
        }
        info!(
            "conn={} peer={} closed by {:?}: {}{} after {:.1}s, {} bytes miner->pool, {} bytes pool->miner",
            conn.record.id,
            conn.record.peer,
            reason.side(),
            reason.as_str(),
            detail,
            duration.as_secs_f64(),
            up,
            down
        );
    }
}

/// Registers the handles of one pool.
fn register_pool(r: &Registrar<'_>, id: PoolId, pool: &str, unknown_id: &str) -> PoolMetrics {
    register_pool_scoped(r, Some(id), pool, unknown_id)
}

/// Registers the handles of one pool. For [`POOL_HOST_NONE`] (`id` none)
/// only what can happen before a miner is relayed is exported, its
/// handshake timeouts and lifetimes: no client, byte, share or reachability
/// series for a pool that is not one.
fn register_pool_scoped(
    r: &Registrar<'_>,
    id: Option<PoolId>,
    pool: &str,
    unknown_id: &str,
) -> PoolMetrics {
    let relayed = id.is_some();
    let p = [("pool_host", pool)];
    let with = |k: &'static str, v: &'static str| [("pool_host", pool), (k, v)];
    let counter = |name, labels: &[(&'static str, &str)]| {
        if relayed {
            r.counter(name, labels)
        } else {
            Counter::noop()
        }
    };
    let gauge = |name, labels: &[(&'static str, &str)]| {
        if relayed {
            r.gauge(name, labels)
        } else {
            Gauge::noop()
        }
    };
    let histogram = |name, labels: &[(&'static str, &str)]| {
        if relayed {
            r.histogram(name, labels)
        } else {
            Histogram::noop()
        }
    };
    PoolMetrics {
        id,
        label: pool.to_owned(),
        unknown_client: Arc::new(ClientMetrics::new(unknown_id, pool)),
        connections: counter(CONNECTIONS_TOTAL, &p),
        active: gauge(ACTIVE_CONNECTIONS, &p),
        bytes_sent: counter(BYTES_SENT_TOTAL, &p),
        bytes_received: counter(BYTES_RECEIVED_TOTAL, &p),
        duration: r.histogram(CONNECTION_DURATION_SECONDS, &p),
        connect_latency: histogram(CONNECT_LATENCY_SECONDS, &p),
        request_response: Method::ALL
            .iter()
            .map(|_| LatencyHistogram::default())
            .collect(),
        parse_failures: [Direction::MinerToPool, Direction::PoolToMiner]
            .map(|d| counter(PARSE_FAILURES_TOTAL, &with("direction", d.as_str()))),
        upstream_failures: UpstreamFailure::ALL
            .map(|f| counter(UPSTREAM_CONNECT_FAILURES_TOTAL, &with("reason", f.as_str()))),
        timeouts: ["handshake", "idle"]
            .map(|k| r.counter(CONNECTION_TIMEOUTS_TOTAL, &with("kind", k))),
        pending: gauge(PENDING_REQUESTS, &p),
        expired: counter(EXPIRED_REQUESTS_TOTAL, &p),
        reachable: gauge(POOL_REACHABLE, &p),
        up: AtomicBool::new(true),
        probed: AtomicBool::new(false),
        failovers: counter(FAILOVERS_TOTAL, &p),
        failover_lost: counter(FAILOVER_LOST_REQUESTS_TOTAL, &p),
        moves: counter(MOVES_TOTAL, &p),
        reconnects_sent: counter(RECONNECTS_SENT_TOTAL, &p),
    }
}

/// Cuts `s` to at most `max` bytes on a character boundary.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A hash of an id's raw JSON text: a fixed-size key, no allocation.
///
/// Eight bytes per multiply: byte-at-a-time FNV-1a was a chain of one
/// multiply per byte (ten for an id like `1000000007`), 2% of the relay's
/// CPU at saturation, where every submit and every answer is hashed.
fn hash_id(raw: &[u8]) -> u64 {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mix = |h: u64, word: u64| {
        let h = (h ^ word).wrapping_mul(K);
        h ^ (h >> 29)
    };
    let mut words = raw.chunks_exact(8);
    let mut h = (raw.len() as u64).wrapping_mul(K);
    for word in &mut words {
        h = mix(h, u64::from_le_bytes(word.try_into().unwrap_or_default()));
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let word = tail
            .iter()
            .enumerate()
            .fold(0u64, |w, (i, &b)| w | (u64::from(b) << (8 * i)));
        h = mix(h, word);
    }
    h
}

impl PoolListener for Collector {
    fn changed(&self, pool: PoolId, spec: &PoolSpec, health: PoolHealth) {
        let metrics = self.pool(pool);
        match health {
            PoolHealth::Up => {
                metrics.up.store(true, Ordering::Relaxed);
                metrics.reachable.set(1.0);
                info!("pool {} ({}) is up", spec.name, spec.addr);
            }
            PoolHealth::Down(reason) => {
                metrics.up.store(false, Ordering::Relaxed);
                metrics.reachable.set(0.0);
                warn!(
                    "pool {} ({}) is down: {}; its miners are moved",
                    spec.name,
                    spec.addr,
                    reason.as_str()
                );
            }
        }
    }

    fn added(&self, pool: PoolId, spec: &PoolSpec) {
        let r = Registrar {
            recorder: &self.recorder,
        };
        let metrics = Arc::new(register_pool(&r, pool, &spec.name, self.unknown_id));
        metrics.reachable.set(1.0);
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        // Ids are handed out in order, so this is the next one.
        if pools.len() == pool {
            // Its `_unknown` (or `_all`) client is exported from now on.
            let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
            let per_pool = clients.entry(self.unknown_id.to_owned()).or_default();
            if per_pool.len() <= pool {
                per_pool.resize(pool + 1, None);
            }
            per_pool[pool].get_or_insert_with(|| metrics.unknown_client.clone());
            pools.push(metrics);
        }
        info!("pool {} ({}) added", spec.name, spec.addr);
    }

    fn probed(&self, pool: PoolId, ok: bool) {
        self.record_probe(ok);
        let metrics = self.pool(pool);
        metrics.reachable.set(if ok { 1.0 } else { 0.0 });
        // The first verdict on each pool is logged; later ones only when
        // they change its health (see `changed`).
        if !metrics.probed.swap(true, Ordering::Relaxed) {
            let name = &metrics.label;
            if ok {
                info!("pool {name} is reachable");
            } else {
                warn!("pool {name} is not reachable yet");
            }
        }
    }
}

impl Observer for Collector {
    type Connection = ConnectionMeter;

    fn accepted(&self, info: &ConnectionInfo) -> ConnectionMeter {
        self.totals.connections.fetch_add(1, Ordering::Relaxed);
        self.totals.active.fetch_add(1, Ordering::Relaxed);
        if log_peer(log::Level::Info, PeerLine::Opened) {
            info!("conn={} peer={} opened", info.id, info.peer);
        }
        // The client is known on a pool: this one is replaced when the
        // upstream connects (nothing is metered before that).
        let client = self.none.unknown_client.clone();
        ConnectionMeter {
            metrics: self.none.clone(),
            client,
            pending: VecDeque::new(),
            login: None,
            record: self.miners.open(info.id, info.peer, info.accepted_at),
        }
    }

    fn lines_done(&self, conn: &mut ConnectionMeter, at: Instant) {
        self.apply_batch(conn, at);
    }

    fn event(&self, conn: &mut ConnectionMeter, event: Event<'_>) {
        match event {
            Event::ReconnectSent { .. } => conn.metrics.reconnects_sent.increment(1),
            Event::Relayed { direction, bytes } => match direction {
                Direction::MinerToPool => {
                    conn.metrics.bytes_sent.increment(bytes as u64);
                    self.totals
                        .bytes_sent
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                }
                Direction::PoolToMiner => {
                    conn.metrics.bytes_received.increment(bytes as u64);
                    self.totals
                        .bytes_received
                        .fetch_add(bytes as u64, Ordering::Relaxed);
                }
            },
            Event::Request {
                direction: Direction::MinerToPool,
                message,
                at,
            } => self.request(conn, message, at),
            Event::Response {
                direction: Direction::PoolToMiner,
                message,
                at,
            } => self.response(conn, message, at),
            // A submit with a null or missing id reads as a notification.
            Event::Notification {
                direction: Direction::MinerToPool,
                message,
                at,
            } if message.method().is_some_and(Method::is_share_submit) => {
                self.request(conn, message, at)
            }
            Event::Notification {
                direction: Direction::PoolToMiner,
                message,
                ..
            } => {
                if let Some(difficulty) = message.difficulty() {
                    conn.client.set_difficulty(difficulty);
                    conn.record.set_difficulty(difficulty);
                }
            }
            Event::Request { .. } | Event::Response { .. } | Event::Notification { .. } => {}
            Event::ParseFailed { direction, .. } => {
                conn.metrics.parse_failures[direction as usize].increment(1);
            }
            Event::UpstreamConnected { pool, latency, .. } => {
                if conn.metrics.id.is_some() {
                    // Dialled again: the first pool closed before answering.
                    conn.metrics.active.decrement(1.0);
                }
                conn.metrics = self.pool(pool);
                let metrics = &conn.metrics;
                metrics.connections.increment(1);
                metrics.active.increment(1.0);
                // A connect is a verdict too (one pool is not probed again).
                if metrics.up.load(Ordering::Relaxed) {
                    metrics.reachable.set(1.0);
                }
                conn.client = match self.options.client_id {
                    ClientIdMode::PeerIp => self.client(&conn.record.peer.ip().to_string(), pool),
                    _ => metrics.unknown_client.clone(),
                };
                conn.record.set_pool(pool, Some(conn.client.id.clone()));
                metrics.connect_latency.record(latency.as_secs_f64());
                self.sampled(1);
                self.health
                    .last_success_ms
                    .store(self.now_ms(), Ordering::Relaxed);
            }
            Event::UpstreamFailed {
                pool,
                failure,
                latency,
                error,
            } => {
                let metrics = self.pool(pool);
                metrics.upstream_failures[failure as usize].increment(1);
                self.totals
                    .upstream_failures
                    .fetch_add(1, Ordering::Relaxed);
                self.health
                    .last_failure_ms
                    .store(self.now_ms(), Ordering::Relaxed);
                if log_peer(log::Level::Warn, PeerLine::UpstreamFailed) {
                    warn!(
                        "conn={} peer={} pool {} unreachable ({}) after {:.3}s: {}",
                        conn.record.id,
                        conn.record.peer,
                        metrics.label,
                        failure.as_str(),
                        latency.as_secs_f64(),
                        error
                    );
                }
            }
            Event::Closed {
                duration,
                miner_to_pool_bytes,
                pool_to_miner_bytes,
                reason,
            } => self.closed(
                conn,
                duration,
                miner_to_pool_bytes,
                pool_to_miner_bytes,
                reason,
            ),
        }
    }

    fn refused(&self, peer: SocketAddr, reason: RefuseReason) {
        self.refused[reason as usize].increment(1);
        self.totals.refused.fetch_add(1, Ordering::Relaxed);
        if log_peer(log::Level::Warn, PeerLine::Refused) {
            warn!("peer={peer} refused: {}", reason.as_str());
        }
    }

    fn accept_failed(&self, error: &std::io::Error) {
        warn!("accept failed, backing off: {error}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::borrow::Cow;

    fn error(code: Option<i64>, message: Option<&str>) -> RpcError<'_> {
        RpcError {
            code,
            message: message.map(Cow::Borrowed),
        }
    }

    /// Answers are matched to requests by this hash: ids a miner could use
    /// side by side (numbers, their quoted forms, hex strings, lengths that
    /// end inside a word) must not share one.
    #[test]
    fn distinct_ids_hash_apart() {
        let mut ids: Vec<String> = Vec::new();
        for n in 0..200_000u64 {
            ids.push(n.to_string());
            ids.push(format!("\"{n}\""));
            ids.push(format!("\"{n:08x}\""));
        }
        ids.extend(["null", "0", "00", "\"\"", "\"a\"", "\"a\\u0000\""].map(String::from));
        let mut seen = std::collections::HashMap::new();
        for id in &ids {
            if let Some(other) = seen.insert(hash_id(id.as_bytes()), id) {
                assert_eq!(other, id, "{other} and {id} hash alike");
            }
        }
        assert_eq!(hash_id(b"1000000007"), hash_id(b"1000000007"));
    }

    /// The upkeep thread is asked for a drain after every
    /// `UPKEEP_EVERY_SAMPLES` histogram samples, not before.
    #[test]
    fn upkeep_is_requested_when_samples_pile_up() {
        let collector = Collector::new(
            Arc::new(crate::metrics::schema::build_recorder()),
            CollectorOptions {
                pools: vec!["pool".into()],
                client_id: ClientIdMode::Account,
                client_id_cap: 10,
                request_timeout: Duration::from_secs(60),
                health_interval: Duration::from_secs(60),
            },
        );
        collector.set_upkeep_thread(std::thread::current());
        let info = ConnectionInfo {
            id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            accepted_at: Instant::now(),
        };
        let mut conn = collector.accepted(&info);
        let connected = || Event::UpstreamConnected {
            pool: 0,
            addr: "127.0.0.1:2".parse().unwrap(),
            latency: Duration::from_millis(1),
        };
        for _ in 1..UPKEEP_EVERY_SAMPLES {
            collector.event(&mut conn, connected());
        }
        assert!(!collector.take_upkeep_request());
        collector.event(&mut conn, connected());
        assert!(collector.take_upkeep_request());
        assert!(
            !collector.take_upkeep_request(),
            "the request is taken once"
        );
    }

    #[test]
    fn reject_reasons_from_codes_and_messages() {
        use RejectReason::*;
        let cases = [
            (error(Some(21), Some("Job not found")), Stale),
            (error(Some(22), None), Duplicate),
            (error(Some(23), Some("whatever")), LowDifficulty),
            (error(Some(24), None), Unauthorized),
            (error(Some(25), None), NotSubscribed),
            (error(Some(20), Some("Stale share")), Stale),
            (error(None, Some("high-hash")), LowDifficulty),
            (error(Some(-1), Some("Low difficulty share")), LowDifficulty),
            (error(None, Some("DUPLICATE")), Duplicate),
            (error(None, Some("Unauthorized worker")), Unauthorized),
            (error(Some(20), Some("Other/Unknown")), Other),
            (error(None, None), Other),
        ];
        for (e, want) in cases {
            assert_eq!(RejectReason::classify(&e), want, "{e:?}");
        }
    }

    #[test]
    fn label_tables_follow_declaration_order() {
        for (i, m) in Method::ALL.iter().enumerate() {
            assert_eq!(*m as usize, i, "{m:?}");
        }
        for (i, r) in RejectReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    fn collector(cap: usize) -> Collector {
        Collector::new(
            Arc::new(crate::metrics::schema::build_recorder()),
            CollectorOptions {
                pools: vec!["pool".into()],
                client_id: ClientIdMode::Account,
                client_id_cap: cap,
                request_timeout: Duration::from_secs(60),
                health_interval: Duration::from_secs(60),
            },
        )
    }

    fn feed(collector: &Collector, conn: &mut ConnectionMeter, direction: Direction, line: &str) {
        let message = Message::parse(line.as_bytes()).expect("valid line");
        let at = Instant::now();
        let event = match (direction, message.kind()) {
            (d, crate::stratum::Kind::Request) => Event::Request {
                direction: d,
                message: &message,
                at,
            },
            (d, crate::stratum::Kind::Response) => Event::Response {
                direction: d,
                message: &message,
                at,
            },
            (d, crate::stratum::Kind::Notification) => Event::Notification {
                direction: d,
                message: &message,
                at,
            },
        };
        collector.event(conn, event);
        collector.lines_done(conn, at);
    }

    fn authorize(
        collector: &Collector,
        peer_port: u16,
        user: &str,
        answer: &str,
    ) -> ConnectionMeter {
        let info = ConnectionInfo {
            id: u64::from(peer_port),
            peer: SocketAddr::from(([127, 0, 0, 2], peer_port)),
            accepted_at: Instant::now(),
        };
        let mut conn = collector.accepted(&info);
        // Metered per pool from the upstream connect on.
        collector.event(
            &mut conn,
            Event::UpstreamConnected {
                pool: 0,
                addr: "127.0.0.1:2".parse().unwrap(),
                latency: Duration::from_millis(1),
            },
        );
        feed(
            collector,
            &mut conn,
            Direction::MinerToPool,
            &format!(r#"{{"id":2,"method":"mining.authorize","params":["{user}","x"]}}"#),
        );
        if !answer.is_empty() {
            feed(collector, &mut conn, Direction::PoolToMiner, answer);
        }
        conn
    }

    #[test]
    fn the_registry_names_a_worker_once_the_pool_accepts_it_and_forgets_closed_miners() {
        let collector = collector(10);
        let refused = r#"{"id":2,"result":false,"error":null}"#;
        let accepted = r#"{"id":2,"result":true,"error":null}"#;
        let mut conns = [
            authorize(&collector, 1, "mallory.x", refused),
            authorize(&collector, 2, "alice.rig1", accepted),
            authorize(&collector, 3, "bob.rig2", ""),
        ];
        feed(
            &collector,
            &mut conns[1],
            Direction::PoolToMiner,
            r#"{"id":null,"method":"mining.set_difficulty","params":[512]}"#,
        );
        for (id, answer) in [
            (3, r#"{"id":3,"result":true,"error":null}"#),
            (
                4,
                r#"{"id":4,"result":null,"error":[21,"Job not found",null]}"#,
            ),
        ] {
            feed(
                &collector,
                &mut conns[1],
                Direction::MinerToPool,
                &format!(
                    r#"{{"id":{id},"method":"mining.submit","params":["alice.rig1","j","0","1","2"]}}"#
                ),
            );
            feed(&collector, &mut conns[1], Direction::PoolToMiner, answer);
        }
        let miners = collector.miners().snapshot(Instant::now());
        let miner = |id: u64| miners.iter().find(|m| m.id == id).expect("registered");
        assert_eq!(miners.len(), 3);
        assert_eq!(miner(1).identity.worker, None);
        assert_eq!(miner(3).identity.worker, None, "not answered yet");
        let alice = miner(2);
        assert_eq!(alice.identity.worker.as_deref(), Some("alice.rig1"));
        assert_eq!(alice.identity.client.as_deref(), Some("alice"));
        assert_eq!(alice.identity.pool, Some(0));
        assert_eq!(alice.difficulty, 512.0);
        assert_eq!((alice.accepted, alice.accepted_difficulty), (1, 512.0));
        assert_eq!(alice.rejected[RejectReason::Stale as usize], 1);
        assert!(alice.last_share.is_some());
        let totals = collector.share_totals();
        let alice_totals = &totals
            .clients
            .iter()
            .find(|(id, _)| &**id == "alice")
            .unwrap()
            .1;
        assert_eq!(alice_totals.rejected[RejectReason::Stale as usize], 1);
        assert_eq!(collector.accepted_difficulty().pools, vec![512.0]);
        for conn in &mut conns {
            collector.event(
                conn,
                Event::Closed {
                    duration: Duration::from_secs(1),
                    miner_to_pool_bytes: 0,
                    pool_to_miner_bytes: 0,
                    reason: CloseReason::MinerClosed,
                },
            );
        }
        assert!(collector.miners().is_empty());
    }

    /// Per-client series are rendered by the collector, not the exporter:
    /// the same names, labels, values and format, every client and reason
    /// from the first scrape on (zeros included), label values escaped.
    #[test]
    fn per_client_series_are_rendered_with_every_reason_and_escaped_labels() {
        let collector = collector(10);
        let accepted = r#"{"id":2,"result":true,"error":null}"#;
        let mut alice = authorize(&collector, 1, "alice.rig1", accepted);
        let mut odd = authorize(&collector, 2, "o\\\"d\\\\d.rig", accepted);
        feed(
            &collector,
            &mut alice,
            Direction::PoolToMiner,
            r#"{"id":null,"method":"mining.set_difficulty","params":[512.5]}"#,
        );
        for (id, answer) in [
            (3, r#"{"id":3,"result":true,"error":null}"#),
            (4, r#"{"id":4,"result":true,"error":null}"#),
            (
                5,
                r#"{"id":5,"result":null,"error":[21,"Job not found",null]}"#,
            ),
        ] {
            let submit = format!(
                r#"{{"id":{id},"method":"mining.submit","params":["alice.rig1","j","0","1","2"]}}"#
            );
            feed(&collector, &mut alice, Direction::MinerToPool, &submit);
            feed(&collector, &mut alice, Direction::PoolToMiner, answer);
        }
        feed(
            &collector,
            &mut odd,
            Direction::MinerToPool,
            r#"{"id":3,"method":"mining.submit","params":["x","j","0","1","2"]}"#,
        );
        let mut out = String::new();
        collector.render_clients(&mut out);
        let a = r#"{client_id="alice",pool_host="pool"}"#;
        for line in [
            "# TYPE stratum_submits_total counter".to_owned(),
            format!("stratum_submits_total{a} 3"),
            format!("stratum_accepted_shares_total{a} 2"),
            // 2 x 512.5, floored.
            format!("stratum_accepted_difficulty_total{a} 1025"),
            "# TYPE stratum_current_difficulty gauge".to_owned(),
            format!("stratum_current_difficulty{a} 512.5"),
            r#"stratum_rejected_shares_total{client_id="alice",pool_host="pool",reason="stale"} 1"#
                .to_owned(),
            r#"stratum_rejected_shares_total{client_id="alice",pool_host="pool",reason="other"} 0"#
                .to_owned(),
            r#"stratum_submits_total{client_id="o\"d\\d",pool_host="pool"} 1"#.to_owned(),
            r#"stratum_submits_total{client_id="_unknown",pool_host="pool"} 0"#.to_owned(),
        ] {
            assert!(out.lines().any(|l| l == line), "no {line:?} in:\n{out}");
        }
        let help = out
            .lines()
            .filter(|l| l.starts_with("# HELP stratum_rejected_shares_total "))
            .count();
        assert_eq!(help, 1, "one family, one HELP line");
        assert_eq!(
            out.lines()
                .filter(|l| l.starts_with("stratum_rejected_shares_total"))
                .count(),
            3 * RejectReason::ALL.len(),
            "every reason of every client (alice, the odd one, _unknown)"
        );
        // Nothing of theirs is left in the exporter's registry.
        let exporter = collector.recorder.handle().render();
        assert!(!exporter.contains("client_id="), "{exporter}");
    }

    #[test]
    fn refused_and_unanswered_names_never_take_a_client_id_slot() {
        let collector = collector(10);
        for n in 0..1000 {
            let answer = match n % 3 {
                0 => r#"{"id":2,"result":false,"error":null}"#,
                1 => r#"{"id":2,"result":null,"error":[24,"Unauthorized worker",null]}"#,
                _ => "", // never answered
            };
            let conn = authorize(&collector, 1000 + n, &format!("made-up-{n}.w"), answer);
            collector.event(
                &mut { conn },
                Event::Closed {
                    duration: Duration::from_secs(1),
                    miner_to_pool_bytes: 0,
                    pool_to_miner_bytes: 0,
                    reason: CloseReason::MinerClosed,
                },
            );
        }
        let mut real = authorize(
            &collector,
            9,
            "alice.rig1",
            r#"{"id":2,"result":true,"error":null}"#,
        );
        assert_eq!(&*real.client.id, "alice");
        feed(
            &collector,
            &mut real,
            Direction::MinerToPool,
            r#"{"id":3,"method":"mining.submit","params":["alice.rig1","j","e","t","n"]}"#,
        );
        let status = collector.status();
        let ids: Vec<&str> = status["clients"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["client_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["_unknown", "alice"]);
        let rendered = collector.recorder.handle().render();
        assert!(!rendered.contains("made-up"), "a refused name got a label");
        assert!(!rendered.contains("_other"));
    }

    #[test]
    fn past_the_cap_accepted_names_are_counted_as_other() {
        let collector = collector(2);
        let accepted = r#"{"id":2,"result":true,"error":null}"#;
        let ids: Vec<String> = ["a", "b", "c", "d"]
            .iter()
            .enumerate()
            .map(|(n, user)| {
                authorize(&collector, n as u16, user, accepted)
                    .client
                    .id
                    .to_string()
            })
            .collect();
        assert_eq!(ids, ["a", "b", "_other", "_other"]);
    }

    #[test]
    fn submits_count_whatever_their_id_and_with_repeated_keys() {
        let collector = collector(10);
        let mut conn = authorize(
            &collector,
            7,
            "bob.rig",
            r#"{"id":2,"result":true,"error":null}"#,
        );
        for line in [
            r#"{"id":null,"method":"mining.submit","params":["bob.rig","j","e","t","1"]}"#,
            r#"{"method":"mining.submit","params":["bob.rig","j","e","t","2"]}"#,
            r#"{"id":5,"method":"mining.ping","params":[],"method":"mining.submit"}"#,
            r#"{"id":6,"method":"mining.submit","params":["bob.rig","j","e","t","3"],"id":6}"#,
        ] {
            feed(&collector, &mut conn, Direction::MinerToPool, line);
        }
        let submits = |c: &Collector| c.status()["clients"][1]["submits"].as_u64();
        assert_eq!(collector.status()["clients"][1]["client_id"], "bob");
        assert_eq!(submits(&collector), Some(4));
        // The null id is matched by a pool that answers with id null.
        for line in [
            r#"{"id":null,"result":true,"error":null}"#,
            r#"{"id":5,"result":true,"error":null}"#,
            r#"{"id":6,"result":false,"error":[23,"Low difficulty share",null],"result":true}"#,
        ] {
            feed(&collector, &mut conn, Direction::PoolToMiner, line);
        }
        let bob = &collector.status()["clients"][1];
        assert_eq!(bob["accepted"], 2);
        assert_eq!(bob["rejected"], 1, "an error wins over result true");
    }

    fn gauge(rendered: &str, name: &str) -> f64 {
        rendered
            .lines()
            .filter(|l| l.starts_with(name))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }

    /// One line of a session, miner to pool (`true`) or pool to miner.
    fn session_line() -> impl proptest::strategy::Strategy<Value = (bool, String)> {
        use proptest::prelude::*;
        let id = prop_oneof![
            (0u8..6).prop_map(|n| format!("\"id\":{n},")),
            Just("\"id\":null,".to_string()),
            Just(String::new()),
            Just("\"id\":\"a\",".to_string()),
            Just("\"id\":1,\"id\":2,".to_string()),
        ];
        let user = "[a-z.\\n<>0-9]{0,6}";
        prop_oneof![
            id.clone().prop_map(|id| (
                true,
                format!(r#"{{{id}"method":"mining.submit","params":["w","j","e","t","n"]}}"#)
            )),
            (id.clone(), user).prop_map(|(id, u)| (
                true,
                format!(r#"{{{id}"method":"mining.authorize","params":["{u}","p"]}}"#)
            )),
            (
                id.clone(),
                prop_oneof![Just("true"), Just("false"), Just("null")],
                any::<bool>()
            )
                .prop_map(|(id, result, error)| (
                    false,
                    format!(
                        r#"{{{id}"result":{result},"error":{}}}"#,
                        if error {
                            r#"[23,"Low difficulty",null]"#
                        } else {
                            "null"
                        }
                    )
                )),
            (0u16..2000).prop_map(|d| (
                false,
                format!(r#"{{"id":null,"method":"mining.set_difficulty","params":[{d}]}}"#)
            )),
            Just((true, "not json at all".to_string())),
        ]
    }

    proptest::proptest! {
        /// Any session: the collector never panics, counts every submit
        /// line, never answers more submits than were sent, and leaves
        /// nothing pending once the connection is closed.
        #[test]
        fn any_session_keeps_the_books_straight(
            lines in proptest::collection::vec(session_line(), 0..40)
        ) {
            let collector = collector(3);
            let info = ConnectionInfo {
                id: 1,
                peer: "127.0.0.1:1".parse().unwrap(),
                accepted_at: Instant::now(),
            };
            let mut conn = collector.accepted(&info);
            // Metered per pool from the upstream connect on.
            collector.event(&mut conn, Event::UpstreamConnected {
                pool: 0,
                addr: "127.0.0.1:2".parse().unwrap(),
                latency: Duration::from_millis(1),
            });
            let mut submits = 0u64;
            for (up, line) in &lines {
                let direction = if *up { Direction::MinerToPool } else { Direction::PoolToMiner };
                match Message::parse(line.as_bytes()) {
                    Ok(_) => {
                        if *up && line.contains("mining.submit") {
                            submits += 1;
                        }
                        feed(&collector, &mut conn, direction, line);
                    }
                    Err(failure) => collector.event(
                        &mut conn,
                        Event::ParseFailed { direction, failure, line_bytes: line.len() },
                    ),
                }
            }
            collector.event(&mut conn, Event::Closed {
                duration: Duration::from_secs(1),
                miner_to_pool_bytes: 0,
                pool_to_miner_bytes: 0,
                reason: CloseReason::MinerClosed,
            });
            let status = collector.status();
            let pool = &status["relay"];
            proptest::prop_assert_eq!(pool["submits"].as_u64(), Some(submits));
            let answered = pool["accepted"].as_u64().unwrap() + pool["rejected"].as_u64().unwrap();
            proptest::prop_assert!(answered <= submits, "{} answered of {}", answered, submits);
            let rendered = collector.recorder.handle().render();
            proptest::prop_assert_eq!(gauge(&rendered, "stratum_pending_requests"), 0.0);
            proptest::prop_assert!(status["clients"].as_array().unwrap().len() <= 5);
        }
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("short", 64), "short");
    }
}
