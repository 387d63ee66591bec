//! pool-sim: a simulated Stratum V1 pool (see `stratum_proxy::sim::pool`).
//!
//! Prints `listening on ADDR` as its first line, runs until SIGINT/SIGTERM or
//! `--seconds`, then prints a JSON summary of its counters.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use async_signal::{Signal, Signals};
use smol::stream::StreamExt;
use smol::{Executor, Timer};
use stratum_proxy::sim::RejectCode;
use stratum_proxy::sim::pool::{DEFAULT_DIFFICULTY, PoolConfig, PoolSim};

/// A simulated Stratum V1 pool: answers subscribe/authorize/submit, sends jobs.
#[derive(FromArgs)]
struct Args {
    /// address to listen on (default 127.0.0.1:0, any free port)
    #[argh(option, default = "\"127.0.0.1:0\".parse().unwrap()")]
    listen: SocketAddr,
    /// share difficulty sent with mining.set_difficulty
    #[argh(option, default = "DEFAULT_DIFFICULTY")]
    difficulty: f64,
    /// milliseconds between periodic jobs; 0 for none (default 30000)
    #[argh(option, default = "30_000")]
    notify_interval_ms: u64,
    /// share of submits rejected, 0.0-1.0 (default 0)
    #[argh(option, default = "0.0")]
    reject_ratio: f64,
    /// reject codes given in turn, from 21,22,23,24 (default 23)
    #[argh(option, default = "\"23\".into()")]
    reject_codes: String,
    /// milliseconds before each response is sent (default 0)
    #[argh(option, default = "0")]
    latency_ms: u64,
    /// stop after this many seconds (default: until SIGINT/SIGTERM)
    #[argh(option)]
    seconds: Option<f64>,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    let reject_codes = match RejectCode::parse_list(&args.reject_codes) {
        Ok(codes) => codes,
        Err(e) => {
            eprintln!("pool-sim: --reject-codes: {e}");
            return ExitCode::from(2);
        }
    };
    if !(0.0..=1.0).contains(&args.reject_ratio)
        || args.difficulty.is_nan()
        || args.difficulty <= 0.0
    {
        eprintln!("pool-sim: --reject-ratio must be 0.0-1.0 and --difficulty above 0");
        return ExitCode::from(2);
    }
    let config = PoolConfig {
        difficulty: args.difficulty,
        notify_interval: Some(Duration::from_millis(args.notify_interval_ms)),
        reject_ratio: args.reject_ratio,
        reject_codes,
        latency: Duration::from_millis(args.latency_ms),
    };
    let executor = Arc::new(Executor::new());
    let signals = match Signals::new([Signal::Int, Signal::Term]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("pool-sim: cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let pool = match PoolSim::start(&executor, args.listen, config) {
        Ok(pool) => pool,
        Err(e) => {
            eprintln!("pool-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut stdout = std::io::stdout();
    let _ = writeln!(stdout, "listening on {}", pool.local_addr());
    let _ = stdout.flush();
    let records = pool.records();
    smol::block_on(executor.run(async {
        let mut signals = signals;
        let signal = async {
            let _ = signals.next().await;
        };
        let deadline = async {
            match args.seconds {
                Some(s) if s.is_finite() && s >= 0.0 => {
                    Timer::after(Duration::from_secs_f64(s)).await;
                }
                _ => std::future::pending::<()>().await,
            }
        };
        // Drain connection records so they do not pile up in a long run.
        let drain = async {
            while records.recv().await.is_ok() {}
            std::future::pending::<()>().await
        };
        smol::future::or(smol::future::or(signal, deadline), drain).await;
    }));
    let summary = serde_json::to_string_pretty(&pool.stats()).unwrap_or_default();
    let _ = writeln!(stdout, "{summary}");
    ExitCode::SUCCESS
}
