//! `/api/v1/`: the JSON the status page reads (farm, pools, clients, a page
//! of miners) and the admin actions it posts (drain, undrain, weight and
//! priority, disconnect, reload).
//!
//! Why a module of its own: the metrics port's other endpoints are for
//! machines (Prometheus, probes); this one is for people, and its admin
//! half changes what the relay does, so its security rules live in one
//! place:
//!
//! - reads need the bearer token when `metrics_token` is set, like `/status`;
//! - actions are `POST` only, need the token, and are refused outright (403)
//!   when none is configured; a request that carries an `Origin` header
//!   other than this gateway's own (`http://` + its `Host`) is refused (403)
//!   whatever its token, so another site open in the operator's browser
//!   cannot act (and no cookie is ever used for auth);
//! - every action is logged at info with the requester's address and what
//!   it did, and counted in `stratum_admin_actions_total{action,result}`;
//!   the token is never logged or echoed.
//!
//! Every response is bounded whatever the number of miners: miners come in
//! pages of at most [`MAX_MINERS_PER_PAGE`].

use std::time::{Duration, Instant};

use log::{info, warn};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{App, Reply};
use crate::metrics::RejectReason;
use crate::metrics::history::{FIVE_MINUTES, NOW_WINDOW, ONE_HOUR, SAMPLE_INTERVAL};
use crate::metrics::miners::MinerSnapshot;
use crate::relay::{PoolHealth, PoolStatus, pools::DownReason};

/// Most miners in one `/api/v1/miners` answer.
pub const MAX_MINERS_PER_PAGE: usize = 200;
/// Miners in one answer when `limit` is not given.
pub const DEFAULT_MINERS_PER_PAGE: usize = 50;
/// A miner with no accepted share for this long is flagged `stale` (the
/// `stale_after` parameter overrides it).
pub const DEFAULT_STALE_AFTER: Duration = Duration::from_secs(600);
/// Most bytes one miner takes in a `/api/v1/miners` answer: a worker name
/// of [`crate::metrics::miners::MAX_WORKER_BYTES`] and a `client_id` of 64
/// bytes, each made of characters JSON escapes as `\u00XX` (6 bytes each:
/// 1152), a pool name of a 253-byte host and its port, an IPv6 address,
/// every reject reason and the largest numbers (about 700 more). A page
/// is bounded by this times [`MAX_MINERS_PER_PAGE`].
pub const MAX_MINER_JSON_BYTES: usize = 2300;

/// An admin action: the `action` label of `stratum_admin_actions_total`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Move a pool's miners off at the bounded rate.
    Drain(String),
    /// Put a drained pool back.
    Undrain(String),
    /// Change a pool's weight and/or priority.
    PoolUpdate(String),
    /// Close one miner connection.
    Disconnect(u64),
    /// Read the configuration again (what SIGHUP does).
    Reload,
}

impl Action {
    /// The label value.
    pub const fn as_str(&self) -> &'static str {
        match self {
            Action::Drain(_) => "drain",
            Action::Undrain(_) => "undrain",
            Action::PoolUpdate(_) => "pool_update",
            Action::Disconnect(_) => "disconnect",
            Action::Reload => "reload",
        }
    }

    /// The admin action a path names, if any.
    pub fn parse(path: &str) -> Option<Action> {
        let rest = path.strip_prefix("/api/v1/")?;
        if rest == "reload" {
            return Some(Action::Reload);
        }
        let segments: Vec<&str> = rest.split('/').collect();
        match segments.as_slice() {
            ["pools", name, "drain"] => Some(Action::Drain(percent_decode(name, false)?)),
            ["pools", name, "undrain"] => Some(Action::Undrain(percent_decode(name, false)?)),
            ["pools", name] if !name.is_empty() => {
                Some(Action::PoolUpdate(percent_decode(name, false)?))
            }
            ["miners", id, "disconnect"] => id.parse().ok().map(Action::Disconnect),
            _ => None,
        }
    }
}

/// How an admin action ended: the `result` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionResult {
    /// Done.
    Ok,
    /// No token, or a wrong one (401).
    Unauthorized,
    /// Admin actions are off (no token configured) or the request came
    /// from another origin (403).
    Forbidden,
    /// No such pool or miner (404).
    NotFound,
    /// A body that does not parse or a value out of range (400).
    Invalid,
    /// The reload was refused (422).
    Failed,
}

impl ActionResult {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            ActionResult::Ok => "ok",
            ActionResult::Unauthorized => "unauthorized",
            ActionResult::Forbidden => "forbidden",
            ActionResult::NotFound => "not_found",
            ActionResult::Invalid => "invalid",
            ActionResult::Failed => "failed",
        }
    }
}

/// What the API reads from a request besides its path.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestInfo<'a> {
    /// The query string (after `?`), if any.
    pub query: &'a str,
    /// `Authorization` header.
    pub authorization: Option<&'a str>,
    /// `Origin` header.
    pub origin: Option<&'a str>,
    /// `Host` header.
    pub host: Option<&'a str>,
    /// The client's address, as the gate saw it.
    pub peer: Option<&'a str>,
    /// The request body (at most the gate's body limit).
    pub body: &'a [u8],
}

fn json_reply(status: u16, body: Value) -> Reply {
    Reply {
        status,
        content_type: "application/json",
        body: body.to_string(),
        headers: &[("Cache-Control", "no-store")],
    }
}

fn error(status: u16, message: impl Into<String>) -> Reply {
    json_reply(status, json!({ "error": message.into() }))
}

/// Decodes `%XX` escapes (and `+` as a space in a query); `None` if an
/// escape is malformed or the result is not UTF-8.
pub fn percent_decode(text: &str, plus_is_space: bool) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// The value of `key` in a query string, decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('=').or(Some((pair, ""))))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| percent_decode(v, true))
}

fn rounded(hashes_per_second: f64) -> u64 {
    hashes_per_second.max(0.0).round() as u64
}

fn reasons_json(rejected: &[u64; 6]) -> Value {
    let mut map = serde_json::Map::new();
    for reason in RejectReason::ALL {
        let count = rejected[reason as usize];
        if count > 0 {
            map.insert(reason.as_str().to_owned(), json!(count));
        }
    }
    Value::Object(map)
}

/// A pool's state word: `up`, `down` (unreachable) or `stalled` (silent,
/// or leaving most requests unanswered).
pub fn state_of(health: PoolHealth) -> &'static str {
    match health {
        PoolHealth::Up => "up",
        PoolHealth::Down(DownReason::Unreachable) => "down",
        PoolHealth::Down(DownReason::Stalled | DownReason::Unanswered) => "stalled",
    }
}

impl App {
    /// Answers a `GET` under `/api/v1/` (the token, if any, already checked).
    pub(super) fn api_get(&self, path: &str, request: &RequestInfo<'_>) -> Reply {
        match path {
            "/api/v1/farm" => json_reply(200, self.farm_json()),
            "/api/v1/pools" => json_reply(200, self.pools_api_json()),
            "/api/v1/clients" => json_reply(200, self.clients_json()),
            "/api/v1/miners" => match MinerQuery::parse(request.query) {
                Ok(query) => json_reply(200, self.miners_json(&query)),
                Err(message) => error(400, message),
            },
            _ => error(404, "not found: /api/v1/ has farm, pools, clients, miners"),
        }
    }

    fn farm_json(&self) -> Value {
        let now = Instant::now();
        let shares = self.collector.share_totals();
        let totals = self.collector.accepted_difficulty();
        let history = self.collector.history();
        let farm = Some(history.farm());
        let rate = |window| rounded(history.hashrate(farm, now, totals.farm, window));
        let (accepted, rejected) = shares.clients.iter().fold((0, 0), |(a, r), (_, s)| {
            (a + s.accepted, r + s.rejected_total())
        });
        let answered = accepted + rejected;
        let miners = self.collector.miners().len();
        let pools = self.pools.status();
        json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": self.started.elapsed().as_secs_f64(),
            "healthy": self.collector.health().is_ok(),
            "admin": self.token.is_some(),
            "hashrate": {
                "now": rate(NOW_WINDOW),
                "5m": rate(FIVE_MINUTES),
                "1h": rate(ONE_HOUR),
            },
            "accepted": accepted,
            "rejected": rejected,
            "reject_rate": if answered == 0 { 0.0 } else { rejected as f64 / answered as f64 },
            "miners": miners,
            "pools": pools.iter().filter(|p| !p.removed).count(),
            "pools_up": pools.iter().filter(|p| !p.removed && p.health == PoolHealth::Up).count(),
        })
    }

    fn pools_api_json(&self) -> Value {
        let now = Instant::now();
        let pools: Vec<PoolStatus> = self.pools.status();
        let shares = self.collector.share_totals();
        let totals = self.collector.accepted_difficulty();
        let history = self.collector.history();
        let hashrate: Vec<f64> = pools
            .iter()
            .map(|p| {
                let current = totals.pools.get(p.id).copied().unwrap_or(0.0);
                history.hashrate(history.pool(p.id), now, current, NOW_WINDOW)
            })
            .collect();
        let list: Vec<Value> = pools
            .iter()
            .zip(&hashrate)
            .map(|(p, rate)| {
                // Shares are compared among pools of one priority: that is
                // what balancing evens out (backups are meant to be idle).
                let peers = || {
                    pools
                        .iter()
                        .zip(&hashrate)
                        .filter(|(o, _)| !o.removed && o.spec.priority == p.spec.priority)
                };
                let weights: u64 = peers().map(|(o, _)| u64::from(o.spec.weight)).sum();
                let rates: f64 = peers().map(|(_, r)| *r).sum();
                let share = shares.pools.get(p.id).cloned().unwrap_or_default();
                // The samples, then the live rate since the newest one.
                let current = totals.pools.get(p.id).copied().unwrap_or(0.0);
                let points: Vec<u64> = history
                    .pool(p.id)
                    .map(|s| {
                        let live = s.live(now, current);
                        s.points().into_iter().chain(live).map(rounded).collect()
                    })
                    .unwrap_or_default();
                json!({
                    "name": p.spec.name,
                    "address": p.spec.addr.to_string(),
                    "priority": p.spec.priority,
                    "weight": p.spec.weight,
                    "state": state_of(p.health),
                    "since_seconds": p.since.as_secs_f64(),
                    "draining": p.draining,
                    "removed": p.removed,
                    "miners": p.sessions,
                    "hashrate": rounded(*rate),
                    "hashrate_share": if rates > 0.0 { rate / rates } else { 0.0 },
                    "weight_share": if p.removed || weights == 0 { 0.0 } else { f64::from(p.spec.weight) / weights as f64 },
                    "accepted": share.accepted,
                    "rejected": share.rejected_total(),
                    "reject_rate": share.reject_rate(),
                    "history": points,
                })
            })
            .collect();
        json!({
            "history_interval_seconds": SAMPLE_INTERVAL.as_secs(),
            "pools": list,
        })
    }

    fn clients_json(&self) -> Value {
        let now = Instant::now();
        let shares = self.collector.share_totals();
        let totals = self.collector.accepted_difficulty();
        let mut miners: std::collections::HashMap<std::sync::Arc<str>, usize> =
            std::collections::HashMap::new();
        for miner in self.collector.miners().snapshot(now) {
            if let Some(client) = miner.identity.client {
                *miners.entry(client).or_default() += 1;
            }
        }
        let history = self.collector.history();
        let list: Vec<Value> = shares
            .clients
            .iter()
            .filter(|(id, s)| s.submits > 0 || miners.contains_key(id))
            .map(|(id, s)| {
                let current = totals
                    .clients
                    .iter()
                    .find(|(c, _)| c == id)
                    .map_or(0.0, |(_, v)| *v);
                let rate = history.hashrate(history.client(id), now, current, FIVE_MINUTES);
                json!({
                    "client_id": id.as_ref(),
                    "miners": miners.get(id).copied().unwrap_or(0),
                    "hashrate": rounded(rate),
                    "accepted": s.accepted,
                    "rejected": s.rejected_total(),
                    "reject_rate": s.reject_rate(),
                    "rejected_by_reason": reasons_json(&s.rejected),
                })
            })
            .collect();
        json!({ "clients": list })
    }

    fn miners_json(&self, query: &MinerQuery) -> Value {
        let now = Instant::now();
        let pools = self.pools.status();
        let pool_name = |miner: &MinerSnapshot| -> Option<&str> {
            let id = miner.identity.pool?;
            pools
                .iter()
                .find(|p| p.id == id)
                .map(|p| p.spec.name.as_str())
        };
        let all = self.collector.miners().snapshot(now);
        let total = all.len();
        let stale_total = all.iter().filter(|m| m.is_stale(query.stale_after)).count();
        let needle = query.filter.as_deref().map(str::to_lowercase);
        let mut matched: Vec<&MinerSnapshot> = all
            .iter()
            .filter(|m| {
                query
                    .pool
                    .as_deref()
                    .is_none_or(|want| pool_name(m) == Some(want))
            })
            .filter(|m| !query.only_stale || m.is_stale(query.stale_after))
            .filter(|m| {
                needle.as_deref().is_none_or(|needle| {
                    m.identity
                        .worker
                        .as_deref()
                        .is_some_and(|w| w.to_lowercase().contains(needle))
                        || m.peer.to_string().contains(needle)
                        || pool_name(m).is_some_and(|p| p.to_lowercase().contains(needle))
                        || m.id.to_string() == needle
                })
            })
            .collect();
        let matched_count = matched.len();
        matched.sort_by(|a, b| {
            let order = match query.sort {
                SortKey::Worker => a.identity.worker.cmp(&b.identity.worker),
                SortKey::Pool => pool_name(a).cmp(&pool_name(b)),
                SortKey::Hashrate => a.hashrate().total_cmp(&b.hashrate()),
                SortKey::LastShare => a
                    .last_share
                    .unwrap_or(Duration::MAX)
                    .cmp(&b.last_share.unwrap_or(Duration::MAX)),
                SortKey::Rejects => a.rejected_total().cmp(&b.rejected_total()),
                SortKey::Connected => a.connected.cmp(&b.connected),
                SortKey::Address => a.peer.cmp(&b.peer),
                SortKey::Id => a.id.cmp(&b.id),
            };
            let order = if query.descending {
                order.reverse()
            } else {
                order
            };
            order.then(a.id.cmp(&b.id))
        });
        let page: Vec<Value> = matched
            .iter()
            .skip(query.offset)
            .take(query.limit)
            .map(|m| {
                json!({
                    "id": m.id,
                    "address": m.peer.to_string(),
                    "pool": pool_name(m),
                    "worker": m.identity.worker.as_deref(),
                    "client_id": m.identity.client.as_deref(),
                    "connected_seconds": m.connected.as_secs(),
                    "difficulty": m.difficulty,
                    "accepted": m.accepted,
                    "rejected": m.rejected_total(),
                    "rejected_by_reason": reasons_json(&m.rejected),
                    "last_share_seconds": m.last_share.map(|d| d.as_secs()),
                    "hashrate": rounded(m.hashrate()),
                    "stale": m.is_stale(query.stale_after),
                })
            })
            .collect();
        json!({
            "total": total,
            "stale": stale_total,
            "matched": matched_count,
            "offset": query.offset,
            "limit": query.limit,
            "sort": query.sort.as_str(),
            "order": if query.descending { "desc" } else { "asc" },
            "stale_after_seconds": query.stale_after.as_secs(),
            "miners": page,
        })
    }

    /// Runs an authorized admin action.
    pub(super) fn admin(&self, action: &Action, request: &RequestInfo<'_>) -> Reply {
        let peer = request.peer.unwrap_or("unknown");
        let done = self.perform(action, request.body);
        self.collector
            .count_admin_action(action.as_str(), done.result.as_str());
        if done.result == ActionResult::Ok {
            info!("admin: {} by {peer}: {}", action.as_str(), done.effect);
            let mut body = done.fields;
            body["effect"] = json!(done.effect);
            json_reply(200, body)
        } else {
            warn!(
                "admin: {} by {peer} failed ({}): {}",
                action.as_str(),
                done.result.as_str(),
                done.effect
            );
            error(done.status, done.effect)
        }
    }

    /// Refuses an admin action (no token configured, another origin, bad
    /// token): logged with the requester, counted, never with the token.
    pub(super) fn refuse(
        &self,
        action: &Action,
        result: ActionResult,
        why: &str,
        request: &RequestInfo<'_>,
    ) -> Reply {
        let peer = request.peer.unwrap_or("unknown");
        self.collector
            .count_admin_action(action.as_str(), result.as_str());
        warn!(
            "admin: {} by {peer} refused ({}): {why}",
            action.as_str(),
            result.as_str()
        );
        let status = if result == ActionResult::Unauthorized {
            401
        } else {
            403
        };
        error(status, why)
    }

    fn perform(&self, action: &Action, body: &[u8]) -> Done {
        let no_pool = |name: &str| {
            Done::failed(
                ActionResult::NotFound,
                404,
                format!("no pool named {name:?}"),
            )
        };
        match action {
            Action::Drain(name) | Action::Undrain(name) => {
                let draining = matches!(action, Action::Drain(_));
                let Ok(id) = self.pools.set_draining(name, draining) else {
                    return no_pool(name);
                };
                let miners = self
                    .pools
                    .status()
                    .iter()
                    .find(|p| p.id == id)
                    .map_or(0, |p| p.sessions);
                let effect = if draining {
                    format!(
                        "pool {name:?} draining: its {miners} miners are moved off at {} per second",
                        self.pools.policy().move_rate_per_second
                    )
                } else {
                    format!("pool {name:?} takes miners again ({miners} on it now)")
                };
                Done::ok(
                    effect,
                    json!({ "pool": name, "draining": draining, "miners": miners }),
                )
            }
            Action::PoolUpdate(name) => {
                let change: PoolChange = match serde_json::from_slice(body) {
                    Ok(change) => change,
                    Err(e) => {
                        return Done::failed(
                            ActionResult::Invalid,
                            400,
                            format!(
                                "body must be JSON {{\"weight\": 1-1000000, \"priority\": 0-1000}}: {e}"
                            ),
                        );
                    }
                };
                if let Err(message) = change.validate() {
                    return Done::failed(ActionResult::Invalid, 400, message);
                }
                let Ok(id) = self
                    .pools
                    .set_weight_priority(name, change.weight, change.priority)
                else {
                    return no_pool(name);
                };
                let spec = self.pools.spec(id);
                Done::ok(
                    format!(
                        "pool {name:?} now has weight {} and priority {} (until a reload)",
                        spec.weight, spec.priority
                    ),
                    json!({ "pool": name, "weight": spec.weight, "priority": spec.priority }),
                )
            }
            Action::Disconnect(id) => {
                if self.pools.disconnect(*id) {
                    Done::ok(
                        format!("miner connection {id} is closed between two lines"),
                        json!({ "miner": id }),
                    )
                } else {
                    Done::failed(
                        ActionResult::NotFound,
                        404,
                        format!("no relayed miner connection {id}"),
                    )
                }
            }
            Action::Reload => match &self.reloader {
                None => Done::failed(
                    ActionResult::Failed,
                    422,
                    "reload is not available in this process".into(),
                ),
                Some(reloader) => match reloader.reload() {
                    Ok(done) => Done::ok(
                        format!(
                            "configuration reloaded; applied: {}; needs a restart: {}",
                            list(&done.applied),
                            list(&done.needs_restart)
                        ),
                        json!({ "applied": done.applied, "needs_restart": done.needs_restart }),
                    ),
                    Err(e) => Done::failed(
                        ActionResult::Failed,
                        422,
                        format!("reload refused, the running configuration is kept: {e}"),
                    ),
                },
            },
        }
    }
}

/// What an admin action did: for the reply, the log line and the metric.
struct Done {
    result: ActionResult,
    /// HTTP status when it did not succeed.
    status: u16,
    /// One sentence for the operator (and the log).
    effect: String,
    /// The reply's other fields when it succeeded.
    fields: Value,
}

impl Done {
    fn ok(effect: String, fields: Value) -> Done {
        Done {
            result: ActionResult::Ok,
            status: 200,
            effect,
            fields,
        }
    }

    fn failed(result: ActionResult, status: u16, effect: String) -> Done {
        Done {
            result,
            status,
            effect,
            fields: Value::Null,
        }
    }
}

fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "nothing".to_owned()
    } else {
        keys.join(", ")
    }
}

/// The body of `POST /api/v1/pools/{name}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolChange {
    weight: Option<u32>,
    priority: Option<u32>,
}

impl PoolChange {
    fn validate(&self) -> Result<(), String> {
        if self.weight.is_none() && self.priority.is_none() {
            return Err("nothing to change: give weight and/or priority".into());
        }
        if let Some(weight) = self.weight
            && !(1..=1_000_000).contains(&weight)
        {
            return Err(format!("weight {weight} is out of range 1-1000000"));
        }
        if let Some(priority) = self.priority
            && priority > 1000
        {
            return Err(format!("priority {priority} is out of range 0-1000"));
        }
        Ok(())
    }
}

/// What `/api/v1/miners` sorts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortKey {
    /// Worker name (not yet authorized first).
    Worker,
    /// Pool name.
    Pool,
    /// Hashrate estimate.
    Hashrate,
    /// Time since the last accepted share (never: last).
    LastShare,
    /// Rejected shares.
    Rejects,
    /// Time connected.
    Connected,
    /// Source address.
    Address,
    /// Connection id.
    Id,
}

impl SortKey {
    const ALL: [SortKey; 8] = [
        SortKey::Worker,
        SortKey::Pool,
        SortKey::Hashrate,
        SortKey::LastShare,
        SortKey::Rejects,
        SortKey::Connected,
        SortKey::Address,
        SortKey::Id,
    ];

    /// The parameter value.
    pub const fn as_str(self) -> &'static str {
        match self {
            SortKey::Worker => "worker",
            SortKey::Pool => "pool",
            SortKey::Hashrate => "hashrate",
            SortKey::LastShare => "last_share",
            SortKey::Rejects => "rejects",
            SortKey::Connected => "connected",
            SortKey::Address => "address",
            SortKey::Id => "id",
        }
    }
}

/// The parameters of `/api/v1/miners`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MinerQuery {
    /// Miners skipped.
    pub offset: usize,
    /// Miners returned, at most [`MAX_MINERS_PER_PAGE`].
    pub limit: usize,
    /// Sort key.
    pub sort: SortKey,
    /// Largest first.
    pub descending: bool,
    /// Case-insensitive substring of the worker, address or pool name, or
    /// the exact connection id.
    pub filter: Option<String>,
    /// Only miners on the pool of this name.
    pub pool: Option<String>,
    /// No accepted share for this long: stale.
    pub stale_after: Duration,
    /// Only stale miners.
    pub only_stale: bool,
}

impl MinerQuery {
    /// Parses a query string; an error names the bad parameter.
    pub fn parse(query: &str) -> Result<MinerQuery, String> {
        let number = |key: &str| -> Result<Option<u64>, String> {
            match query_value(query, key) {
                None => Ok(None),
                Some(v) if v.is_empty() => Ok(None),
                Some(v) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| format!("{key} must be a whole number, not {v:?}")),
            }
        };
        let sort = match query_value(query, "sort").filter(|s| !s.is_empty()) {
            None => SortKey::Connected,
            Some(s) => SortKey::ALL
                .into_iter()
                .find(|k| k.as_str() == s)
                .ok_or_else(|| {
                    let names: Vec<&str> = SortKey::ALL.iter().map(|k| k.as_str()).collect();
                    format!("sort must be one of {}, not {s:?}", names.join(", "))
                })?,
        };
        let descending = match query_value(query, "order").as_deref() {
            None | Some("") | Some("asc") => false,
            Some("desc") => true,
            Some(other) => return Err(format!("order must be asc or desc, not {other:?}")),
        };
        let limit = number("limit")?.map_or(DEFAULT_MINERS_PER_PAGE, |n| {
            (n.min(MAX_MINERS_PER_PAGE as u64)) as usize
        });
        Ok(MinerQuery {
            offset: number("offset")?.unwrap_or(0).min(usize::MAX as u64) as usize,
            limit,
            sort,
            descending,
            filter: query_value(query, "filter").filter(|f| !f.is_empty()),
            pool: query_value(query, "pool").filter(|p| !p.is_empty()),
            stale_after: number("stale_after")?.map_or(DEFAULT_STALE_AFTER, Duration::from_secs),
            only_stale: matches!(query_value(query, "stale").as_deref(), Some("1" | "true")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_paths_name_their_action() {
        assert_eq!(
            Action::parse("/api/v1/pools/main/drain"),
            Some(Action::Drain("main".into()))
        );
        assert_eq!(
            Action::parse("/api/v1/pools/eu%20a/undrain"),
            Some(Action::Undrain("eu a".into()))
        );
        assert_eq!(
            Action::parse("/api/v1/pools/10.0.0.1:3333"),
            Some(Action::PoolUpdate("10.0.0.1:3333".into()))
        );
        assert_eq!(
            Action::parse("/api/v1/miners/42/disconnect"),
            Some(Action::Disconnect(42))
        );
        assert_eq!(Action::parse("/api/v1/reload"), Some(Action::Reload));
        assert_eq!(Action::parse("/api/v1/miners/x/disconnect"), None);
        assert_eq!(Action::parse("/api/v1/pools/"), None);
        assert_eq!(Action::parse("/api/v1/pools/a/b/drain"), None);
        assert_eq!(Action::parse("/api/v1/pools/%zz/drain"), None);
    }

    #[test]
    fn miner_queries_are_capped_and_checked() {
        let q = MinerQuery::parse("").unwrap();
        assert_eq!(q.limit, DEFAULT_MINERS_PER_PAGE);
        assert_eq!(q.sort, SortKey::Connected);
        let q = MinerQuery::parse(
            "limit=100000&offset=5&sort=hashrate&order=desc&filter=Rig+7&pool=a%2Fb&stale_after=30&stale=1",
        )
        .unwrap();
        assert_eq!(q.limit, MAX_MINERS_PER_PAGE);
        assert_eq!(q.offset, 5);
        assert_eq!(q.sort, SortKey::Hashrate);
        assert!(q.descending);
        assert_eq!(q.filter.as_deref(), Some("Rig 7"));
        assert_eq!(q.pool.as_deref(), Some("a/b"));
        assert_eq!(q.stale_after, Duration::from_secs(30));
        assert!(q.only_stale);
        assert!(MinerQuery::parse("sort=password").is_err());
        assert!(MinerQuery::parse("limit=-1").is_err());
        assert!(MinerQuery::parse("order=up").is_err());
    }

    #[test]
    fn pool_changes_are_range_checked() {
        let parse = |s: &str| serde_json::from_str::<PoolChange>(s);
        assert!(parse(r#"{"weight":3}"#).unwrap().validate().is_ok());
        assert!(
            parse(r#"{"priority":2,"weight":1}"#)
                .unwrap()
                .validate()
                .is_ok()
        );
        assert!(parse(r#"{}"#).unwrap().validate().is_err());
        assert!(parse(r#"{"weight":0}"#).unwrap().validate().is_err());
        assert!(parse(r#"{"priority":1001}"#).unwrap().validate().is_err());
        assert!(parse(r#"{"weight":1,"name":"x"}"#).is_err());
    }
}
