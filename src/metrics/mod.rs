//! Metrics: the schema, the observer that updates it, and process figures.
//!
//! Only this module knows the `metrics` facade; the relay core reports
//! through its observer API and never sees a metric.

pub mod collector;
pub mod history;
pub mod latency;
pub mod miners;
pub mod process;
pub mod schema;

pub use collector::{
    Collector, CollectorOptions, ConnectionMeter, RejectReason, ShareTotals, Shares,
};
