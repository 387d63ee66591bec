//! The one pool address type: a host name or IP and a port, kept as
//! configured and resolved for every dial, since DNS answers change while
//! the proxy runs. Configuration parses it ([`PoolAddr::from_str`]), the
//! relay dials it ([`PoolAddr::resolve`]) and metrics label by it
//! ([`PoolAddr::label`]).

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// Prefix miners' pool URLs carry; accepted and dropped.
const STRATUM_TCP_PREFIX: &str = "stratum+tcp://";

/// A pool address as configured: a DNS name or IP (IPv6 without brackets),
/// and a TCP port 1–65535.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolAddr {
    host: String,
    port: u16,
}

/// Why a text is not a pool address; `Display` says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PoolAddrError {
    /// A URL scheme other than `stratum+tcp://`.
    Scheme(String),
    /// No `:port` part.
    NoPort,
    /// The port is not 1–65535.
    BadPort,
    /// An IPv6 address without brackets.
    UnbracketedIpv6,
    /// The host is not a DNS name or IP address.
    BadHost,
}

impl fmt::Display for PoolAddrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolAddrError::Scheme(scheme) => write!(
                f,
                "scheme {scheme}:// is not supported: the proxy relays plain TCP"
            ),
            PoolAddrError::NoPort => f.write_str("no port"),
            PoolAddrError::BadPort => f.write_str("bad port"),
            PoolAddrError::UnbracketedIpv6 => {
                f.write_str("an IPv6 address needs brackets: [addr]:port")
            }
            PoolAddrError::BadHost => f.write_str("not a DNS name or IP address"),
        }
    }
}

impl std::error::Error for PoolAddrError {}

impl PoolAddr {
    /// A pool address from a host (DNS name or IP; IPv6 with or without
    /// brackets) and a port; `None` if the host is not valid or the port 0.
    pub fn new(host: &str, port: u16) -> Option<PoolAddr> {
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        (port != 0 && (host.parse::<Ipv6Addr>().is_ok() || valid_host_name(host))).then(|| {
            PoolAddr {
                host: host.to_string(),
                port,
            }
        })
    }

    /// The host: a DNS name, an IPv4 address or an IPv6 address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port, 1–65535.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same pool on another host (for `POOL_HOST`); `None` if invalid.
    pub fn with_host(&self, host: &str) -> Option<PoolAddr> {
        PoolAddr::new(host, self.port)
    }

    /// The same pool on another port (for `POOL_PORT`); `None` for port 0.
    pub fn with_port(&self, port: u16) -> Option<PoolAddr> {
        (port != 0).then(|| PoolAddr {
            host: self.host.clone(),
            port,
        })
    }

    /// `host:port` (IPv6 in brackets): the `pool_host` metric label.
    pub fn label(&self) -> String {
        self.to_string()
    }

    /// The addresses to dial, in order. A name is resolved on smol's
    /// blocking pool, so the executor never waits for DNS.
    pub async fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(vec![SocketAddr::new(ip, self.port)]);
        }
        async_net::resolve((self.host.as_str(), self.port)).await
    }
}

impl fmt::Display for PoolAddr {
    /// `host:port`, IPv6 hosts in brackets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl FromStr for PoolAddr {
    type Err = PoolAddrError;

    /// Parses `host:port` or `[v6]:port`, optionally prefixed by
    /// `stratum+tcp://` (any case).
    fn from_str(text: &str) -> Result<PoolAddr, PoolAddrError> {
        let mut text = text;
        if text.len() >= STRATUM_TCP_PREFIX.len()
            && text.is_char_boundary(STRATUM_TCP_PREFIX.len())
            && text[..STRATUM_TCP_PREFIX.len()].eq_ignore_ascii_case(STRATUM_TCP_PREFIX)
        {
            text = &text[STRATUM_TCP_PREFIX.len()..];
        } else if let Some((scheme, _)) = text.split_once("://") {
            return Err(PoolAddrError::Scheme(scheme.to_string()));
        }
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (v6, port) = rest.split_once("]:").ok_or(PoolAddrError::BadHost)?;
            v6.parse::<Ipv6Addr>().map_err(|_| PoolAddrError::BadHost)?;
            (v6, port)
        } else {
            let (host, port) = text.rsplit_once(':').ok_or(PoolAddrError::NoPort)?;
            if host.contains(':') {
                return Err(PoolAddrError::UnbracketedIpv6);
            }
            if !valid_host_name(host) {
                return Err(PoolAddrError::BadHost);
            }
            (host, port)
        };
        match port.parse::<u16>() {
            Ok(port) if port != 0 => Ok(PoolAddr {
                host: host.to_string(),
                port,
            }),
            _ => Err(PoolAddrError::BadPort),
        }
    }
}

impl From<SocketAddr> for PoolAddr {
    fn from(addr: SocketAddr) -> Self {
        PoolAddr {
            host: addr.ip().to_string(),
            port: addr.port(),
        }
    }
}

/// A DNS name or IPv4 address: dot-separated labels of 1–63 letters, digits,
/// '-' or '_', not starting or ending with '-', 253 characters at most
/// (one trailing dot allowed).
pub fn valid_host_name(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_brackets_ipv6() {
        assert_eq!(
            PoolAddr::new("pool.example.net", 3333).unwrap().label(),
            "pool.example.net:3333"
        );
        assert_eq!(PoolAddr::new("::1", 3333).unwrap().label(), "[::1]:3333");
        assert_eq!(PoolAddr::new("[::1]", 3333).unwrap().label(), "[::1]:3333");
        assert_eq!(PoolAddr::new("a b", 3333), None);
        assert_eq!(PoolAddr::new("a", 0), None);
    }

    #[test]
    fn forms() {
        let ok = |text: &str| text.parse::<PoolAddr>().map(|p| p.to_string()).ok();
        assert_eq!(
            ok("pool.example.com:3333").as_deref(),
            Some("pool.example.com:3333")
        );
        assert_eq!(ok("10.1.2.3:1").as_deref(), Some("10.1.2.3:1"));
        assert_eq!(
            ok("[2001:db8::1]:65535").as_deref(),
            Some("[2001:db8::1]:65535")
        );
        assert_eq!(
            ok("stratum+tcp://eu.pool.example:4444").as_deref(),
            Some("eu.pool.example:4444")
        );
        assert_eq!(ok("STRATUM+TCP://a:1").as_deref(), Some("a:1"));
        assert_eq!(ok("pool_1.lan.:3333").as_deref(), Some("pool_1.lan.:3333"));
        for bad in [
            "pool.example.com",
            "pool.example.com:0",
            "pool.example.com:65536",
            "pool.example.com:",
            ":3333",
            "2001:db8::1:3333",
            "[2001:db8::1]",
            "[zz::1]:3333",
            "stratum+ssl://pool:3333",
            "pool example:3333",
            "-pool:3333",
            "a..b:3333",
            "",
            "ééééééééééééééé:1",
        ] {
            assert!(bad.parse::<PoolAddr>().is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            "stratum+ssl://pool:3333"
                .parse::<PoolAddr>()
                .unwrap_err()
                .to_string(),
            "scheme stratum+ssl:// is not supported: the proxy relays plain TCP"
        );
    }
}
