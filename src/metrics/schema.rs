//! Metric names, help texts and histogram buckets: the exported schema.
//!
//! Names and labels follow shared/DESIGN.md exactly. Label values are bounded:
//! `pool_host` (the configured pool), `client_id` (capped), `method` (known
//! methods or `other`), `reason`, `direction` and `kind` (fixed sets).
//!
//! `client_id` is registered only when the pool accepts an authorize
//! (`result: true`, no error), so names it refuses or never answers take no
//! slot; past `client_id_cap` accepted ids, later ones share `_other`.

use ::metrics::{KeyName, Recorder, SharedString};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusRecorder};

/// Miner connections accepted and relayed.
pub const CONNECTIONS_TOTAL: &str = "stratum_connections_total";
/// Miner connections open now.
pub const ACTIVE_CONNECTIONS: &str = "stratum_active_connections";
/// Bytes relayed miner → pool.
pub const BYTES_SENT_TOTAL: &str = "stratum_bytes_sent_total";
/// Bytes relayed pool → miner.
pub const BYTES_RECEIVED_TOTAL: &str = "stratum_bytes_received_total";
/// Share submissions, counted as the pool reads them: a key given twice
/// takes its last value (as serde_json, nlohmann::json and Python's json
/// do), and a submit whose id is null or missing is counted too (a null id
/// is matched to an answer with id null, oldest first; a missing one to
/// nothing, so its outcome is neither accepted nor rejected).
pub const SUBMITS_TOTAL: &str = "stratum_submits_total";
/// Submits the pool accepted: `result: true` (or CryptoNote's `status`
/// `OK`) and no error; an error wins over `result: true`.
pub const ACCEPTED_SHARES_TOTAL: &str = "stratum_accepted_shares_total";
/// Submits the pool rejected, by reason.
pub const REJECTED_SHARES_TOTAL: &str = "stratum_rejected_shares_total";
/// Last difficulty the pool set for a client.
pub const CURRENT_DIFFICULTY: &str = "stratum_current_difficulty";
/// Lifetime of closed miner connections, seconds.
pub const CONNECTION_DURATION_SECONDS: &str = "stratum_connection_duration_seconds";
/// Time to open the upstream connection, seconds.
pub const CONNECT_LATENCY_SECONDS: &str = "stratum_connect_latency_seconds";
/// Request → matching response, seconds.
pub const REQUEST_RESPONSE_SECONDS: &str = "stratum_request_response_seconds";
/// Sum of the difficulty of accepted shares.
pub const ACCEPTED_DIFFICULTY_TOTAL: &str = "stratum_accepted_difficulty_total";
/// Connections refused before relaying, by reason.
pub const REFUSED_CONNECTIONS_TOTAL: &str = "stratum_refused_connections_total";
/// Connections closed by a timeout, by kind.
pub const CONNECTION_TIMEOUTS_TOTAL: &str = "stratum_connection_timeouts_total";
/// Failed upstream connection attempts, by reason.
pub const UPSTREAM_CONNECT_FAILURES_TOTAL: &str = "stratum_upstream_connect_failures_total";
/// Lines that were not JSON-RPC, by direction.
pub const PARSE_FAILURES_TOTAL: &str = "stratum_parse_failures_total";
/// Requests waiting for their response.
pub const PENDING_REQUESTS: &str = "stratum_pending_requests";
/// Requests that got no response in time (or were evicted, or left at close).
pub const EXPIRED_REQUESTS_TOTAL: &str = "stratum_expired_requests_total";
/// Gauge `{pool_host}`: 1 while the pool is up by the health checks, 0 while down.
pub const POOL_REACHABLE: &str = "stratum_pool_reachable";
/// Always 1; the version in a label.
pub const BUILD_INFO: &str = "stratum_build_info";
/// Counter `{pool_host}`: miners closed because their pool went down.
pub const FAILOVERS_TOTAL: &str = "stratum_failovers_total";
/// Counter `{pool_host}`: requests (shares among them) still unanswered when
/// a miner was closed because its pool went down: lost.
pub const FAILOVER_LOST_REQUESTS_TOTAL: &str = "stratum_failover_lost_requests_total";
/// Counter `{pool_host}`: miners moved off this pool to a better one (failback).
pub const MOVES_TOTAL: &str = "stratum_moves_total";
/// Counter `{pool_host}`: `client.reconnect` lines the proxy wrote itself
/// (the `reconnect_message` option): the only bytes it ever adds.
pub const RECONNECTS_SENT_TOTAL: &str = "stratum_reconnects_sent_total";
/// Counter `{action, result}`: admin API actions (drain, undrain,
/// pool_update, disconnect, reload) and how each ended.
pub const ADMIN_ACTIONS_TOTAL: &str = "stratum_admin_actions_total";

/// Buckets for the upstream connect latency: LAN pools answer in well under
/// a millisecond, remote ones in tens of ms; the top is the connect timeout.
pub const CONNECT_LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// Buckets for request → response: from sub-millisecond to tens of seconds
/// (a pool under load can take seconds to answer a submit).
pub const REQUEST_RESPONSE_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets for connection lifetimes: seconds (reconnect loops) up to a week.
pub const CONNECTION_DURATION_BUCKETS: &[f64] = &[
    1.0, 10.0, 60.0, 300.0, 900.0, 3600.0, 21_600.0, 86_400.0, 259_200.0, 604_800.0,
];

/// The kind of a metric.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MetricKind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
    /// Prometheus histogram with fixed buckets.
    Histogram(&'static [f64]),
}

/// One exported metric: name, kind, help.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full metric name.
    pub name: &'static str,
    /// Counter, gauge or histogram.
    pub kind: MetricKind,
    /// HELP text.
    pub help: &'static str,
}

/// Every metric the collector exports (process metrics are rendered apart).
pub const METRICS: &[MetricDef] = &[
    def(
        CONNECTIONS_TOTAL,
        MetricKind::Counter,
        "Miner connections accepted and relayed.",
    ),
    def(
        ACTIVE_CONNECTIONS,
        MetricKind::Gauge,
        "Miner connections open now.",
    ),
    def(
        BYTES_SENT_TOTAL,
        MetricKind::Counter,
        "Bytes relayed from miners to the pool.",
    ),
    def(
        BYTES_RECEIVED_TOTAL,
        MetricKind::Counter,
        "Bytes relayed from the pool to miners.",
    ),
    def(
        SUBMITS_TOTAL,
        MetricKind::Counter,
        "Share submissions (mining.submit and equivalents).",
    ),
    def(
        ACCEPTED_SHARES_TOTAL,
        MetricKind::Counter,
        "Submits the pool answered with result true and no error.",
    ),
    def(
        REJECTED_SHARES_TOTAL,
        MetricKind::Counter,
        "Submits the pool answered with false or an error, by reason.",
    ),
    def(
        CURRENT_DIFFICULTY,
        MetricKind::Gauge,
        "Last difficulty the pool set for the client.",
    ),
    def(
        CONNECTION_DURATION_SECONDS,
        MetricKind::Histogram(CONNECTION_DURATION_BUCKETS),
        "Lifetime of closed miner connections in seconds.",
    ),
    def(
        CONNECT_LATENCY_SECONDS,
        MetricKind::Histogram(CONNECT_LATENCY_BUCKETS),
        "Time to open the upstream TCP connection in seconds.",
    ),
    def(
        REQUEST_RESPONSE_SECONDS,
        MetricKind::Histogram(REQUEST_RESPONSE_BUCKETS),
        "Time from a miner request to the pool's matching response in seconds.",
    ),
    def(
        ACCEPTED_DIFFICULTY_TOTAL,
        MetricKind::Counter,
        "Sum of the share difficulty of accepted submits; rate() * 2^32 is hashes per second.",
    ),
    def(
        REFUSED_CONNECTIONS_TOTAL,
        MetricKind::Counter,
        "Miner connections refused before relaying, by reason.",
    ),
    def(
        CONNECTION_TIMEOUTS_TOTAL,
        MetricKind::Counter,
        "Miner connections closed by a timeout, by kind.",
    ),
    def(
        UPSTREAM_CONNECT_FAILURES_TOTAL,
        MetricKind::Counter,
        "Failed upstream connection attempts, by reason.",
    ),
    def(
        PARSE_FAILURES_TOTAL,
        MetricKind::Counter,
        "Lines relayed that were not JSON-RPC, by direction.",
    ),
    def(
        PENDING_REQUESTS,
        MetricKind::Gauge,
        "Requests relayed to the pool and waiting for their response.",
    ),
    def(
        EXPIRED_REQUESTS_TOTAL,
        MetricKind::Counter,
        "Requests that got no response within the request timeout.",
    ),
    def(
        POOL_REACHABLE,
        MetricKind::Gauge,
        "1 while the pool is up by the proxy's health checks (dials, probes, notify stalls), 0 while down.",
    ),
    def(
        FAILOVERS_TOTAL,
        MetricKind::Counter,
        "Miners closed between two lines because their pool went down, so they reconnect to a healthy pool.",
    ),
    def(
        FAILOVER_LOST_REQUESTS_TOTAL,
        MetricKind::Counter,
        "Requests (shares among them) still unanswered when a miner was moved off a down pool.",
    ),
    def(
        MOVES_TOTAL,
        MetricKind::Counter,
        "Miners moved off this pool to a better one that came back (failback), at the bounded move rate.",
    ),
    def(
        RECONNECTS_SENT_TOTAL,
        MetricKind::Counter,
        "client.reconnect lines the proxy wrote itself to move a miner (reconnect_message option): the only bytes it adds.",
    ),
    def(
        ADMIN_ACTIONS_TOTAL,
        MetricKind::Counter,
        "Admin API actions (drain, undrain, pool_update, disconnect, reload) by result (ok, unauthorized, forbidden, not_found, invalid, failed).",
    ),
    def(
        BUILD_INFO,
        MetricKind::Gauge,
        "Build information; always 1.",
    ),
];

const fn def(name: &'static str, kind: MetricKind, help: &'static str) -> MetricDef {
    MetricDef { name, kind, help }
}

/// Builds a recorder with every histogram's buckets set and every metric described.
///
/// The recorder is not installed globally: the caller keeps it (tests build
/// as many as they like) and calls `handle().run_upkeep()` on a timer.
pub fn build_recorder() -> PrometheusRecorder {
    let mut builder = PrometheusBuilder::new();
    for metric in METRICS {
        if let MetricKind::Histogram(buckets) = metric.kind {
            builder = builder
                .set_buckets_for_metric(Matcher::Full(metric.name.to_owned()), buckets)
                .expect("bucket lists are non-empty constants");
        }
    }
    let recorder = builder.build_recorder();
    for metric in METRICS {
        let name = KeyName::from_const_str(metric.name);
        let help = SharedString::const_str(metric.help);
        match metric.kind {
            MetricKind::Counter => recorder.describe_counter(name, None, help),
            MetricKind::Gauge => recorder.describe_gauge(name, None, help),
            MetricKind::Histogram(_) => recorder.describe_histogram(name, None, help),
        }
    }
    recorder
}
