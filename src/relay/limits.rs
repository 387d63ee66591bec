//! The relay's limits, shared by the listener and each connection: how
//! many miners, how fast they may arrive, and how long each step may take.

use std::time::Duration;

use super::keepalive::Keepalive;
use super::per_address::PerAddress;

/// Default cap on concurrently relayed miners.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default new-connection rate, per second (token bucket refill).
pub const DEFAULT_ACCEPT_RATE_PER_SECOND: f64 = 500.0;
/// Default new-connection burst (token bucket size).
pub const DEFAULT_ACCEPT_BURST: u32 = 1_000;
/// Default time allowed to open the upstream connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time without a byte from the miner before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(900);
/// Default time for the miner's first complete line (slowloris guard).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The relay's limits; see the `DEFAULT_*` constants.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most miners relayed at once; one more is closed at once and counted.
    pub max_connections: usize,
    /// Token bucket refill rate for new connections, per second.
    pub accept_rate_per_second: f64,
    /// Token bucket size: connections accepted in a burst.
    pub accept_burst: u32,
    /// Time allowed to open the upstream connection.
    pub connect_timeout: Duration,
    /// Time without a byte from the miner before it is closed.
    pub idle_timeout: Duration,
    /// Time for the miner's first complete line.
    pub handshake_timeout: Duration,
    /// TCP keepalive and user timeout on the miner's and the pool's socket.
    pub keepalive: Keepalive,
    /// Connections and accept rate per source address (unlimited by default).
    pub per_address: PerAddress,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            accept_rate_per_second: DEFAULT_ACCEPT_RATE_PER_SECOND,
            accept_burst: DEFAULT_ACCEPT_BURST,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            keepalive: Keepalive::default(),
            per_address: PerAddress::default(),
        }
    }
}
