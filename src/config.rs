//! Configuration: one typed schema filled from four layers, later wins:
//! built-in defaults < JSON file < environment variables < command-line flags.
//!
//! Every value from every layer is checked, even one a later layer
//! overrides, and all problems are reported together, each naming the key,
//! the layer it came from, the bad value (never a secret's) and what is
//! allowed. [`Config::load`] takes the flags and a lookup function for the
//! environment, so tests never touch the process environment.
//!
//! # Keys
//!
//! | JSON key | environment | flag | default | allowed |
//! |---|---|---|---|---|
//! | `listen` | `LISTEN_HOST`, `LISTEN_PORT` | `--listen` | `0.0.0.0:3333` | IP socket address (`[v6]:port`); port 0 = any free port |
//! | `pool` | `POOL_HOST`, `POOL_PORT` | `--pool` | required | `host:port`, host a DNS name or IP, port 1–65535; `stratum+tcp://` prefix allowed |
//! | `metrics_listen` | `METRICS_HOST`, `METRICS_PORT` | `--metrics-listen` | `0.0.0.0:9100` | as `listen` |
//! | `log_level` | `LOG_LEVEL` | `--log-level` | `info` | `off`, `error`, `warn`, `info`, `debug`, `trace` |
//! | `log_format` | `LOG_FORMAT` | `--log-format` | `auto` | `auto`, `text`, `journald`, `json` |
//! | `max_connections` | `MAX_CONNECTIONS` | `--max-connections` | 10000 | 1–1000000 |
//! | `accept_rate_per_second` | `ACCEPT_RATE_PER_SECOND` | `--accept-rate-per-second` | 500 | > 0, ≤ 1000000 |
//! | `accept_burst` | `ACCEPT_BURST` | `--accept-burst` | 1000 | 1–1000000 |
//! | `connect_timeout_seconds` | `CONNECT_TIMEOUT_SECONDS` | `--connect-timeout-seconds` | 10 | > 0, ≤ 2592000 (30 days) |
//! | `idle_timeout_seconds` | `IDLE_TIMEOUT_SECONDS` | `--idle-timeout-seconds` | 900 | > 0, ≤ 30 days |
//! | `handshake_timeout_seconds` | `HANDSHAKE_TIMEOUT_SECONDS` | `--handshake-timeout-seconds` | 30 | > 0, ≤ 30 days |
//! | `shutdown_grace_seconds` | `SHUTDOWN_GRACE_SECONDS` | `--shutdown-grace-seconds` | 30 | ≥ 0, ≤ 30 days |
//! | `request_timeout_seconds` | `REQUEST_TIMEOUT_SECONDS` | `--request-timeout-seconds` | 60 | > 0, ≤ 30 days |
//! | `health_interval_seconds` | `HEALTH_INTERVAL_SECONDS` | `--health-interval-seconds` | 60 | > 0, ≤ 30 days |
//! | `client_id` | `CLIENT_ID` | `--client-id` | `account` | `account`, `worker`, `peer_ip`, `none` |
//! | `client_id_cap` | `CLIENT_ID_CAP` | `--client-id-cap` | 1000 | 1–100000 |
//! | `threads` | `THREADS` | `--threads` | 1 | 1–64 |
//! | `http_threads` | `HTTP_THREADS` | `--http-threads` | 2 | 1–16 |
//! | `metrics_token` | `METRICS_TOKEN` | `--metrics-token` | none | 1–4096 visible ASCII characters, no spaces |
//! | (the file) | `CONFIG_FILE` | `--config` | none | path of a JSON file |
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

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

use log::LevelFilter;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde_json::Value;

// The relay's limits are defined once, with the relay's public API.
use crate::relay::server;

use crate::logging::LogFormat;

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
pub const DEFAULT_MAX_CONNECTIONS: usize = server::DEFAULT_MAX_CONNECTIONS;
/// Largest accepted `max_connections`.
pub const MAX_MAX_CONNECTIONS: usize = 1_000_000;
/// Default token-bucket refill rate for accepting connections, per second.
pub const DEFAULT_ACCEPT_RATE_PER_SECOND: f64 = server::DEFAULT_ACCEPT_RATE_PER_SECOND;
/// Largest accepted `accept_rate_per_second`.
pub const MAX_ACCEPT_RATE_PER_SECOND: f64 = 1_000_000.0;
/// Default token-bucket size (connections accepted at once after a pause).
pub const DEFAULT_ACCEPT_BURST: u32 = server::DEFAULT_ACCEPT_BURST;
/// Largest accepted `accept_burst`.
pub const MAX_ACCEPT_BURST: u32 = 1_000_000;
/// Default time to open the upstream TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = server::DEFAULT_CONNECT_TIMEOUT;
/// Default time a relay may pass with no byte from the miner.
pub const DEFAULT_IDLE_TIMEOUT: Duration = server::DEFAULT_IDLE_TIMEOUT;
/// Default time for a miner to send its first line after connecting.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = server::DEFAULT_HANDSHAKE_TIMEOUT;
/// Default time open relays may finish after SIGTERM before being closed.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
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
/// Largest configuration file read, in bytes.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;
/// Environment variable naming the configuration file (after `--config`).
pub const CONFIG_FILE_VAR: &str = "CONFIG_FILE";

/// Every key of the JSON file, in the order of the schema.
pub const KEYS: [&str; 19] = [
    "listen",
    "pool",
    "metrics_listen",
    "log_level",
    "log_format",
    "max_connections",
    "accept_rate_per_second",
    "accept_burst",
    "connect_timeout_seconds",
    "idle_timeout_seconds",
    "handshake_timeout_seconds",
    "shutdown_grace_seconds",
    "request_timeout_seconds",
    "health_interval_seconds",
    "client_id",
    "client_id_cap",
    "threads",
    "http_threads",
    "metrics_token",
];

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Address miners connect to (port 0: any free port).
    pub listen: SocketAddr,
    /// The pool, as configured; resolved per connection by the relay.
    pub pool: PoolAddr,
    /// Address of the HTTP server (port 0: any free port).
    pub metrics_listen: SocketAddr,
    /// Most verbose level logged.
    pub log_level: LevelFilter,
    /// Log line format; `Auto` is decided by [`LogFormat::resolve`].
    pub log_format: LogFormat,
    /// Miner connections open at once; more are refused.
    pub max_connections: usize,
    /// Token-bucket refill rate for accepting connections, per second.
    pub accept_rate_per_second: f64,
    /// Token-bucket size for accepting connections.
    pub accept_burst: u32,
    /// Time to open the upstream TCP connection.
    pub connect_timeout: Duration,
    /// Time a relay may pass without a byte from the miner.
    pub idle_timeout: Duration,
    /// Time for a new miner to send its first line.
    pub handshake_timeout: Duration,
    /// Time open relays may finish after a stop signal (may be zero).
    pub shutdown_grace: Duration,
    /// Time after which a request without response counts as expired.
    pub request_timeout: Duration,
    /// Window over which `/healthz` judges upstream reachability.
    pub health_interval: Duration,
    /// Source of the `client_id` metric label.
    pub client_id: ClientIdMode,
    /// Distinct `client_id` labels kept before new ones count as `_other`.
    pub client_id_cap: usize,
    /// Executor threads for the relay.
    pub threads: usize,
    /// HTTP worker threads.
    pub http_threads: usize,
    /// Bearer token required by `/metrics` and `/status`, if any.
    pub metrics_token: Option<Secret>,
}

/// A pool address kept as configured: host name or IP, and port. Not
/// resolved here, since DNS answers change while the proxy runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolAddr {
    host: String,
    port: u16,
}

impl PoolAddr {
    /// The host: a DNS name, an IPv4 address or an IPv6 address (without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The TCP port, 1–65535.
    pub fn port(&self) -> u16 {
        self.port
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

/// The layer a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layer {
    /// The built-in default.
    Default,
    /// The JSON configuration file at this path.
    File(PathBuf),
    /// This environment variable.
    Env(&'static str),
    /// This command-line flag (with its dashes).
    Flag(&'static str),
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Layer::Default => f.write_str("default"),
            Layer::File(path) => write!(f, "file {}", path.display()),
            Layer::Env(name) => write!(f, "environment variable {name}"),
            Layer::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// One configuration problem. [`Config::load`] returns all of them.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigError {
    /// The configuration file could not be read.
    FileUnreadable {
        /// The path as given.
        path: PathBuf,
        /// Where the path came from (`--config` or `CONFIG_FILE`).
        named_by: Layer,
        /// The operating system's reason.
        reason: String,
    },
    /// The configuration file is not one JSON object.
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's reason, with line and column.
        reason: String,
    },
    /// The file has a key the schema does not know.
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The unknown key.
        key: String,
        /// A known key it probably meant.
        suggestion: Option<&'static str>,
    },
    /// The file has the same key twice.
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The repeated key.
        key: String,
    },
    /// A value is not allowed.
    InvalidValue {
        /// The configuration key.
        key: &'static str,
        /// Where the value came from.
        layer: Layer,
        /// The value as given (JSON text, or a quoted string); for a secret,
        /// a placeholder.
        value: String,
        /// What is wrong, when more specific than `allowed`.
        problem: Option<String>,
        /// What the key accepts.
        allowed: String,
    },
    /// A required key is set nowhere.
    Missing {
        /// The configuration key.
        key: &'static str,
        /// What is missing and the ways to set it.
        how: String,
    },
}

impl ConfigError {
    /// The configuration key the problem is about, when there is one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::DuplicateKey { key, .. } => {
                Some(key)
            }
            ConfigError::InvalidValue { key, .. } | ConfigError::Missing { key, .. } => Some(key),
            ConfigError::FileUnreadable { .. } | ConfigError::FileSyntax { .. } => None,
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::FileUnreadable {
                path,
                named_by,
                reason,
            } => write!(
                f,
                "cannot read configuration file {} (named by {named_by}): {reason}",
                path.display()
            ),
            ConfigError::FileSyntax { path, reason } => {
                write!(
                    f,
                    "configuration file {} is not valid: {reason}",
                    path.display()
                )
            }
            ConfigError::UnknownKey {
                path,
                key,
                suggestion,
            } => {
                write!(f, "unknown key {key:?} in file {}", path.display())?;
                if let Some(suggestion) = suggestion {
                    write!(f, " (did you mean {suggestion:?}?)")?;
                }
                write!(f, "; allowed keys: {}", KEYS.join(", "))
            }
            ConfigError::DuplicateKey { path, key } => write!(
                f,
                "key {key:?} appears more than once in file {}; give it once",
                path.display()
            ),
            ConfigError::InvalidValue {
                key,
                layer,
                value,
                problem,
                allowed,
            } => {
                write!(f, "invalid {key} from {layer}: {value}")?;
                if let Some(problem) = problem {
                    write!(f, " ({problem})")?;
                }
                write!(f, "; allowed: {allowed}")
            }
            ConfigError::Missing { key, how } => write!(f, "missing {key}: {how}"),
        }
    }
}

impl std::error::Error for ConfigError {}

/// The command-line layer: each flag's value as typed, so a bad one can be
/// reported as coming from its flag. `None` = flag not given.
#[derive(Default, Clone)]
pub struct FlagLayer {
    /// `--config FILE`.
    pub config: Option<String>,
    /// `--listen ADDR`.
    pub listen: Option<String>,
    /// `--pool HOST:PORT`.
    pub pool: Option<String>,
    /// `--metrics-listen ADDR`.
    pub metrics_listen: Option<String>,
    /// `--log-level LEVEL`.
    pub log_level: Option<String>,
    /// `--log-format FORMAT`.
    pub log_format: Option<String>,
    /// `--max-connections N`.
    pub max_connections: Option<String>,
    /// `--accept-rate-per-second R`.
    pub accept_rate_per_second: Option<String>,
    /// `--accept-burst N`.
    pub accept_burst: Option<String>,
    /// `--connect-timeout-seconds S`.
    pub connect_timeout_seconds: Option<String>,
    /// `--idle-timeout-seconds S`.
    pub idle_timeout_seconds: Option<String>,
    /// `--handshake-timeout-seconds S`.
    pub handshake_timeout_seconds: Option<String>,
    /// `--shutdown-grace-seconds S`.
    pub shutdown_grace_seconds: Option<String>,
    /// `--request-timeout-seconds S`.
    pub request_timeout_seconds: Option<String>,
    /// `--health-interval-seconds S`.
    pub health_interval_seconds: Option<String>,
    /// `--client-id MODE`.
    pub client_id: Option<String>,
    /// `--client-id-cap N`.
    pub client_id_cap: Option<String>,
    /// `--threads N`.
    pub threads: Option<String>,
    /// `--http-threads N`.
    pub http_threads: Option<String>,
    /// `--metrics-token TOKEN` (a secret).
    pub metrics_token: Option<String>,
}

impl fmt::Debug for FlagLayer {
    // Hand-written so the token never reaches a debug print.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FlagLayer")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("pool", &self.pool)
            .field(
                "metrics_token",
                &self.metrics_token.as_ref().map(|_| SECRET_MASK),
            )
            .finish_non_exhaustive()
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
        };
        resolver.read_file(flags);
        let config = resolver.resolve(flags);
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

    /// [`Config::effective_json`] as indented text with keys in schema order.
    pub fn effective_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

impl Serialize for Config {
    /// The file format with keys in schema order and the secret masked.
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut s = serializer.serialize_struct("Config", KEYS.len())?;
        s.serialize_field("listen", &self.listen.to_string())?;
        s.serialize_field("pool", &self.pool.to_string())?;
        s.serialize_field("metrics_listen", &self.metrics_listen.to_string())?;
        s.serialize_field("log_level", level_str(self.log_level))?;
        s.serialize_field("log_format", self.log_format.as_str())?;
        s.serialize_field("max_connections", &self.max_connections)?;
        s.serialize_field("accept_rate_per_second", &self.accept_rate_per_second)?;
        s.serialize_field("accept_burst", &self.accept_burst)?;
        s.serialize_field(
            "connect_timeout_seconds",
            &self.connect_timeout.as_secs_f64(),
        )?;
        s.serialize_field("idle_timeout_seconds", &self.idle_timeout.as_secs_f64())?;
        s.serialize_field(
            "handshake_timeout_seconds",
            &self.handshake_timeout.as_secs_f64(),
        )?;
        s.serialize_field("shutdown_grace_seconds", &self.shutdown_grace.as_secs_f64())?;
        s.serialize_field(
            "request_timeout_seconds",
            &self.request_timeout.as_secs_f64(),
        )?;
        s.serialize_field(
            "health_interval_seconds",
            &self.health_interval.as_secs_f64(),
        )?;
        s.serialize_field("client_id", self.client_id.as_str())?;
        s.serialize_field("client_id_cap", &self.client_id_cap)?;
        s.serialize_field("threads", &self.threads)?;
        s.serialize_field("http_threads", &self.http_threads)?;
        s.serialize_field(
            "metrics_token",
            &self.metrics_token.as_ref().map(|_| SECRET_MASK),
        )?;
        s.end()
    }
}

/// The configuration spelling of a level.
fn level_str(level: LevelFilter) -> &'static str {
    match level {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

/// A value as one layer gave it: JSON from the file, text from the
/// environment or a flag.
#[derive(Clone, Copy)]
enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Raw<'a> {
    /// The value for an error message, shortened if very long.
    fn shown(self) -> String {
        let text = match self {
            Raw::Json(value) => value.to_string(),
            Raw::Text(text) => format!("{text:?}"),
        };
        const LIMIT: usize = 120;
        if text.chars().count() > LIMIT {
            let cut: String = text.chars().take(LIMIT).collect();
            format!("{cut}… ({} characters)", text.chars().count())
        } else {
            text
        }
    }

    /// The text of a string value; `Err` with a problem for other JSON types.
    fn text(self) -> Result<&'a str, String> {
        match self {
            Raw::Text(text) => Ok(text),
            Raw::Json(Value::String(text)) => Ok(text),
            Raw::Json(other) => Err(format!("a JSON string is needed, not {}", json_kind(other))),
        }
    }
}

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A parser's verdict: the value, or an optional specific problem (the
/// key's `allowed` text is always added).
type Parsed<T> = Result<T, Option<String>>;

/// Parses a whole number in `min..=max`: a JSON integer, or decimal text.
fn parse_count(raw: Raw<'_>, min: u64, max: u64) -> Parsed<u64> {
    let number = match raw {
        Raw::Json(Value::Number(n)) => n
            .as_u64()
            .ok_or_else(|| Some("not a whole number".to_string()))?,
        Raw::Json(other) => {
            return Err(Some(format!(
                "a JSON number is needed, not {}",
                json_kind(other)
            )));
        }
        Raw::Text(text) => text.parse::<u64>().map_err(|_| None)?,
    };
    if (min..=max).contains(&number) {
        Ok(number)
    } else {
        Err(Some("out of range".to_string()))
    }
}

/// Parses a finite number `> 0` (or `>= 0` with `zero_allowed`) and `<= max`.
fn parse_positive(raw: Raw<'_>, zero_allowed: bool, max: f64) -> Parsed<f64> {
    let number = match raw {
        Raw::Json(Value::Number(n)) => n.as_f64().ok_or(None)?,
        Raw::Json(other) => {
            return Err(Some(format!(
                "a JSON number is needed, not {}",
                json_kind(other)
            )));
        }
        Raw::Text(text) => text.parse::<f64>().map_err(|_| None)?,
    };
    let low_ok = if zero_allowed {
        number >= 0.0
    } else {
        number > 0.0
    };
    if number.is_finite() && low_ok && number <= max {
        Ok(number)
    } else {
        Err(Some("out of range".to_string()))
    }
}

fn parse_seconds(raw: Raw<'_>, zero_allowed: bool) -> Parsed<Duration> {
    parse_positive(raw, zero_allowed, MAX_DURATION.as_secs_f64()).map(Duration::from_secs_f64)
}

fn parse_socket_addr(raw: Raw<'_>) -> Parsed<SocketAddr> {
    let text = raw.text().map_err(Some)?;
    text.parse::<SocketAddr>().map_err(|_| None)
}

/// Parses an IP for `*_HOST`: IPv4, IPv6 with or without brackets.
fn parse_ip(raw: Raw<'_>) -> Parsed<IpAddr> {
    let text = raw.text().map_err(Some)?;
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse::<IpAddr>().map_err(|_| None)
}

/// Parses a port 0–65535 (`min` 1 for the pool).
fn parse_port(raw: Raw<'_>, min: u16) -> Parsed<u16> {
    let port = parse_count(raw, u64::from(min), u64::from(u16::MAX))?;
    Ok(port as u16)
}

/// Parses the pool's host alone (for `POOL_HOST`): a DNS name, IPv4, or IPv6
/// with or without brackets.
fn parse_pool_host(raw: Raw<'_>) -> Parsed<String> {
    let text = raw.text().map_err(Some)?;
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    if inner.parse::<Ipv6Addr>().is_ok() || valid_host_name(inner) {
        return Ok(inner.to_string());
    }
    if text.contains(':') {
        return Err(Some(
            "the port goes in POOL_PORT, or give both to --pool HOST:PORT".to_string(),
        ));
    }
    Err(None)
}

/// Prefix miners' pool URLs carry; accepted and dropped.
const STRATUM_TCP_PREFIX: &str = "stratum+tcp://";

/// Parses the pool as `host:port`, `[v6]:port`, optionally prefixed by
/// `stratum+tcp://`.
fn parse_pool(raw: Raw<'_>) -> Parsed<PoolAddr> {
    let mut text = raw.text().map_err(Some)?;
    if text.len() >= STRATUM_TCP_PREFIX.len()
        && text[..STRATUM_TCP_PREFIX.len()].eq_ignore_ascii_case(STRATUM_TCP_PREFIX)
    {
        text = &text[STRATUM_TCP_PREFIX.len()..];
    } else if let Some((scheme, _)) = text.split_once("://") {
        return Err(Some(format!(
            "scheme {scheme}:// is not supported: the proxy relays plain TCP"
        )));
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:").ok_or(None)?;
        v6.parse::<Ipv6Addr>().map_err(|_| None)?;
        (v6, port)
    } else {
        let (host, port) = text
            .rsplit_once(':')
            .ok_or_else(|| Some("no port".to_string()))?;
        if host.contains(':') {
            return Err(Some(
                "an IPv6 address needs brackets: [addr]:port".to_string(),
            ));
        }
        if !valid_host_name(host) {
            return Err(None);
        }
        (host, port)
    };
    let port = parse_port(Raw::Text(port), 1).map_err(|_| Some("bad port".to_string()))?;
    Ok(PoolAddr {
        host: host.to_string(),
        port,
    })
}

/// A DNS name or IPv4 address: dot-separated labels of 1–63 letters, digits,
/// '-' or '_', not starting or ending with '-', 253 characters at most
/// (one trailing dot allowed).
fn valid_host_name(host: &str) -> bool {
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

fn parse_level(raw: Raw<'_>) -> Parsed<LevelFilter> {
    let text = raw.text().map_err(Some)?;
    [
        LevelFilter::Off,
        LevelFilter::Error,
        LevelFilter::Warn,
        LevelFilter::Info,
        LevelFilter::Debug,
        LevelFilter::Trace,
    ]
    .into_iter()
    .find(|level| level_str(*level).eq_ignore_ascii_case(text))
    .ok_or(None)
}

fn parse_log_format(raw: Raw<'_>) -> Parsed<LogFormat> {
    raw.text().map_err(Some)?.parse().map_err(|_| None)
}

fn parse_client_id(raw: Raw<'_>) -> Parsed<ClientIdMode> {
    let text = raw.text().map_err(Some)?;
    ClientIdMode::ALL
        .into_iter()
        .find(|mode| mode.as_str().eq_ignore_ascii_case(text))
        .ok_or(None)
}

fn parse_token(raw: Raw<'_>) -> Parsed<Secret> {
    let text = raw.text().map_err(Some)?;
    if text == SECRET_MASK {
        return Err(Some(
            "that is the mask check-config prints, not the token".to_string(),
        ));
    }
    let ok = !text.is_empty()
        && text.len() <= MAX_TOKEN_BYTES
        && text.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Secret(text.to_string()))
    } else {
        Err(None)
    }
}

/// A value and the layer it came from.
struct Sourced<T> {
    value: T,
    layer: Layer,
}

/// The file's entries in order, with repeats kept so they can be refused.
struct Entries(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Entries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = Entries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entries, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    entries.push(entry);
                }
                Ok(Entries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// The parsed file: its path and its known, non-null keys.
struct FileLayer {
    path: PathBuf,
    values: HashMap<String, Value>,
}

struct Resolver<'e> {
    file: Option<FileLayer>,
    env: &'e dyn Fn(&str) -> Option<String>,
    errors: Vec<ConfigError>,
}

/// The allowed text for each kind of value.
const ALLOWED_SOCKET: &str =
    "an IP address and port, e.g. 0.0.0.0:3333 or [::]:3333 (port 0 = any free port)";
const ALLOWED_IP: &str = "an IPv4 or IPv6 address, e.g. 0.0.0.0 or ::";
const ALLOWED_PORT: &str = "a port number from 0 to 65535 (0 = any free port)";
const ALLOWED_POOL: &str = "HOST:PORT with a DNS name or IP address and a port from 1 to 65535, \
     e.g. pool.example.com:3333 or [2001:db8::1]:3333 (a stratum+tcp:// prefix is accepted)";
const ALLOWED_POOL_HOST: &str = "a DNS name or IP address, e.g. pool.example.com";
const ALLOWED_POOL_PORT: &str = "a port number from 1 to 65535";
const ALLOWED_LEVEL: &str = "off, error, warn, info, debug or trace";
const ALLOWED_FORMAT: &str = "auto, text, journald or json";
const ALLOWED_CLIENT_ID: &str = "account, worker, peer_ip or none";
const ALLOWED_TOKEN: &str = "1 to 4096 visible ASCII characters without spaces";
const ALLOWED_SECONDS: &str = "a number of seconds greater than 0 and at most 2592000 (30 days)";
const ALLOWED_GRACE: &str = "a number of seconds from 0 to 2592000 (30 days)";
const ALLOWED_RATE: &str = "a number greater than 0 and at most 1000000";

impl Resolver<'_> {
    /// Reads and checks the file named by `--config` or `CONFIG_FILE`.
    fn read_file(&mut self, flags: &FlagLayer) {
        let (path, named_by) = match (&flags.config, self.env_value(CONFIG_FILE_VAR)) {
            (Some(path), _) => (PathBuf::from(path), Layer::Flag("--config")),
            (None, Some(path)) => (PathBuf::from(path), Layer::Env(CONFIG_FILE_VAR)),
            (None, None) => return,
        };
        let text = match read_limited(&path) {
            Ok(text) => text,
            Err(reason) => {
                self.errors.push(ConfigError::FileUnreadable {
                    path,
                    named_by,
                    reason,
                });
                return;
            }
        };
        let entries = match serde_json::from_str::<Entries>(&text) {
            Ok(Entries(entries)) => entries,
            Err(error) => {
                self.errors.push(ConfigError::FileSyntax {
                    path,
                    reason: error.to_string(),
                });
                return;
            }
        };
        let mut values = HashMap::new();
        let mut seen = Vec::new();
        for (key, value) in entries {
            if seen.contains(&key) {
                if !self
                    .errors
                    .iter()
                    .any(|e| matches!(e, ConfigError::DuplicateKey { key: k, .. } if *k == key))
                {
                    self.errors.push(ConfigError::DuplicateKey {
                        path: path.clone(),
                        key: key.clone(),
                    });
                }
                continue;
            }
            seen.push(key.clone());
            if !KEYS.contains(&key.as_str()) {
                self.errors.push(ConfigError::UnknownKey {
                    path: path.clone(),
                    suggestion: suggest_key(&key),
                    key,
                });
                continue;
            }
            if !value.is_null() {
                values.insert(key, value);
            }
        }
        self.file = Some(FileLayer { path, values });
    }

    /// An environment variable's value; empty counts as unset.
    fn env_value(&self, name: &str) -> Option<String> {
        (self.env)(name).filter(|value| !value.is_empty())
    }

    /// The file's value for `key` and the file's layer.
    fn file_value(&self, key: &str) -> Option<(Value, Layer)> {
        let file = self.file.as_ref()?;
        let value = file.values.get(key)?.clone();
        Some((value, Layer::File(file.path.clone())))
    }

    /// Parses one layer's value, recording an error on failure.
    fn check<T>(
        &mut self,
        key: &'static str,
        layer: Layer,
        raw: Raw<'_>,
        parse: &dyn Fn(Raw<'_>) -> Parsed<T>,
        allowed: &str,
        secret: bool,
    ) -> Option<T> {
        match parse(raw) {
            Ok(value) => Some(value),
            Err(problem) => {
                self.errors.push(ConfigError::InvalidValue {
                    key,
                    layer,
                    value: if secret {
                        "(secret value not shown)".to_string()
                    } else {
                        raw.shown()
                    },
                    problem,
                    allowed: allowed.to_string(),
                });
                None
            }
        }
    }

    /// Resolves a key that has one environment variable and one flag.
    #[allow(clippy::too_many_arguments)]
    fn simple<T>(
        &mut self,
        key: &'static str,
        default: T,
        env_var: &'static str,
        flag_name: &'static str,
        flag: &Option<String>,
        parse: &dyn Fn(Raw<'_>) -> Parsed<T>,
        allowed: &str,
    ) -> T {
        self.simple_sourced(
            key,
            Some(default),
            env_var,
            flag_name,
            flag,
            parse,
            allowed,
            false,
        )
        .map(|s| s.value)
        .expect("a default is always present")
    }

    /// Resolves a one-variable key; `None` only when there is no default and
    /// no layer set it. Every layer's value is checked.
    #[allow(clippy::too_many_arguments)]
    fn simple_sourced<T>(
        &mut self,
        key: &'static str,
        default: Option<T>,
        env_var: &'static str,
        flag_name: &'static str,
        flag: &Option<String>,
        parse: &dyn Fn(Raw<'_>) -> Parsed<T>,
        allowed: &str,
        secret: bool,
    ) -> Option<Sourced<T>> {
        let mut current = default.map(|value| Sourced {
            value,
            layer: Layer::Default,
        });
        if let Some((value, layer)) = self.file_value(key)
            && let Some(parsed) = self.check(
                key,
                layer.clone(),
                Raw::Json(&value),
                parse,
                allowed,
                secret,
            )
        {
            current = Some(Sourced {
                value: parsed,
                layer,
            });
        }
        if let Some(text) = self.env_value(env_var) {
            let layer = Layer::Env(env_var);
            if let Some(parsed) =
                self.check(key, layer.clone(), Raw::Text(&text), parse, allowed, secret)
            {
                current = Some(Sourced {
                    value: parsed,
                    layer,
                });
            }
        }
        if let Some(text) = flag {
            let layer = Layer::Flag(flag_name);
            if let Some(parsed) =
                self.check(key, layer.clone(), Raw::Text(text), parse, allowed, secret)
            {
                current = Some(Sourced {
                    value: parsed,
                    layer,
                });
            }
        }
        current
    }

    /// Resolves a listen address whose host and port also come from two
    /// environment variables, each replacing its half.
    fn socket(
        &mut self,
        key: &'static str,
        default: SocketAddr,
        host_var: &'static str,
        port_var: &'static str,
        flag_name: &'static str,
        flag: &Option<String>,
    ) -> Sourced<SocketAddr> {
        let mut current = Sourced {
            value: default,
            layer: Layer::Default,
        };
        if let Some((value, layer)) = self.file_value(key)
            && let Some(addr) = self.check(
                key,
                layer.clone(),
                Raw::Json(&value),
                &parse_socket_addr,
                ALLOWED_SOCKET,
                false,
            )
        {
            current = Sourced { value: addr, layer };
        }
        if let Some(text) = self.env_value(host_var) {
            let layer = Layer::Env(host_var);
            if let Some(ip) = self.check(
                key,
                layer.clone(),
                Raw::Text(&text),
                &parse_ip,
                ALLOWED_IP,
                false,
            ) {
                current = Sourced {
                    value: SocketAddr::new(ip, current.value.port()),
                    layer,
                };
            }
        }
        if let Some(text) = self.env_value(port_var) {
            let layer = Layer::Env(port_var);
            let parse_any_port = |raw: Raw<'_>| parse_port(raw, 0);
            if let Some(port) = self.check(
                key,
                layer.clone(),
                Raw::Text(&text),
                &parse_any_port,
                ALLOWED_PORT,
                false,
            ) {
                current = Sourced {
                    value: SocketAddr::new(current.value.ip(), port),
                    layer,
                };
            }
        }
        if let Some(text) = flag {
            let layer = Layer::Flag(flag_name);
            if let Some(addr) = self.check(
                key,
                layer.clone(),
                Raw::Text(text),
                &parse_socket_addr,
                ALLOWED_SOCKET,
                false,
            ) {
                current = Sourced { value: addr, layer };
            }
        }
        current
    }

    /// Resolves the pool, which has no default.
    fn pool(&mut self, flag: &Option<String>) -> Option<PoolAddr> {
        let key = "pool";
        let mut host: Option<String> = None;
        let mut port: Option<u16> = None;
        if let Some((value, layer)) = self.file_value(key)
            && let Some(pool) = self.check(
                key,
                layer,
                Raw::Json(&value),
                &parse_pool,
                ALLOWED_POOL,
                false,
            )
        {
            host = Some(pool.host);
            port = Some(pool.port);
        }
        if let Some(text) = self.env_value("POOL_HOST")
            && let Some(h) = self.check(
                key,
                Layer::Env("POOL_HOST"),
                Raw::Text(&text),
                &parse_pool_host,
                ALLOWED_POOL_HOST,
                false,
            )
        {
            host = Some(h);
        }
        if let Some(text) = self.env_value("POOL_PORT") {
            let parse_pool_port = |raw: Raw<'_>| parse_port(raw, 1);
            if let Some(p) = self.check(
                key,
                Layer::Env("POOL_PORT"),
                Raw::Text(&text),
                &parse_pool_port,
                ALLOWED_POOL_PORT,
                false,
            ) {
                port = Some(p);
            }
        }
        if let Some(text) = flag
            && let Some(pool) = self.check(
                key,
                Layer::Flag("--pool"),
                Raw::Text(text),
                &parse_pool,
                ALLOWED_POOL,
                false,
            )
        {
            host = Some(pool.host);
            port = Some(pool.port);
        }
        let ways = "set \"pool\": \"HOST:PORT\" in the configuration file, \
                    POOL_HOST and POOL_PORT in the environment, or --pool HOST:PORT";
        match (host, port) {
            (Some(host), Some(port)) => return Some(PoolAddr { host, port }),
            (None, None) => self.push_missing_unless_invalid(key, format!("no default; {ways}")),
            (Some(_), None) => self.push_missing_unless_invalid(
                key,
                format!("the host is set but not the port; set POOL_PORT, or {ways}"),
            ),
            (None, Some(_)) => self.push_missing_unless_invalid(
                key,
                format!("the port is set but not the host; set POOL_HOST, or {ways}"),
            ),
        }
        None
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

    fn count(
        &mut self,
        key: &'static str,
        default: usize,
        max: usize,
        env_var: &'static str,
        flag_name: &'static str,
        flag: &Option<String>,
    ) -> usize {
        let allowed = format!("a whole number from 1 to {max}");
        let parse = |raw: Raw<'_>| parse_count(raw, 1, max as u64).map(|n| n as usize);
        self.simple(key, default, env_var, flag_name, flag, &parse, &allowed)
    }

    fn seconds(
        &mut self,
        key: &'static str,
        default: Duration,
        env_var: &'static str,
        flag_name: &'static str,
        flag: &Option<String>,
    ) -> Duration {
        let zero_allowed = key == "shutdown_grace_seconds";
        let allowed = if zero_allowed {
            ALLOWED_GRACE
        } else {
            ALLOWED_SECONDS
        };
        let parse = |raw: Raw<'_>| parse_seconds(raw, zero_allowed);
        self.simple(key, default, env_var, flag_name, flag, &parse, allowed)
    }

    /// Resolves every key; `None` when a required key is missing.
    fn resolve(&mut self, f: &FlagLayer) -> Option<Config> {
        let listen = self.socket(
            "listen",
            DEFAULT_LISTEN,
            "LISTEN_HOST",
            "LISTEN_PORT",
            "--listen",
            &f.listen,
        );
        let pool = self.pool(&f.pool);
        let metrics_listen = self.socket(
            "metrics_listen",
            DEFAULT_METRICS_LISTEN,
            "METRICS_HOST",
            "METRICS_PORT",
            "--metrics-listen",
            &f.metrics_listen,
        );
        let log_level = self.simple(
            "log_level",
            DEFAULT_LOG_LEVEL,
            "LOG_LEVEL",
            "--log-level",
            &f.log_level,
            &parse_level,
            ALLOWED_LEVEL,
        );
        let log_format = self.simple(
            "log_format",
            DEFAULT_LOG_FORMAT,
            "LOG_FORMAT",
            "--log-format",
            &f.log_format,
            &parse_log_format,
            ALLOWED_FORMAT,
        );
        let max_connections = self.count(
            "max_connections",
            DEFAULT_MAX_CONNECTIONS,
            MAX_MAX_CONNECTIONS,
            "MAX_CONNECTIONS",
            "--max-connections",
            &f.max_connections,
        );
        let parse_rate = |raw: Raw<'_>| parse_positive(raw, false, MAX_ACCEPT_RATE_PER_SECOND);
        let accept_rate_per_second = self.simple(
            "accept_rate_per_second",
            DEFAULT_ACCEPT_RATE_PER_SECOND,
            "ACCEPT_RATE_PER_SECOND",
            "--accept-rate-per-second",
            &f.accept_rate_per_second,
            &parse_rate,
            ALLOWED_RATE,
        );
        let accept_burst = self.count(
            "accept_burst",
            DEFAULT_ACCEPT_BURST as usize,
            MAX_ACCEPT_BURST as usize,
            "ACCEPT_BURST",
            "--accept-burst",
            &f.accept_burst,
        ) as u32;
        let connect_timeout = self.seconds(
            "connect_timeout_seconds",
            DEFAULT_CONNECT_TIMEOUT,
            "CONNECT_TIMEOUT_SECONDS",
            "--connect-timeout-seconds",
            &f.connect_timeout_seconds,
        );
        let idle_timeout = self.seconds(
            "idle_timeout_seconds",
            DEFAULT_IDLE_TIMEOUT,
            "IDLE_TIMEOUT_SECONDS",
            "--idle-timeout-seconds",
            &f.idle_timeout_seconds,
        );
        let handshake_timeout = self.seconds(
            "handshake_timeout_seconds",
            DEFAULT_HANDSHAKE_TIMEOUT,
            "HANDSHAKE_TIMEOUT_SECONDS",
            "--handshake-timeout-seconds",
            &f.handshake_timeout_seconds,
        );
        let shutdown_grace = self.seconds(
            "shutdown_grace_seconds",
            DEFAULT_SHUTDOWN_GRACE,
            "SHUTDOWN_GRACE_SECONDS",
            "--shutdown-grace-seconds",
            &f.shutdown_grace_seconds,
        );
        let request_timeout = self.seconds(
            "request_timeout_seconds",
            DEFAULT_REQUEST_TIMEOUT,
            "REQUEST_TIMEOUT_SECONDS",
            "--request-timeout-seconds",
            &f.request_timeout_seconds,
        );
        let health_interval = self.seconds(
            "health_interval_seconds",
            DEFAULT_HEALTH_INTERVAL,
            "HEALTH_INTERVAL_SECONDS",
            "--health-interval-seconds",
            &f.health_interval_seconds,
        );
        let client_id = self.simple(
            "client_id",
            DEFAULT_CLIENT_ID,
            "CLIENT_ID",
            "--client-id",
            &f.client_id,
            &parse_client_id,
            ALLOWED_CLIENT_ID,
        );
        let client_id_cap = self.count(
            "client_id_cap",
            DEFAULT_CLIENT_ID_CAP,
            MAX_CLIENT_ID_CAP,
            "CLIENT_ID_CAP",
            "--client-id-cap",
            &f.client_id_cap,
        );
        let threads = self.count(
            "threads",
            DEFAULT_THREADS,
            MAX_THREADS,
            "THREADS",
            "--threads",
            &f.threads,
        );
        let http_threads = self.count(
            "http_threads",
            DEFAULT_HTTP_THREADS,
            MAX_HTTP_THREADS,
            "HTTP_THREADS",
            "--http-threads",
            &f.http_threads,
        );
        let metrics_token = self
            .simple_sourced(
                "metrics_token",
                None,
                "METRICS_TOKEN",
                "--metrics-token",
                &f.metrics_token,
                &parse_token,
                ALLOWED_TOKEN,
                true,
            )
            .map(|s| s.value);

        if ports_collide(listen.value, metrics_listen.value) {
            self.errors.push(ConfigError::InvalidValue {
                key: "metrics_listen",
                layer: metrics_listen.layer.clone(),
                value: format!("{:?}", metrics_listen.value.to_string()),
                problem: Some(format!(
                    "the same port as listen {} (from {})",
                    listen.value, listen.layer
                )),
                allowed: "an address and port that miners' listen address does not use".to_string(),
            });
        }

        Some(Config {
            listen: listen.value,
            pool: pool?,
            metrics_listen: metrics_listen.value,
            log_level,
            log_format,
            max_connections,
            accept_rate_per_second,
            accept_burst,
            connect_timeout,
            idle_timeout,
            handshake_timeout,
            shutdown_grace,
            request_timeout,
            health_interval,
            client_id,
            client_id_cap,
            threads,
            http_threads,
            metrics_token,
        })
    }
}

/// Whether two listen addresses would fight over one port: the same nonzero
/// port, and the same IP or either a wildcard.
fn ports_collide(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() != 0
        && a.port() == b.port()
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

/// Reads a file of at most [`MAX_CONFIG_FILE_BYTES`] as UTF-8.
fn read_limited(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| e.to_string())?;
    if bytes.len() as u64 > MAX_CONFIG_FILE_BYTES {
        return Err(format!(
            "larger than {MAX_CONFIG_FILE_BYTES} bytes; is this the right file?"
        ));
    }
    String::from_utf8(bytes).map_err(|_| "not UTF-8 text".to_string())
}

/// The known key an unknown one most likely meant: `pool_host` → `pool`,
/// `POOL` → `pool`, or a key within two edits.
fn suggest_key(unknown: &str) -> Option<&'static str> {
    let lower = unknown.to_ascii_lowercase().replace('-', "_");
    if let Some(found) = KEYS.iter().find(|k| **k == lower) {
        return Some(found);
    }
    for suffix in ["_host", "_port", "_url", "_address", "_addr"] {
        if let Some(stem) = lower.strip_suffix(suffix) {
            let stem = if stem == "metrics" {
                "metrics_listen"
            } else {
                stem
            };
            if let Some(found) = KEYS.iter().find(|k| **k == stem) {
                return Some(found);
            }
        }
    }
    KEYS.iter()
        .map(|k| (edit_distance(&lower, k), *k))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut previous: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut current = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous[j] + usize::from(ca != *cb);
            current[j + 1] = substitution.min(previous[j + 1] + 1).min(current[j] + 1);
        }
        previous = current;
    }
    previous[b.len()]
}

#[cfg(test)]
mod tests {
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
        assert_eq!(config.listen, "0.0.0.0:3333".parse().unwrap());
        assert_eq!(config.metrics_listen, "0.0.0.0:9100".parse().unwrap());
        assert_eq!(config.pool.host(), "pool.example.com");
        assert_eq!(config.pool.port(), 3333);
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
            "missing pool: no default; set \"pool\": \"HOST:PORT\" in the configuration file, \
             POOL_HOST and POOL_PORT in the environment, or --pool HOST:PORT"
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
    fn pool_forms() {
        let ok = |text: &str| parse_pool(Raw::Text(text)).map(|p| p.to_string()).ok();
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
        ] {
            assert!(parse_pool(Raw::Text(bad)).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_pool(Raw::Text("stratum+ssl://pool:3333"))
                .unwrap_err()
                .as_deref(),
            Some("scheme stratum+ssl:// is not supported: the proxy relays plain TCP")
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
        assert_eq!(config.pool.to_string(), "[::1]:3334");
        assert_eq!(config.listen, "[::]:3333".parse().unwrap());
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
        let flags = FlagLayer {
            threads: Some("0".into()),
            log_level: Some("loud".into()),
            ..FlagLayer::default()
        };
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
        let flags = FlagLayer {
            metrics_token: Some("hunter2-marker".into()),
            ..FlagLayer::default()
        };
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
    fn suggestions() {
        assert_eq!(suggest_key("pool_host"), Some("pool"));
        assert_eq!(suggest_key("POOL_PORT"), Some("pool"));
        assert_eq!(suggest_key("metrics_port"), Some("metrics_listen"));
        assert_eq!(suggest_key("LOG_LEVEL"), Some("log_level"));
        assert_eq!(suggest_key("max_conections"), Some("max_connections"));
        assert_eq!(suggest_key("thread"), Some("threads"));
        assert_eq!(suggest_key("colour"), None);
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
}
