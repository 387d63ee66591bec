//! Borrowed view of one JSON-RPC line, as Stratum dialects use it.
//!
//! [`Message::parse`] checks the line's JSON structure in one pass and keeps
//! the raw text of the top-level members a meter needs (`id`, `method`,
//! `params`, `result`, `error`, `reject-reason`, see `scan`); `params`,
//! `result` and `error` are decoded (with serde_json) only when an accessor
//! asks for them. Nothing is allocated unless a string holds escapes.
//! The relay views lines through [`crate::stratum::Shapes`], which gives
//! this same view without a scan for a line of a shape it has seen.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::scan;

/// Why a line could not be viewed as a JSON-RPC message. The line is relayed anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseFailure {
    /// Not valid JSON (binary garbage, truncated, HTTP, ...).
    NotJson,
    /// Valid JSON, but not an object with at least `method`, `result` or `error`.
    NotRpc,
    /// Longer than [`crate::stratum::frame::MAX_LINE_BYTES`]; not parsed.
    TooLong,
}

impl ParseFailure {
    /// Stable lower-case name, for logs and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            ParseFailure::NotJson => "not_json",
            ParseFailure::NotRpc => "not_rpc",
            ParseFailure::TooLong => "too_long",
        }
    }
}

/// What role a message plays in JSON-RPC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Has a `method` and a non-null `id`: expects a response.
    Request,
    /// Has a `method` and no `id` or a null one.
    Notification,
    /// Has no `method`, but a `result` or an `error`.
    Response,
}

/// The protocol family a method name belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// Stratum V1 (`mining.*`, `client.*`), including EthereumStratum/NiceHash,
    /// which reuses its method names.
    StratumV1,
    /// eth-proxy (`eth_submitLogin`, `eth_getWork`, ...).
    EthProxy,
    /// CryptoNote / xmrig JSON-RPC 2.0 (`login`, `job`, `submit`, `keepalived`).
    CryptoNote,
    /// A method name of no known dialect.
    Unknown,
}

macro_rules! methods {
    ($($variant:ident => $name:literal, $dialect:ident;)*) => {
        /// A known method name; anything else is [`Method::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Method {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
            /// Any other method name.
            Other,
        }

        impl Method {
            /// Every known method, for pre-registering labelled metrics.
            pub const ALL: &'static [Method] = &[$(Method::$variant,)* Method::Other];

            /// Classifies a method name.
            pub fn from_name(name: &str) -> Method {
                Method::from_bytes(name.as_bytes())
            }

            /// Classifies a method name given as bytes (the line's own).
            pub fn from_bytes(name: &[u8]) -> Method {
                $(
                    if name == $name.as_bytes() {
                        return Method::$variant;
                    }
                )*
                Method::Other
            }

            /// The method's wire name, or `"other"`: a bounded metric label.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Method::$variant => $name,)*
                    Method::Other => "other",
                }
            }

            /// The dialect this method name belongs to.
            pub const fn dialect(self) -> Dialect {
                match self {
                    $(Method::$variant => Dialect::$dialect,)*
                    Method::Other => Dialect::Unknown,
                }
            }
        }
    };
}

methods! {
    Subscribe => "mining.subscribe", StratumV1;
    Authorize => "mining.authorize", StratumV1;
    Submit => "mining.submit", StratumV1;
    Notify => "mining.notify", StratumV1;
    SetDifficulty => "mining.set_difficulty", StratumV1;
    SetTarget => "mining.set_target", StratumV1;
    Configure => "mining.configure", StratumV1;
    ExtranonceSubscribe => "mining.extranonce.subscribe", StratumV1;
    SetExtranonce => "mining.set_extranonce", StratumV1;
    SetVersionMask => "mining.set_version_mask", StratumV1;
    SuggestDifficulty => "mining.suggest_difficulty", StratumV1;
    SuggestTarget => "mining.suggest_target", StratumV1;
    GetTransactions => "mining.get_transactions", StratumV1;
    MiningPing => "mining.ping", StratumV1;
    Reconnect => "client.reconnect", StratumV1;
    GetVersion => "client.get_version", StratumV1;
    ShowMessage => "client.show_message", StratumV1;
    EthSubmitLogin => "eth_submitLogin", EthProxy;
    EthGetWork => "eth_getWork", EthProxy;
    EthSubmitWork => "eth_submitWork", EthProxy;
    EthSubmitHashrate => "eth_submitHashrate", EthProxy;
    Login => "login", CryptoNote;
    Job => "job", CryptoNote;
    CnSubmit => "submit", CryptoNote;
    GetJob => "getjob", CryptoNote;
    Keepalived => "keepalived", CryptoNote;
}

impl Method {
    /// Whether this method submits a share (any dialect).
    pub const fn is_share_submit(self) -> bool {
        matches!(
            self,
            Method::Submit | Method::EthSubmitWork | Method::CnSubmit
        )
    }

    /// Whether this method carries the miner's user name.
    pub const fn is_login(self) -> bool {
        matches!(
            self,
            Method::Authorize | Method::EthSubmitLogin | Method::Login
        )
    }
}

/// A JSON-RPC id as its raw JSON text (`1`, `"a7"`, `null`).
///
/// Raw text is what correlation needs: a response echoes the request's id
/// byte for byte, and comparing text needs no allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Id<'a>(pub(super) &'a [u8]);

impl<'a> Id<'a> {
    /// The id's JSON text.
    pub fn raw(self) -> &'a str {
        text(self.0)
    }

    /// The id's JSON text as bytes (what correlation hashes).
    pub fn raw_bytes(self) -> &'a [u8] {
        self.0
    }

    /// Whether the id is JSON `null`.
    pub fn is_null(self) -> bool {
        scan::is_null(self.0)
    }

    /// The id as an unsigned integer, if it is one.
    pub fn as_u64(self) -> Option<u64> {
        self.raw().parse().ok()
    }
}

/// Whether every byte is ASCII: eight bytes per step and no early exit
/// (lines are short, and almost all are ASCII), which the size-optimised
/// build does not make of `<[u8]>::is_ascii`.
#[inline]
fn is_ascii(line: &[u8]) -> bool {
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut words = line.chunks_exact(8);
    let mut seen = 0u64;
    for word in &mut words {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        seen |= u64::from_le_bytes(bytes);
    }
    for &byte in words.remainder() {
        seen |= u64::from(byte);
    }
    seen & HIGHS == 0
}

/// A span of a line that was checked to be UTF-8 and cut at ASCII
/// delimiters, so it is UTF-8 too; `""` is unreachable but avoids a panic.
fn text(span: &[u8]) -> &str {
    std::str::from_utf8(span).unwrap_or("")
}

/// The error a pool gave, in whichever form it used.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RpcError<'a> {
    /// Numeric code (`21` stale, `22` duplicate, `23` low difficulty, ...).
    pub code: Option<i64>,
    /// Human-readable text or `reject-reason`.
    pub message: Option<Cow<'a, str>>,
}

/// What a response says about the request it answers.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome<'a> {
    /// `result: true` (or CryptoNote `{"status": "OK"}`) and no error.
    Accepted,
    /// `result: false`, or any error.
    Rejected(RpcError<'a>),
    /// Some other result and no error (a subscribe reply, a job, ...).
    Value,
}

/// Borrowed view of one JSON-RPC line.
#[derive(Debug, Clone)]
pub struct Message<'a> {
    pub(super) id: Option<Id<'a>>,
    pub(super) method_name: Option<Cow<'a, [u8]>>,
    pub(super) method: Option<Method>,
    pub(super) params: Option<&'a [u8]>,
    pub(super) result: Option<&'a [u8]>,
    pub(super) error: Option<&'a [u8]>,
    pub(super) reject_reason: Option<Cow<'a, str>>,
}

impl<'a> Message<'a> {
    /// Views one line (without its newline) as a JSON-RPC message.
    pub fn parse(line: &'a [u8]) -> Result<Message<'a>, ParseFailure> {
        // Stratum is ASCII: the quick check almost always settles it.
        if !is_ascii(line) && std::str::from_utf8(line).is_err() {
            return Err(ParseFailure::NotJson);
        }
        let members = scan::scan(line)?;
        let method = members.method.as_deref().map(Method::from_bytes);
        Ok(Message {
            id: members.id.map(Id),
            method_name: members.method,
            method,
            params: members.params,
            result: members.result,
            error: members.error,
            reject_reason: members.reject_reason,
        })
    }

    /// Request, notification or response.
    pub fn kind(&self) -> Kind {
        match (&self.method, self.id) {
            (Some(_), Some(id)) if !id.is_null() => Kind::Request,
            (Some(_), _) => Kind::Notification,
            (None, _) => Kind::Response,
        }
    }

    /// The id; `None` when the member is absent (a `null` id is `Some`).
    pub fn id(&self) -> Option<Id<'a>> {
        self.id
    }

    /// The classified method, for requests and notifications.
    pub fn method(&self) -> Option<Method> {
        self.method
    }

    /// The method name as sent.
    pub fn method_name(&self) -> Option<&str> {
        self.method_name.as_deref().map(text)
    }

    /// Raw `params` JSON, if present.
    pub fn params_raw(&self) -> Option<&'a str> {
        self.params.map(text)
    }

    /// Raw `result` JSON, if present (`null` included).
    pub fn result_raw(&self) -> Option<&'a str> {
        self.result.map(text)
    }

    /// Raw `error` JSON, if present (`null` included).
    pub fn error_raw(&self) -> Option<&'a str> {
        self.error.map(text)
    }

    /// The difficulty of a `mining.set_difficulty` (its first parameter).
    pub fn difficulty(&self) -> Option<f64> {
        if self.method != Some(Method::SetDifficulty) {
            return None;
        }
        let First(d) = serde_json::from_slice::<First<f64>>(self.params?).ok()?;
        (d.is_finite() && d > 0.0).then_some(d)
    }

    /// The user name of a login (`mining.authorize`, `eth_submitLogin`: first
    /// parameter; CryptoNote `login`: `params.login`). Never the password.
    pub fn user(&self) -> Option<Cow<'a, str>> {
        let params = self.params?;
        match self.method? {
            Method::Authorize | Method::EthSubmitLogin => {
                serde_json::from_slice::<First<Str<'a>>>(params)
                    .ok()
                    .map(|f| f.0.0)
            }
            Method::Login => serde_json::from_slice::<LastString<'a>>(params)
                .ok()
                .and_then(|p| p.0),
            _ => None,
        }
    }

    /// The worker name of a `mining.submit` (its first parameter).
    pub fn worker(&self) -> Option<Cow<'a, str>> {
        if self.method != Some(Method::Submit) {
            return None;
        }
        serde_json::from_slice::<First<Str<'a>>>(self.params?)
            .ok()
            .map(|f| f.0.0)
    }

    /// What a response says: accepted, rejected (with code and reason) or a value.
    pub fn outcome(&self) -> Outcome<'a> {
        let mut error = match self.error {
            None => None,
            Some(raw) if scan::is_null(raw) => None,
            Some(raw) => serde_json::from_slice::<ErrorForm<'a>>(raw)
                .map(|e| e.0)
                .unwrap_or_else(|_| Some(RpcError::default())),
        };
        if let Some(reason) = &self.reject_reason {
            let e = error.get_or_insert_with(RpcError::default);
            if e.message.is_none() {
                e.message = Some(reason.clone());
            }
        }
        match (self.result, error) {
            (_, Some(e)) => Outcome::Rejected(e),
            (Some(result), None) if scan::is_true(result) => Outcome::Accepted,
            (Some(result), None) if scan::is_false(result) => {
                Outcome::Rejected(RpcError::default())
            }
            (Some(other), None) if is_status_ok(other) => Outcome::Accepted,
            _ => Outcome::Value,
        }
    }
}

/// Whether a result is CryptoNote's `{"status": "OK"}`.
fn is_status_ok(result: &[u8]) -> bool {
    result.starts_with(b"{")
        && serde_json::from_slice::<LastString<'_, STATUS>>(result)
            .is_ok_and(|r| r.0.is_some_and(|s| s.eq_ignore_ascii_case("ok")))
}

/// A string borrowed from the line, owned only when it holds escapes.
struct Str<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

/// The first element of a JSON array; the rest is skipped unparsed.
struct First<T>(T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a non-empty array")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let first = seq
                    .next_element()?
                    .ok_or_else(|| de::Error::invalid_length(0, &self))?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(V(std::marker::PhantomData))
    }
}

/// Key of CryptoNote's login name in `login` params.
const LOGIN: u8 = 0;
/// Key of CryptoNote's `{"status": "OK"}` result.
const STATUS: u8 = 1;

/// The string value of one key of a JSON object (`KEY`: [`LOGIN`] or
/// [`STATUS`]), the last one if the key repeats (as the pools' parsers
/// read it; a derived struct would refuse the duplicate); `None` if
/// absent or not a string.
struct LastString<'a, const KEY: u8 = LOGIN>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a, const KEY: u8> Deserialize<'de> for LastString<'a, KEY> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<const KEY: u8>;
        impl<'de, const KEY: u8> Visitor<'de> for V<KEY> {
            type Value = LastString<'de, KEY>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let name = if KEY == LOGIN { "login" } else { "status" };
                let mut last = None;
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    if key.0 == name {
                        last = map.next_value::<Loose<'de>>()?.text();
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(LastString(last))
            }
        }
        d.deserialize_map(V::<KEY>)
    }
}

/// Any of the error forms pools use; `None` for `null` and `false`.
struct ErrorForm<'a>(Option<RpcError<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for ErrorForm<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ErrorForm<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON-RPC error")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(ErrorForm(None))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(ErrorForm(v.then(RpcError::default)))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(ErrorForm(Some(RpcError {
                    code: Some(v),
                    message: None,
                })))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                self.visit_i64(v as i64)
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(ErrorForm(Some(RpcError {
                    code: None,
                    message: Some(Cow::Borrowed(v)),
                })))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(ErrorForm(Some(RpcError {
                    code: None,
                    message: Some(Cow::Owned(v.to_owned())),
                })))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // [code, "message", data]; some pools send [code, "message"].
                let code = seq.next_element::<Loose<'de>>()?.and_then(|l| l.code());
                let message = seq.next_element::<Loose<'de>>()?.and_then(Loose::text);
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ErrorForm(Some(RpcError { code, message })))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                // {"code": 23, "message": "Low difficulty share"} (JSON-RPC 2.0).
                let mut error = RpcError::default();
                while let Some(key) = map.next_key::<Str<'de>>()? {
                    match &*key.0 {
                        "code" => error.code = map.next_value::<Loose<'de>>()?.code(),
                        "message" => error.message = map.next_value::<Loose<'de>>()?.text(),
                        _ => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(ErrorForm(Some(error)))
            }
        }
        d.deserialize_any(V)
    }
}

/// A scalar of any type inside an error, read leniently.
enum Loose<'a> {
    Int(i64),
    Text(Cow<'a, str>),
    Other,
}

impl<'a> Loose<'a> {
    fn code(self) -> Option<i64> {
        match self {
            Loose::Int(c) => Some(c),
            Loose::Text(t) => t.trim().parse().ok(),
            Loose::Other => None,
        }
    }

    fn text(self) -> Option<Cow<'a, str>> {
        match self {
            Loose::Text(t) => Some(t),
            _ => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Loose<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Loose<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(Loose::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(Loose::Int(i64::try_from(v).unwrap_or(i64::MAX)))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(Loose::Int(v as i64))
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Loose::Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Loose::Text(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(Loose::Other)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Loose::Other)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    //! Message shapes taken from public pool and miner protocol documentation
    //! (slush's Stratum V1 description, BIP 310 for mining.configure,
    //! NiceHash's EthereumStratum/1.0.0, eth-proxy and xmrig's CryptoNote).
    use super::*;

    fn parse(line: &str) -> Message<'_> {
        Message::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{line}: {e:?}"))
    }

    fn rejected(line: &str) -> (Option<i64>, Option<String>) {
        match parse(line).outcome() {
            Outcome::Rejected(e) => (e.code, e.message.map(Cow::into_owned)),
            other => panic!("{line}: expected rejection, got {other:?}"),
        }
    }

    #[test]
    fn subscribe_request_and_response() {
        let m = parse(r#"{"id": 1, "method": "mining.subscribe", "params": ["cgminer/4.10.0"]}"#);
        assert_eq!(m.kind(), Kind::Request);
        assert_eq!(m.method(), Some(Method::Subscribe));
        assert_eq!(m.id().map(Id::raw), Some("1"));
        assert_eq!(m.id().and_then(Id::as_u64), Some(1));
        let r = parse(
            r#"{"id":1,"result":[[["mining.set_difficulty","b4b6693b72a50c7116db18d6497cac52"],["mining.notify","ae6812eb4cd7735a302a8a9dd95cf71f"]],"08000002",4],"error":null}"#,
        );
        assert_eq!(r.kind(), Kind::Response);
        assert_eq!(r.outcome(), Outcome::Value);
        assert_eq!(r.error_raw(), Some("null"));
    }

    #[test]
    fn authorize_user_never_password() {
        let m = parse(
            r#"{"params": ["slush.miner1", "s3cret"], "id": 2, "method": "mining.authorize"}"#,
        );
        assert_eq!(m.user().as_deref(), Some("slush.miner1"));
        assert!(m.method().unwrap().is_login());
        assert_eq!(
            parse(r#"{"error": null, "id": 2, "result": true}"#).outcome(),
            Outcome::Accepted
        );
    }

    #[test]
    fn escaped_strings_are_decoded() {
        let m = parse(r#"{"id":3,"method":"mining.au\u0074horize","params":["acc\"t.w","x"]}"#);
        assert_eq!(m.method(), Some(Method::Authorize));
        assert_eq!(m.user().as_deref(), Some("acc\"t.w"));
    }

    #[test]
    fn set_difficulty_and_notify_are_notifications() {
        let d = parse(r#"{"id":null,"method":"mining.set_difficulty","params":[1024]}"#);
        assert_eq!(d.kind(), Kind::Notification);
        assert_eq!(d.difficulty(), Some(1024.0));
        let d = parse(r#"{"method":"mining.set_difficulty","params":[0.5]}"#);
        assert_eq!(d.id(), None);
        assert_eq!(d.difficulty(), Some(0.5));
        assert_eq!(
            parse(r#"{"id":null,"method":"mining.set_difficulty","params":["x"]}"#).difficulty(),
            None
        );
        let n = parse(
            r#"{"params": ["bf", "4d16b6f85af6e2198f44ae2a6de67f78487ae5611b77c6c0440b921e00000000", "01000000010000000000000000000000000000000000000000000000000000000000000000ffffffff20020862062f503253482f04b8864e5008", "072f736c7573682f000000000100f2052a010000001976a914d23fcdf86f7e756a64a7a9688ef9903327048ed988ac00000000", [], "00000002", "1c2ac4af", "504e86b9", false], "id": null, "method": "mining.notify"}"#,
        );
        assert_eq!(n.kind(), Kind::Notification);
        assert_eq!(n.method(), Some(Method::Notify));
        assert_eq!(n.difficulty(), None);
    }

    #[test]
    fn submit_worker() {
        let m = parse(
            r#"{"params": ["slush.miner1", "bf", "00000001", "504e86ed", "b2957c02"], "id": 4, "method": "mining.submit"}"#,
        );
        assert_eq!(m.kind(), Kind::Request);
        assert!(m.method().unwrap().is_share_submit());
        assert_eq!(m.worker().as_deref(), Some("slush.miner1"));
    }

    #[test]
    fn every_error_form() {
        assert_eq!(
            rejected(r#"{"id":4,"result":null,"error":[21,"Job not found",null]}"#),
            (Some(21), Some("Job not found".into()))
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"error":[23,"Low difficulty share"]}"#),
            (Some(23), Some("Low difficulty share".into()))
        );
        assert_eq!(
            rejected(
                r#"{"id":4,"result":null,"error":{"code":-1,"message":"Low difficulty share"}}"#
            ),
            (Some(-1), Some("Low difficulty share".into()))
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"error":"Stale"}"#),
            (None, Some("Stale".into()))
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"error":true}"#),
            (None, None)
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"reject-reason":"high-hash"}"#),
            (None, Some("high-hash".into()))
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"error":null}"#),
            (None, None)
        );
        assert_eq!(
            rejected(r#"{"id":4,"result":false,"error":["22","Duplicate share"]}"#),
            (Some(22), Some("Duplicate share".into()))
        );
        assert_eq!(
            rejected(
                r#"{"id":4,"error":{"code":24,"message":"Unauthorized worker","data":{"x":1}}}"#
            ),
            (Some(24), Some("Unauthorized worker".into()))
        );
        assert_eq!(
            parse(r#"{"id":4,"result":true,"error":false}"#).outcome(),
            Outcome::Accepted
        );
        assert_eq!(
            parse(r#"{"id":4,"result":true,"error":null}"#).outcome(),
            Outcome::Accepted
        );
    }

    #[test]
    fn ids_of_every_type() {
        assert_eq!(
            parse(r#"{"id":"abc","result":true}"#).id().map(Id::raw),
            Some(r#""abc""#)
        );
        assert_eq!(
            parse(r#"{"id":7,"result":true}"#).id().map(Id::raw),
            Some("7")
        );
        let null_id = parse(r#"{"id":null,"result":true}"#);
        assert!(null_id.id().unwrap().is_null());
        assert_eq!(parse(r#"{"result":true}"#).id(), None);
        // A request with a string id is still a request.
        assert_eq!(
            parse(r#"{"id":"s1","method":"mining.submit","params":[]}"#).kind(),
            Kind::Request
        );
    }

    #[test]
    fn configure_reconnect_extranonce_ping() {
        let c = parse(
            r#"{"method": "mining.configure","id": 1,"params": [["minimum-difficulty", "version-rolling"],{"minimum-difficulty.value": 2048, "version-rolling.mask": "00000000", "version-rolling.min-bit-count": 2}]}"#,
        );
        assert_eq!(
            (c.kind(), c.method()),
            (Kind::Request, Some(Method::Configure))
        );
        let r = parse(
            r#"{"error": null,"id": 1,"result": {"version-rolling": true,"version-rolling.mask": "18000000","minimum-difficulty": true}}"#,
        );
        assert_eq!(r.outcome(), Outcome::Value);
        let rc = parse(
            r#"{"id":null,"method":"client.reconnect","params":["pool.example.com",3333,0]}"#,
        );
        assert_eq!(
            (rc.kind(), rc.method()),
            (Kind::Notification, Some(Method::Reconnect))
        );
        let se = parse(r#"{"id":null,"method":"mining.set_extranonce","params":["08000002",4]}"#);
        assert_eq!(se.method(), Some(Method::SetExtranonce));
        let ping = parse(r#"{"id": 7, "method": "mining.ping", "params": []}"#);
        assert_eq!(
            (ping.kind(), ping.method()),
            (Kind::Request, Some(Method::MiningPing))
        );
        assert_eq!(
            parse(r#"{"id":7,"result":"pong","error":null}"#).outcome(),
            Outcome::Value
        );
    }

    #[test]
    fn other_dialects_are_classified_not_errors() {
        let e = parse(
            r#"{"id":1,"jsonrpc":"2.0","method":"eth_submitLogin","params":["0xabc.rig1","x"]}"#,
        );
        assert_eq!(e.method().map(Method::dialect), Some(Dialect::EthProxy));
        assert_eq!(e.user().as_deref(), Some("0xabc.rig1"));
        let t = parse(
            r#"{"id":null,"method":"mining.set_target","params":["00000000ffff0000000000000000000000000000000000000000000000000000"]}"#,
        );
        assert_eq!(t.method(), Some(Method::SetTarget));
        let l = parse(
            r#"{"id":1,"jsonrpc":"2.0","method":"login","params":{"login":"4Aabc.worker","pass":"x","agent":"xmrig/6.21.0"}}"#,
        );
        assert_eq!(l.method().map(Method::dialect), Some(Dialect::CryptoNote));
        assert_eq!(l.user().as_deref(), Some("4Aabc.worker"));
        let j = parse(
            r#"{"jsonrpc":"2.0","method":"job","params":{"blob":"0707","job_id":"j1","target":"b88d0600"}}"#,
        );
        assert_eq!(
            (j.kind(), j.method()),
            (Kind::Notification, Some(Method::Job))
        );
        let s = parse(
            r#"{"id":2,"jsonrpc":"2.0","method":"submit","params":{"id":"w","job_id":"j1","nonce":"1a","result":"ff"}}"#,
        );
        assert!(s.method().unwrap().is_share_submit());
        assert_eq!(
            parse(r#"{"id":2,"jsonrpc":"2.0","error":null,"result":{"status":"OK"}}"#).outcome(),
            Outcome::Accepted
        );
        let u = parse(r#"{"id":9,"method":"vendor.special","params":[]}"#);
        assert_eq!(
            (u.method(), u.method_name()),
            (Some(Method::Other), Some("vendor.special"))
        );
        assert_eq!(Method::Other.as_str(), "other");
    }

    #[test]
    fn repeated_keys_read_as_the_pool_reads_them() {
        let l = parse(
            r#"{"id":1,"method":"login","params":{"login":"decoy","pass":"x","login":"4Areal.w"}}"#,
        );
        assert_eq!(l.user().as_deref(), Some("4Areal.w"));
        assert_eq!(
            parse(r#"{"id":2,"error":null,"result":{"status":"KO","status":"OK"}}"#).outcome(),
            Outcome::Accepted
        );
        assert_eq!(
            parse(r#"{"id":2,"error":null,"result":{"status":"OK","status":"KO"}}"#).outcome(),
            Outcome::Value
        );
        let s = parse(
            r#"{"id":3,"method":"mining.extranonce.subscribe","params":["w","j","e","t","n"],"method":"mining.submit"}"#,
        );
        assert_eq!(s.method(), Some(Method::Submit));
        assert_eq!(s.worker().as_deref(), Some("w"));
    }

    #[test]
    fn garbage_is_a_parse_failure() {
        for (line, want) in [
            (&b"GET / HTTP/1.1"[..], ParseFailure::NotJson),
            (b"\x00\xff\xfe{", ParseFailure::NotJson),
            (b"{\"id\":1,\"method\":", ParseFailure::NotJson),
            (b"[1,2]", ParseFailure::NotRpc),
            (b"42", ParseFailure::NotRpc),
            (b"{\"foo\":1}", ParseFailure::NotRpc),
            (b"{\"method\":7}", ParseFailure::NotRpc),
        ] {
            assert_eq!(
                Message::parse(line).err(),
                Some(want),
                "{}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
