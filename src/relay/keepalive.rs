//! TCP keepalive and `TCP_USER_TIMEOUT` for both sockets of a relay.
//!
//! Why: a miner or pool that vanishes without a FIN (power cut, cable
//! pulled, a NAT that forgot us) leaves a relay that nothing wakes. With
//! data in flight, Linux retransmits for about 15 minutes (tcp_retries2)
//! before giving up; with none, forever. Keepalive probes after
//! [`DEFAULT_KEEPALIVE_IDLE`] of silence, every
//! [`DEFAULT_KEEPALIVE_INTERVAL`], [`DEFAULT_KEEPALIVE_PROBES`] times, and a
//! [`DEFAULT_USER_TIMEOUT`] for unacknowledged data, notice a vanished peer
//! within about a minute either way: the socket then fails and the relay
//! closes both sides.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// Default silence before the first keepalive probe.
pub const DEFAULT_KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
/// Default time between keepalive probes.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default unanswered probes before the connection is dropped.
pub const DEFAULT_KEEPALIVE_PROBES: u32 = 3;
/// Default longest time sent data may stay unacknowledged.
pub const DEFAULT_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// Keepalive settings applied to the miner's and the pool's socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe; zero turns keepalive off.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the connection is dropped.
    pub probes: u32,
    /// Longest time sent data may stay unacknowledged; zero keeps the
    /// kernel's default (retransmissions for about 15 minutes).
    pub user_timeout: Duration,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            idle: DEFAULT_KEEPALIVE_IDLE,
            interval: DEFAULT_KEEPALIVE_INTERVAL,
            probes: DEFAULT_KEEPALIVE_PROBES,
            user_timeout: DEFAULT_USER_TIMEOUT,
        }
    }
}

impl Keepalive {
    /// Sets the options on a TCP socket. Whole seconds for the keepalive
    /// times (the kernel's unit, at least 1), milliseconds for the user
    /// timeout.
    pub fn apply(&self, socket: impl AsFd) -> io::Result<()> {
        use rustix::net::sockopt;
        let fd = socket.as_fd();
        if !self.idle.is_zero() {
            let whole = |d: Duration| Duration::from_secs(d.as_secs().max(1));
            sockopt::set_tcp_keepidle(fd, whole(self.idle))?;
            sockopt::set_tcp_keepintvl(fd, whole(self.interval))?;
            sockopt::set_tcp_keepcnt(fd, self.probes.max(1))?;
            sockopt::set_socket_keepalive(fd, true)?;
        }
        if !self.user_timeout.is_zero() {
            let ms = u32::try_from(self.user_timeout.as_millis()).unwrap_or(u32::MAX);
            sockopt::set_tcp_user_timeout(fd, ms)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::sockopt;
    use std::net::{TcpListener, TcpStream};

    #[test]
    fn the_options_are_set_on_the_socket() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let keepalive = Keepalive {
            idle: Duration::from_secs(7),
            interval: Duration::from_millis(2500),
            probes: 4,
            user_timeout: Duration::from_millis(45_500),
        };
        keepalive.apply(&socket).unwrap();
        assert!(sockopt::socket_keepalive(&socket).unwrap());
        assert_eq!(
            sockopt::tcp_keepidle(&socket).unwrap(),
            Duration::from_secs(7)
        );
        assert_eq!(
            sockopt::tcp_keepintvl(&socket).unwrap(),
            Duration::from_secs(2)
        );
        assert_eq!(sockopt::tcp_keepcnt(&socket).unwrap(), 4);
        assert_eq!(sockopt::tcp_user_timeout(&socket).unwrap(), 45_500);
    }

    #[test]
    fn zero_leaves_the_kernel_defaults() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let socket = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let off = Keepalive {
            idle: Duration::ZERO,
            user_timeout: Duration::ZERO,
            ..Keepalive::default()
        };
        off.apply(&socket).unwrap();
        assert!(!sockopt::socket_keepalive(&socket).unwrap());
        assert_eq!(sockopt::tcp_user_timeout(&socket).unwrap(), 0);
    }
}
