//! The observer API: the relay core's only output.
//!
//! The relay forwards bytes first and reports second. Every call is
//! synchronous and made on the connection's own task, so an observer must be
//! cheap and must never block: it may update counters, never do I/O or wait.
//! Per-connection observer state ([`Observer::Connection`]) lives inside the
//! connection's task, so updating it needs no lock.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::pools::PoolId;
use crate::stratum::{Message, ParseFailure};

/// Which way bytes or a message travelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the miner to the pool (requests such as submits).
    MinerToPool,
    /// From the pool to the miner (responses, notify, set_difficulty).
    PoolToMiner,
}

impl Direction {
    /// Stable lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::MinerToPool => "miner_to_pool",
            Direction::PoolToMiner => "pool_to_miner",
        }
    }
}

/// What the relay knows about a miner connection when it is accepted.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Process-unique connection id, for logs (never a metric label).
    pub id: u64,
    /// The miner's address.
    pub peer: SocketAddr,
    /// When the connection was accepted.
    pub accepted_at: Instant,
}

/// Why a connection was refused before any relaying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefuseReason {
    /// `max_connections` miners are already connected.
    MaxConnections,
    /// The new-connection token bucket is empty.
    RateLimit,
    /// The source address already holds its most connections.
    AddressConnections,
    /// The source address's new-connection token bucket is empty.
    AddressRateLimit,
}

impl RefuseReason {
    /// Stable lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            RefuseReason::MaxConnections => "max_connections",
            RefuseReason::RateLimit => "rate_limit",
            RefuseReason::AddressConnections => "max_connections_per_address",
            RefuseReason::AddressRateLimit => "rate_limit_per_address",
        }
    }
}

/// Why opening the upstream connection failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// No connection within the connect timeout.
    Timeout,
    /// The pool actively refused (RST).
    Refused,
    /// Name resolution failed or anything else.
    Other,
    /// Connected, then closed or reset by the pool before its first byte.
    Reset,
}

impl UpstreamFailure {
    /// Every failure, in declaration order (`failure as usize` indexes it).
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Timeout,
        UpstreamFailure::Refused,
        UpstreamFailure::Other,
        UpstreamFailure::Reset,
    ];

    /// Stable lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Refused => "refused",
            UpstreamFailure::Other => "other",
            UpstreamFailure::Reset => "reset",
        }
    }
}

/// Which side ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The miner closed or failed.
    Miner,
    /// The pool closed or failed.
    Pool,
    /// The proxy closed it (a timeout, a failed upstream, shutdown).
    Proxy,
}

/// Why a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The miner closed its side (FIN) first.
    MinerClosed,
    /// The pool closed its side (FIN) first.
    PoolClosed,
    /// Reading from or writing to the miner failed.
    MinerError(io::ErrorKind),
    /// Reading from or writing to the pool failed.
    PoolError(io::ErrorKind),
    /// No pool could be opened (the last pool's failure).
    UpstreamFailed(UpstreamFailure),
    /// The pool went down: the proxy closed the miner between two lines so
    /// that it reconnects to a healthy pool.
    PoolDown,
    /// Moved to a better pool (failback): closed between two lines, or after
    /// its `client.reconnect` it did not follow.
    Moved,
    /// An operator disconnected it (admin API).
    Disconnected,
    /// No bytes from the miner for the idle timeout.
    IdleTimeout,
    /// No complete line from the miner within the handshake timeout.
    HandshakeTimeout,
    /// One side half-closed and the other did not follow in time.
    HalfCloseTimeout,
    /// The proxy shut down and the grace period ran out.
    Shutdown,
}

impl CloseReason {
    /// The side that ended the connection.
    pub const fn side(self) -> Side {
        match self {
            CloseReason::MinerClosed | CloseReason::MinerError(_) => Side::Miner,
            CloseReason::PoolClosed | CloseReason::PoolError(_) => Side::Pool,
            _ => Side::Proxy,
        }
    }

    /// Stable lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            CloseReason::MinerClosed => "miner_closed",
            CloseReason::PoolClosed => "pool_closed",
            CloseReason::MinerError(_) => "miner_error",
            CloseReason::PoolError(_) => "pool_error",
            CloseReason::UpstreamFailed(_) => "upstream_failed",
            CloseReason::PoolDown => "pool_down",
            CloseReason::Moved => "moved",
            CloseReason::Disconnected => "disconnected",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::HalfCloseTimeout => "half_close_timeout",
            CloseReason::Shutdown => "shutdown",
        }
    }
}

/// Something the relay saw on one connection.
#[derive(Debug)]
pub enum Event<'a> {
    /// The upstream connection is open (again, to another pool, when the
    /// first closed before answering).
    UpstreamConnected {
        /// The pool.
        pool: PoolId,
        /// The pool address it connected to.
        addr: SocketAddr,
        /// Time from starting to connect to connected.
        latency: Duration,
    },
    /// A pool could not be opened (or closed before answering); the next
    /// pool is tried, and when none is left the miner is closed.
    UpstreamFailed {
        /// The pool.
        pool: PoolId,
        /// Classified cause.
        failure: UpstreamFailure,
        /// Time spent trying.
        latency: Duration,
        /// The underlying error.
        error: &'a io::Error,
    },
    /// The proxy sent the miner a `client.reconnect` line of its own (the
    /// `reconnect_message` option): bytes not read from the pool.
    ReconnectSent {
        /// Its length, newline included.
        bytes: usize,
    },
    /// Bytes written to the other side, exactly as read.
    Relayed {
        /// Which way they went.
        direction: Direction,
        /// How many bytes.
        bytes: usize,
    },
    /// A JSON-RPC request (method and non-null id).
    Request {
        /// Which way it went.
        direction: Direction,
        /// The borrowed message view.
        message: &'a Message<'a>,
        /// When the read that held it returned (one clock read per read,
        /// shared by its lines).
        at: Instant,
    },
    /// A JSON-RPC response (result or error, no method).
    Response {
        /// Which way it went.
        direction: Direction,
        /// The borrowed message view.
        message: &'a Message<'a>,
        /// When the read that held it returned (one clock read per read,
        /// shared by its lines).
        at: Instant,
    },
    /// A JSON-RPC notification (method, no id or a null one).
    Notification {
        /// Which way it went.
        direction: Direction,
        /// The borrowed message view.
        message: &'a Message<'a>,
        /// When the read that held it returned (one clock read per read,
        /// shared by its lines).
        at: Instant,
    },
    /// A line that is not a JSON-RPC message; it was relayed anyway.
    ParseFailed {
        /// Which way it went.
        direction: Direction,
        /// Why it could not be viewed.
        failure: ParseFailure,
        /// Its length without the newline, in bytes.
        line_bytes: usize,
    },
    /// The connection is closed; the last event for it.
    Closed {
        /// Time since accept.
        duration: Duration,
        /// Bytes relayed miner → pool.
        miner_to_pool_bytes: u64,
        /// Bytes relayed pool → miner.
        pool_to_miner_bytes: u64,
        /// Who ended it and why.
        reason: CloseReason,
    },
}

/// Receives what the relay sees. Calls are synchronous on the relay's task:
/// keep them cheap and never block.
pub trait Observer: Send + Sync + 'static {
    /// Per-connection state, created on accept and dropped after [`Event::Closed`].
    type Connection: Send + 'static;

    /// A miner connection was accepted and will be relayed.
    fn accepted(&self, info: &ConnectionInfo) -> Self::Connection;

    /// Something happened on an accepted connection.
    fn event(&self, conn: &mut Self::Connection, event: Event<'_>);

    /// Every line of one read was reported: what the observer gathered per
    /// line may now go to shared state, once per read instead of once per
    /// line (at saturation a read holds dozens of lines). The relay reports
    /// a read's lines and then calls this without an await in between, so
    /// nothing of another connection on the same thread comes between.
    /// `at` is the time of that read, as in its line events.
    fn lines_done(&self, conn: &mut Self::Connection, at: Instant) {
        let _ = (conn, at);
    }

    /// A miner connection was refused and closed at once.
    fn refused(&self, peer: SocketAddr, reason: RefuseReason);

    /// `accept` failed (for example out of file descriptors); the listener backs off.
    fn accept_failed(&self, error: &io::Error) {
        let _ = error;
    }
}

/// An observer that ignores everything: the relay alone, for tests and benchmarks.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoObserver;

impl Observer for NoObserver {
    type Connection = ();
    fn accepted(&self, _: &ConnectionInfo) {}
    fn event(&self, _: &mut (), _: Event<'_>) {}
    fn refused(&self, _: SocketAddr, _: RefuseReason) {}
}
