//! Limits per source address: how many connections one address may hold
//! and how fast it may open new ones, with overrides by CIDR.
//!
//! Why: the global limits alone let one LAN host take every one of the
//! 10,000 slots (or the whole accept rate) and lock every other miner out.
//! An ASIC opens one or two connections; an upstream proxy or a NAT'd rack
//! opens many, so a network can be given more (or less) by CIDR; the most
//! specific (longest prefix) rule that contains the address wins.
//!
//! One source is an IPv4 address or an IPv6 /64 ([`source_key`]). The
//! table holds one entry per source with a connection open or a token
//! bucket not yet full again, so its size is bounded by the connections
//! open plus the addresses seen in the last refill period.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::event::RefuseReason;

/// An IP network: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

/// Why a CIDR or an override did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddressRuleError {
    /// Not `IP` or `IP/PREFIX`.
    BadNetwork(String),
    /// A prefix longer than the address (32 for IPv4, 128 for IPv6).
    BadPrefix(String),
    /// Not `CIDR=CONNECTIONS` or `CIDR=CONNECTIONS/RATE`.
    BadRule(String),
    /// A connection count of 0 or a rate that is not a positive number.
    BadLimit(String),
}

impl fmt::Display for AddressRuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AddressRuleError::BadNetwork(t) => write!(f, "{t:?} is not an IP address or IP/PREFIX"),
            AddressRuleError::BadPrefix(t) => {
                write!(f, "{t:?} has a prefix longer than its address")
            }
            AddressRuleError::BadRule(t) => {
                write!(f, "{t:?} is not CIDR=CONNECTIONS or CIDR=CONNECTIONS/RATE")
            }
            AddressRuleError::BadLimit(t) => write!(
                f,
                "{t:?}: connections must be a whole number from 1, the rate a positive number"
            ),
        }
    }
}

impl std::error::Error for AddressRuleError {}

impl Cidr {
    /// Whether `ip` is in this network (IPv4-mapped IPv6 counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    /// The prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }
}

impl FromStr for Cidr {
    type Err = AddressRuleError;
    fn from_str(text: &str) -> Result<Cidr, AddressRuleError> {
        let bad = || AddressRuleError::BadNetwork(text.to_owned());
        let (ip, prefix) = match text.split_once('/') {
            Some((ip, prefix)) => (ip, Some(prefix)),
            None => (text, None),
        };
        let addr = IpAddr::from_str(ip.trim_start_matches('[').trim_end_matches(']'))
            .map_err(|_| bad())?
            .to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().map_err(|_| bad())?
            }
            Some(_) => return Err(bad()),
        };
        if prefix > max {
            return Err(AddressRuleError::BadPrefix(text.to_owned()));
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// The limits of one address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressLimit {
    /// Connections one address may hold at once (also its burst of new ones).
    pub max_connections: usize,
    /// New connections per second one address may open, sustained.
    pub accept_rate_per_second: f64,
}

impl AddressLimit {
    /// No limit per address.
    pub const UNLIMITED: AddressLimit = AddressLimit {
        max_connections: usize::MAX,
        accept_rate_per_second: f64::INFINITY,
    };
}

/// A limit for the addresses of one network.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AddressRule {
    /// The network.
    pub network: Cidr,
    /// Its addresses' limit (each address on its own, not the network's sum).
    pub limit: AddressLimit,
}

impl FromStr for AddressRule {
    type Err = AddressRuleError;
    /// `CIDR=CONNECTIONS` or `CIDR=CONNECTIONS/RATE` (the rate defaults to
    /// the connection count per second).
    fn from_str(text: &str) -> Result<AddressRule, AddressRuleError> {
        let text = text.trim();
        let (network, limit) = text
            .split_once('=')
            .ok_or_else(|| AddressRuleError::BadRule(text.to_owned()))?;
        let network: Cidr = network.trim().parse()?;
        let (connections, rate) = match limit.split_once('/') {
            Some((c, r)) => (c.trim(), Some(r.trim())),
            None => (limit.trim(), None),
        };
        let bad = || AddressRuleError::BadLimit(text.to_owned());
        let max_connections: usize = connections.parse().map_err(|_| bad())?;
        if max_connections == 0 {
            return Err(bad());
        }
        let accept_rate_per_second = match rate {
            None => max_connections as f64,
            Some(r) => r.parse::<f64>().map_err(|_| bad())?,
        };
        if !(accept_rate_per_second.is_finite() && accept_rate_per_second > 0.0) {
            return Err(bad());
        }
        Ok(AddressRule {
            network,
            limit: AddressLimit {
                max_connections,
                accept_rate_per_second,
            },
        })
    }
}

impl fmt::Display for AddressRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}={}/{}",
            self.network, self.limit.max_connections, self.limit.accept_rate_per_second
        )
    }
}

/// Parses a comma-separated list of rules (`CIDR=N[/RATE], ...`).
pub fn parse_rules(text: &str) -> Result<Vec<AddressRule>, AddressRuleError> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(str::parse)
        .collect()
}

/// The per-address limits: a default and overrides by network.
#[derive(Debug, Clone, PartialEq)]
pub struct PerAddress {
    /// For addresses no override covers.
    pub default: AddressLimit,
    /// The longest prefix containing an address wins.
    pub overrides: Vec<AddressRule>,
}

impl Default for PerAddress {
    /// No limit per address (the daemon's configuration sets one).
    fn default() -> Self {
        PerAddress {
            default: AddressLimit::UNLIMITED,
            overrides: Vec::new(),
        }
    }
}

impl PerAddress {
    /// The limit that applies to `ip`.
    pub fn limit_for(&self, ip: IpAddr) -> AddressLimit {
        self.overrides
            .iter()
            .filter(|rule| rule.network.contains(ip))
            .max_by_key(|rule| rule.network.prefix())
            .map_or(self.default, |rule| rule.limit)
    }
}

struct Entry {
    open: usize,
    tokens: f64,
    refilled: Instant,
}

/// What counts as one source: an IPv4 address, or an IPv6 /64 (a host
/// picks any address in its /64 at will, SLAAC privacy addresses rotate).
pub fn source_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        v4 => v4,
    }
}

/// Entries past which the table drops addresses with nothing open and a
/// full bucket (they would start from a full bucket anyway).
const PRUNE_ABOVE: usize = 4096;

/// The listener's live table: connections open and tokens per address.
#[derive(Clone)]
pub struct AddressTable {
    limits: Arc<PerAddress>,
    entries: Arc<Mutex<HashMap<IpAddr, Entry>>>,
}

/// Holds one connection's place in its address's count until dropped.
pub struct AddressGuard {
    ip: IpAddr,
    /// The table it is counted in; `None` when its address is unlimited
    /// (not counted, and nothing to hold per connection).
    entries: Option<Arc<Mutex<HashMap<IpAddr, Entry>>>>,
}

impl AddressTable {
    /// An empty table applying `limits`.
    pub fn new(limits: PerAddress) -> AddressTable {
        AddressTable {
            limits: Arc::new(limits),
            entries: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Admits one more connection from `ip` at `now`, or says which
    /// per-address limit refuses it.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<AddressGuard, RefuseReason> {
        let limit = self.limits.limit_for(ip);
        let ip = source_key(ip);
        if limit == AddressLimit::UNLIMITED {
            return Ok(AddressGuard { ip, entries: None });
        }
        let burst = limit.max_connections as f64;
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() > PRUNE_ABOVE {
            entries.retain(|_, e| {
                let tokens = e.tokens
                    + now.saturating_duration_since(e.refilled).as_secs_f64()
                        * limit.accept_rate_per_second;
                e.open > 0 || tokens < burst
            });
        }
        let entry = entries.entry(ip).or_insert(Entry {
            open: 0,
            tokens: burst,
            refilled: now,
        });
        let elapsed = now.saturating_duration_since(entry.refilled).as_secs_f64();
        entry.tokens = (entry.tokens + elapsed * limit.accept_rate_per_second).min(burst);
        entry.refilled = now;
        if entry.open >= limit.max_connections {
            return Err(RefuseReason::AddressConnections);
        }
        if entry.tokens < 1.0 {
            return Err(RefuseReason::AddressRateLimit);
        }
        entry.tokens -= 1.0;
        entry.open += 1;
        Ok(AddressGuard {
            ip,
            entries: Some(self.entries.clone()),
        })
    }

    /// The same table (its open counts and tokens) applying new `limits`
    /// from now on (a reload).
    pub fn with_limits(&self, limits: PerAddress) -> AddressTable {
        AddressTable {
            limits: Arc::new(limits),
            entries: self.entries.clone(),
        }
    }

    /// Connections open from `ip` (for tests and status).
    pub fn open(&self, ip: IpAddr) -> usize {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&source_key(ip)).map_or(0, |e| e.open)
    }
}

impl Drop for AddressGuard {
    fn drop(&mut self) {
        let Some(entries) = &self.entries else {
            return;
        };
        let mut entries = entries.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = entries.get_mut(&self.ip) {
            entry.open = entry.open.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn cidrs_parse_and_contain() {
        let net: Cidr = "10.0.5.0/24".parse().unwrap();
        assert!(net.contains(ip("10.0.5.200")));
        assert!(!net.contains(ip("10.0.6.1")));
        assert!(net.contains(ip("::ffff:10.0.5.7")), "IPv4-mapped");
        let host: Cidr = "192.168.1.10".parse().unwrap();
        assert_eq!(host.prefix(), 32);
        assert!("0.0.0.0/0".parse::<Cidr>().unwrap().contains(ip("8.8.8.8")));
        assert!("fd00::/8".parse::<Cidr>().unwrap().contains(ip("fd12::1")));
        assert!("[::1]".parse::<Cidr>().unwrap().contains(ip("::1")));
        for bad in [
            "10.0.5.0/33",
            "::/129",
            "10.0.5/24",
            "x",
            "10.0.0.1/",
            "10.0.0.1/+8",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_longest_prefix_wins() {
        let limits = PerAddress {
            default: AddressLimit {
                max_connections: 4,
                accept_rate_per_second: 1.0,
            },
            overrides: parse_rules("10.0.0.0/8=100/10, 10.0.5.0/24=1000").unwrap(),
        };
        assert_eq!(limits.limit_for(ip("10.1.1.1")).max_connections, 100);
        assert_eq!(limits.limit_for(ip("10.0.5.1")).max_connections, 1000);
        assert_eq!(
            limits.limit_for(ip("10.0.5.1")).accept_rate_per_second,
            1000.0
        );
        assert_eq!(limits.limit_for(ip("192.168.0.1")).max_connections, 4);
        assert!(parse_rules("10.0.0.0/8=0").is_err());
        assert!(parse_rules("10.0.0.0/8").is_err());
        assert!(parse_rules("10.0.0.0/8=5/-1").is_err());
        assert!(parse_rules("10.0.0.0/8=5/inf").is_err());
        assert_eq!(parse_rules(" ").unwrap(), vec![]);
    }

    #[test]
    fn one_address_cannot_take_more_than_its_share() {
        let table = AddressTable::new(PerAddress {
            default: AddressLimit {
                max_connections: 3,
                accept_rate_per_second: 1.0,
            },
            overrides: parse_rules("127.0.0.9=10/100").unwrap(),
        });
        let now = Instant::now();
        let held: Vec<_> = (0..3)
            .map(|_| table.admit(ip("127.0.0.2"), now).unwrap())
            .collect();
        assert!(matches!(
            table.admit(ip("127.0.0.2"), now),
            Err(RefuseReason::AddressConnections)
        ));
        // Another address is not affected; the override gives more.
        assert!(table.admit(ip("127.0.0.3"), now).is_ok());
        let many: Vec<_> = (0..10)
            .map(|_| table.admit(ip("127.0.0.9"), now).unwrap())
            .collect();
        assert_eq!(table.open(ip("127.0.0.9")), 10);
        drop(many);
        // Closing frees the slots, but the bucket is empty: rate-limited
        // until it refills (one per second here).
        drop(held);
        assert_eq!(table.open(ip("127.0.0.2")), 0);
        assert!(matches!(
            table.admit(ip("127.0.0.2"), now),
            Err(RefuseReason::AddressRateLimit)
        ));
        assert!(
            table
                .admit(ip("127.0.0.2"), now + Duration::from_secs(1))
                .is_ok()
        );
    }

    #[test]
    fn an_ipv6_host_cannot_dodge_its_cap_by_changing_address() {
        let table = AddressTable::new(PerAddress {
            default: AddressLimit {
                max_connections: 2,
                accept_rate_per_second: 100.0,
            },
            overrides: Vec::new(),
        });
        let now = Instant::now();
        let _a = table.admit(ip("fd00:1:2:3::1"), now).unwrap();
        let _b = table.admit(ip("fd00:1:2:3:ffff::2"), now).unwrap();
        assert!(matches!(
            table.admit(ip("fd00:1:2:3:abcd::9"), now),
            Err(RefuseReason::AddressConnections)
        ));
        assert!(table.admit(ip("fd00:1:2:4::1"), now).is_ok(), "another /64");
        assert_eq!(source_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    proptest! {
        /// Any text: parsing never panics, and a rule that parses prints as
        /// text that parses back to the same rule.
        #[test]
        fn rules_round_trip(text in "[0-9a-f.:/=, \\[\\]]{0,40}") {
            if let Ok(rules) = parse_rules(&text) {
                let shown: Vec<String> = rules.iter().map(ToString::to_string).collect();
                prop_assert_eq!(parse_rules(&shown.join(",")).unwrap(), rules);
            }
        }

        #[test]
        fn an_address_is_in_its_own_networks(a in any::<u32>(), prefix in 0u8..=32, b in any::<u32>()) {
            let net: Cidr = format!("{}/{prefix}", std::net::Ipv4Addr::from(a)).parse().unwrap();
            prop_assert!(net.contains(IpAddr::from(std::net::Ipv4Addr::from(a))));
            let same_prefix = prefix == 0 || (a ^ b) >> (32 - u32::from(prefix)) == 0;
            prop_assert_eq!(net.contains(IpAddr::from(std::net::Ipv4Addr::from(b))), same_prefix);
        }
    }
}
