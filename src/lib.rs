//! stratum-proxy: a transparent Stratum relay for mining-farm gateways.
//!
//! The relay core (`stratum`, `relay`) forwards every byte unchanged and
//! reports what it saw to an observer; everything else (metrics, HTTP,
//! configuration, logging) sits outside it and is wired in `main.rs`.
#![forbid(unsafe_code)]

pub mod cli;
pub mod config;
pub mod demo;
pub mod housekeeping;
pub mod http;
pub mod logging;
pub mod metrics;
pub mod reactor;
pub mod relay;
pub mod reload;
pub mod sdnotify;
pub mod shutdown;
pub mod sim;
pub mod stratum;
