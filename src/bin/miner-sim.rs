//! miner-sim: a fleet of simulated Stratum V1 miners (see `stratum_proxy::sim::miner`).
//!
//! Runs until every miner has done its submits or its seconds (or SIGINT /
//! SIGTERM, which ends them gracefully), then prints a JSON summary.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use argh::FromArgs;
use async_signal::{Signal, Signals};
use log::LevelFilter;
use smol::Executor;
use smol::stream::StreamExt;
use stratum_proxy::sim::miner::{MinerConfig, MinerSim};

/// Simulated Stratum V1 miners: subscribe, authorize, submit shares.
#[derive(FromArgs)]
struct Args {
    /// the pool or proxy to connect to, host:port
    #[argh(option)]
    pool: SocketAddr,
    /// number of miners (default 1)
    #[argh(option, default = "1")]
    miners: usize,
    /// submits per second per miner; 0 = as fast as --pipeline allows (default 1)
    #[argh(option, default = "1.0")]
    rate: f64,
    /// submit for this many seconds
    #[argh(option)]
    seconds: Option<f64>,
    /// submits per miner
    #[argh(option)]
    submits: Option<u64>,
    /// accounts spread over miners, comma-separated (default "account")
    #[argh(option, default = "\"account\".into()")]
    accounts: String,
    /// password sent with mining.authorize (default "x")
    #[argh(option, default = "\"x\".into()")]
    password: String,
    /// most submits outstanding per miner (default 1)
    #[argh(option, default = "1")]
    pipeline: usize,
    /// send every submit with the same id
    #[argh(switch)]
    same_id: bool,
    /// send mining.configure before subscribing
    #[argh(switch)]
    configure: bool,
    /// include every miner's report in the summary
    #[argh(switch)]
    per_miner: bool,
    /// log each accepted/rejected share to stderr
    #[argh(switch, short = 'v')]
    verbose: bool,
}

fn main() -> ExitCode {
    let args: Args = argh::from_env();
    if args.seconds.is_none() && args.submits.is_none() {
        eprintln!("miner-sim: give --seconds S or --submits K");
        return ExitCode::from(2);
    }
    if args.rate.is_nan()
        || args.rate < 0.0
        || args.seconds.is_some_and(|s| !(s.is_finite() && s >= 0.0))
    {
        eprintln!("miner-sim: --rate and --seconds must be 0 or more");
        return ExitCode::from(2);
    }
    let level = if args.verbose {
        LevelFilter::Debug
    } else {
        LevelFilter::Info
    };
    let _ = simplelog::WriteLogger::init(level, simplelog::Config::default(), std::io::stderr());
    let mut config = MinerConfig::new(args.pool, args.miners);
    config.accounts = args
        .accounts
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    config.password = args.password;
    config.rate_per_second = args.rate;
    config.submits = args.submits;
    config.duration = args.seconds.map(Duration::from_secs_f64);
    config.pipeline = args.pipeline.max(1);
    config.same_id = args.same_id;
    config.configure = args.configure;
    let signals = match Signals::new([Signal::Int, Signal::Term]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("miner-sim: cannot watch signals: {e}");
            return ExitCode::FAILURE;
        }
    };
    let executor = Arc::new(Executor::new());
    let fleet = MinerSim::start(&executor, config);
    let stop = fleet.stop_handle();
    let mut report = smol::block_on(executor.run(async {
        let mut signals = signals;
        let on_signal = async {
            // The first signal ends the miners gracefully; finish() then returns.
            let _ = signals.next().await;
            stop.stop();
            std::future::pending().await
        };
        smol::future::or(fleet.finish(), on_signal).await
    }));
    if !args.per_miner {
        report.miners.clear();
    }
    let mut stdout = std::io::stdout();
    let _ = writeln!(
        stdout,
        "{}",
        serde_json::to_string_pretty(&report).unwrap_or_default()
    );
    if report.totals.errors > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
