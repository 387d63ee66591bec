//! The pools: which pool a new miner is dialled to, and each pool's health.
//!
//! The core owns pool choice and health because it sees the signals first:
//! a refused or timed-out dial, a session reset, a pool that stops sending
//! `mining.notify`. The service only configures [`Pools`] and reports it
//! (the observer hears every change, [`Pools::status`] is read for
//! `/status`).
//!
//! # Health
//!
//! Every pool is up or down, with the time since. Hysteresis on both sides,
//! as HAProxy's `fall`/`rise` checks do:
//! - **down** after [`HealthPolicy::fall`] consecutive failures, counting
//!   failed dials by miners (refused, timed out, reset before the pool's
//!   first byte) and failed probes; or at once when the pool is **stalled**:
//!   it has sessions but sent nothing on any of them, no job and no answer,
//!   for [`HealthPolicy::stall_factor`] times its own observed notify
//!   interval (at least [`HealthPolicy::stall_min`]); or when most of its
//!   sessions have had a request unanswered for as long, though it may still
//!   send jobs (a frozen share backend). A pool's interval is learnt
//!   from its traffic: each session's gap between two notifies (gaps under
//!   [`NOTIFY_ROUND_GAP`] are one job round sent twice), smoothed over all
//!   of the pool's sessions.
//! - **up** again only after [`HealthPolicy::rise`] consecutive good probes,
//!   one every [`HealthPolicy::check_interval`]: a stable period.
//!
//! Probes run for every pool, up or down, so a dead backup is known before
//! it is needed. A probe is a TCP connect, or (the default) a Stratum
//! `mining.subscribe` that must get a JSON-RPC answer with the same id, so a
//! pool that accepts connections and then says nothing does not come back up.
//!
//! # Choice
//!
//! [`Pools::dial_order`]: the pools that are up, best priority (lowest
//! number) first; among pools of one priority, the one furthest below its
//! weight's share of sessions first. Pools that are down come last, in
//! priority order: when every pool is down, trying them beats closing the
//! miner.
//!
//! # Failover of relayed miners
//!
//! When a pool goes down, its sessions are evicted: each relay is woken,
//! and closes its miner between two lines, as soon as no request of the
//! miner is unanswered, or after [`HealthPolicy::failover_wait`] at the
//! latest (shares still in flight then are lost, and the observer counts
//! them). The miner reconnects and is dialled to a healthy pool.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use smol::Timer;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::per_address::Cidr;
use super::upstream::PoolAddr;

/// Index of a pool in the configured list.
pub type PoolId = usize;

/// Two notifies on one session less than this apart belong to one job
/// round (a pool that sends a job and at once an update of it).
pub const NOTIFY_ROUND_GAP: Duration = Duration::from_millis(50);

/// A session refreshes its pool's "last heard" stamp at most this often.
pub const HEARD_EVERY: Duration = Duration::from_millis(100);

/// Longest answer line a subscribe probe reads, in bytes.
const PROBE_LINE_BYTES: usize = 16 * 1024;

/// One configured pool.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolSpec {
    /// Its name (unique), for logs and routes.
    pub name: String,
    /// Where it is.
    pub addr: PoolAddr,
    /// Lower is preferred: miners go to the best priority that is up.
    pub priority: u32,
    /// Share among pools of the same priority, relative to their weights (> 0).
    pub weight: u32,
}

/// How a pool's health is probed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A TCP connect.
    Tcp,
    /// A TCP connect and a `mining.subscribe` that must be answered.
    Subscribe,
    /// No probes: a down pool comes back up after its miners' dials
    /// succeed [`HealthPolicy::rise`] times (it is dialled only when every
    /// pool is down).
    Off,
}

impl ProbeKind {
    /// Every kind, in the order shown in messages.
    pub const ALL: [ProbeKind; 3] = [ProbeKind::Subscribe, ProbeKind::Tcp, ProbeKind::Off];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Tcp => "tcp",
            ProbeKind::Subscribe => "subscribe",
            ProbeKind::Off => "off",
        }
    }
}

/// Health thresholds; see the module docs.
#[derive(Debug, Clone)]
pub struct HealthPolicy {
    /// Consecutive failures (dials or probes) that take a pool down.
    pub fall: u32,
    /// Consecutive good probes that bring a pool back up.
    pub rise: u32,
    /// Time between probes of each pool.
    pub check_interval: Duration,
    /// What a probe does.
    pub probe: ProbeKind,
    /// Time a probe may take.
    pub probe_timeout: Duration,
    /// Notify silence, in multiples of the pool's notify interval, that
    /// makes a pool with sessions stalled.
    pub stall_factor: f64,
    /// Shortest notify silence that makes a pool stalled.
    pub stall_min: Duration,
    /// Longest wait, after a pool went down, for a session's requests in
    /// flight to be answered before its miner is closed.
    pub failover_wait: Duration,
    /// Move miners back to a better pool once it has been up this long;
    /// `None`: never (they stay until their pool goes down).
    pub failback_after: Option<Duration>,
    /// Most miners moved per second (failback), so a pool is never hit by
    /// all of them at once.
    pub move_rate_per_second: f64,
    /// Move a miner by sending it one `client.reconnect` line (between two
    /// whole lines) instead of closing its connection.
    pub reconnect_message: bool,
    /// How far a pool's share of the hashrate may drift above its weight's
    /// share (0.05 = 5 points) before whole miners are moved off it.
    pub balance_tolerance: f64,
    /// A session's hashrate is judged once it is this old (younger ones
    /// count as the average).
    pub rate_min_age: Duration,
}

/// Default [`HealthPolicy::fall`].
pub const DEFAULT_FALL: u32 = 3;
/// Default [`HealthPolicy::rise`].
pub const DEFAULT_RISE: u32 = 3;
/// Default [`HealthPolicy::check_interval`].
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default [`HealthPolicy::stall_factor`]: a pool notifying every 10 s is
/// stalled after 25 s of silence (miner firmware waits 90 s, other proxies
/// 120–600 s). Silence means nothing at all, no job and no answer to any
/// miner's request, so a pool that only sends jobs on new blocks is not
/// taken for stalled while it answers shares.
pub const DEFAULT_STALL_FACTOR: f64 = 2.5;
/// Default [`HealthPolicy::stall_min`].
pub const DEFAULT_STALL_MIN: Duration = Duration::from_secs(5);
/// Default [`HealthPolicy::failover_wait`].
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(2);
/// Default [`HealthPolicy::failback_after`]: cgminer's `--fallback-time`.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(120);
/// Default [`HealthPolicy::move_rate_per_second`].
pub const DEFAULT_MOVE_RATE_PER_SECOND: f64 = 10.0;
/// Default [`HealthPolicy::balance_tolerance`].
pub const DEFAULT_BALANCE_TOLERANCE: f64 = 0.05;
/// Default [`HealthPolicy::rate_min_age`].
pub const DEFAULT_RATE_MIN_AGE: Duration = Duration::from_secs(60);
/// How often a single pool's stalls are checked, and whether a reload added
/// pools to probe and move miners to: an idle gateway with one pool wakes a
/// few times a minute for this.
pub const SINGLE_POOL_TICK: Duration = Duration::from_secs(10);
/// How often the pools are looked at when no miner is to move (stalls,
/// failback, balance): an idle gateway wakes once a second for this.
pub const IDLE_MOVE_TICK: Duration = Duration::from_secs(1);
/// How often moves are handed out (the rate's tokens are counted between).
pub const MOVE_TICK: Duration = Duration::from_millis(100);

impl Default for HealthPolicy {
    fn default() -> Self {
        HealthPolicy {
            fall: DEFAULT_FALL,
            rise: DEFAULT_RISE,
            check_interval: DEFAULT_CHECK_INTERVAL,
            probe: ProbeKind::Subscribe,
            probe_timeout: Duration::from_secs(5),
            stall_factor: DEFAULT_STALL_FACTOR,
            stall_min: DEFAULT_STALL_MIN,
            failover_wait: DEFAULT_FAILOVER_WAIT,
            failback_after: Some(DEFAULT_FAILBACK_AFTER),
            move_rate_per_second: DEFAULT_MOVE_RATE_PER_SECOND,
            reconnect_message: false,
            balance_tolerance: DEFAULT_BALANCE_TOLERANCE,
            rate_min_age: DEFAULT_RATE_MIN_AGE,
        }
    }
}

/// Why a pool went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// Dials or probes failed [`HealthPolicy::fall`] times in a row.
    Unreachable,
    /// It had sessions and sent nothing at all for too long.
    Stalled,
    /// It keeps sending jobs but leaves most miners' requests unanswered.
    Unanswered,
}

impl DownReason {
    /// Stable lower-case name, for logs, `/status` and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownReason::Unreachable => "unreachable",
            DownReason::Stalled => "stalled",
            DownReason::Unanswered => "unanswered",
        }
    }
}

/// A pool's health as the observer hears of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolHealth {
    /// Serving miners.
    Up,
    /// Not dialled while another pool is up; its sessions were evicted.
    Down(DownReason),
}

/// One pool's state, for `/status`.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolStatus {
    /// Its index.
    pub id: PoolId,
    /// Its configuration (weight and priority as changed at run time).
    pub spec: PoolSpec,
    /// Up or down (and why).
    pub health: PoolHealth,
    /// Time since the last change (or since start).
    pub since: Duration,
    /// Miners are being moved off it (an operator's drain, or a reload that
    /// removed it); it is dialled only when no other pool is left.
    pub draining: bool,
    /// A reload removed it; kept so its id and metrics stay valid.
    pub removed: bool,
    /// Miner sessions relayed to it now.
    pub sessions: usize,
    /// Its learnt `mining.notify` interval, if it notified twice yet.
    pub notify_interval: Option<Duration>,
    /// Its miners' submitted work per second (share difficulty per second;
    /// × 2^32 is hashes per second), from the last balance check.
    pub difficulty_per_second: f64,
}

/// Who hears of health changes and probes (the service's observer).
pub trait PoolListener: Send + Sync {
    /// `pool` changed health.
    fn changed(&self, pool: PoolId, spec: &PoolSpec, health: PoolHealth);
    /// A probe of `pool` ended.
    fn probed(&self, pool: PoolId, ok: bool) {
        let _ = (pool, ok);
    }
    /// A reload added `pool` (its id is new).
    fn added(&self, pool: PoolId, spec: &PoolSpec) {
        let _ = (pool, spec);
    }
}

impl<T: PoolListener + ?Sized> PoolListener for Arc<T> {
    fn changed(&self, pool: PoolId, spec: &PoolSpec, health: PoolHealth) {
        (**self).changed(pool, spec, health);
    }
    fn probed(&self, pool: PoolId, ok: bool) {
        (**self).probed(pool, ok);
    }
    fn added(&self, pool: PoolId, spec: &PoolSpec) {
        (**self).added(pool, spec);
    }
}

impl PoolListener for () {
    fn changed(&self, _: PoolId, _: &PoolSpec, _: PoolHealth) {}
}

/// Where miners that arrive on a listen address or from a source network
/// go: one named pool or a list of them (chosen between as usual).
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Miners that connected to this listen address (any if `None`).
    pub listen: Option<SocketAddr>,
    /// Miners from this network (any if `None`).
    pub source: Option<Cidr>,
    /// The pools they may be dialled to, by name.
    pub pools: Vec<String>,
}

impl Route {
    fn matches(&self, local: SocketAddr, peer: IpAddr) -> bool {
        self.listen.is_none_or(|listen| {
            listen == local
                || (listen.port() == local.port()
                    && listen.ip().is_unspecified()
                    && listen.is_ipv4() == local.is_ipv4())
        }) && self.source.is_none_or(|cidr| cidr.contains(peer))
    }
}

/// The health counters of one pool, under its lock.
struct Health {
    state: PoolHealth,
    since: Instant,
    /// Failed dials and probes in a row.
    failures: u32,
    /// Good probes in a row while down.
    rises: u32,
}

/// What a session and its pool share: the relay adds work, the pool's
/// checks read it and ask for moves.
#[derive(Default)]
struct SessionShared {
    /// Share difficulty submitted, in thousandths.
    work_milli: AtomicU64,
    /// Since when (ms since [`Pools`] started) the miner has had a request
    /// unanswered, 0 = none unanswered.
    waiting_since_ms: AtomicU64,
    /// Asked to leave: 0 no, else a [`Leave`] as `1 + index`.
    leave: AtomicU8,
}

/// One registered session, as its pool sees it.
struct Slot {
    conn: u64,
    started: Instant,
    shared: Arc<SessionShared>,
    waker: Option<Waker>,
}

/// One pool's sessions, for eviction and moves.
#[derive(Default)]
struct Sessions {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
}

struct Pool {
    id: PoolId,
    spec: Mutex<PoolSpec>,
    health: Mutex<Health>,
    /// Set while the pool is down: its sessions close themselves.
    evicting: AtomicBool,
    /// Miners are moved off it at the bounded rate; dialled last.
    draining: AtomicBool,
    /// Removed by a reload: never dialled nor probed again.
    removed: AtomicBool,
    /// Sessions asked to leave and not gone yet (so the others need not lock).
    leaving: AtomicUsize,
    sessions: Mutex<Sessions>,
    session_count: AtomicUsize,
    /// Sessions dialled since the last balance check (their hashrate is
    /// not known yet).
    newcomers: AtomicUsize,
    /// Submitted difficulty per second at the last balance check (f64 bits).
    rate_bits: AtomicU64,
    /// Milliseconds since [`Pools`] started of the last line any session
    /// got from the pool (a notify, an answer, anything), 0 = none yet.
    last_heard_ms: AtomicU64,
    /// Smoothed gap between job rounds, in milliseconds, 0 = unknown.
    notify_interval_ms: AtomicU64,
}

impl Pool {
    fn new(id: PoolId, spec: PoolSpec, now: Instant) -> Pool {
        Pool {
            id,
            spec: Mutex::new(spec),
            health: Mutex::new(Health {
                state: PoolHealth::Up,
                since: now,
                failures: 0,
                rises: 0,
            }),
            evicting: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            leaving: AtomicUsize::new(0),
            sessions: Mutex::new(Sessions::default()),
            session_count: AtomicUsize::new(0),
            newcomers: AtomicUsize::new(0),
            rate_bits: AtomicU64::new(0),
            last_heard_ms: AtomicU64::new(0),
            notify_interval_ms: AtomicU64::new(0),
        }
    }

    fn spec(&self) -> PoolSpec {
        lock(&self.spec).clone()
    }

    fn is_up(&self) -> bool {
        !self.evicting.load(Ordering::Relaxed)
    }

    /// Dialled in the normal order: up, not draining, not removed.
    fn preferred(&self) -> bool {
        self.is_up()
            && !self.draining.load(Ordering::Relaxed)
            && !self.removed.load(Ordering::Relaxed)
    }

    fn rate(&self) -> f64 {
        f64::from_bits(self.rate_bits.load(Ordering::Relaxed))
    }

    /// Asks up to `budget` of its sessions to leave, the one whose hashrate
    /// is closest to `target_rate` first when given; returns how many.
    fn ask_to_leave(&self, budget: usize, leave: Leave, target_rate: Option<f64>) -> usize {
        let now = Instant::now();
        let sessions = lock(&self.sessions);
        // Each session's distance from the target read once, before
        // sorting: its work counter moves while its relay runs, and a sort
        // whose comparisons disagree with one another panics (the standard
        // library checks; seen under qemu in `weights_70_30_...`).
        let mut candidates: Vec<(f64, &Slot)> = sessions
            .slots
            .iter()
            .flatten()
            .filter(|slot| slot.shared.leave.load(Ordering::Relaxed) == 0)
            .map(|slot| {
                let off = target_rate.map_or(0.0, |t| (session_rate(slot, now) - t).abs());
                (off, slot)
            })
            .collect();
        if target_rate.is_some() {
            candidates.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        let mut asked = 0;
        for (_, slot) in candidates.into_iter().take(budget) {
            slot.shared.leave.store(leave as u8 + 1, Ordering::Relaxed);
            self.leaving.fetch_add(1, Ordering::Relaxed);
            if let Some(waker) = &slot.waker {
                waker.wake_by_ref();
            }
            asked += 1;
        }
        asked
    }
}

/// A session's submitted difficulty per second over its life.
fn session_rate(slot: &Slot, now: Instant) -> f64 {
    let age = now.duration_since(slot.started).as_secs_f64().max(1e-3);
    slot.shared.work_milli.load(Ordering::Relaxed) as f64 / 1000.0 / age
}

/// Every configured pool, their health and the choice between them.
pub struct Pools {
    /// Indexed by [`PoolId`]; only grows (a removed pool keeps its id).
    pools: RwLock<Vec<Arc<Pool>>>,
    routes: RwLock<Vec<Route>>,
    policy: HealthPolicy,
    started: Instant,
    listener: Box<dyn PoolListener>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Why the pool list or routes of a reload were refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolsError {
    /// No pool at all.
    NoPool,
    /// Two pools with one name.
    DuplicateName(String),
    /// A route names a pool that is not configured.
    UnknownRouteTarget(String),
    /// More pools over the process's life than [`MAX_POOL_IDS`].
    TooManyPools,
    /// No pool of that name (admin actions).
    NoSuchPool(String),
}

impl fmt::Display for PoolsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolsError::NoPool => f.write_str("no pool configured"),
            PoolsError::DuplicateName(name) => write!(f, "two pools are named {name:?}"),
            PoolsError::UnknownRouteTarget(name) => {
                write!(f, "a route names pool {name:?}, which is not configured")
            }
            PoolsError::TooManyPools => write!(
                f,
                "more than {MAX_POOL_IDS} pools over the proxy's life; restart it"
            ),
            PoolsError::NoSuchPool(name) => write!(f, "no pool named {name:?}"),
        }
    }
}

impl std::error::Error for PoolsError {}

/// Most pool ids handed out over the process's life (reloads add ids).
pub const MAX_POOL_IDS: usize = 256;

/// Checks a pool list and its routes.
pub fn validate(specs: &[PoolSpec], routes: &[Route]) -> Result<(), PoolsError> {
    if specs.is_empty() {
        return Err(PoolsError::NoPool);
    }
    for (i, spec) in specs.iter().enumerate() {
        if specs[..i].iter().any(|other| other.name == spec.name) {
            return Err(PoolsError::DuplicateName(spec.name.clone()));
        }
    }
    for route in routes {
        for name in &route.pools {
            if !specs.iter().any(|spec| &spec.name == name) {
                return Err(PoolsError::UnknownRouteTarget(name.clone()));
            }
        }
    }
    Ok(())
}

impl Pools {
    /// The pools in configured order (their [`PoolId`]s are their indexes),
    /// all up at first; `listener` hears every change.
    ///
    /// # Panics
    /// If `specs` is empty (configuration refuses that).
    pub fn new(
        specs: Vec<PoolSpec>,
        policy: HealthPolicy,
        listener: Box<dyn PoolListener>,
    ) -> Arc<Pools> {
        Pools::with_routes(specs, Vec::new(), policy, listener)
    }

    /// [`Pools::new`] with routes.
    ///
    /// # Panics
    /// If `specs` is empty or [`validate`] refuses them (configuration
    /// refuses that first).
    pub fn with_routes(
        specs: Vec<PoolSpec>,
        routes: Vec<Route>,
        policy: HealthPolicy,
        listener: Box<dyn PoolListener>,
    ) -> Arc<Pools> {
        if let Err(e) = validate(&specs, &routes) {
            panic!("invalid pools: {e}");
        }
        let now = Instant::now();
        Arc::new(Pools {
            pools: RwLock::new(
                specs
                    .into_iter()
                    .enumerate()
                    .map(|(id, spec)| Arc::new(Pool::new(id, spec, now)))
                    .collect(),
            ),
            routes: RwLock::new(routes),
            policy,
            started: now,
            listener,
        })
    }

    /// One pool, no probes, no listener (tests, demo, benchmarks).
    pub fn single(addr: PoolAddr) -> Arc<Pools> {
        Pools::new(
            vec![PoolSpec {
                name: addr.label(),
                addr,
                priority: 0,
                weight: 1,
            }],
            HealthPolicy {
                probe: ProbeKind::Off,
                ..HealthPolicy::default()
            },
            Box::new(()),
        )
    }

    fn all(&self) -> Vec<Arc<Pool>> {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn get(&self, pool: PoolId) -> Arc<Pool> {
        self.pools.read().unwrap_or_else(|e| e.into_inner())[pool].clone()
    }

    /// How many pool ids there are (removed pools included).
    pub fn len(&self) -> usize {
        self.pools.read().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether there are none (never: [`Pools::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The configuration of `pool` now.
    pub fn spec(&self, pool: PoolId) -> PoolSpec {
        self.get(pool).spec()
    }

    /// The id of the pool named `name` (removed pools excluded).
    pub fn id_of(&self, name: &str) -> Option<PoolId> {
        self.all()
            .iter()
            .find(|p| !p.removed.load(Ordering::Relaxed) && lock(&p.spec).name == name)
            .map(|p| p.id)
    }

    /// The health policy.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Whether `pool` is up.
    pub fn is_up(&self, pool: PoolId) -> bool {
        self.get(pool).is_up()
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "never".
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The pools to dial for a miner that connected to `local` from `peer`,
    /// in order; see the module docs.
    pub fn dial_order(&self, local: SocketAddr, peer: IpAddr) -> Vec<PoolId> {
        let pools = self.all();
        let routed: Option<Vec<String>> = self
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .find(|route| route.matches(local, peer))
            .map(|route| route.pools.clone());
        let candidates: Vec<(&Arc<Pool>, PoolSpec)> = pools
            .iter()
            .filter(|p| !p.removed.load(Ordering::Relaxed))
            .map(|p| (p, p.spec()))
            .filter(|(_, spec)| {
                routed
                    .as_ref()
                    .is_none_or(|names| names.contains(&spec.name))
            })
            .collect();
        // Expected hashrate per weight: measured rates, plus the average
        // session's rate for each session too new to be measured.
        let sessions: usize = candidates
            .iter()
            .map(|(p, _)| p.session_count.load(Ordering::Relaxed))
            .sum();
        let total_rate: f64 = candidates.iter().map(|(p, _)| p.rate()).sum();
        let average = if sessions > 0 && total_rate > 0.0 {
            total_rate / sessions as f64
        } else {
            1.0
        };
        let load = |p: &Pool, weight: u32| {
            let measured = if total_rate > 0.0 {
                p.rate()
            } else {
                p.session_count.load(Ordering::Relaxed) as f64 * average
            };
            let newcomers = p.newcomers.load(Ordering::Relaxed) as f64 * average;
            (measured + newcomers) / f64::from(weight.max(1))
        };
        let (first, mut last): (Vec<_>, Vec<_>) =
            candidates.into_iter().partition(|(p, _)| p.preferred());
        // Each load read once, before sorting: the counters behind it move
        // while relay threads run, and a sort whose comparisons disagree
        // with one another panics (the standard library checks).
        let mut first: Vec<(u32, f64, PoolId)> = first
            .into_iter()
            .map(|(p, spec)| (spec.priority, load(p, spec.weight), p.id))
            .collect();
        first.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
        last.sort_by_key(|(p, spec)| (spec.priority, p.id));
        first
            .into_iter()
            .map(|(_, _, id)| id)
            .chain(last.into_iter().map(|(p, _)| p.id))
            .collect()
    }

    /// A miner's dial to `pool` failed (refused, timed out, or reset before
    /// the pool's first byte).
    pub fn dial_failed(&self, pool: PoolId) {
        self.failure(&self.get(pool));
    }

    /// A miner's dial to `pool` succeeded and the pool answered. Counts
    /// as a good probe where probes do not run (one pool, or probes off).
    pub fn dial_succeeded(&self, pool: PoolId) {
        let p = self.get(pool);
        if self.probing() {
            let mut health = lock(&p.health);
            if health.state == PoolHealth::Up {
                health.failures = 0;
            }
        } else {
            self.probe_ok(&p);
        }
    }

    /// Whether pools are probed periodically: with a probe kind set and
    /// more than one pool (one pool has nothing to be chosen against, and
    /// is dialled even when down).
    fn probing(&self) -> bool {
        self.policy.probe != ProbeKind::Off && self.live_pools() > 1
    }

    fn failure(&self, p: &Pool) {
        let mut health = lock(&p.health);
        health.failures = health.failures.saturating_add(1);
        health.rises = 0;
        if health.state == PoolHealth::Up && health.failures >= self.policy.fall {
            self.go_down(p, &mut health, DownReason::Unreachable);
        }
    }

    fn probe_ok(&self, p: &Pool) {
        let mut health = lock(&p.health);
        health.failures = 0;
        if let PoolHealth::Down(_) = health.state {
            health.rises += 1;
            if health.rises >= self.policy.rise {
                health.state = PoolHealth::Up;
                health.since = Instant::now();
                health.rises = 0;
                // A fresh start for stall detection.
                p.last_heard_ms.store(0, Ordering::Relaxed);
                p.evicting.store(false, Ordering::Relaxed);
                self.listener.changed(p.id, &p.spec(), PoolHealth::Up);
            }
        }
    }

    fn go_down(&self, p: &Pool, health: &mut Health, reason: DownReason) {
        health.state = PoolHealth::Down(reason);
        health.since = Instant::now();
        health.rises = 0;
        p.evicting.store(true, Ordering::Relaxed);
        self.listener
            .changed(p.id, &p.spec(), PoolHealth::Down(reason));
        let sessions = lock(&p.sessions);
        for slot in sessions.slots.iter().flatten() {
            if let Some(waker) = &slot.waker {
                waker.wake_by_ref();
            }
        }
    }

    /// Takes down every up pool whose sessions have been silent too long.
    fn check_stalls(&self) {
        let now = self.now_ms();
        for p in self.all() {
            let last = p.last_heard_ms.load(Ordering::Relaxed);
            let Some(limit) = self.stall_limit_ms(&p) else {
                continue;
            };
            if last == 0 || p.session_count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            if now.saturating_sub(last) > limit {
                let mut health = lock(&p.health);
                if health.state == PoolHealth::Up {
                    self.go_down(&p, &mut health, DownReason::Stalled);
                }
            }
        }
    }

    /// Measures every pool's hashrate from its sessions' submitted work.
    fn measure_rates(&self) {
        let now = Instant::now();
        let now_ms = self.now_ms();
        for p in self.all() {
            let limit = self.stall_limit_ms(&p);
            let sessions = lock(&p.sessions);
            let mut measured = 0.0;
            let mut judged = 0usize;
            let mut young = 0usize;
            let mut unanswered = 0usize;
            let mut count = 0usize;
            for slot in sessions.slots.iter().flatten() {
                count += 1;
                let since = slot.shared.waiting_since_ms.load(Ordering::Relaxed);
                if limit.is_some_and(|limit| since != 0 && now_ms.saturating_sub(since) > limit) {
                    unanswered += 1;
                }
                if now.duration_since(slot.started) >= self.policy.rate_min_age {
                    measured += session_rate(slot, now);
                    judged += 1;
                } else {
                    young += 1;
                }
            }
            drop(sessions);
            // Young sessions count as the pool's average (or nothing yet).
            let rate = if judged > 0 {
                measured * (judged + young) as f64 / judged as f64
            } else {
                0.0
            };
            p.rate_bits.store(rate.to_bits(), Ordering::Relaxed);
            p.newcomers.store(0, Ordering::Relaxed);
            // Most of its miners wait for answers that do not come, though
            // it may still send jobs: as good as stalled.
            if count > 0 && unanswered * 2 > count {
                let mut health = lock(&p.health);
                if health.state == PoolHealth::Up {
                    self.go_down(&p, &mut health, DownReason::Unanswered);
                }
            }
        }
    }

    /// How long `p` may stay silent (or leave a request unanswered) before
    /// it counts as stalled, once its notify interval is known.
    fn stall_limit_ms(&self, p: &Pool) -> Option<u64> {
        let interval = p.notify_interval_ms.load(Ordering::Relaxed);
        (interval > 0).then(|| {
            (interval as f64 * self.policy.stall_factor)
                .max(self.policy.stall_min.as_millis() as f64) as u64
        })
    }

    /// The pools miners should move off, with the rate to shed (for
    /// balancing) or `None` (failback, drain: any miner).
    fn to_shed(&self) -> Vec<(Arc<Pool>, Leave, Option<f64>)> {
        let now = Instant::now();
        let pools = self.all();
        let specs: Vec<PoolSpec> = pools.iter().map(|p| p.spec()).collect();
        let up_for = |p: &Pool| {
            let health = lock(&p.health);
            (health.state == PoolHealth::Up).then(|| now.duration_since(health.since))
        };
        let mut out = Vec::new();
        for (p, spec) in pools.iter().zip(&specs) {
            if p.session_count.load(Ordering::Relaxed) == 0 || !p.is_up() {
                continue;
            }
            if p.draining.load(Ordering::Relaxed) || p.removed.load(Ordering::Relaxed) {
                out.push((p.clone(), Leave::Move, None));
                continue;
            }
            let better_is_back = self.policy.failback_after.is_some_and(|after| {
                pools.iter().zip(&specs).any(|(q, q_spec)| {
                    q_spec.priority < spec.priority
                        && q.preferred()
                        && up_for(q).is_some_and(|up| up >= after)
                })
            });
            if better_is_back {
                out.push((p.clone(), Leave::Move, None));
            }
        }
        // Balancing: among the preferred pools of the best priority, a pool
        // above its weight's share of the hashrate by more than the
        // tolerance sheds its excess.
        let best = pools
            .iter()
            .zip(&specs)
            .filter(|(p, _)| p.preferred())
            .map(|(_, spec)| spec.priority)
            .min();
        if let Some(best) = best {
            let level: Vec<(&Arc<Pool>, &PoolSpec)> = pools
                .iter()
                .zip(&specs)
                .filter(|(p, spec)| p.preferred() && spec.priority == best)
                .collect();
            let total_rate: f64 = level.iter().map(|(p, _)| p.rate()).sum();
            let total_weight: f64 = level.iter().map(|(_, s)| f64::from(s.weight)).sum();
            if level.len() > 1 && total_rate > 0.0 {
                for (p, spec) in level {
                    let share = p.rate() / total_rate;
                    let target = f64::from(spec.weight) / total_weight;
                    if share > target + self.policy.balance_tolerance
                        && !out.iter().any(|(q, _, _)| q.id == p.id)
                    {
                        out.push((p.clone(), Leave::Move, Some((share - target) * total_rate)));
                    }
                }
            }
        }
        out
    }

    /// Asks up to `budget` sessions to move; returns how many.
    fn hand_out_moves(&self, budget: usize) -> usize {
        let mut moved = 0;
        for (pool, leave, excess) in self.to_shed() {
            if moved >= budget {
                break;
            }
            // Balancing sheds one miner per round (its rate is re-measured
            // before the next), the closest to the excess.
            let want = if excess.is_some() { 1 } else { budget - moved };
            moved += pool.ask_to_leave(want.min(budget - moved), leave, excess);
        }
        moved
    }

    /// Hands out moves at [`HealthPolicy::move_rate_per_second`], forever:
    /// failback, drains and removed pools every [`MOVE_TICK`], balancing
    /// once per check interval (after the rates are measured).
    pub async fn run_moves(self: Arc<Self>) {
        let rate = self.policy.move_rate_per_second;
        if rate <= 0.0 {
            return std::future::pending().await;
        }
        // At most one second's worth saved up.
        let cap = rate.max(1.0);
        let mut tokens = 0.0_f64;
        let mut last = Instant::now();
        let mut last_measure = Instant::now();
        let mut shedding = false;
        loop {
            // One pool: nothing to move to (its stalls are checked with the
            // probes). Several: fine-grained only while miners are to move,
            // so an idle gateway is not woken ten times a second.
            if self.live_pools() < 2 {
                // Nothing to move to, and only a reload can add a pool: look
                // now and then, and at the pool's stalls (it is dialled
                // whatever its health, so they matter less).
                Timer::after(SINGLE_POOL_TICK).await;
                self.check_stalls();
                continue;
            }
            Timer::after(if shedding { MOVE_TICK } else { IDLE_MOVE_TICK }).await;
            let now = Instant::now();
            tokens = (tokens + rate * now.duration_since(last).as_secs_f64()).min(cap);
            last = now;
            self.check_stalls();
            if now.duration_since(last_measure) >= self.policy.check_interval {
                self.measure_rates();
                last_measure = now;
            }
            let budget = tokens.floor() as usize;
            if budget > 0 {
                tokens -= self.hand_out_moves(budget) as f64;
            }
            shedding = !self.to_shed().is_empty();
        }
    }

    /// Pools not removed by a reload.
    fn live_pools(&self) -> usize {
        self.all()
            .iter()
            .filter(|p| !p.removed.load(Ordering::Relaxed))
            .count()
    }

    /// Drains `name` (its miners are moved off at the bounded rate and it
    /// is dialled only when nothing else is left), or puts it back.
    pub fn set_draining(&self, name: &str, draining: bool) -> Result<PoolId, PoolsError> {
        let id = self
            .id_of(name)
            .ok_or_else(|| PoolsError::NoSuchPool(name.to_owned()))?;
        self.get(id).draining.store(draining, Ordering::Relaxed);
        Ok(id)
    }

    /// Changes the weight (> 0) and/or priority of `name` for new choices.
    pub fn set_weight_priority(
        &self,
        name: &str,
        weight: Option<u32>,
        priority: Option<u32>,
    ) -> Result<PoolId, PoolsError> {
        let id = self
            .id_of(name)
            .ok_or_else(|| PoolsError::NoSuchPool(name.to_owned()))?;
        let p = self.get(id);
        let mut spec = lock(&p.spec);
        if let Some(weight) = weight {
            spec.weight = weight.max(1);
        }
        if let Some(priority) = priority {
            spec.priority = priority;
        }
        Ok(id)
    }

    /// Closes the miner of connection `conn` (between two lines); false if
    /// no relayed session has that id.
    pub fn disconnect(&self, conn: u64) -> bool {
        for p in self.all() {
            let sessions = lock(&p.sessions);
            if let Some(slot) = sessions.slots.iter().flatten().find(|s| s.conn == conn) {
                if slot
                    .shared
                    .leave
                    .swap(Leave::Disconnect as u8 + 1, Ordering::Relaxed)
                    == 0
                {
                    p.leaving.fetch_add(1, Ordering::Relaxed);
                }
                if let Some(waker) = &slot.waker {
                    waker.wake_by_ref();
                }
                return true;
            }
        }
        false
    }

    /// Applies a reloaded pool list and routes to new choices: pools are
    /// matched by name (address, weight and priority take the new values),
    /// new names get new ids, missing names are removed (their miners moved
    /// off at the bounded rate). Nothing relayed is closed at once.
    pub fn reconfigure(&self, specs: Vec<PoolSpec>, routes: Vec<Route>) -> Result<(), PoolsError> {
        validate(&specs, &routes)?;
        let now = Instant::now();
        let mut added = Vec::new();
        {
            let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
            let new_names = specs.iter().filter(|spec| {
                !pools
                    .iter()
                    .any(|p| !p.removed.load(Ordering::Relaxed) && lock(&p.spec).name == spec.name)
            });
            if pools.len() + new_names.count() > MAX_POOL_IDS {
                return Err(PoolsError::TooManyPools);
            }
            for p in pools.iter() {
                if p.removed.load(Ordering::Relaxed) {
                    continue;
                }
                let name = lock(&p.spec).name.clone();
                match specs.iter().find(|spec| spec.name == name) {
                    Some(spec) => *lock(&p.spec) = spec.clone(),
                    None => p.removed.store(true, Ordering::Relaxed),
                }
            }
            for spec in &specs {
                let known = pools
                    .iter()
                    .any(|p| !p.removed.load(Ordering::Relaxed) && lock(&p.spec).name == spec.name);
                if !known {
                    let id = pools.len();
                    pools.push(Arc::new(Pool::new(id, spec.clone(), now)));
                    added.push((id, spec.clone()));
                }
            }
        }
        *self.routes.write().unwrap_or_else(|e| e.into_inner()) = routes;
        for (id, spec) in added {
            self.listener.added(id, &spec);
        }
        Ok(())
    }

    /// Every pool's state now.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.all()
            .iter()
            .map(|p| {
                let health = lock(&p.health);
                let interval = p.notify_interval_ms.load(Ordering::Relaxed);
                PoolStatus {
                    id: p.id,
                    spec: p.spec(),
                    health: health.state,
                    since: health.since.elapsed(),
                    draining: p.draining.load(Ordering::Relaxed),
                    removed: p.removed.load(Ordering::Relaxed),
                    sessions: p.session_count.load(Ordering::Relaxed),
                    notify_interval: (interval > 0).then(|| Duration::from_millis(interval)),
                    difficulty_per_second: p.rate(),
                }
            })
            .collect()
    }

    /// Registers connection `conn`'s relayed session on `pool`.
    pub fn session(self: &Arc<Self>, pool: PoolId, conn: u64) -> Session {
        let p = self.get(pool);
        p.session_count.fetch_add(1, Ordering::Relaxed);
        p.newcomers.fetch_add(1, Ordering::Relaxed);
        let shared = Arc::new(SessionShared::default());
        let mut sessions = lock(&p.sessions);
        let slot = Slot {
            conn,
            started: Instant::now(),
            shared: shared.clone(),
            waker: None,
        };
        let index = match sessions.free.pop() {
            Some(index) => {
                sessions.slots[index] = Some(slot);
                index
            }
            None => {
                sessions.slots.push(Some(slot));
                sessions.slots.len() - 1
            }
        };
        drop(sessions);
        Session {
            pools: self.clone(),
            pool: p,
            // Fewer than 2^32 sessions are ever open at once.
            slot: index as u32,
            shared,
            waker_set: false,
            last_notify_ms: 0,
            last_heard_ms: 0,
        }
    }

    /// Probes every pool every check interval and looks for stalls, forever.
    /// A single pool is probed once at start (a TCP connect), so that
    /// `/healthz` means something before the first miner connects.
    pub async fn run_checks(self: Arc<Self>) {
        let mut first = true;
        loop {
            if !self.probing() {
                // One pool: a TCP probe at start, then its miners' dials judge
                // it. (A reload that adds pools starts the probes.)
                if first && self.policy.probe != ProbeKind::Off {
                    let p = self.get(0);
                    let addr = p.spec().addr;
                    let ok = probe(&addr, ProbeKind::Tcp, self.policy.probe_timeout)
                        .await
                        .is_ok();
                    self.listener.probed(0, ok);
                    if !ok {
                        self.failure(&p);
                    }
                }
                first = false;
                // Probes start if a reload adds pools; its stalls are looked
                // at by the mover.
                Timer::after(SINGLE_POOL_TICK).await;
                continue;
            }
            first = false;
            // Every pool at once, on this task: a dead pool's timeout does
            // not delay the others' verdicts.
            let pools: Vec<Arc<Pool>> = self
                .all()
                .into_iter()
                .filter(|p| !p.removed.load(Ordering::Relaxed))
                .collect();
            let mut probes: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> = pools
                .into_iter()
                .map(|p| {
                    let this = &self;
                    Box::pin(async move {
                        let addr = p.spec().addr;
                        let policy = &this.policy;
                        let ok = probe(&addr, policy.probe, policy.probe_timeout)
                            .await
                            .is_ok();
                        this.listener.probed(p.id, ok);
                        if ok {
                            this.probe_ok(&p);
                        } else {
                            this.failure(&p);
                        }
                    }) as Pin<Box<dyn Future<Output = ()> + Send + '_>>
                })
                .collect();
            std::future::poll_fn(|cx| {
                probes.retain_mut(|probe| probe.as_mut().poll(cx).is_pending());
                if probes.is_empty() {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            Timer::after(self.policy.check_interval).await;
        }
    }
}

/// Why a session should leave its pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Leave {
    /// The pool went down: close the miner between two lines.
    PoolDown,
    /// Moved to another pool (failback, balance, drain, reload), at the
    /// bounded rate.
    Move,
    /// An operator disconnected this miner.
    Disconnect,
}

/// A relayed session's registration with its pool: counts it, takes its
/// submitted work, and lets the pool wake it to leave. Dropping it
/// unregisters.
pub struct Session {
    pools: Arc<Pools>,
    pool: Arc<Pool>,
    shared: Arc<SessionShared>,
    /// Index in the pool's slots (32 bits: beside `waker_set`, not a word).
    slot: u32,
    waker_set: bool,
    /// This session's last notify, in ms since [`Pools`] started (0 = none).
    last_notify_ms: u64,
    /// When this session last stored [`Pool::last_heard_ms`].
    last_heard_ms: u64,
}

impl Session {
    /// Every pool (this session's among them).
    pub fn pools(&self) -> &Arc<Pools> {
        &self.pools
    }

    /// The pool.
    pub fn pool(&self) -> PoolId {
        self.pool.id
    }

    /// Whether the session should leave its pool, and why; registers the
    /// task's waker (once: a task's waker does not change) to hear of it.
    pub fn evicted(&mut self, cx: &mut Context<'_>) -> Option<Leave> {
        let p = &self.pool;
        if !self.waker_set {
            if let Some(slot) = &mut lock(&p.sessions).slots[self.slot as usize] {
                slot.waker = Some(cx.waker().clone());
            }
            self.waker_set = true;
        }
        if p.evicting.load(Ordering::Relaxed) {
            return Some(Leave::PoolDown);
        }
        if p.leaving.load(Ordering::Relaxed) > 0 {
            return match self.shared.leave.load(Ordering::Relaxed) {
                0 => None,
                1 => Some(Leave::PoolDown),
                2 => Some(Leave::Move),
                _ => Some(Leave::Disconnect),
            };
        }
        None
    }

    /// The pool answered this session first: it works.
    pub fn spoke(&self) {
        self.pools.dial_succeeded(self.pool.id);
    }

    /// Whether the miner has requests unanswered now (`now` when it
    /// changes): a pool that leaves most miners waiting is taken down.
    pub fn waiting(&self, waiting: bool, now: Instant) {
        let since = if waiting {
            now.saturating_duration_since(self.pools.started)
                .as_millis() as u64
                + 1
        } else {
            0
        };
        self.shared.waiting_since_ms.store(since, Ordering::Relaxed);
    }

    /// The miner submitted shares of this much difficulty in total.
    pub fn submitted(&self, difficulty: f64) {
        if difficulty > 0.0 && difficulty.is_finite() {
            self.shared
                .work_milli
                .fetch_add((difficulty * 1000.0) as u64, Ordering::Relaxed);
        }
    }

    /// The pool sent this session one or more lines (read at `now`): it is
    /// not stalled. Stored at most every [`HEARD_EVERY`] per session.
    pub fn heard(&mut self, now: Instant) {
        let now_ms = now
            .saturating_duration_since(self.pools.started)
            .as_millis() as u64
            + 1;
        if now_ms.saturating_sub(self.last_heard_ms) >= HEARD_EVERY.as_millis() as u64 {
            self.last_heard_ms = now_ms;
            self.pool.last_heard_ms.store(now_ms, Ordering::Relaxed);
        }
    }

    /// The pool sent this session a `mining.notify` (read at `now`).
    pub fn saw_notify(&mut self, now: Instant) {
        // +1 so that 0 can mean "none yet".
        let now_ms = now
            .saturating_duration_since(self.pools.started)
            .as_millis() as u64
            + 1;
        let gap = if self.last_notify_ms == 0 {
            0
        } else {
            now_ms.saturating_sub(self.last_notify_ms)
        };
        self.last_notify_ms = now_ms;
        let p = &self.pool;
        if gap >= NOTIFY_ROUND_GAP.as_millis() as u64 {
            // Smoothed in with 1/4 weight (racing sessions may each lose an
            // update: every one carries about the same gap).
            let old = p.notify_interval_ms.load(Ordering::Relaxed);
            let new = if old == 0 { gap } else { (old * 3 + gap) / 4 };
            p.notify_interval_ms.store(new, Ordering::Relaxed);
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let p = &self.pool;
        p.session_count.fetch_sub(1, Ordering::Relaxed);
        if self.shared.leave.load(Ordering::Relaxed) != 0 {
            p.leaving.fetch_sub(1, Ordering::Relaxed);
        }
        let mut sessions = lock(&p.sessions);
        sessions.slots[self.slot as usize] = None;
        sessions.free.push(self.slot as usize);
    }
}

/// One probe: connect, and for [`ProbeKind::Subscribe`] exchange a
/// subscribe, within `timeout`.
pub async fn probe(addr: &PoolAddr, kind: ProbeKind, timeout: Duration) -> io::Result<()> {
    let attempt = async {
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for pool host");
        for target in addr.resolve().await? {
            match async_net::TcpStream::connect(target).await {
                Ok(stream) => {
                    if kind != ProbeKind::Subscribe {
                        return Ok(());
                    }
                    return subscribe_probe(stream).await;
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let timed_out = async {
        Timer::after(timeout).await;
        Err(io::Error::new(io::ErrorKind::TimedOut, "probe timed out"))
    };
    smol::future::or(attempt, timed_out).await
}

/// Sends a `mining.subscribe` and waits for the answer line with its id.
async fn subscribe_probe(mut stream: async_net::TcpStream) -> io::Result<()> {
    const PROBE_ID: u64 = 4_294_967_295;
    let request = format!(
        "{{\"id\":{PROBE_ID},\"method\":\"mining.subscribe\",\"params\":[\"stratum-proxy-probe\"]}}\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 2048];
    loop {
        let n = stream.read(&mut buffer).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before answering the probe",
            ));
        }
        received.extend_from_slice(&buffer[..n]);
        while let Some(end) = received.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = received.drain(..=end).collect();
            if let Ok(message) = crate::stratum::Message::parse(&line[..line.len() - 1])
                && message.kind() == crate::stratum::Kind::Response
                && message.id().and_then(|id| id.as_u64()) == Some(PROBE_ID)
            {
                return Ok(());
            }
        }
        if received.len() > PROBE_LINE_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "no answer line to the probe",
            ));
        }
    }
}
