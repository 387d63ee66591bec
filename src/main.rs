//! The stratum-proxy daemon: parses the command line and dispatches.
//!
//! Minimal for now: `--version` and `check-config`. Running the proxy and
//! `demo` are wired by the relay/service work.

use std::process::ExitCode;

use stratum_proxy::cli::{self, Command};
use stratum_proxy::config;

fn main() -> ExitCode {
    let top = cli::parse_from_env();
    if top.version {
        println!("{}", cli::VERSION_LINE);
        return ExitCode::SUCCESS;
    }
    match &top.command {
        Some(Command::CheckConfig(_)) => cli::check_config(
            &top,
            &config::process_env,
            &mut std::io::stdout(),
            &mut std::io::stderr(),
        ),
        Some(Command::Demo(_)) | None => match top.load_config(&config::process_env) {
            Err(errors) => {
                cli::report_config_errors(&errors, &mut std::io::stderr());
                ExitCode::from(cli::EXIT_CONFIG_ERROR)
            }
            Ok(_) => {
                eprintln!("stratum-proxy: running the proxy is not wired yet");
                ExitCode::FAILURE
            }
        },
    }
}
