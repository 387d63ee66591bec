//! Configuration: one typed schema filled from four layers, later wins:
//! built-in defaults < JSON file < environment variables < command-line flags.
//!
//! Every key is declared once, in the table of `keys.rs`: its field and type
//! in [`Config`], default, kind of value, environment variables and flag.
//! The keys, with what each allows, are listed in README's configuration
//! table (a test keeps the two in step) and by `check-config`.
//!
//! Every value from every layer is checked, even one a later layer
//! overrides, and all problems are reported together, each naming the key,
//! the layer it came from, the bad value (never a secret's) and what is
//! allowed. [`Config::load`] takes the flags and a lookup function for the
//! environment, so tests never touch the process environment.
//!
//! The file itself is named by `--config FILE` or, failing that, by the
//! environment variable `CONFIG_FILE`; without either there is no file
//! layer (there is no implicit path).
//!
//! # Rules
//!
//! - **File**: one JSON object. Unknown keys and keys given twice are
//!   refused. `null` is accepted for every key and means the same as leaving
//!   the key out (the default applies: the file is the only layer above the
//!   defaults, so there is nothing else `null` could restore). Numbers must be
//!   JSON numbers and names JSON strings; whole-number keys refuse fractions.
//! - **Environment**: a variable set to the empty string counts as unset, so
//!   `Environment=POOL_HOST=` or an unfilled `${VAR}` in a compose file does
//!   not override the file. Values are not trimmed. `LISTEN_HOST` and
//!   `LISTEN_PORT` (likewise `METRICS_*` and `POOL_*`) each replace only their
//!   half of the address from the layers below.
//! - **Flags**: an empty value is an error.
//! - Levels and names are matched ASCII case-insensitively.
//! - `metrics_token` is a secret: it is never printed, in errors nor in
//!   [`Config::effective_json`], which shows [`SECRET_MASK`]. Prefer the file
//!   or `METRICS_TOKEN` to `--metrics-token`: a flag is visible to every user
//!   in the process list.
//! - `listen` and `metrics_listen` may not be the same port on overlapping
//!   addresses (port 0 excepted).

mod error;
mod file;
pub(crate) mod keys;
mod kinds;

use std::collections::HashMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::time::Duration;

use log::LevelFilter;
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::Value;

pub use error::{ConfigError, Layer};
pub use file::MAX_CONFIG_FILE_BYTES;
pub(crate) use keys::config_keys;
use kinds::{
    AddressRules, Choice, Count, Kind, Listen, ListenList, Pool, PoolList, Rate, Raw, RouteList,
    Seconds, SecondsUpTo, Switch, Token,
};

use crate::logging::LogFormat;
// The relay's limits are defined once, with the relay's public API.
use crate::relay::keepalive;
use crate::relay::limits;
use crate::relay::per_address::AddressRule;
use crate::relay::pools::{
    DEFAULT_BALANCE_TOLERANCE, DEFAULT_CHECK_INTERVAL, DEFAULT_FAILBACK_AFTER,
    DEFAULT_FAILOVER_WAIT, DEFAULT_FALL, DEFAULT_MOVE_RATE_PER_SECOND, DEFAULT_RISE,
    DEFAULT_STALL_FACTOR, HealthPolicy, PoolSpec, ProbeKind, Route,
};
use crate::relay::upstream::PoolAddr;
use crate::relay::{AddressLimit, Keepalive, Limits, PerAddress};

/// Default miner-facing listen address.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 3333));
/// Default address of the HTTP server for `/metrics`, `/healthz`, `/status`.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 9100));
/// Default log level.
pub const DEFAULT_LOG_LEVEL: LevelFilter = LevelFilter::Info;
/// Default log format.
pub const DEFAULT_LOG_FORMAT: LogFormat = LogFormat::Auto;
/// Default limit of simultaneously open miner connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = limits::DEFAULT_MAX_CONNECTIONS;
/// Largest accepted `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Default token-bucket refill rate for accepting connections, per second.
pub const DEFAULT_ACCEPT_RATE_PER_SECOND: f64 = limits::DEFAULT_ACCEPT_RATE_PER_SECOND;
/// Largest accepted `accept_rate_per_second`.
pub const MAX_ACCEPT_RATE_PER_SECOND: f64 = 1_000_000.0;
/// Default token-bucket size (connections accepted at once after a pause).
pub const DEFAULT_ACCEPT_BURST: u32 = limits::DEFAULT_ACCEPT_BURST;
/// Largest accepted `accept_burst`.
pub const MAX_ACCEPT_BURST: u32 = 1_000_000;
/// Default connections one source address may hold (an ASIC opens one or
/// two; give upstream proxies and NAT'd racks more with `address_overrides`).
pub const DEFAULT_MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Default new connections per second one source address may open,
/// sustained (its burst is its connection cap).
pub const DEFAULT_ACCEPT_RATE_PER_ADDRESS: f64 = 4.0;
/// Default silence before the first TCP keepalive probe.
pub const DEFAULT_TCP_KEEPALIVE_IDLE: Duration = keepalive::DEFAULT_KEEPALIVE_IDLE;
/// Default time between TCP keepalive probes.
pub const DEFAULT_TCP_KEEPALIVE_INTERVAL: Duration = keepalive::DEFAULT_KEEPALIVE_INTERVAL;
/// Default unanswered keepalive probes before a connection is dropped.
pub const DEFAULT_TCP_KEEPALIVE_PROBES: u32 = keepalive::DEFAULT_KEEPALIVE_PROBES;
/// Largest accepted `tcp_keepalive_probes` (the kernel's limit is 127).
pub const MAX_TCP_KEEPALIVE_PROBES: u32 = 127;
/// Default `TCP_USER_TIMEOUT`.
pub const DEFAULT_TCP_USER_TIMEOUT: Duration = keepalive::DEFAULT_USER_TIMEOUT;
/// Default time to open the upstream TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = limits::DEFAULT_CONNECT_TIMEOUT;
/// Default time a relay may pass with no byte from the miner.
pub const DEFAULT_IDLE_TIMEOUT: Duration = limits::DEFAULT_IDLE_TIMEOUT;
/// Default time for a miner to send its first line after connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = limits::DEFAULT_HANDSHAKE_TIMEOUT;
/// Default time open relays may finish after SIGTERM before being closed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Largest accepted `shutdown_grace_seconds`: below the unit's
/// `TimeoutStopSec=45s`, so systemd never kills a drain that is still within
/// its grace (`.ci/systemd.sh` checks the unit against this value).
pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(40);
/// Default time after which a request without response (e.g. a submit)
/// stops being waited for and is counted as expired.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Default window over which `/healthz` judges upstream reachability.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(60);
/// Longest accepted value of any `*_seconds` key: 30 days.
pub const MAX_DURATION: Duration = Duration::from_secs(30 * 24 * 3600);
/// Default source of the `client_id` metric label.
pub const DEFAULT_CLIENT_ID: ClientIdMode = ClientIdMode::Account;
/// Default number of distinct `client_id` labels before new ones count as `_other`.
pub const DEFAULT_CLIENT_ID_CAP: usize = 1000;
/// Largest accepted `client_id_cap`.
pub const MAX_CLIENT_ID_CAP: usize = 100_000;
/// Default number of executor threads for the relay.
pub const DEFAULT_THREADS: usize = 1;
/// Largest accepted `threads`.
pub const MAX_THREADS: usize = 64;
/// Default number of HTTP worker threads.
pub const DEFAULT_HTTP_THREADS: usize = 2;
/// Largest accepted `http_threads`.
pub const MAX_HTTP_THREADS: usize = 16;
/// Longest accepted `metrics_token`, in bytes.
pub const MAX_TOKEN_BYTES: usize = 4096;
/// What is shown instead of a secret's value.
pub const SECRET_MASK: &str = "********";
/// Environment variable naming the configuration file (after `--config`).
pub const CONFIG_FILE_VAR: &str = "CONFIG_FILE";

/// Where the `client_id` metric label comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIdMode {
    /// The authorized user name up to the first '.' (the account).
    Account,
    /// The whole authorized user name (account.worker).
    Worker,
    /// The miner's IP address.
    PeerIp,
    /// One label for everyone (per-client metrics effectively off).
    None,
}

impl ClientIdMode {
    /// Every mode, in the order shown in messages.
    pub const ALL: [ClientIdMode; 4] = [
        ClientIdMode::Account,
        ClientIdMode::Worker,
        ClientIdMode::PeerIp,
        ClientIdMode::None,
    ];

    /// The configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ClientIdMode::Account => "account",
            ClientIdMode::Worker => "worker",
            ClientIdMode::PeerIp => "peer_ip",
            ClientIdMode::None => "none",
        }
    }
}

impl fmt::Display for ClientIdMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A secret string whose `Debug` and `Display` print [`SECRET_MASK`].
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The secret itself. Use only to compare, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` equals the secret, in time independent of where
    /// they first differ (it still depends on the length).
    pub fn matches(&self, candidate: &[u8]) -> bool {
        let secret = self.0.as_bytes();
        if secret.len() != candidate.len() {
            return false;
        }
        secret
            .iter()
            .zip(candidate)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }

    /// Whether an `Authorization` header value is `Bearer <this secret>`
    /// (scheme case-insensitive, as HTTP defines it).
    pub fn matches_bearer(&self, authorization: &str) -> bool {
        match authorization.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                self.matches(token.trim_start_matches(' ').as_bytes())
            }
            _ => false,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_MASK)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(SECRET_MASK)
    }
}

/// Makes [`Config`], [`KEYS`], the resolution of every key and the
/// effective configuration from the table of keys.
macro_rules! define_config {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident => $field:ident : $ty:ty = $default:expr, $kind:expr,
            env [$($env:literal),*], flag $arg:literal [$($flagty:tt)*] $help:literal $reload:ident;
    )*) => {
        /// The validated configuration.
        #[derive(Debug, Clone, PartialEq)]
        pub struct Config {
            $( $(#[doc = $doc])* pub $field: $ty, )*
        }

        /// Every key of the JSON file, in the order of the schema.
        pub const KEYS: [&str; KEY_COUNT] = [$(stringify!($key)),*];

        /// How many keys the schema has.
        pub const KEY_COUNT: usize = [$(stringify!($key)),*].len();

        /// Every key's environment variables, in the order of the schema.
        pub const ENV_VARS: &[(&str, &[&str])] = &[$((stringify!($key), &[$($env),*])),*];

        /// Whether the key's values are secrets (never shown).
        fn is_secret(key: &str) -> bool {
            $( if key == stringify!($key) { return Kind::secret(&$kind); } )*
            false
        }

        impl Resolver<'_> {
            /// Resolves every key of the table in order; `None` when a
            /// required one is set nowhere.
            fn resolve_keys(&mut self, flags: &FlagLayer) -> Option<Config> {
                $(
                    let $field = self.layered(
                        stringify!($key), $default, &$kind, &[$($env),*], flags,
                    );
                )*
                Some(Config { $( $field: $field?, )* })
            }
        }

        /// Whether a reload (`SIGHUP`) applies `key` to a running relay
        /// (the others take effect at start).
        pub fn is_reloadable(key: &str) -> bool {
            $( if key == stringify!($key) { return stringify!($reload) == "live"; } )*
            false
        }

        impl Config {
            /// This configuration with every reloadable key's value taken
            /// from `new` (what a reload applies).
            pub fn with_reloaded(&self, new: &Config) -> Config {
                let mut out = self.clone();
                $( if stringify!($reload) == "live" { out.$field = new.$field.clone(); } )*
                out
            }
        }

        impl Serialize for Config {
            /// The file format with keys in schema order and the secret masked.
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(KEYS.len()))?;
                $( map.serialize_entry(stringify!($key), &Kind::json(&$kind, &self.$field))?; )*
                map.end()
            }
        }
    };
}

config_keys!(define_config);

/// The command-line layer: each key's flag values as typed, so a bad one can
/// be reported as coming from its flag.
#[derive(Default, Clone)]
pub struct FlagLayer {
    /// `--config FILE`.
    pub config: Option<String>,
    /// Flags given, by key, each with its values in order; add with
    /// [`FlagLayer::push`] or [`FlagLayer::with`], which check the key.
    pub values: Vec<(&'static str, Vec<String>)>,
}

impl FlagLayer {
    /// Adds the values of `key`'s flag (in the order given); an empty list
    /// means the flag was not given.
    ///
    /// # Panics
    /// If `key` is not one of [`KEYS`] (a programming error).
    pub fn push(&mut self, key: &str, values: Vec<String>) {
        let key = KEYS
            .iter()
            .find(|k| **k == key)
            .unwrap_or_else(|| panic!("no configuration key {key:?}"));
        if !values.is_empty() {
            self.values.retain(|(k, _)| k != key);
            self.values.push((key, values));
        }
    }

    /// This layer with `key`'s flag given once as `value`.
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.push(key, vec![value.into()]);
        self
    }

    /// The values given to `key`'s flag, in order.
    pub fn get(&self, key: &str) -> &[String] {
        self.values
            .iter()
            .find(|(k, _)| *k == key)
            .map_or(&[], |(_, values)| values.as_slice())
    }
}

impl fmt::Debug for FlagLayer {
    // Hand-written so a secret never reaches a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("FlagLayer");
        s.field("config", &self.config);
        for (key, values) in &self.values {
            if is_secret(key) {
                s.field(key, &SECRET_MASK);
            } else {
                s.field(key, values);
            }
        }
        s.finish()
    }
}

/// Reads one variable from the process environment; non-UTF-8 bytes become
/// U+FFFD, so such a value is reported as invalid rather than ignored.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var_os(name).map(|value| value.to_string_lossy().into_owned())
}

impl Config {
    /// Builds the configuration from defaults, the file named by
    /// `flags.config` or `CONFIG_FILE`, the environment (`env(name)` returns a
    /// variable's value) and `flags`; returns every problem found.
    pub fn load(
        flags: &FlagLayer,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        let mut resolver = Resolver {
            file: None,
            env,
            errors: Vec::new(),
            layers: HashMap::new(),
        };
        resolver.read_file(flags);
        let mut config = resolver.resolve_keys(flags);
        if let Some(config) = &mut config {
            resolver.validate(config);
        }
        match config {
            Some(config) if resolver.errors.is_empty() => Ok(config),
            _ => Err(resolver.errors),
        }
    }

    /// The effective configuration as JSON, in the file's format (it parses
    /// back to the same configuration), with the secret masked: for
    /// `check-config` and `/status`.
    pub fn effective_json(&self) -> Value {
        // Serializing this struct to a Value cannot fail.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The pools in order: `pools` as given, or `pool` as a primary
    /// (priority 0) and backups (priority 1, 2, …), each named by its
    /// address, weight 1.
    pub fn pool_specs(&self) -> Vec<PoolSpec> {
        if !self.pools.is_empty() {
            return self.pools.clone();
        }
        self.pool
            .iter()
            .enumerate()
            .map(|(i, addr)| PoolSpec {
                name: addr.label(),
                addr: addr.clone(),
                priority: i as u32,
                weight: 1,
            })
            .collect()
    }

    /// The relay's limits.
    pub fn limits(&self) -> Limits {
        Limits {
            max_connections: self.max_connections,
            accept_rate_per_second: self.accept_rate_per_second,
            accept_burst: self.accept_burst,
            connect_timeout: self.connect_timeout,
            idle_timeout: self.idle_timeout,
            handshake_timeout: self.handshake_timeout,
            keepalive: Keepalive {
                idle: self.tcp_keepalive_idle,
                interval: self.tcp_keepalive_interval,
                probes: self.tcp_keepalive_probes,
                user_timeout: self.tcp_user_timeout,
            },
            per_address: PerAddress {
                default: AddressLimit {
                    max_connections: self.max_connections_per_address,
                    accept_rate_per_second: self.accept_rate_per_address,
                },
                overrides: self.address_overrides.clone(),
            },
        }
    }

    /// The pools' health thresholds.
    pub fn health_policy(&self) -> HealthPolicy {
        HealthPolicy {
            fall: self.pool_fall,
            rise: self.pool_rise,
            check_interval: self.pool_check_interval,
            probe: self.pool_probe,
            probe_timeout: self.connect_timeout,
            stall_factor: self.pool_stall_factor,
            failover_wait: self.failover_wait,
            failback_after: (!self.failback_after.is_zero()).then_some(self.failback_after),
            move_rate_per_second: self.move_rate_per_second,
            reconnect_message: self.reconnect_message,
            balance_tolerance: self.balance_tolerance,
            ..HealthPolicy::default()
        }
    }

    /// [`Config::effective_json`] as indented text with keys in schema order.
    pub fn effective_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

struct Resolver<'e> {
    file: Option<file::FileLayer>,
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
    /// The layer each resolved key's value came from.
    layers: HashMap<&'static str, Layer>,
}

impl Resolver<'_> {
    /// Reads and checks the file named by `--config` or `CONFIG_FILE`.
    fn read_file(&mut self, flags: &FlagLayer) {
        let (path, named_by) = match (&flags.config, self.env_value(CONFIG_FILE_VAR)) {
            (Some(path), _) => (PathBuf::from(path), Layer::Flag("config")),
            (None, Some(path)) => (PathBuf::from(path), Layer::Env(CONFIG_FILE_VAR)),
            (None, None) => return,
        };
        self.file = file::FileLayer::read(path, named_by, &mut self.errors);
    }

    /// An environment variable's value; empty counts as unset.
    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.is_empty())
    }

    /// Parses one layer's value, recording an error on failure.
    fn check<K: Kind>(
        &mut self,
        key: &'static str,
        layer: Layer,
        raw: Raw<'_>,
        kind: &K,
    ) -> Option<K::Value> {
        match kind.parse(raw) {
            Ok(value) => Some(value),
            Err(problem) => {
                self.invalid(key, layer, raw, kind.secret(), problem, kind.allowed());
                None
            }
        }
    }

    fn invalid(
        &mut self,
        key: &'static str,
        layer: Layer,
        raw: Raw<'_>,
        secret: bool,
        problem: Option<String>,
        allowed: String,
    ) {
        self.errors.push(ConfigError::InvalidValue {
            key,
            layer,
            value: if secret {
                "(secret value not shown)".to_string()
            } else {
                raw.shown()
            },
            problem,
            allowed,
        });
    }

    /// Resolves one key through every layer; `None` only when it has no
    /// default and no layer set it. Every layer's value is checked.
    fn layered<K: Kind>(
        &mut self,
        key: &'static str,
        default: Option<K::Value>,
        kind: &K,
        env_vars: &[&'static str],
        flags: &FlagLayer,
    ) -> Option<K::Value> {
        let mut current = default;
        let mut layer = Layer::Default;
        let file_value = self.file.as_ref().and_then(|file| {
            let value = file.values.get(key)?.clone();
            Some((value, Layer::File(file.path.clone())))
        });
        if let Some((value, file_layer)) = file_value
            && let Some(parsed) = self.check(key, file_layer.clone(), Raw::Json(&value), kind)
        {
            current = Some(parsed);
            layer = file_layer;
        }
        let vars: Vec<(&'static str, String)> = env_vars
            .iter()
            .filter_map(|var| self.env_value(var).map(|value| (*var, value)))
            .collect();
        let mut incomplete = None;
        if !vars.is_empty() {
            let given: Vec<(&'static str, &str)> = vars
                .iter()
                .map(|(var, text)| (*var, text.as_str()))
                .collect();
            let result = kind.env(current.as_ref(), &given);
            for problem in result.problems {
                let text = given.iter().find(|(var, _)| *var == problem.var);
                let text = text.map_or("", |(_, text)| text);
                let layer = Layer::Env(problem.var);
                self.invalid(
                    key,
                    layer,
                    Raw::Text(text),
                    kind.secret(),
                    problem.problem,
                    problem.allowed,
                );
            }
            if let Some((value, var)) = result.value {
                current = Some(value);
                layer = Layer::Env(var);
            }
            incomplete = result.incomplete;
        }
        let given = flags.get(key);
        let parsed: Vec<K::Value> = given
            .iter()
            .filter_map(|text| self.check(key, Layer::Flag(key), Raw::Text(text), kind))
            .collect();
        if !given.is_empty()
            && parsed.len() == given.len()
            && let Some(value) = kind.combine(parsed)
        {
            current = Some(value);
            layer = Layer::Flag(key);
        }
        if let Some(how) = incomplete {
            self.push_missing_unless_invalid(key, how);
        }
        if current.is_none() {
            self.push_missing_unless_invalid(key, kind.missing());
        } else {
            self.layers.insert(key, layer);
        }
        current
    }

    /// The layer `key`'s value came from.
    fn layer_of(&self, key: &str) -> Layer {
        self.layers.get(key).cloned().unwrap_or(Layer::Default)
    }

    /// Reports a missing key unless one of its values was already refused
    /// or the file could not be used (then "missing" would only repeat that
    /// error, or be wrong: the key may well be in the file).
    fn push_missing_unless_invalid(&mut self, key: &'static str, how: String) {
        let refused = self.errors.iter().any(|e| match e {
            ConfigError::InvalidValue { key: k, .. } => *k == key,
            ConfigError::FileUnreadable { .. } | ConfigError::FileSyntax { .. } => true,
            _ => false,
        });
        if !refused {
            self.errors.push(ConfigError::Missing { key, how });
        }
    }

    /// Checks what involves several keys at once; settles `pool` against
    /// `pools` (the one from the higher layer wins; both from one layer is
    /// an error).
    fn validate(&mut self, config: &mut Config) {
        let rank = |layer: &Layer| match layer {
            Layer::Default => 0,
            Layer::File(_) => 1,
            Layer::Env(_) => 2,
            Layer::Flag(_) => 3,
        };
        match (config.pool.is_empty(), config.pools.is_empty()) {
            (true, true) => {
                let reported = self.errors.iter().any(|e| e.key() == Some("pool"));
                if !reported {
                    self.push_missing_unless_invalid(
                        "pool",
                        format!("no default; {}", kinds::POOL_WAYS),
                    );
                }
            }
            (false, false) => {
                let (pool, pools) = (self.layer_of("pool"), self.layer_of("pools"));
                match rank(&pool).cmp(&rank(&pools)) {
                    std::cmp::Ordering::Greater => config.pools.clear(),
                    std::cmp::Ordering::Less => config.pool.clear(),
                    std::cmp::Ordering::Equal => self.errors.push(ConfigError::InvalidValue {
                        key: "pools",
                        layer: pools,
                        value: "(a list)".to_string(),
                        problem: Some("\"pool\" is set in the same layer".to_string()),
                        allowed: "either \"pool\" (primary and backups) or \"pools\", not both"
                            .to_string(),
                    }),
                }
            }
            _ => {}
        }
        if let Some(listen) = config
            .listen
            .iter()
            .find(|listen| ports_collide(**listen, config.metrics_listen))
        {
            self.errors.push(ConfigError::InvalidValue {
                key: "metrics_listen",
                layer: self.layer_of("metrics_listen"),
                value: format!("{:?}", config.metrics_listen.to_string()),
                problem: Some(format!(
                    "the same port as listen {} (from {})",
                    listen,
                    self.layer_of("listen")
                )),
                allowed: "an address and port that miners' listen address does not use".to_string(),
            });
        }
        let specs = config.pool_specs();
        if !specs.is_empty()
            && let Err(problem) = crate::relay::pools::validate(&specs, &config.routes)
        {
            let (key, value) = match &problem {
                crate::relay::pools::PoolsError::UnknownRouteTarget(name) => {
                    ("routes", name.clone())
                }
                _ => ("pools", String::new()),
            };
            self.errors.push(ConfigError::InvalidValue {
                key,
                layer: self.layer_of(key),
                value: format!("{value:?}"),
                problem: Some(problem.to_string()),
                allowed: "route targets that name configured pools (pool names: as in \"pools\", \
                          or HOST:PORT for \"pool\")"
                    .to_string(),
            });
        }
    }
}

/// Whether two listen addresses would fight over one port: the same nonzero
/// port, and the same IP or either a wildcard.
fn ports_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::kinds::{parse_count, parse_seconds};
    use super::*;
    use std::collections::HashMap;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn load_env(pairs: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
        Config::load(&FlagLayer::default(), &env_of(pairs))
    }

    fn messages(errors: &[ConfigError]) -> Vec<String> {
        errors.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_with_only_a_pool() {
        let config = load_env(&[("POOL_HOST", "pool.example.com"), ("POOL_PORT", "3333")]).unwrap();
        assert_eq!(config.listen, ["0.0.0.0:3333".parse().unwrap()]);
        assert_eq!(config.metrics_listen, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(config.pool[0].host(), "pool.example.com");
        assert_eq!(config.pool[0].port(), 3333);
        assert_eq!(config.log_level, LevelFilter::Info);
        assert_eq!(config.log_format, LogFormat::Auto);
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.accept_rate_per_second, 500.0);
        assert_eq!(config.accept_burst, 1000);
        assert_eq!(config.connect_timeout, Duration::from_secs(10));
        assert_eq!(config.idle_timeout, Duration::from_secs(900));
        assert_eq!(config.handshake_timeout, Duration::from_secs(30));
        assert_eq!(config.shutdown_grace, Duration::from_secs(30));
        assert_eq!(config.request_timeout, Duration::from_secs(60));
        assert_eq!(config.health_interval, Duration::from_secs(60));
        assert_eq!(config.client_id, ClientIdMode::Account);
        assert_eq!(config.client_id_cap, 1000);
        assert_eq!(config.threads, 1);
        assert_eq!(config.http_threads, 2);
        assert_eq!(config.metrics_token, None);
    }

    #[test]
    fn missing_pool_names_every_way_to_set_it() {
        let errors = load_env(&[]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert_eq!(
            errors[0].to_string(),
            "missing pool: no default; set \"pool\": \"HOST:PORT\" (or \"pools\") in the \
             configuration file, POOL_HOST and POOL_PORT in the environment, or --pool HOST:PORT"
        );
    }

    #[test]
    fn pool_host_without_port_is_missing_the_port() {
        let errors = load_env(&[("POOL_HOST", "pool.example.com")]).unwrap_err();
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .to_string()
                .starts_with("missing pool: the host is set but not the port; set POOL_PORT")
        );
    }

    #[test]
    fn env_host_and_port_replace_their_half() {
        let config = load_env(&[
            ("POOL_HOST", "::1"),
            ("POOL_PORT", "3334"),
            ("LISTEN_HOST", "[::]"),
            ("METRICS_PORT", "0"),
        ])
        .unwrap();
        assert_eq!(config.pool[0].to_string(), "[::1]:3334");
        assert_eq!(config.listen, ["[::]:3333".parse().unwrap()]);
        assert_eq!(config.metrics_listen, "0.0.0.0:0".parse().unwrap());
    }

    #[test]
    fn empty_env_counts_as_unset() {
        let config = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("LOG_LEVEL", ""),
            ("METRICS_TOKEN", ""),
        ])
        .unwrap();
        assert_eq!(config.log_level, LevelFilter::Info);
        assert_eq!(config.metrics_token, None);
    }

    #[test]
    fn every_bad_value_is_reported_with_layer_and_allowed() {
        let flags = FlagLayer::default()
            .with("threads", "0")
            .with("log_level", "loud");
        let env = env_of(&[
            ("POOL_HOST", "pool"),
            ("POOL_PORT", "70000"),
            ("IDLE_TIMEOUT_SECONDS", "-1"),
            ("METRICS_TOKEN", "has space"),
        ]);
        let errors = Config::load(&flags, &env).unwrap_err();
        let text = messages(&errors);
        assert_eq!(
            text,
            vec![
                "invalid pool from environment variable POOL_PORT: \"70000\" (out of range); allowed: a port number from 1 to 65535",
                "invalid log_level from flag --log-level: \"loud\"; allowed: off, error, warn, info, debug or trace",
                "invalid idle_timeout_seconds from environment variable IDLE_TIMEOUT_SECONDS: \"-1\" (out of range); allowed: a number of seconds greater than 0 and at most 2592000 (30 days)",
                "invalid threads from flag --threads: \"0\" (out of range); allowed: a whole number from 1 to 64",
                "invalid metrics_token from environment variable METRICS_TOKEN: (secret value not shown); allowed: 1 to 4096 visible ASCII characters without spaces",
            ]
        );
        assert!(!text.join("\n").contains("has space"));
    }

    #[test]
    fn shutdown_grace_may_be_zero_but_others_not() {
        let config = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
        ])
        .unwrap();
        assert_eq!(config.shutdown_grace, Duration::ZERO);
        let errors = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("CONNECT_TIMEOUT_SECONDS", "0"),
        ])
        .unwrap_err();
        assert_eq!(errors[0].key(), Some("connect_timeout_seconds"));
        let errors = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("REQUEST_TIMEOUT_SECONDS", "2592000.5"),
        ])
        .unwrap_err();
        assert_eq!(errors[0].key(), Some("request_timeout_seconds"));
        for bad in ["nan", "inf", "1e400", ""] {
            assert!(parse_seconds(Raw::Text(bad), true).is_err(), "{bad}");
        }
        assert_eq!(
            parse_seconds(Raw::Text("0.25"), false),
            Ok(Duration::from_millis(250))
        );
        assert_eq!(parse_seconds(Raw::Text("2592000"), false), Ok(MAX_DURATION));
    }

    #[test]
    fn listen_and_metrics_may_not_share_a_port() {
        let errors = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("METRICS_PORT", "3333"),
        ])
        .unwrap_err();
        assert_eq!(
            messages(&errors),
            vec![
                "invalid metrics_listen from environment variable METRICS_PORT: \"0.0.0.0:3333\" \
                 (the same port as listen 0.0.0.0:3333 (from default)); allowed: an address and port \
                 that miners' listen address does not use"
            ]
        );
        // Port 0 twice is fine: each gets its own free port.
        load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("METRICS_PORT", "0"),
            ("LISTEN_PORT", "0"),
        ])
        .unwrap();
        assert!(!ports_collide(
            "127.0.0.1:80".parse().unwrap(),
            "127.0.0.2:80".parse().unwrap()
        ));
        assert!(ports_collide(
            "127.0.0.1:80".parse().unwrap(),
            "[::]:80".parse().unwrap()
        ));
    }

    #[test]
    fn secret_never_prints() {
        let secret = Secret("hunter2-marker".into());
        assert_eq!(format!("{secret}"), "********");
        assert_eq!(format!("{secret:?}"), "********");
        let config = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("METRICS_TOKEN", "hunter2-marker"),
        ])
        .unwrap();
        assert!(!format!("{config:?}").contains("hunter2"));
        assert!(!config.effective_json().to_string().contains("hunter2"));
        assert_eq!(config.effective_json()["metrics_token"], "********");
        assert_eq!(
            config.metrics_token.as_ref().map(Secret::expose),
            Some("hunter2-marker")
        );
        let flags = FlagLayer::default().with("metrics_token", "hunter2-marker");
        assert!(!format!("{flags:?}").contains("hunter2"));
    }

    #[test]
    fn bearer_matching() {
        let secret = Secret("abc123".into());
        assert!(secret.matches_bearer("Bearer abc123"));
        assert!(secret.matches_bearer("bearer abc123"));
        assert!(!secret.matches_bearer("Bearer abc124"));
        assert!(!secret.matches_bearer("Bearer abc1234"));
        assert!(!secret.matches_bearer("Basic abc123"));
        assert!(!secret.matches_bearer("abc123"));
        assert!(!secret.matches_bearer(""));
    }

    #[test]
    fn the_mask_is_not_a_token() {
        let errors = load_env(&[
            ("POOL_HOST", "p"),
            ("POOL_PORT", "1"),
            ("METRICS_TOKEN", SECRET_MASK),
        ])
        .unwrap_err();
        assert_eq!(errors[0].key(), Some("metrics_token"));
        assert!(
            errors[0]
                .to_string()
                .contains("the mask check-config prints")
        );
    }

    #[test]
    fn effective_json_keys_are_the_schema() {
        let config = load_env(&[("POOL_HOST", "p"), ("POOL_PORT", "1")]).unwrap();
        let json = config.effective_json();
        let keys: Vec<&str> = json
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        let mut expected = KEYS.to_vec();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        // Pretty text keeps the schema order.
        let pretty = config.effective_json_pretty();
        let positions: Vec<usize> = KEYS
            .iter()
            .map(|k| pretty.find(&format!("\"{k}\"")).unwrap())
            .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{pretty}");
    }

    #[test]
    fn counts_refuse_fractions_and_strings_in_json() {
        assert_eq!(parse_count(Raw::Json(&serde_json::json!(5)), 1, 9), Ok(5));
        assert_eq!(
            parse_count(Raw::Json(&serde_json::json!(1.5)), 1, 9),
            Err(Some("not a whole number".into()))
        );
        assert_eq!(
            parse_count(Raw::Json(&serde_json::json!("5")), 1, 9),
            Err(Some("a JSON number is needed, not a string".into()))
        );
        assert_eq!(
            parse_count(Raw::Json(&serde_json::json!(-1)), 1, 9),
            Err(Some("not a whole number".into()))
        );
        assert_eq!(
            parse_count(Raw::Text("10"), 1, 9),
            Err(Some("out of range".into()))
        );
        assert_eq!(parse_count(Raw::Text("five"), 1, 9), Err(None));
    }

    #[test]
    fn readme_table_has_every_key_with_its_variables_and_flag() {
        let readme = include_str!("../../README.md");
        for (key, vars) in ENV_VARS {
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `{key}` |")))
                .unwrap_or_else(|| panic!("README's configuration table has no row for {key}"));
            for var in *vars {
                assert!(
                    row.contains(&format!("`{var}`")),
                    "{key}: no {var} in {row}"
                );
            }
            let flag = format!("`--{}`", key.replace('_', "-"));
            assert!(row.contains(&flag), "{key}: no {flag} in {row}");
        }
    }
}
