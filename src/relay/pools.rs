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
//!   it has sessions but sent no `mining.notify` on any of them for
//!   [`HealthPolicy::stall_factor`] times its own observed notify interval
//!   (at least [`HealthPolicy::stall_min`]). A pool's interval is learnt
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

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use smol::Timer;
use smol::io::{AsyncReadExt, AsyncWriteExt};

use super::upstream::PoolAddr;

/// Index of a pool in the configured list.
pub type PoolId = usize;

/// Two notifies on one session less than this apart belong to one job
/// round (a pool that sends a job and at once an update of it).
pub const NOTIFY_ROUND_GAP: Duration = Duration::from_millis(50);

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
}

/// Default [`HealthPolicy::fall`].
pub const DEFAULT_FALL: u32 = 3;
/// Default [`HealthPolicy::rise`].
pub const DEFAULT_RISE: u32 = 3;
/// Default [`HealthPolicy::check_interval`].
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// Default [`HealthPolicy::stall_factor`]: a pool notifying every 10 s is
/// stalled after 30 s of silence (miner firmware waits 90 s, other proxies
/// 120–600 s).
pub const DEFAULT_STALL_FACTOR: f64 = 3.0;
/// Default [`HealthPolicy::stall_min`].
pub const DEFAULT_STALL_MIN: Duration = Duration::from_secs(5);
/// Default [`HealthPolicy::failover_wait`].
pub const DEFAULT_FAILOVER_WAIT: Duration = Duration::from_secs(2);
/// Default [`HealthPolicy::failback_after`]: cgminer's `--fallback-time`.
pub const DEFAULT_FAILBACK_AFTER: Duration = Duration::from_secs(120);
/// Default [`HealthPolicy::move_rate_per_second`].
pub const DEFAULT_MOVE_RATE_PER_SECOND: f64 = 10.0;
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
        }
    }
}

/// Why a pool went down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DownReason {
    /// Dials or probes failed [`HealthPolicy::fall`] times in a row.
    Unreachable,
    /// It had sessions and sent no `mining.notify` for too long.
    Stalled,
}

impl DownReason {
    /// Stable lower-case name, for logs, `/status` and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            DownReason::Unreachable => "unreachable",
            DownReason::Stalled => "stalled",
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
    /// Its configuration.
    pub spec: PoolSpec,
    /// Up or down (and why).
    pub health: PoolHealth,
    /// Time since the last change (or since start).
    pub since: Duration,
    /// Miner sessions relayed to it now.
    pub sessions: usize,
    /// Its learnt `mining.notify` interval, if it notified twice yet.
    pub notify_interval: Option<Duration>,
}

/// Who hears of health changes and probes (the service's observer).
pub trait PoolListener: Send + Sync {
    /// `pool` changed health.
    fn changed(&self, pool: PoolId, spec: &PoolSpec, health: PoolHealth);
    /// A probe of `pool` ended.
    fn probed(&self, pool: PoolId, ok: bool) {
        let _ = (pool, ok);
    }
}

impl<T: PoolListener + ?Sized> PoolListener for Arc<T> {
    fn changed(&self, pool: PoolId, spec: &PoolSpec, health: PoolHealth) {
        (**self).changed(pool, spec, health);
    }
    fn probed(&self, pool: PoolId, ok: bool) {
        (**self).probed(pool, ok);
    }
}

impl PoolListener for () {
    fn changed(&self, _: PoolId, _: &PoolSpec, _: PoolHealth) {}
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

/// One registered session, as its pool sees it.
#[derive(Default)]
struct Slot {
    /// Registered (not a free slot).
    used: bool,
    waker: Option<Waker>,
    /// Asked to move to another pool.
    moving: bool,
}

/// One pool's sessions, for eviction and moves.
#[derive(Default)]
struct Sessions {
    slots: Vec<Slot>,
    free: Vec<usize>,
}

struct Pool {
    spec: PoolSpec,
    health: Mutex<Health>,
    /// Set while the pool is down: its sessions close themselves.
    evicting: AtomicBool,
    /// Sessions asked to move and not gone yet (so the others need not lock).
    moving: AtomicUsize,
    sessions: Mutex<Sessions>,
    session_count: AtomicUsize,
    /// Milliseconds since [`Pools`] started of the last notify, 0 = none yet.
    last_notify_ms: AtomicU64,
    /// Smoothed gap between job rounds, in milliseconds, 0 = unknown.
    notify_interval_ms: AtomicU64,
}

/// Every configured pool, their health and the choice between them.
pub struct Pools {
    pools: Vec<Pool>,
    policy: HealthPolicy,
    started: Instant,
    listener: Box<dyn PoolListener>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
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
        assert!(!specs.is_empty(), "at least one pool");
        let now = Instant::now();
        Arc::new(Pools {
            pools: specs
                .into_iter()
                .map(|spec| Pool {
                    spec,
                    health: Mutex::new(Health {
                        state: PoolHealth::Up,
                        since: now,
                        failures: 0,
                        rises: 0,
                    }),
                    evicting: AtomicBool::new(false),
                    moving: AtomicUsize::new(0),
                    sessions: Mutex::new(Sessions::default()),
                    session_count: AtomicUsize::new(0),
                    last_notify_ms: AtomicU64::new(0),
                    notify_interval_ms: AtomicU64::new(0),
                })
                .collect(),
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

    /// How many pools there are.
    pub fn len(&self) -> usize {
        self.pools.len()
    }

    /// Whether there are none (never: [`Pools::new`] refuses that).
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty()
    }

    /// The configuration of `pool`.
    pub fn spec(&self, pool: PoolId) -> &PoolSpec {
        &self.pools[pool].spec
    }

    /// The health policy.
    pub fn policy(&self) -> &HealthPolicy {
        &self.policy
    }

    /// Whether `pool` is up.
    pub fn is_up(&self, pool: PoolId) -> bool {
        !self.pools[pool].evicting.load(Ordering::Relaxed)
    }

    fn now_ms(&self) -> u64 {
        // +1 so that 0 can mean "never".
        self.started.elapsed().as_millis() as u64 + 1
    }

    /// The pools to dial for a new miner, in order; see the module docs.
    pub fn dial_order(&self) -> Vec<PoolId> {
        let mut up: Vec<PoolId> = (0..self.pools.len()).filter(|&p| self.is_up(p)).collect();
        let load = |p: PoolId| {
            let pool = &self.pools[p];
            pool.session_count.load(Ordering::Relaxed) as f64 / f64::from(pool.spec.weight.max(1))
        };
        up.sort_by(|&a, &b| {
            let (pa, pb) = (self.pools[a].spec.priority, self.pools[b].spec.priority);
            pa.cmp(&pb)
                .then(load(a).total_cmp(&load(b)))
                .then(a.cmp(&b))
        });
        let mut down: Vec<PoolId> = (0..self.pools.len()).filter(|&p| !self.is_up(p)).collect();
        down.sort_by_key(|&p| (self.pools[p].spec.priority, p));
        up.extend(down);
        up
    }

    /// A miner's dial to `pool` failed (refused, timed out, or reset before
    /// the pool's first byte).
    pub fn dial_failed(&self, pool: PoolId) {
        self.failure(pool);
    }

    /// A miner's dial to `pool` succeeded and the pool answered. Counts
    /// as a good probe where probes do not run (one pool, or probes off).
    pub fn dial_succeeded(&self, pool: PoolId) {
        if self.probing() {
            let mut health = lock(&self.pools[pool].health);
            if health.state == PoolHealth::Up {
                health.failures = 0;
            }
        } else {
            self.probe_ok(pool);
        }
    }

    /// Whether pools are probed periodically: with a probe kind set and
    /// more than one pool (one pool has nothing to be chosen against, and
    /// is dialled even when down).
    fn probing(&self) -> bool {
        self.policy.probe != ProbeKind::Off && self.pools.len() > 1
    }

    fn failure(&self, pool: PoolId) {
        let mut health = lock(&self.pools[pool].health);
        health.failures = health.failures.saturating_add(1);
        health.rises = 0;
        if health.state == PoolHealth::Up && health.failures >= self.policy.fall {
            self.go_down(pool, &mut health, DownReason::Unreachable);
        }
    }

    fn probe_ok(&self, pool: PoolId) {
        let mut health = lock(&self.pools[pool].health);
        health.failures = 0;
        if let PoolHealth::Down(_) = health.state {
            health.rises += 1;
            if health.rises >= self.policy.rise {
                health.state = PoolHealth::Up;
                health.since = Instant::now();
                health.rises = 0;
                let p = &self.pools[pool];
                // A fresh start for stall detection.
                p.last_notify_ms.store(0, Ordering::Relaxed);
                p.evicting.store(false, Ordering::Relaxed);
                self.listener.changed(pool, &p.spec, PoolHealth::Up);
            }
        }
    }

    fn go_down(&self, pool: PoolId, health: &mut Health, reason: DownReason) {
        health.state = PoolHealth::Down(reason);
        health.since = Instant::now();
        health.rises = 0;
        let p = &self.pools[pool];
        p.evicting.store(true, Ordering::Relaxed);
        self.listener
            .changed(pool, &p.spec, PoolHealth::Down(reason));
        let sessions = lock(&p.sessions);
        for waker in sessions.slots.iter().filter_map(|slot| slot.waker.as_ref()) {
            waker.wake_by_ref();
        }
    }

    /// A session of `pool` received a `mining.notify` at `now_ms`, `gap_ms`
    /// after its previous one (0 for its first).
    fn saw_notify(&self, pool: PoolId, now_ms: u64, gap_ms: u64) {
        let p = &self.pools[pool];
        p.last_notify_ms.store(now_ms, Ordering::Relaxed);
        if gap_ms >= NOTIFY_ROUND_GAP.as_millis() as u64 {
            // Smoothed in with 1/4 weight (racing sessions may each lose an
            // update: every one carries about the same gap).
            let old = p.notify_interval_ms.load(Ordering::Relaxed);
            let new = if old == 0 {
                gap_ms
            } else {
                (old * 3 + gap_ms) / 4
            };
            p.notify_interval_ms.store(new, Ordering::Relaxed);
        }
    }

    /// Takes down every up pool whose sessions have been silent too long.
    fn check_stalls(&self) {
        let now = self.now_ms();
        for (id, p) in self.pools.iter().enumerate() {
            let interval = p.notify_interval_ms.load(Ordering::Relaxed);
            let last = p.last_notify_ms.load(Ordering::Relaxed);
            if interval == 0 || last == 0 || p.session_count.load(Ordering::Relaxed) == 0 {
                continue;
            }
            let limit = (interval as f64 * self.policy.stall_factor)
                .max(self.policy.stall_min.as_millis() as f64) as u64;
            if now.saturating_sub(last) > limit {
                let mut health = lock(&p.health);
                if health.state == PoolHealth::Up {
                    self.go_down(id, &mut health, DownReason::Stalled);
                }
            }
        }
    }

    /// The pool a session on `pool` should move to now, if any: a pool of
    /// better priority that has been up for the failback time.
    fn failback_target(&self, pool: PoolId, now: Instant) -> Option<PoolId> {
        let after = self.policy.failback_after?;
        let priority = self.pools[pool].spec.priority;
        (0..self.pools.len()).find(|&q| {
            let better = &self.pools[q];
            better.spec.priority < priority && {
                let health = lock(&better.health);
                health.state == PoolHealth::Up && now.duration_since(health.since) >= after
            }
        })
    }

    /// Asks up to `budget` sessions to move (failback); returns how many.
    fn hand_out_moves(&self, budget: usize) -> usize {
        let now = Instant::now();
        let mut moved = 0;
        for (id, p) in self.pools.iter().enumerate() {
            if moved >= budget {
                break;
            }
            if p.session_count.load(Ordering::Relaxed) == 0
                || p.evicting.load(Ordering::Relaxed)
                || self.failback_target(id, now).is_none()
            {
                continue;
            }
            let mut sessions = lock(&p.sessions);
            for slot in sessions.slots.iter_mut() {
                if moved >= budget {
                    break;
                }
                if slot.used && !slot.moving {
                    slot.moving = true;
                    p.moving.fetch_add(1, Ordering::Relaxed);
                    if let Some(waker) = &slot.waker {
                        waker.wake_by_ref();
                    }
                    moved += 1;
                }
            }
        }
        moved
    }

    /// Hands out moves at [`HealthPolicy::move_rate_per_second`], forever.
    pub async fn run_moves(self: Arc<Self>) {
        let rate = self.policy.move_rate_per_second;
        if self.policy.failback_after.is_none() || rate <= 0.0 || self.pools.len() < 2 {
            return std::future::pending().await;
        }
        // At most one second's worth saved up.
        let cap = rate.max(1.0);
        let mut tokens = 0.0_f64;
        let mut last = Instant::now();
        loop {
            Timer::after(MOVE_TICK).await;
            let now = Instant::now();
            tokens = (tokens + rate * now.duration_since(last).as_secs_f64()).min(cap);
            last = now;
            let budget = tokens.floor() as usize;
            if budget > 0 {
                tokens -= self.hand_out_moves(budget) as f64;
            }
        }
    }

    /// Every pool's state now.
    pub fn status(&self) -> Vec<PoolStatus> {
        self.pools
            .iter()
            .enumerate()
            .map(|(id, p)| {
                let health = lock(&p.health);
                let interval = p.notify_interval_ms.load(Ordering::Relaxed);
                PoolStatus {
                    id,
                    spec: p.spec.clone(),
                    health: health.state,
                    since: health.since.elapsed(),
                    sessions: p.session_count.load(Ordering::Relaxed),
                    notify_interval: (interval > 0).then(|| Duration::from_millis(interval)),
                }
            })
            .collect()
    }

    /// Registers a relayed session of `pool`.
    pub fn session(self: &Arc<Self>, pool: PoolId) -> Session {
        let p = &self.pools[pool];
        p.session_count.fetch_add(1, Ordering::Relaxed);
        let mut sessions = lock(&p.sessions);
        let slot = match sessions.free.pop() {
            Some(slot) => slot,
            None => {
                sessions.slots.push(Slot::default());
                sessions.slots.len() - 1
            }
        };
        sessions.slots[slot].used = true;
        Session {
            pools: self.clone(),
            pool,
            slot,
            waker_set: false,
            last_notify_ms: 0,
        }
    }

    /// Probes every pool every check interval and looks for stalls, forever.
    /// A single pool is probed once at start (a TCP connect), so that
    /// `/healthz` means something before the first miner connects.
    pub async fn run_checks(self: Arc<Self>) {
        if !self.probing() {
            if self.policy.probe != ProbeKind::Off {
                let spec = &self.pools[0].spec;
                let ok = probe(&spec.addr, ProbeKind::Tcp, self.policy.probe_timeout)
                    .await
                    .is_ok();
                self.listener.probed(0, ok);
                if !ok {
                    self.failure(0);
                }
            }
            loop {
                self.check_stalls();
                Timer::after(self.policy.check_interval).await;
            }
        }
        loop {
            self.check_stalls();
            // Every pool at once, on this task: a dead pool's timeout does
            // not delay the others' verdicts.
            let mut probes: Vec<Pin<Box<dyn Future<Output = ()> + Send + '_>>> =
                (0..self.pools.len())
                    .map(|id| {
                        let pools = &self;
                        Box::pin(async move {
                            let spec = &pools.pools[id].spec;
                            let policy = &pools.policy;
                            let ok = probe(&spec.addr, policy.probe, policy.probe_timeout)
                                .await
                                .is_ok();
                            pools.listener.probed(id, ok);
                            if ok {
                                pools.probe_ok(id);
                            } else {
                                pools.failure(id);
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
pub enum Leave {
    /// The pool went down: close the miner between two lines.
    PoolDown,
    /// A better pool is back (failback): move the miner, at the bounded rate.
    Move,
}

/// A relayed session's registration with its pool: counts it, and lets the
/// pool wake it for eviction. Dropping it unregisters.
pub struct Session {
    pools: Arc<Pools>,
    pool: PoolId,
    slot: usize,
    waker_set: bool,
    /// This session's last notify, in ms since [`Pools`] started (0 = none).
    last_notify_ms: u64,
}

impl Session {
    /// The pool.
    pub fn pool(&self) -> PoolId {
        self.pool
    }

    /// Whether the pool wants this session closed; registers the task's
    /// waker (once: a task's waker does not change) so it hears of it.
    pub fn evicted(&mut self, cx: &mut Context<'_>) -> Option<Leave> {
        let p = &self.pools.pools[self.pool];
        if !self.waker_set {
            lock(&p.sessions).slots[self.slot].waker = Some(cx.waker().clone());
            self.waker_set = true;
        }
        if p.evicting.load(Ordering::Relaxed) {
            return Some(Leave::PoolDown);
        }
        if p.moving.load(Ordering::Relaxed) > 0 && lock(&p.sessions).slots[self.slot].moving {
            return Some(Leave::Move);
        }
        None
    }

    /// The pool answered this session first: it works.
    pub fn spoke(&self) {
        self.pools.dial_succeeded(self.pool);
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
        self.pools.saw_notify(self.pool, now_ms, gap);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        let p = &self.pools.pools[self.pool];
        p.session_count.fetch_sub(1, Ordering::Relaxed);
        let mut sessions = lock(&p.sessions);
        let slot = std::mem::take(&mut sessions.slots[self.slot]);
        if slot.moving {
            p.moving.fetch_sub(1, Ordering::Relaxed);
        }
        sessions.free.push(self.slot);
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
