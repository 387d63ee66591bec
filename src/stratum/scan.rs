//! A single-pass scanner for the top level of one JSON-RPC line.
//!
//! Observing a message needs only a few top-level members, so instead of a
//! general deserializer this walks the line once: it checks the JSON
//! structure of everything (so a broken line is still a parse failure), and
//! returns the raw text of `id`, `method`, `params`, `result`, `error` and
//! `reject-reason`. Strings are skipped with `memchr` (SIMD), so long hex
//! strings in a `mining.notify` cost almost nothing. Nothing is allocated
//! unless a key or the method name holds escapes.
//!
//! One leniency against RFC 8259: raw control characters inside strings are
//! not refused (a line is relayed whatever it holds; only its metering could
//! differ, and no pool or miner sends them).

use std::borrow::Cow;

use super::message::ParseFailure;

/// Deepest nesting accepted (serde_json's default limit too).
const MAX_DEPTH: u32 = 128;

/// The raw JSON text of the members the message view uses.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Members<'a> {
    pub id: Option<&'a [u8]>,
    /// Raw bytes: the line is UTF-8 and the quotes are ASCII, so these are
    /// too; not checked again here (most method names are never shown).
    pub method: Option<Cow<'a, [u8]>>,
    pub params: Option<&'a [u8]>,
    pub result: Option<&'a [u8]>,
    pub error: Option<&'a [u8]>,
    pub reject_reason: Option<Cow<'a, str>>,
}

/// Scans one line: `Ok` for a JSON object, `NotRpc` for other valid JSON or
/// an object whose `method` or `reject-reason` is not a string, `NotJson`
/// for anything else. A key given twice takes its last value.
///
/// The caller has checked that `b` is UTF-8.
pub(crate) fn scan(b: &[u8]) -> Result<Members<'_>, ParseFailure> {
    let mut i = ws(b, 0);
    if b.get(i) != Some(&b'{') {
        return match skip_value(b, i) {
            Ok(end) if ws(b, end) == b.len() => Err(ParseFailure::NotRpc),
            _ => Err(ParseFailure::NotJson),
        };
    }
    // Spans (start, end) of the members' values, by key index.
    let mut spans: [Option<(usize, usize)>; KEYS] = [None; KEYS];
    i = ws(b, i + 1);
    if b.get(i) == Some(&b'}') {
        i += 1;
    } else {
        loop {
            if b.get(i) != Some(&b'"') {
                return Err(ParseFailure::NotJson);
            }
            let (key, key_end) = match known_key(b, i + 1) {
                Some(known) => known,
                None => {
                    let (key_end, escaped) = string_end(b, i + 1).ok_or(ParseFailure::NotJson)?;
                    let key = if escaped {
                        key_index(
                            decode(&b[i..=key_end])
                                .ok_or(ParseFailure::NotJson)?
                                .as_bytes(),
                        )
                    } else {
                        key_index(&b[i + 1..key_end])
                    };
                    (key, key_end)
                }
            };
            i = ws(b, key_end + 1);
            if b.get(i) != Some(&b':') {
                return Err(ParseFailure::NotJson);
            }
            let start = ws(b, i + 1);
            let end = member_value(b, start).map_err(|()| ParseFailure::NotJson)?;
            if key != OTHER {
                // A repeated key takes its last value, as the pools'
                // parsers do (serde_json, nlohmann::json, Python's json):
                // metering must read the line the way the pool will.
                spans[key] = Some((start, end));
            }
            i = ws(b, end);
            match b.get(i) {
                Some(b',') => i = ws(b, i + 1),
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err(ParseFailure::NotJson),
            }
        }
    }
    if ws(b, i) != b.len() {
        return Err(ParseFailure::NotJson);
    }
    let value = |k: usize| spans[k].map(|(start, end)| &b[start..end]);
    let method = match value(METHOD).map(string_bytes) {
        None => None,
        Some(Some(Some(name))) => Some(name),
        Some(_) => return Err(ParseFailure::NotRpc),
    };
    let reject_reason = match value(REJECT_REASON).map(string_value) {
        None | Some(Some(None)) => None,
        Some(Some(Some(reason))) => Some(reason),
        Some(None) => return Err(ParseFailure::NotRpc),
    };
    if method.is_none() && spans[RESULT].is_none() && spans[ERROR].is_none() {
        return Err(ParseFailure::NotRpc);
    }
    // Built in the return value, not in a local first: a local was stored
    // eight bytes at a time and copied out sixteen at a time, a stalled
    // store forwarding that perf put at 2% of the relay's CPU at saturation.
    Ok(Members {
        id: value(ID),
        method,
        params: value(PARAMS),
        result: value(RESULT),
        error: value(ERROR),
        reject_reason,
    })
}

const ID: usize = 0;
const METHOD: usize = 1;
const PARAMS: usize = 2;
const RESULT: usize = 3;
const ERROR: usize = 4;
const REJECT_REASON: usize = 5;
const KEYS: usize = 6;
const OTHER: usize = KEYS;

/// Which member a key names.
#[inline(always)]
fn key_index(key: &[u8]) -> usize {
    match key {
        b"id" => ID,
        b"method" => METHOD,
        b"params" => PARAMS,
        b"result" => RESULT,
        b"error" => ERROR,
        b"reject-reason" => REJECT_REASON,
        _ => OTHER,
    }
}

/// The plain keys every Stratum line uses, recognised by their bytes
/// without a string scan: the member and the index of the closing quote.
/// (A key spelt with escapes takes the general path and means the same.)
/// Slice patterns, not `==`: see [`is_null`].
#[inline(always)]
fn known_key(b: &[u8], from: usize) -> Option<(usize, usize)> {
    match b.get(from..)? {
        [b'i', b'd', b'"', ..] => Some((ID, from + 2)),
        [b'm', b'e', b't', b'h', b'o', b'd', b'"', ..] => Some((METHOD, from + 6)),
        [b'p', b'a', b'r', b'a', b'm', b's', b'"', ..] => Some((PARAMS, from + 6)),
        [b'r', b'e', b's', b'u', b'l', b't', b'"', ..] => Some((RESULT, from + 6)),
        [b'e', b'r', b'r', b'o', b'r', b'"', ..] => Some((ERROR, from + 5)),
        _ => None,
    }
}

/// Whether a value is the literal `null`. The literals are matched byte by
/// byte: in this size-optimised build a slice comparison is a call to
/// `memcmp`, and those calls were 15% of viewing a short answer line.
#[inline(always)]
pub(crate) fn is_null(value: &[u8]) -> bool {
    matches!(value, [b'n', b'u', b'l', b'l'])
}

/// Whether a value is the literal `true` (see [`is_null`]).
#[inline(always)]
pub(crate) fn is_true(value: &[u8]) -> bool {
    matches!(value, [b't', b'r', b'u', b'e'])
}

/// Whether a value is the literal `false` (see [`is_null`]).
#[inline(always)]
pub(crate) fn is_false(value: &[u8]) -> bool {
    matches!(value, [b'f', b'a', b'l', b's', b'e'])
}

/// A value that must be a string or null, as raw bytes: `Some(Some(bytes))`,
/// `Some(None)` for null, `None` for anything else.
fn string_bytes(value: &[u8]) -> Option<Option<Cow<'_, [u8]>>> {
    if is_null(value) {
        return Some(None);
    }
    let inner = value.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'\\') {
        decode(value).map(|text| Some(Cow::Owned(text.into_owned().into_bytes())))
    } else {
        Some(Some(Cow::Borrowed(inner)))
    }
}

/// A value that must be a string or null: `Some(Some(text))`, `Some(None)`
/// for null, `None` for anything else.
fn string_value(value: &[u8]) -> Option<Option<Cow<'_, str>>> {
    Some(match string_bytes(value)? {
        None => None,
        Some(Cow::Borrowed(bytes)) => Some(Cow::Borrowed(std::str::from_utf8(bytes).ok()?)),
        Some(Cow::Owned(bytes)) => Some(Cow::Owned(String::from_utf8(bytes).ok()?)),
    })
}

/// Decodes a JSON string literal with escapes (rare: allocates).
fn decode(literal: &[u8]) -> Option<Cow<'_, str>> {
    serde_json::from_slice::<String>(literal)
        .ok()
        .map(Cow::Owned)
}

/// Skips JSON whitespace from `i`.
#[inline(always)]
fn ws(b: &[u8], mut i: usize) -> usize {
    while let Some(b' ' | b'\t' | b'\n' | b'\r') = b.get(i) {
        i += 1;
    }
    i
}

/// The end of the string whose contents start at `from` (just after its
/// opening quote): the index of the closing quote, and whether it holds
/// escapes.
#[inline(always)]
fn string_end(b: &[u8], from: usize) -> Option<(usize, bool)> {
    let mut j = from;
    let mut escaped = false;
    loop {
        j = quote_or_backslash(b, j)?;
        if b[j] == b'"' {
            return Some((j, escaped));
        }
        escaped = true;
        j += 1;
        match b.get(j)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => j += 1,
            b'u' => {
                let hex = b.get(j + 1..j + 5)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                j += 5;
            }
            _ => return None,
        }
    }
}

/// Bytes looked at eight at a time before handing over to `memchr2`, whose
/// setup costs more than a short string (most Stratum strings are short;
/// the long ones are hex in `mining.notify`).
const SHORT_STRING_BYTES: usize = 32;

/// Index of the first `"` or `\` at or after `from`.
#[inline(always)]
fn quote_or_backslash(b: &[u8], from: usize) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let limit = (from + SHORT_STRING_BYTES).min(b.len());
    let mut j = from;
    while let Some(word) = b.get(j..j + 8).filter(|_| j + 8 <= limit) {
        let Ok(word) = <[u8; 8]>::try_from(word) else {
            break;
        };
        let x = u64::from_le_bytes(word);
        let (q, s) = (x ^ (ONES * u64::from(b'"')), x ^ (ONES * u64::from(b'\\')));
        // High bit set in each zero byte of q or s; the lowest one is exact.
        let hits = ((q.wrapping_sub(ONES) & !q) | (s.wrapping_sub(ONES) & !s)) & HIGHS;
        if hits != 0 {
            return Some(j + (hits.trailing_zeros() / 8) as usize);
        }
        j += 8;
    }
    while j < limit {
        if matches!(b[j], b'"' | b'\\') {
            return Some(j);
        }
        j += 1;
    }
    memchr::memchr2(b'"', b'\\', b.get(j..)?).map(|k| j + k)
}

/// The number starting at `i`: the index after it.
#[inline]
fn number(b: &[u8], mut i: usize) -> Option<usize> {
    let digits = |b: &[u8], mut i: usize| {
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        (i > start).then_some(i)
    };
    if b.get(i) == Some(&b'-') {
        i += 1;
    }
    i = match b.get(i)? {
        b'0' => i + 1,
        b'1'..=b'9' => digits(b, i)?,
        _ => return None,
    };
    if b.get(i) == Some(&b'.') {
        i = digits(b, i + 1)?;
    }
    if let Some(b'e' | b'E') = b.get(i) {
        i += 1;
        if let Some(b'+' | b'-') = b.get(i) {
            i += 1;
        }
        i = digits(b, i)?;
    }
    Some(i)
}

/// Skips one member's value starting at `i`, as [`skip_value`] does. Almost
/// every Stratum value is a scalar, or (params) an array of strings and
/// numbers: those are skipped here, without the container stack of
/// `skip_value` or a call to it; anything else goes to it.
#[inline(always)]
fn member_value(b: &[u8], i: usize) -> Result<usize, ()> {
    // Spelt out rather than through `scalar`: an answer line is three
    // scalar members, and the `Option` round trip cost it 9% in criterion.
    match b.get(i) {
        Some(b'"') => Ok(string_end(b, i + 1).ok_or(())?.0 + 1),
        Some(b't') if b.get(i..i + 4).is_some_and(is_true) => Ok(i + 4),
        Some(b'f') if b.get(i..i + 5).is_some_and(is_false) => Ok(i + 5),
        Some(b'n') if b.get(i..i + 4).is_some_and(is_null) => Ok(i + 4),
        Some(b'-' | b'0'..=b'9') => number(b, i).ok_or(()),
        Some(b'[') => flat_array(b, i).map_or_else(|| skip_value(b, i), Ok),
        _ => skip_value(b, i),
    }
}

/// The end of the string, number or literal at `i`; `None` for anything
/// else, an invalid one included.
#[inline(always)]
fn scalar(b: &[u8], i: usize) -> Option<usize> {
    match b.get(i)? {
        b'"' => Some(string_end(b, i + 1)?.0 + 1),
        b't' => b.get(i..i + 4).is_some_and(is_true).then_some(i + 4),
        b'f' => b.get(i..i + 5).is_some_and(is_false).then_some(i + 5),
        b'n' => b.get(i..i + 4).is_some_and(is_null).then_some(i + 4),
        _ => number(b, i),
    }
}

/// The end of the array at `i` if it holds only strings, numbers, literals
/// and such arrays one level down, with no whitespace (a submit's or a
/// notify's params, whose merkle branches are a nested array); `None` for
/// anything else, including an error, which [`skip_value`] then finds.
#[inline(always)]
fn flat_array(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i;
    let mut depth = 0u32;
    'value: loop {
        // Expecting a value at `j`.
        match b.get(j)? {
            b'[' if depth < 2 => {
                depth += 1;
                j += 1;
                if b.get(j) != Some(&b']') {
                    continue 'value;
                }
                j += 1;
                depth -= 1;
            }
            b'{' | b'[' => return None,
            _ => j = scalar(b, j)?,
        }
        // After a value: the next element, or the end of arrays.
        loop {
            if depth == 0 {
                return Some(j);
            }
            match b.get(j)? {
                b',' => {
                    j += 1;
                    continue 'value;
                }
                b']' => {
                    j += 1;
                    depth -= 1;
                }
                _ => return None,
            }
        }
    }
}

/// Skips one JSON value starting at `i` (no leading whitespace): the index
/// after it. Iterative, with the container kinds in a bit stack, so hostile
/// nesting cannot overflow the call stack.
fn skip_value(b: &[u8], mut i: usize) -> Result<usize, ()> {
    // Bit n set: the container at depth n+1 is an object.
    let mut objects: u128 = 0;
    let mut depth: u32 = 0;
    loop {
        // Expecting a value at `i`.
        i = ws(b, i);
        let mut opened = false;
        match b.get(i).ok_or(())? {
            b'{' | b'[' => {
                if depth == MAX_DEPTH {
                    return Err(());
                }
                let object = b[i] == b'{';
                objects = (objects << 1) | u128::from(object);
                depth += 1;
                i = ws(b, i + 1);
                let close = if object { b'}' } else { b']' };
                if b.get(i) == Some(&close) {
                    i += 1;
                    objects >>= 1;
                    depth -= 1;
                } else {
                    opened = true;
                    if object {
                        i = key(b, i)?;
                    }
                }
            }
            _ => i = scalar(b, i).ok_or(())?,
        }
        if opened {
            continue;
        }
        // After a value: close containers or move to the next element.
        loop {
            if depth == 0 {
                return Ok(i);
            }
            i = ws(b, i);
            let object = objects & 1 == 1;
            match (b.get(i), object) {
                (Some(b','), true) => {
                    i = key(b, ws(b, i + 1))?;
                    break;
                }
                (Some(b','), false) => {
                    i += 1;
                    break;
                }
                (Some(b'}'), true) | (Some(b']'), false) => {
                    i += 1;
                    objects >>= 1;
                    depth -= 1;
                }
                _ => return Err(()),
            }
        }
    }
}

/// Skips an object key and its colon: the index of the value.
#[inline]
fn key(b: &[u8], i: usize) -> Result<usize, ()> {
    if b.get(i) != Some(&b'"') {
        return Err(());
    }
    let (quote, _) = string_end(b, i + 1).ok_or(())?;
    let i = ws(b, quote + 1);
    if b.get(i) == Some(&b':') {
        Ok(i + 1)
    } else {
        Err(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json says about the same text.
    fn serde_valid(text: &str) -> bool {
        serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
    }

    #[test]
    fn members_are_raw_text() {
        let m =
            scan(br#"{"id": 7 , "method":"mining.submit","params":["w", "j"],"x":{"a":[1,2,{}]}}"#)
                .unwrap();
        assert_eq!(m.id, Some(&b"7"[..]));
        assert_eq!(m.method.as_deref(), Some(&b"mining.submit"[..]));
        assert_eq!(m.params, Some(&br#"["w", "j"]"#[..]));
        let r =
            scan(br#"{"id":"a\"b","result":null,"error":[21,"x",null],"reject-reason":"stale"}"#)
                .unwrap();
        assert_eq!(r.id, Some(&br#""a\"b""#[..]));
        assert_eq!(
            (r.result, r.error),
            (Some(&b"null"[..]), Some(&br#"[21,"x",null]"#[..]))
        );
        assert_eq!(r.reject_reason.as_deref(), Some("stale"));
    }

    #[test]
    fn escaped_keys_and_method_are_decoded() {
        let m = scan(br#"{"\u0069d":1,"method":"mining.au\u0074horize"}"#).unwrap();
        assert_eq!(m.id, Some(&b"1"[..]));
        assert_eq!(m.method.as_deref(), Some(&b"mining.authorize"[..]));
    }

    #[test]
    fn not_rpc_versus_not_json() {
        for text in [
            "[1,2]",
            "42",
            "\"s\"",
            "null",
            "{}",
            r#"{"foo":1}"#,
            r#"{"method":7}"#,
            r#"{"method":"mining.submit","method":7}"#,
            r#"{"result":true,"reject-reason":5}"#,
        ] {
            assert_eq!(
                scan(text.as_bytes()).err(),
                Some(ParseFailure::NotRpc),
                "{text}"
            );
        }
        for text in [
            "",
            "GET / HTTP/1.1",
            "{",
            r#"{"id":1,"method":"#,
            r#"{"a":tru}"#,
            r#"{"a":01}"#,
            r#"{"a":1.}"#,
            r#"{"a":"\x"}"#,
            r#"{"a":[1,]}"#,
            r#"{"a":1,}"#,
            r#"{"a" 1}"#,
            r#"{"a":1} x"#,
            r#"{"a":"\u12"}"#,
            r#"{"a":-}"#,
            r#"{"a":1e}"#,
        ] {
            assert_eq!(
                scan(text.as_bytes()).err(),
                Some(ParseFailure::NotJson),
                "{text}"
            );
        }
    }

    #[test]
    fn quote_search_finds_the_first_at_every_offset() {
        for len in 0..80 {
            for at in 0..len {
                for mark in [b'"', b'\\'] {
                    let mut bytes = vec![b'a'; len];
                    bytes[at] = mark;
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(quote_or_backslash(&bytes, 0), Some(at), "len {len} at {at}");
                    assert_eq!(quote_or_backslash(&bytes, at), Some(at));
                }
            }
            assert_eq!(quote_or_backslash(&vec![b'x'; len], 0), None);
        }
        // Bytes that differ from a quote by one bit, next to a real one.
        assert_eq!(quote_or_backslash(b"#!\x01\xa2\"", 0), Some(4));
    }

    #[test]
    fn nesting_is_bounded_without_recursion() {
        let deep = format!("{{\"a\":{}1{}}}", "[".repeat(200_000), "]".repeat(200_000));
        assert_eq!(scan(deep.as_bytes()).err(), Some(ParseFailure::NotJson));
        let ok = format!("{{\"result\":{}1{}}}", "[".repeat(100), "]".repeat(100));
        assert!(scan(ok.as_bytes()).is_ok());
    }

    /// Pieces that make mostly-valid and often-broken JSON when concatenated.
    fn token() -> impl Strategy<Value = &'static str> {
        prop::sample::select(vec![
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "\"id\"",
            "\"method\"",
            "\"result\"",
            "\"k\"",
            "\"s\\\"t\"",
            "\"\\u00e9\"",
            "\"\\q\"",
            "\"é\"",
            "1",
            "-2",
            "0.5",
            "1e9",
            "01",
            "-",
            "true",
            "false",
            "null",
            "nul",
            "\"",
            "\\",
            "\"mining.notify\"",
            "[]",
            "{}",
        ])
    }

    /// Any JSON value, nested a few levels, with keys that collide with
    /// the members the scanner looks for.
    fn json_value() -> impl Strategy<Value = serde_json::Value> {
        use serde_json::Value;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            "[a-z\\\\\"é{}\\[\\],:]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["id", "method", "result", "error", "k", "é"]),
                        inner
                    ),
                    0..6
                )
                .prop_map(|members| Value::Object(
                    members
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect()
                )),
            ]
        })
    }

    #[test]
    fn a_repeated_key_takes_its_last_value() {
        let line = br#"{"id":1,"method":"mining.authorize","params":[],"id":7,"method":"mining.submit","params":["w","j"]}"#;
        let m = scan(line).unwrap();
        assert_eq!(m.id, Some(&b"7"[..]));
        assert_eq!(m.method.as_deref(), Some(&b"mining.submit"[..]));
        assert_eq!(m.params, Some(&br#"["w","j"]"#[..]));
    }

    proptest! {
        /// Objects whose keys repeat: every member the scanner returns is
        /// the value serde_json keeps (the last), compared as JSON values.
        #[test]
        fn repeated_keys_read_as_serde_json_reads_them(
            members in prop::collection::vec(
                (prop::sample::select(vec!["id", "method", "params", "result", "error", "x"]), json_value()),
                1..8,
            ),
        ) {
            let text = format!(
                "{{{}}}",
                members
                    .iter()
                    .map(|(k, v)| format!("\"{k}\":{v}"))
                    .collect::<Vec<_>>()
                    .join(",")
            );
            let oracle: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&text).unwrap();
            let as_value = |raw: Option<&[u8]>| {
                raw.map(|r| serde_json::from_slice::<serde_json::Value>(r).unwrap())
            };
            match scan(text.as_bytes()) {
                Ok(m) => {
                    prop_assert_eq!(as_value(m.id), oracle.get("id").cloned());
                    prop_assert_eq!(as_value(m.params), oracle.get("params").cloned());
                    prop_assert_eq!(as_value(m.result), oracle.get("result").cloned());
                    prop_assert_eq!(as_value(m.error), oracle.get("error").cloned());
                    prop_assert_eq!(
                        m.method.as_deref(),
                        oracle.get("method").and_then(|v| v.as_str()).map(str::as_bytes)
                    );
                }
                Err(ParseFailure::NotRpc) => {
                    // Not JSON-RPC: a method that is not a string, or none
                    // of method, result and error.
                    let method = oracle.get("method");
                    prop_assert!(
                        method.is_some_and(|m| !m.is_string())
                            || (method.is_none()
                                && !oracle.contains_key("result")
                                && !oracle.contains_key("error")),
                        "{}", text
                    );
                }
                Err(other) => prop_assert!(false, "{:?} for {}", other, text),
            }
        }

        #[test]
        fn validity_matches_serde_json(tokens in prop::collection::vec(token(), 0..24)) {
            let text: String = tokens.concat();
            let ours = !matches!(scan(text.as_bytes()), Err(ParseFailure::NotJson));
            prop_assert_eq!(ours, serde_valid(&text), "{}", text);
        }

        #[test]
        fn wrapped_values_are_found(tokens in prop::collection::vec(token(), 0..12)) {
            let inner: String = tokens.concat();
            let text = format!(r#"{{"id":3,"result":{inner},"error":null}}"#);
            match scan(text.as_bytes()) {
                // A value on its own is found whole, whitespace aside.
                Ok(m) if serde_valid(&inner) => {
                    prop_assert_eq!(m.result, Some(inner.trim_matches(' ').as_bytes()));
                }
                // A fragment such as `1,"k":2` leaves `result` the part
                // before its first comma, unless the fragment gives
                // `"result"` again (`"id","result":"method"`): the last
                // value counts.
                Ok(m) => {
                    let result = m.result.expect("result member");
                    let text = std::str::from_utf8(result).unwrap();
                    let trimmed = inner.trim_start_matches(' ');
                    prop_assert!(
                        trimmed.as_bytes().starts_with(result)
                            || (inner.contains("\"result\"") && inner.contains(text)),
                        "{} from {}", text, inner
                    );
                    prop_assert!(serde_valid(text));
                }
                // `1,"method":7` is valid JSON but a non-string method,
                // which is not JSON-RPC.
                Err(ParseFailure::NotRpc) => prop_assert!(serde_valid(&text) && !serde_valid(&inner)),
                Err(ParseFailure::NotJson) => prop_assert!(!serde_valid(&text), "{}", text),
                Err(other) => prop_assert!(false, "{:?} for {}", other, text),
            }
        }

        #[test]
        fn generated_values_are_found(value in json_value(), pad in " {0,2}") {
            let inner = serde_json::to_string(&value).unwrap();
            let text = format!(r#"{{"error":null,"result":{pad}{inner}{pad},"id":3}}"#);
            let m = scan(text.as_bytes()).unwrap();
            prop_assert_eq!(m.result, Some(inner.as_bytes()));
            prop_assert_eq!(m.id, Some(&b"3"[..]));
            prop_assert_eq!(m.error, Some(&b"null"[..]));
        }
    }
}
