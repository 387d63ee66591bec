//! The live miner registry: one small shared record per open miner
//! connection, for the status page and `/api/v1/miners`.
//!
//! Why here and not in the relay: the relay core knows bytes and lines, the
//! collector already knows what a record holds (the pool it was relayed to,
//! the user name the pool accepted, difficulty, share outcomes). Each record
//! is created when a connection is accepted and removed when it closes, so
//! the registry holds at most `max_connections` records. The connection's
//! own task is the only writer of its record: the hot path does a few
//! relaxed atomic stores (an accepted or rejected share, a new difficulty),
//! never a lock or an allocation; the worker name and pool change at most a
//! few times per connection and sit behind a mutex nobody holds for long.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::collector::RejectReason;
use crate::relay::PoolId;

/// What changes rarely: set when the upstream connects and when the pool
/// accepts an authorize.
#[derive(Debug, Clone, Default)]
pub struct MinerIdentity {
    /// The pool relayed to, once there is one.
    pub pool: Option<PoolId>,
    /// The user name the pool accepted (never the password), cut to
    /// [`MAX_WORKER_BYTES`].
    pub worker: Option<Box<str>>,
    /// The `client_id` its shares are counted under.
    pub client: Option<Arc<str>>,
}

/// Longest worker name kept, in bytes.
pub const MAX_WORKER_BYTES: usize = 128;

/// One live miner connection.
#[derive(Debug)]
pub struct MinerRecord {
    /// The relay's connection id (what `/api/v1/miners/{id}/disconnect` takes).
    pub id: u64,
    /// The miner's address.
    pub peer: SocketAddr,
    /// When it was accepted.
    pub connected_at: Instant,
    identity: Mutex<MinerIdentity>,
    /// f64 bits: the last difficulty the pool set.
    difficulty: AtomicU64,
    accepted: AtomicU64,
    /// Indexed like [`RejectReason::ALL`] (32 bits: per connection).
    rejected: [AtomicU32; 6],
    /// Milliseconds after `connected_at` of the last accepted share, plus
    /// one; 0 while none was accepted.
    last_accepted_ms: AtomicU64,
    /// f64 bits: the sum of the difficulty of its accepted shares.
    accepted_difficulty: AtomicU64,
}

/// A consistent-enough copy of one record, for sorting and rendering.
#[derive(Debug, Clone)]
pub struct MinerSnapshot {
    /// Connection id.
    pub id: u64,
    /// The miner's address.
    pub peer: SocketAddr,
    /// Pool, worker and client.
    pub identity: MinerIdentity,
    /// Time since accept.
    pub connected: Duration,
    /// Last difficulty set by the pool (0 before any).
    pub difficulty: f64,
    /// Accepted shares.
    pub accepted: u64,
    /// Rejected shares, indexed like [`RejectReason::ALL`].
    pub rejected: [u64; 6],
    /// Time since the last accepted share, if any.
    pub last_share: Option<Duration>,
    /// Sum of accepted share difficulty.
    pub accepted_difficulty: f64,
}

impl MinerSnapshot {
    /// Rejected shares, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().sum()
    }

    /// Hashes per second over its life: accepted difficulty × 2^32 / age.
    pub fn hashrate(&self) -> f64 {
        let age = self.connected.as_secs_f64().max(1.0);
        self.accepted_difficulty * 4_294_967_296.0 / age
    }

    /// No accepted share for `after` (counted from connect when none yet).
    pub fn is_stale(&self, after: Duration) -> bool {
        self.last_share.unwrap_or(self.connected) >= after
    }
}

impl MinerRecord {
    fn new(id: u64, peer: SocketAddr, connected_at: Instant) -> MinerRecord {
        MinerRecord {
            id,
            peer,
            connected_at,
            identity: Mutex::new(MinerIdentity::default()),
            difficulty: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            rejected: Default::default(),
            last_accepted_ms: AtomicU64::new(0),
            accepted_difficulty: AtomicU64::new(0),
        }
    }

    fn identity(&self) -> MutexGuard<'_, MinerIdentity> {
        self.identity.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Relayed to `pool` (again, after a failed first dial).
    pub fn set_pool(&self, pool: PoolId, client: Option<Arc<str>>) {
        let mut identity = self.identity();
        identity.pool = Some(pool);
        identity.client = client;
    }

    /// The pool accepted `worker`'s authorize; its shares count for `client`.
    pub fn set_worker(&self, worker: &str, client: Arc<str>) {
        let worker = super::collector::truncate(worker, MAX_WORKER_BYTES);
        let mut identity = self.identity();
        identity.worker = Some(Box::from(worker));
        identity.client = Some(client);
    }

    /// The pool set a new difficulty.
    #[inline]
    pub fn set_difficulty(&self, difficulty: f64) {
        self.difficulty
            .store(difficulty.to_bits(), Ordering::Relaxed);
    }

    /// The last difficulty the pool set (0 before any).
    #[inline]
    pub fn difficulty(&self) -> f64 {
        f64::from_bits(self.difficulty.load(Ordering::Relaxed))
    }

    /// `shares` shares of `difficulty` in total were accepted at `now`.
    #[inline]
    pub fn accepted(&self, shares: u32, difficulty: f64, now: Instant) {
        self.accepted
            .fetch_add(u64::from(shares), Ordering::Relaxed);
        let ms = now.saturating_duration_since(self.connected_at).as_millis() as u64 + 1;
        self.last_accepted_ms.store(ms, Ordering::Relaxed);
        if difficulty > 0.0 {
            // One writer (the connection's task): load and store suffice.
            let sum = f64::from_bits(self.accepted_difficulty.load(Ordering::Relaxed));
            self.accepted_difficulty
                .store((sum + difficulty).to_bits(), Ordering::Relaxed);
        }
    }

    /// A share was rejected for `reason`.
    #[inline]
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Its state now.
    pub fn snapshot(&self, now: Instant) -> MinerSnapshot {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let connected = now.saturating_duration_since(self.connected_at);
        let last = load(&self.last_accepted_ms);
        MinerSnapshot {
            id: self.id,
            peer: self.peer,
            identity: self.identity().clone(),
            connected,
            difficulty: f64::from_bits(load(&self.difficulty)),
            accepted: load(&self.accepted),
            rejected: self
                .rejected
                .each_ref()
                .map(|r| u64::from(r.load(Ordering::Relaxed))),
            last_share: (last > 0)
                .then(|| connected.saturating_sub(Duration::from_millis(last - 1))),
            accepted_difficulty: f64::from_bits(load(&self.accepted_difficulty)),
        }
    }
}

/// Every open miner connection's record, by connection id.
#[derive(Debug, Default)]
pub struct MinerRegistry {
    records: Mutex<HashMap<u64, Arc<MinerRecord>>>,
}

impl MinerRegistry {
    fn records(&self) -> MutexGuard<'_, HashMap<u64, Arc<MinerRecord>>> {
        self.records.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers connection `id` (once per accepted connection).
    pub fn open(&self, id: u64, peer: SocketAddr, connected_at: Instant) -> Arc<MinerRecord> {
        let record = Arc::new(MinerRecord::new(id, peer, connected_at));
        self.records().insert(id, record.clone());
        record
    }

    /// Forgets connection `id` (it closed).
    pub fn close(&self, id: u64) {
        self.records().remove(&id);
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.records().len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every record's state now (the lock is held only to clone the list).
    pub fn snapshot(&self, now: Instant) -> Vec<MinerSnapshot> {
        let records: Vec<Arc<MinerRecord>> = self.records().values().cloned().collect();
        records.iter().map(|r| r.snapshot(now)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_counts_shares_and_is_forgotten_on_close() {
        let registry = MinerRegistry::default();
        let t0 = Instant::now();
        let record = registry.open(7, "127.0.0.1:5".parse().unwrap(), t0);
        record.set_pool(1, None);
        record.set_worker("alice.rig1", Arc::from("alice"));
        record.set_difficulty(512.0);
        record.accepted(1, 512.0, t0 + Duration::from_secs(2));
        record.accepted(1, 512.0, t0 + Duration::from_secs(4));
        record.rejected(RejectReason::Stale);
        let snap = &registry.snapshot(t0 + Duration::from_secs(10))[0];
        assert_eq!(snap.id, 7);
        assert_eq!(snap.identity.pool, Some(1));
        assert_eq!(snap.identity.worker.as_deref(), Some("alice.rig1"));
        assert_eq!(snap.accepted, 2);
        assert_eq!(snap.rejected_total(), 1);
        assert_eq!(snap.rejected[RejectReason::Stale as usize], 1);
        assert_eq!(snap.last_share, Some(Duration::from_secs(6)));
        assert_eq!(snap.accepted_difficulty, 1024.0);
        assert_eq!(snap.hashrate(), 1024.0 * 4_294_967_296.0 / 10.0);
        assert!(!snap.is_stale(Duration::from_secs(7)));
        assert!(snap.is_stale(Duration::from_secs(6)));
        registry.close(7);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_miner_without_shares_is_stale_after_the_delay_from_connect() {
        let registry = MinerRegistry::default();
        let t0 = Instant::now();
        registry.open(1, "127.0.0.1:5".parse().unwrap(), t0);
        let snap = &registry.snapshot(t0 + Duration::from_secs(30))[0];
        assert_eq!(snap.last_share, None);
        assert!(!snap.is_stale(Duration::from_secs(31)));
        assert!(snap.is_stale(Duration::from_secs(30)));
    }
}
