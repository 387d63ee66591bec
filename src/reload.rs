//! `SIGHUP`: read the configuration again (all four layers, as at start)
//! and apply what can change while miners are relayed: the pools (added,
//! removed, re-weighted, re-prioritised), the routes, and the limits (for
//! connections accepted from then on). Nothing relayed is closed: miners on
//! a removed pool are moved at the bounded move rate.
//!
//! A file that does not load, or a pool list the relay refuses, changes
//! nothing: the running configuration is kept and the problems are
//! returned for the log. Keys that only take effect at start (listen
//! addresses, threads, logging, health thresholds, …) are reported as
//! needing a restart rather than silently ignored.

use std::fmt;
use std::sync::{Arc, Mutex};

use log::{error, info};
use smol::Executor;
use smol::stream::StreamExt;

use crate::config::{Config, ConfigError, FlagLayer, KEYS, is_reloadable};
use crate::relay::pools::PoolsError;
use crate::relay::{Pools, ServerHandle};

/// Why a reload changed nothing.
#[derive(Debug)]
pub enum ReloadError {
    /// The configuration does not load (every problem, as at start).
    Config(Vec<ConfigError>),
    /// The relay refused the pools or routes.
    Pools(PoolsError),
}

impl fmt::Display for ReloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReloadError::Config(errors) => {
                let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
                write!(f, "{}", lines.join("; "))
            }
            ReloadError::Pools(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for ReloadError {}

/// What a reload did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Keys whose new values apply now.
    pub applied: Vec<&'static str>,
    /// Keys that changed but take effect only after a restart.
    pub needs_restart: Vec<&'static str>,
}

/// Reloads the configuration into a running relay (cheap to clone: one
/// shared state).
#[derive(Clone)]
pub struct Reloader {
    flags: Arc<FlagLayer>,
    env: fn(&str) -> Option<String>,
    running: Arc<Mutex<Config>>,
    pools: Arc<Pools>,
    relay: ServerHandle,
}

impl Reloader {
    /// A reloader for the relay started with `running`, loaded from
    /// `flags` and the environment `env`.
    pub fn new(
        flags: FlagLayer,
        env: fn(&str) -> Option<String>,
        running: Config,
        pools: Arc<Pools>,
        relay: ServerHandle,
    ) -> Reloader {
        Reloader {
            flags: Arc::new(flags),
            env,
            running: Arc::new(Mutex::new(running)),
            pools,
            relay,
        }
    }

    /// Reads the configuration again and applies it; see the module docs.
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let new = Config::load(&self.flags, &self.env).map_err(ReloadError::Config)?;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let (old_json, new_json) = (running.effective_json(), new.effective_json());
        let changed: Vec<&'static str> = KEYS
            .iter()
            .copied()
            .filter(|key| old_json[*key] != new_json[*key])
            .collect();
        let pools_changed = changed
            .iter()
            .any(|key| ["pool", "pools", "routes"].contains(key));
        if pools_changed {
            self.pools
                .reconfigure(new.pool_specs(), new.routes.clone())
                .map_err(ReloadError::Pools)?;
        }
        self.relay.set_limits(new.limits());
        let (applied, needs_restart) = changed.into_iter().partition(|key| is_reloadable(key));
        // What needs a restart keeps its running value, so that the next
        // reload still reports it.
        *running = running.with_reloaded(&new);
        Ok(Reloaded {
            applied,
            needs_restart,
        })
    }
}

/// Reloads on each `SIGHUP` from now on, off the relay's threads (reading
/// the file blocks), and logs what each reload applied, or why it changed
/// nothing.
pub fn reload_on_sighup(executor: &Executor<'static>, reloader: Reloader) -> std::io::Result<()> {
    let mut hangups = async_signal::Signals::new([async_signal::Signal::Hup])?;
    executor
        .spawn(async move {
            while let Some(Ok(_)) = hangups.next().await {
                let outcome = smol::unblock({
                    let reloader = reloader.clone();
                    move || reloader.reload()
                })
                .await;
                match outcome {
                    Ok(done) if done.applied.is_empty() && done.needs_restart.is_empty() => {
                        info!("SIGHUP: configuration reloaded, nothing changed");
                    }
                    Ok(done) => {
                        info!(
                            "SIGHUP: configuration reloaded; applied: {}; needs a restart: {}",
                            list(&done.applied),
                            list(&done.needs_restart)
                        );
                    }
                    Err(e) => {
                        error!("SIGHUP: reload refused, the running configuration is kept: {e}")
                    }
                }
            }
        })
        .detach();
    Ok(())
}

/// Keys for a log line: comma-separated, or "nothing".
fn list(keys: &[&str]) -> String {
    if keys.is_empty() {
        "nothing".to_string()
    } else {
        keys.join(", ")
    }
}
