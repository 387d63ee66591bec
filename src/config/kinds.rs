//! Kinds of value: how one key's value is read from each layer, shown in the
//! effective configuration, and described in errors. A key in the table
//! ([`super::keys`]) names its kind; a new key of an existing kind needs
//! nothing here.

use std::marker::PhantomData;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use log::LevelFilter;
use serde_json::Value;

use super::{ClientIdMode, MAX_DURATION, MAX_TOKEN_BYTES, SECRET_MASK, Secret};
use crate::logging::LogFormat;
use crate::relay::per_address::Cidr;
use crate::relay::per_address::{AddressRule, parse_rules};
use crate::relay::pools::{PoolSpec, ProbeKind, Route};
use crate::relay::upstream::{PoolAddr, PoolAddrError};

/// A value as one layer gave it: JSON from the file, text from the
/// environment or a flag.
#[derive(Clone, Copy)]
pub(crate) enum Raw<'a> {
    Json(&'a Value),
    Text(&'a str),
}

impl<'a> Raw<'a> {
    /// The value for an error message, shortened if very long.
    pub fn shown(self) -> String {
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
    pub fn text(self) -> Result<&'a str, String> {
        match self {
            Raw::Text(text) => Ok(text),
            Raw::Json(Value::String(text)) => Ok(text),
            Raw::Json(other) => Err(format!("a JSON string is needed, not {}", json_kind(other))),
        }
    }
}

pub(crate) fn json_kind(value: &Value) -> &'static str {
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
pub(crate) type Parsed<T> = Result<T, Option<String>>;

/// One environment variable's value that was refused.
pub(crate) struct EnvProblem {
    pub var: &'static str,
    pub problem: Option<String>,
    pub allowed: String,
}

/// What a key's environment variables made of the value below them.
pub(crate) struct EnvResult<T> {
    /// The new value and the variable that set it last.
    pub value: Option<(T, &'static str)>,
    pub problems: Vec<EnvProblem>,
    /// Why the key is still unset although a variable was given (for a
    /// value given in halves, one half alone).
    pub incomplete: Option<String>,
}

/// How one kind of value is read, shown and described.
pub(crate) trait Kind {
    /// The typed value, as [`super::Config`] holds it.
    type Value;
    /// Parses one layer's value.
    fn parse(&self, raw: Raw<'_>) -> Parsed<Self::Value>;
    /// What the key accepts, for error messages.
    fn allowed(&self) -> String;
    /// The value in the file's format, for the effective configuration.
    fn json(&self, value: &Self::Value) -> Value;
    /// Whether values are secrets: never shown.
    fn secret(&self) -> bool {
        false
    }
    /// Applies the key's environment variables that are set (`vars`, in the
    /// table's order) over the value below (`current`). By default there is
    /// one variable, parsed like a flag.
    fn env(
        &self,
        _current: Option<&Self::Value>,
        vars: &[(&'static str, &str)],
    ) -> EnvResult<Self::Value> {
        let mut result = EnvResult {
            value: None,
            problems: Vec::new(),
            incomplete: None,
        };
        for (var, text) in vars {
            match self.parse(Raw::Text(text)) {
                Ok(value) => result.value = Some((value, var)),
                Err(problem) => result.problems.push(EnvProblem {
                    var,
                    problem,
                    allowed: self.allowed(),
                }),
            }
        }
        result
    }
    /// What to say when a required key is set nowhere.
    fn missing(&self) -> String {
        "no default".to_string()
    }
    /// The value of a flag given several times (each value parsed); by
    /// default the last one wins.
    fn combine(&self, values: Vec<Self::Value>) -> Option<Self::Value> {
        values.into_iter().last()
    }
}

/// A whole number in `min..=max`: a JSON integer, or decimal text.
pub(crate) struct Count<T> {
    min: u64,
    max: u64,
    target: PhantomData<T>,
}

impl<T> Count<T> {
    pub const fn new(min: u64, max: u64) -> Self {
        Count {
            min,
            max,
            target: PhantomData,
        }
    }
}

pub(crate) fn parse_count(raw: Raw<'_>, min: u64, max: u64) -> Parsed<u64> {
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

impl<T: TryFrom<u64> + Copy + Into<Value>> Kind for Count<T> {
    type Value = T;
    fn parse(&self, raw: Raw<'_>) -> Parsed<T> {
        let n = parse_count(raw, self.min, self.max)?;
        T::try_from(n).map_err(|_| Some("out of range".to_string()))
    }
    fn allowed(&self) -> String {
        format!("a whole number from {} to {}", self.min, self.max)
    }
    fn json(&self, value: &T) -> Value {
        (*value).into()
    }
}

/// Parses a finite number `> 0` (or `>= 0` with `zero_allowed`) and `<= max`.
pub(crate) fn parse_positive(raw: Raw<'_>, zero_allowed: bool, max: f64) -> Parsed<f64> {
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

/// A number greater than 0 and at most `max` (a rate).
pub(crate) struct Rate {
    pub max: f64,
}

/// The smallest rate or factor accepted: below it a value means nothing
/// (and JSON cannot carry it back exactly).
pub(crate) const MIN_RATE: f64 = 1e-6;

impl Kind for Rate {
    type Value = f64;
    fn parse(&self, raw: Raw<'_>) -> Parsed<f64> {
        let value = parse_positive(raw, false, self.max)?;
        if value < MIN_RATE {
            return Err(Some("too small".to_string()));
        }
        Ok(value)
    }
    fn allowed(&self) -> String {
        format!("a number from {MIN_RATE} to {}", self.max)
    }
    fn json(&self, value: &f64) -> Value {
        Value::from(*value)
    }
}

/// A duration in seconds, fractions allowed, up to [`MAX_DURATION`].
pub(crate) struct Seconds {
    pub zero_allowed: bool,
}

pub(crate) fn parse_seconds(raw: Raw<'_>, zero_allowed: bool) -> Parsed<Duration> {
    seconds_up_to(raw, zero_allowed, MAX_DURATION)
}

/// Seconds in `0..=max` (or `>0`), as a [`Duration`]. A positive number
/// below a nanosecond would become a zero duration (an idle timeout that
/// fires at once): refused where zero is.
fn seconds_up_to(raw: Raw<'_>, zero_allowed: bool, max: Duration) -> Parsed<Duration> {
    let seconds = parse_positive(raw, zero_allowed, max.as_secs_f64())?;
    let duration = Duration::from_secs_f64(seconds);
    if duration.is_zero() && !zero_allowed {
        return Err(Some("less than a nanosecond".to_string()));
    }
    Ok(duration)
}

impl Kind for Seconds {
    type Value = Duration;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Duration> {
        parse_seconds(raw, self.zero_allowed)
    }
    fn allowed(&self) -> String {
        let max = MAX_DURATION.as_secs();
        if self.zero_allowed {
            format!("a number of seconds from 0 to {max} (30 days)")
        } else {
            format!("a number of seconds greater than 0 and at most {max} (30 days)")
        }
    }
    fn json(&self, value: &Duration) -> Value {
        Value::from(value.as_secs_f64())
    }
}

/// Seconds from 0 (if allowed) up to `max`: a duration another component
/// bounds (the unit's `TimeoutStopSec` bounds the shutdown grace).
pub(crate) struct SecondsUpTo {
    pub max: Duration,
    pub zero_allowed: bool,
}

impl Kind for SecondsUpTo {
    type Value = Duration;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Duration> {
        seconds_up_to(raw, self.zero_allowed, self.max)
    }
    fn allowed(&self) -> String {
        let max = self.max.as_secs_f64();
        if self.zero_allowed {
            format!("a number of seconds from 0 to {max}")
        } else {
            format!("a number of seconds greater than 0 and at most {max}")
        }
    }
    fn json(&self, value: &Duration) -> Value {
        Value::from(value.as_secs_f64())
    }
}

/// Per-address limits by network: `CIDR=CONNECTIONS[/RATE]` rules, as one
/// comma-separated string (environment, flag, file) or a JSON array of
/// rule strings (file).
pub(crate) struct AddressRules;

impl Kind for AddressRules {
    type Value = Vec<AddressRule>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Vec<AddressRule>> {
        let text = match raw {
            Raw::Json(Value::Array(items)) => {
                let mut rules = Vec::with_capacity(items.len());
                for item in items {
                    let text = Raw::Json(item).text().map_err(Some)?;
                    rules.extend(parse_rules(text).map_err(|e| Some(e.to_string()))?);
                }
                return Ok(rules);
            }
            other => other.text().map_err(Some)?,
        };
        parse_rules(text).map_err(|e| Some(e.to_string()))
    }
    fn allowed(&self) -> String {
        "rules CIDR=CONNECTIONS or CIDR=CONNECTIONS/RATE, comma-separated \
         (or a JSON array of them), e.g. \"10.0.5.0/24=1000/100, 192.168.1.10=200\""
            .to_string()
    }
    fn json(&self, value: &Vec<AddressRule>) -> Value {
        Value::from(value.iter().map(ToString::to_string).collect::<Vec<_>>())
    }
}

/// A listen address; its two environment variables (`*_HOST`, `*_PORT`)
/// each replace their half of the address below.
pub(crate) struct Listen;

const ALLOWED_SOCKET: &str =
    "an IP address and port, e.g. 0.0.0.0:3333 or [::]:3333 (port 0 = any free port)";
const ALLOWED_IP: &str = "an IPv4 or IPv6 address, e.g. 0.0.0.0 or ::";
const ALLOWED_PORT: &str = "a port number from 0 to 65535 (0 = any free port)";

/// Parses an IP for `*_HOST`: IPv4, IPv6 with or without brackets.
fn parse_ip(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse::<IpAddr>().ok()
}

impl Kind for Listen {
    type Value = SocketAddr;
    fn parse(&self, raw: Raw<'_>) -> Parsed<SocketAddr> {
        raw.text().map_err(Some)?.parse().map_err(|_| None)
    }
    fn allowed(&self) -> String {
        ALLOWED_SOCKET.to_string()
    }
    fn json(&self, value: &SocketAddr) -> Value {
        Value::from(value.to_string())
    }
    fn env(
        &self,
        current: Option<&SocketAddr>,
        vars: &[(&'static str, &str)],
    ) -> EnvResult<SocketAddr> {
        let mut addr = current.copied();
        let mut result = EnvResult {
            value: None,
            problems: Vec::new(),
            incomplete: None,
        };
        for (var, text) in vars {
            let is_port = var.ends_with("_PORT");
            let applied = match (is_port, addr) {
                (false, Some(a)) => parse_ip(text).map(|ip| SocketAddr::new(ip, a.port())),
                (true, Some(a)) => parse_count(Raw::Text(text), 0, u64::from(u16::MAX))
                    .ok()
                    .map(|port| SocketAddr::new(a.ip(), port as u16)),
                // Listen addresses always have a default below them.
                (_, None) => None,
            };
            match applied {
                Some(a) => {
                    addr = Some(a);
                    result.value = Some((a, var));
                }
                None => result.problems.push(EnvProblem {
                    var,
                    problem: match (is_port, parse_count(Raw::Text(text), 0, 65535)) {
                        (true, Err(problem)) => problem,
                        _ => None,
                    },
                    allowed: (if is_port { ALLOWED_PORT } else { ALLOWED_IP }).to_string(),
                }),
            }
        }
        result
    }
}

/// The miners' listen addresses: one, or in the file a list (and `--listen`
/// repeated); `LISTEN_HOST` and `LISTEN_PORT` replace their half of a
/// single address.
pub(crate) struct ListenList;

impl Kind for ListenList {
    type Value = Vec<SocketAddr>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Vec<SocketAddr>> {
        match raw {
            Raw::Json(Value::Array(items)) if !items.is_empty() && items.len() <= MAX_LISTENS => {
                items
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        Listen.parse(Raw::Json(item)).map_err(|p| {
                            Some(format!(
                                "item {i}: {}",
                                p.unwrap_or_else(|| "not IP:PORT".into())
                            ))
                        })
                    })
                    .collect()
            }
            Raw::Json(Value::Array(_)) => Err(Some(format!("1 to {MAX_LISTENS} addresses"))),
            raw => Ok(vec![Listen.parse(raw)?]),
        }
    }
    fn allowed(&self) -> String {
        format!("{ALLOWED_SOCKET}; in the file also a list of up to {MAX_LISTENS}")
    }
    fn json(&self, value: &Vec<SocketAddr>) -> Value {
        match value.as_slice() {
            [one] => Value::from(one.to_string()),
            many => Value::from(many.iter().map(ToString::to_string).collect::<Vec<_>>()),
        }
    }
    fn combine(&self, values: Vec<Vec<SocketAddr>>) -> Option<Vec<SocketAddr>> {
        Some(values.into_iter().flatten().collect())
    }
    fn env(
        &self,
        current: Option<&Vec<SocketAddr>>,
        vars: &[(&'static str, &str)],
    ) -> EnvResult<Vec<SocketAddr>> {
        let single = match current.map(Vec::as_slice) {
            Some([one]) => Some(*one),
            _ => None,
        };
        let result = Listen.env(single.as_ref(), vars);
        EnvResult {
            value: result.value.map(|(addr, var)| (vec![addr], var)),
            problems: result.problems,
            incomplete: result.incomplete,
        }
    }
}

/// Most listen addresses.
pub(crate) const MAX_LISTENS: usize = 16;

/// The objects of a JSON list (in the file, or as JSON text in the
/// environment or a flag), each checked to hold only `keys`.
fn objects_of(raw: Raw<'_>, keys: &[&str]) -> Parsed<Vec<serde_json::Map<String, Value>>> {
    let value = match raw {
        Raw::Json(value) => value.clone(),
        Raw::Text(text) => {
            serde_json::from_str::<Value>(text).map_err(|e| Some(format!("not JSON: {e}")))?
        }
    };
    let Value::Array(items) = value else {
        return Err(Some(format!(
            "a JSON array is needed, not {}",
            json_kind(&value)
        )));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| match item {
            Value::Object(fields) => {
                if let Some(key) = fields.keys().find(|key| !keys.contains(&key.as_str())) {
                    return Err(Some(format!("item {i}: unknown key {key:?}")));
                }
                Ok(fields)
            }
            other => Err(Some(format!(
                "item {i} is {}, not an object",
                json_kind(&other)
            ))),
        })
        .collect()
}

/// Routes: a JSON list of `{"listen": "IP:PORT", "source": "CIDR",
/// "pools": [NAME, ...]}` (either condition may be left out; `"pool": NAME`
/// for one pool). The first route that matches a miner decides.
pub(crate) struct RouteList;

const ALLOWED_ROUTES: &str = "a list of {\"listen\": \"IP:PORT\", \"source\": \"CIDR\", \
     \"pools\": [NAME, ...]} (listen and source optional, \"pool\": NAME for one pool); \
     the first route that matches a miner decides";

impl Kind for RouteList {
    type Value = Vec<Route>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Vec<Route>> {
        let items = objects_of(raw, &["listen", "source", "pools", "pool"])?;
        let mut routes = Vec::new();
        for (i, fields) in items.iter().enumerate() {
            let listen = match fields.get("listen") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(
                    text.parse::<SocketAddr>()
                        .map_err(|_| Some(format!("item {i}: listen {text:?} is not IP:PORT")))?,
                ),
                Some(other) => return Err(Some(format!("item {i}: listen is {other}"))),
            };
            let source = match fields.get("source") {
                None | Some(Value::Null) => None,
                Some(Value::String(text)) => Some(
                    text.parse::<Cidr>()
                        .map_err(|e| Some(format!("item {i}: source: {e}")))?,
                ),
                Some(other) => return Err(Some(format!("item {i}: source is {other}"))),
            };
            let pools = match (fields.get("pools"), fields.get("pool")) {
                (Some(Value::Array(names)), None) if !names.is_empty() => names
                    .iter()
                    .map(|n| n.as_str().map(str::to_owned))
                    .collect::<Option<Vec<String>>>()
                    .ok_or_else(|| Some(format!("item {i}: pools must be names")))?,
                (None, Some(Value::String(name))) => vec![name.clone()],
                _ => {
                    return Err(Some(format!(
                        "item {i}: give \"pools\": [NAME, ...] or \"pool\": NAME"
                    )));
                }
            };
            routes.push(Route {
                listen,
                source,
                pools,
            });
        }
        Ok(routes)
    }
    fn allowed(&self) -> String {
        ALLOWED_ROUTES.to_string()
    }
    fn json(&self, value: &Vec<Route>) -> Value {
        if value.is_empty() {
            return Value::Null;
        }
        Value::from(
            value
                .iter()
                .map(|r| {
                    let mut o = serde_json::Map::new();
                    if let Some(listen) = r.listen {
                        o.insert("listen".into(), Value::from(listen.to_string()));
                    }
                    if let Some(source) = r.source {
                        o.insert("source".into(), Value::from(source.to_string()));
                    }
                    o.insert("pools".into(), Value::from(r.pools.clone()));
                    Value::Object(o)
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// One of a fixed set of names, matched ASCII case-insensitively.
pub(crate) struct Choice<T: 'static> {
    all: &'static [T],
    name: fn(&T) -> &'static str,
}

impl<T: Copy> Choice<T> {
    pub const fn new(all: &'static [T], name: fn(&T) -> &'static str) -> Self {
        Choice { all, name }
    }
}

impl<T: Copy> Kind for Choice<T> {
    type Value = T;
    fn parse(&self, raw: Raw<'_>) -> Parsed<T> {
        let text = raw.text().map_err(Some)?;
        self.all
            .iter()
            .find(|v| (self.name)(v).eq_ignore_ascii_case(text))
            .copied()
            .ok_or(None)
    }
    fn allowed(&self) -> String {
        let names: Vec<&str> = self.all.iter().map(|v| (self.name)(v)).collect();
        match names.split_last() {
            Some((last, [])) => last.to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
        }
    }
    fn json(&self, value: &T) -> Value {
        Value::from((self.name)(value))
    }
}

/// Every log level, in the order shown in messages.
pub(crate) const LEVELS: [LevelFilter; 6] = [
    LevelFilter::Off,
    LevelFilter::Error,
    LevelFilter::Warn,
    LevelFilter::Info,
    LevelFilter::Debug,
    LevelFilter::Trace,
];

/// The configuration spelling of a level.
pub(crate) fn level_str(level: &LevelFilter) -> &'static str {
    match level {
        LevelFilter::Off => "off",
        LevelFilter::Error => "error",
        LevelFilter::Warn => "warn",
        LevelFilter::Info => "info",
        LevelFilter::Debug => "debug",
        LevelFilter::Trace => "trace",
    }
}

pub(crate) fn format_str(format: &LogFormat) -> &'static str {
    format.as_str()
}

pub(crate) fn client_id_str(mode: &ClientIdMode) -> &'static str {
    mode.as_str()
}

/// A secret token (the bearer token): never shown, in errors nor in the
/// effective configuration.
pub(crate) struct Token;

impl Kind for Token {
    type Value = Option<Secret>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Option<Secret>> {
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
            Ok(Some(Secret(text.to_string())))
        } else {
            Err(None)
        }
    }
    fn allowed(&self) -> String {
        format!("1 to {MAX_TOKEN_BYTES} visible ASCII characters without spaces")
    }
    fn json(&self, value: &Option<Secret>) -> Value {
        value
            .as_ref()
            .map_or(Value::Null, |_| Value::from(SECRET_MASK))
    }
    fn secret(&self) -> bool {
        true
    }
}

/// The pool and its backups: `host:port`, or in the file a list of them
/// (the first is the primary, the others backups in order); `--pool` may be
/// given several times. `POOL_HOST` and `POOL_PORT` each replace their half
/// of a single pool.
pub(crate) struct Pool;

const ALLOWED_POOL: &str = "HOST:PORT with a DNS name or IP address and a port from 1 to 65535, \
     e.g. pool.example.com:3333 or [2001:db8::1]:3333 (a stratum+tcp:// prefix is accepted); \
     in the file also a list of them, primary first";
const ALLOWED_POOL_HOST: &str = "a DNS name or IP address, e.g. pool.example.com";
const ALLOWED_POOL_PORT: &str = "a port number from 1 to 65535";
pub(crate) const POOL_WAYS: &str = "set \"pool\": \"HOST:PORT\" (or \"pools\") in the configuration \
     file, POOL_HOST and POOL_PORT in the environment, or --pool HOST:PORT";

/// The problem text for a pool address error (a bad host says nothing more
/// than the allowed text does).
pub(crate) fn pool_problem(error: PoolAddrError) -> Option<String> {
    match error {
        PoolAddrError::BadHost => None,
        other => Some(other.to_string()),
    }
}

fn parse_pool_text(text: &str) -> Parsed<PoolAddr> {
    text.parse().map_err(pool_problem)
}

impl Kind for Pool {
    type Value = Vec<PoolAddr>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Vec<PoolAddr>> {
        match raw {
            Raw::Json(Value::Array(items)) if !items.is_empty() => items
                .iter()
                .enumerate()
                .map(|(i, item)| match item {
                    Value::String(text) => parse_pool_text(text).map_err(|p| {
                        Some(format!(
                            "item {i}: {}",
                            p.unwrap_or_else(|| "bad host".into())
                        ))
                    }),
                    other => Err(Some(format!(
                        "item {i} is {}, not a string",
                        json_kind(other)
                    ))),
                })
                .collect(),
            Raw::Json(Value::Array(_)) => Err(Some("an empty list".to_string())),
            raw => Ok(vec![parse_pool_text(raw.text().map_err(Some)?)?]),
        }
    }
    fn allowed(&self) -> String {
        ALLOWED_POOL.to_string()
    }
    fn json(&self, value: &Vec<PoolAddr>) -> Value {
        match value.as_slice() {
            [] => Value::Null,
            [one] => Value::from(one.to_string()),
            many => Value::from(many.iter().map(ToString::to_string).collect::<Vec<_>>()),
        }
    }
    fn combine(&self, values: Vec<Vec<PoolAddr>>) -> Option<Vec<PoolAddr>> {
        Some(values.into_iter().flatten().collect())
    }
    fn env(
        &self,
        current: Option<&Vec<PoolAddr>>,
        vars: &[(&'static str, &str)],
    ) -> EnvResult<Vec<PoolAddr>> {
        // Each half is checked on its own; they apply over the file's single
        // pool, or make one together.
        let mut host = None;
        let mut port = None;
        let mut result = EnvResult {
            value: None,
            problems: Vec::new(),
            incomplete: None,
        };
        for (var, text) in vars {
            if var.ends_with("_PORT") {
                match parse_count(Raw::Text(text), 1, u64::from(u16::MAX)) {
                    Ok(p) => port = Some((p as u16, *var)),
                    Err(problem) => result.problems.push(EnvProblem {
                        var,
                        problem,
                        allowed: ALLOWED_POOL_PORT.to_string(),
                    }),
                }
            } else {
                match PoolAddr::new(text, 1) {
                    Some(addr) => host = Some((addr.host().to_string(), *var)),
                    None => result.problems.push(EnvProblem {
                        var,
                        problem: text.contains(':').then(|| {
                            "the port goes in POOL_PORT, or give both to --pool HOST:PORT"
                                .to_string()
                        }),
                        allowed: ALLOWED_POOL_HOST.to_string(),
                    }),
                }
            }
        }
        let single = match current.map(Vec::as_slice) {
            Some([one]) => Some(one),
            _ => None,
        };
        let last_var = port.as_ref().map(|p| p.1).or(host.as_ref().map(|h| h.1));
        let host = host.map(|h| h.0).or(single.map(|c| c.host().to_string()));
        let port = port.map(|p| p.0).or(single.map(PoolAddr::port));
        match (host, port, last_var) {
            (_, _, None) => {}
            (Some(host), Some(port), Some(var)) => {
                result.value = PoolAddr::new(&host, port).map(|addr| (vec![addr], var));
            }
            (Some(_), None, Some(_)) => {
                result.incomplete = Some(format!(
                    "the host is set but not the port; set POOL_PORT, or {POOL_WAYS}"
                ))
            }
            (None, Some(_), Some(_)) => {
                result.incomplete = Some(format!(
                    "the port is set but not the host; set POOL_HOST, or {POOL_WAYS}"
                ))
            }
            (None, None, Some(_)) => {}
        }
        result
    }
}

/// The list of pools with names, priorities and weights: a JSON array of
/// `{name, address, priority, weight}` (in the environment and on the
/// command line, the same JSON as text).
pub(crate) struct PoolList;

const ALLOWED_POOLS: &str = "a list of {\"name\": NAME, \"address\": \"HOST:PORT\", \
     \"priority\": 0-1000 (default 0, lower is preferred), \"weight\": 1-1000000 (default 1)}, \
     names unique, 1-64 letters, digits, '-', '_' or '.'";

/// Most pools in the list.
pub(crate) const MAX_POOLS: usize = 64;

fn valid_pool_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl Kind for PoolList {
    type Value = Vec<PoolSpec>;
    fn parse(&self, raw: Raw<'_>) -> Parsed<Vec<PoolSpec>> {
        let items = objects_of(raw, &["name", "address", "priority", "weight"])?;
        if items.is_empty() || items.len() > MAX_POOLS {
            return Err(Some(format!("1 to {MAX_POOLS} pools are needed")));
        }
        let mut specs: Vec<PoolSpec> = Vec::new();
        for (i, fields) in items.iter().enumerate() {
            let address = match fields.get("address") {
                Some(Value::String(text)) => parse_pool_text(text).map_err(|p| {
                    Some(format!(
                        "item {i}: address: {}",
                        p.unwrap_or_else(|| "bad host".into())
                    ))
                })?,
                _ => {
                    return Err(Some(format!(
                        "item {i}: \"address\": \"HOST:PORT\" is needed"
                    )));
                }
            };
            let name = match fields.get("name") {
                None | Some(Value::Null) => address.label(),
                Some(Value::String(name)) if valid_pool_name(name) => name.clone(),
                Some(other) => return Err(Some(format!("item {i}: bad name {other}"))),
            };
            if specs.iter().any(|s| s.name == name) {
                return Err(Some(format!("item {i}: the name {name:?} is used twice")));
            }
            let number = |key: &str, default: u64, min: u64, max: u64| match fields.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(value) => parse_count(Raw::Json(value), min, max).map_err(|p| {
                    Some(format!(
                        "item {i}: {key}: {}",
                        p.unwrap_or_else(|| "not a whole number".into())
                    ))
                }),
            };
            let priority = number("priority", 0, 0, 1000)? as u32;
            let weight = number("weight", 1, 1, 1_000_000).map_err(|p| {
                p.map(|p| {
                    if p.ends_with("out of range") {
                        format!("{p} (a weight of 0 is not allowed)")
                    } else {
                        p
                    }
                })
            })? as u32;
            specs.push(PoolSpec {
                name,
                addr: address,
                priority,
                weight,
            });
        }
        Ok(specs)
    }
    fn allowed(&self) -> String {
        ALLOWED_POOLS.to_string()
    }
    fn json(&self, value: &Vec<PoolSpec>) -> Value {
        if value.is_empty() {
            return Value::Null;
        }
        Value::from(
            value
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "name": s.name,
                        "address": s.addr.to_string(),
                        "priority": s.priority,
                        "weight": s.weight,
                    })
                })
                .collect::<Vec<_>>(),
        )
    }
}

/// On or off: JSON `true`/`false`, or text `true`, `false`, `on`, `off`,
/// `yes`, `no`, `1`, `0`.
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    fn parse(&self, raw: Raw<'_>) -> Parsed<bool> {
        match raw {
            Raw::Json(Value::Bool(b)) => Ok(*b),
            Raw::Json(other) => Err(Some(format!(
                "a JSON boolean is needed, not {}",
                json_kind(other)
            ))),
            Raw::Text(text) => match text.to_ascii_lowercase().as_str() {
                "true" | "on" | "yes" | "1" => Ok(true),
                "false" | "off" | "no" | "0" => Ok(false),
                _ => Err(None),
            },
        }
    }
    fn allowed(&self) -> String {
        "true or false (also on/off, yes/no, 1/0 in the environment and flags)".to_string()
    }
    fn json(&self, value: &bool) -> Value {
        Value::Bool(*value)
    }
}

/// How a pool is probed: `tcp` or `subscribe`.
pub(crate) fn probe_str(kind: &ProbeKind) -> &'static str {
    kind.as_str()
}
