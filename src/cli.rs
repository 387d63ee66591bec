//! Command line (argh): the flags of the configuration's top layer, an
//! optional subcommand, and `check-config`.
//!
//! ```text
//! stratum-proxy [--config FILE] [--listen ADDR] [--pool HOST:PORT] ... run the proxy
//! stratum-proxy [flags] check-config [--config FILE]     validate, print effective config
//! stratum-proxy [flags] demo [--miners N] [--seconds S] [--submit-rate R]
//! stratum-proxy --help | --version
//! ```
//!
//! Configuration flags are kept as strings so that [`crate::config`] can
//! check them with the other layers and name `flag --pool` as the source of
//! a bad value. Exit codes: 0 success, 2 for a usage or configuration error.

use std::io::Write;
use std::process::ExitCode;

use argh::FromArgs;

use crate::config::{Config, ConfigError, FlagLayer};

/// Exit status for a command-line or configuration error.
pub const EXIT_CONFIG_ERROR: u8 = 2;

/// The program's version line, `stratum-proxy <version>`.
pub const VERSION_LINE: &str = concat!("stratum-proxy ", env!("CARGO_PKG_VERSION"));

/// Makes the command line's structs from the table of configuration keys
/// ([`crate::config::keys`]): every key's flag on the top level and on
/// `check-config`, which takes the same flags.
macro_rules! define_flags {
    ($(
        $(#[doc = $doc:literal])*
        $key:ident => $field:ident : $ty:ty = $default:expr, $kind:expr,
            env [$($env:literal),*], flag $arg:literal [$($flagty:tt)*] $help:literal $reload:ident;
    )*) => {
        /// Transparent Stratum relay with Prometheus metrics. Without a subcommand it
        /// runs the proxy. Every flag can also be set in the JSON file or the
        /// environment (see check-config); flags win over both.
        #[derive(FromArgs)]
        pub struct TopLevel {
            /// JSON configuration file (default: $CONFIG_FILE, else none)
            #[argh(option, arg_name = "FILE")]
            pub config: Option<String>,
            $(
                #[doc = $help]
                #[argh(option, arg_name = $arg)]
                pub $key: $($flagty)*,
            )*
            /// print the version and exit
            #[argh(switch)]
            pub version: bool,
            /// what to do instead of running the proxy
            #[argh(subcommand)]
            pub command: Option<Command>,
        }

        /// Validate the configuration from all layers (defaults, file, environment,
        /// flags); print it as JSON with secrets masked (exit 0) or every problem
        /// (exit 2). Takes every flag the proxy takes.
        #[derive(FromArgs, Debug, PartialEq)]
        #[argh(subcommand, name = "check-config")]
        pub struct CheckConfigArgs {
            /// JSON configuration file (overrides a --config given before check-config)
            #[argh(option, arg_name = "FILE")]
            pub config: Option<String>,
            $(
                #[doc = $help]
                #[argh(option, arg_name = $arg)]
                pub $key: $($flagty)*,
            )*
        }

        impl TopLevel {
            /// The flag layer of the configuration; a flag given after
            /// `check-config` wins over the same flag given before it.
            pub fn flag_layer(&self) -> FlagLayer {
                let check = match &self.command {
                    Some(Command::CheckConfig(args)) => Some(args),
                    _ => None,
                };
                let mut flags = FlagLayer::default();
                flags.config = check
                    .and_then(|args| args.config.clone())
                    .or_else(|| self.config.clone());
                $(
                    let after: Vec<String> =
                        check.map_or_else(Vec::new, |args| args.$key.iter().cloned().collect());
                    let values = if after.is_empty() {
                        self.$key.iter().cloned().collect()
                    } else {
                        after
                    };
                    flags.push(stringify!($key), values);
                )*
                flags
            }
        }
    };
}

crate::config::config_keys!(define_flags);

/// Subcommands.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand)]
// Parsed once at start; argh cannot box a subcommand's struct.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// `check-config`
    CheckConfig(CheckConfigArgs),
    /// `demo`
    Demo(DemoArgs),
}

/// Run a pool simulator, the proxy and miner simulators in one process on
/// loopback, and show the metrics they produce.
#[derive(FromArgs, Debug, PartialEq)]
#[argh(subcommand, name = "demo")]
pub struct DemoArgs {
    /// number of simulated miners, 1-10000 (default 5)
    #[argh(option, default = "5", from_str_fn(parse_miners))]
    pub miners: u32,
    /// how long to run in seconds, up to 86400 (default 30)
    #[argh(option, default = "30.0", from_str_fn(parse_demo_seconds))]
    pub seconds: f64,
    /// shares each miner submits per second, up to 1000 (default 2)
    #[argh(option, default = "2.0", from_str_fn(parse_submit_rate))]
    pub submit_rate: f64,
}

fn parse_miners(text: &str) -> Result<u32, String> {
    match text.parse::<u32>() {
        Ok(n) if (1..=10_000).contains(&n) => Ok(n),
        _ => Err(format!("{text:?} is not a whole number from 1 to 10000")),
    }
}

fn parse_bounded(text: &str, max: f64) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() && n > 0.0 && n <= max => Ok(n),
        _ => Err(format!(
            "{text:?} is not a number greater than 0 and at most {max}"
        )),
    }
}

fn parse_demo_seconds(text: &str) -> Result<f64, String> {
    parse_bounded(text, 86_400.0)
}

fn parse_submit_rate(text: &str) -> Result<f64, String> {
    parse_bounded(text, 1000.0)
}

impl TopLevel {
    /// Loads the configuration from all layers with these flags and the
    /// given environment lookup.
    pub fn load_config(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, Vec<ConfigError>> {
        Config::load(&self.flag_layer(), env)
    }
}

/// Parses `args` (without the program name). `Err` carries what to print
/// and the exit status: `--help` text with 0 (for stdout), or a usage error
/// with [`EXIT_CONFIG_ERROR`] (for stderr).
pub fn parse_args(args: &[&str]) -> Result<TopLevel, (String, u8)> {
    TopLevel::from_args(&["stratum-proxy"], args).map_err(|exit| match exit.status {
        Ok(()) => (exit.output, 0),
        Err(()) => (
            format!(
                "{}\nRun stratum-proxy --help for more information.",
                exit.output.trim_end()
            ),
            EXIT_CONFIG_ERROR,
        ),
    })
}

/// Parses the process's arguments; on `--help` prints it and exits 0, on a
/// usage error prints it and exits 2 (argh's own `from_env` would exit 1).
pub fn parse_from_env() -> TopLevel {
    let args: Vec<String> = match std::env::args_os()
        .skip(1)
        .map(|arg| arg.into_string())
        .collect::<Result<_, _>>()
    {
        Ok(args) => args,
        Err(arg) => {
            eprintln!("argument {arg:?} is not valid UTF-8");
            std::process::exit(i32::from(EXIT_CONFIG_ERROR));
        }
    };
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match parse_args(&args) {
        Ok(top) => top,
        Err((output, 0)) => {
            // Not println!: it panics when stdout is closed early
            // (`stratum-proxy --help | head`).
            let _ = writeln!(std::io::stdout(), "{output}");
            std::process::exit(0);
        }
        Err((output, status)) => {
            eprintln!("{output}");
            std::process::exit(i32::from(status));
        }
    }
}

/// Writes every configuration error to `err`, one per line, and a summary.
pub fn report_config_errors(errors: &[ConfigError], err: &mut dyn Write) {
    for error in errors {
        let _ = writeln!(err, "error: {error}");
    }
    let _ = writeln!(
        err,
        "configuration refused: {} problem{}",
        errors.len(),
        if errors.len() == 1 { "" } else { "s" }
    );
}

/// `check-config`: loads the configuration like the proxy would, prints the
/// effective configuration (secrets masked) to `out` and returns success, or
/// prints every error to `err` and returns [`EXIT_CONFIG_ERROR`].
pub fn check_config(
    top: &TopLevel,
    env: &dyn Fn(&str) -> Option<String>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> ExitCode {
    match top.load_config(env) {
        Ok(config) => {
            let _ = writeln!(out, "{}", config.effective_json_pretty());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            report_config_errors(&errors, err);
            ExitCode::from(EXIT_CONFIG_ERROR)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn flags_reach_the_flag_layer() {
        let top =
            parse_args(&["--pool", "p:1", "--threads", "4", "--listen", "127.0.0.1:0"]).unwrap();
        let flags = top.flag_layer();
        assert_eq!(flags.get("pool"), ["p:1"]);
        assert_eq!(flags.get("threads"), ["4"]);
        assert_eq!(flags.get("listen"), ["127.0.0.1:0"]);
        assert_eq!(top.command, None);
        assert!(!top.version);
        let config = top.load_config(&no_env).unwrap();
        assert_eq!(config.threads, 4);
    }

    #[test]
    fn every_config_flag_is_accepted() {
        let pairs = [
            ("--config", "/nonexistent"),
            ("--listen", "a"),
            ("--pool", "a"),
            ("--metrics-listen", "a"),
            ("--log-level", "a"),
            ("--log-format", "a"),
            ("--max-connections", "a"),
            ("--accept-rate-per-second", "a"),
            ("--accept-burst", "a"),
            ("--connect-timeout-seconds", "a"),
            ("--idle-timeout-seconds", "a"),
            ("--handshake-timeout-seconds", "a"),
            ("--shutdown-grace-seconds", "a"),
            ("--request-timeout-seconds", "a"),
            ("--health-interval-seconds", "a"),
            ("--client-id", "a"),
            ("--client-id-cap", "a"),
            ("--threads", "a"),
            ("--http-threads", "a"),
            ("--metrics-token", "a"),
        ];
        let args: Vec<&str> = pairs.iter().flat_map(|(f, v)| [*f, *v]).collect();
        let top = parse_args(&args).unwrap();
        let errors = top.load_config(&no_env).unwrap_err();
        // The file cannot be read; every other flag's "a" is refused (the
        // token "a" is valid), each naming its flag.
        assert_eq!(errors.len(), pairs.len() - 1, "{errors:#?}");
        for (flag, _) in &pairs[1..pairs.len() - 1] {
            assert!(
                errors
                    .iter()
                    .any(|e| e.to_string().contains(&format!("from flag {flag}:"))),
                "{flag} not reported"
            );
        }
    }

    #[test]
    fn check_config_subcommand_and_its_config_flag() {
        let top =
            parse_args(&["--config", "a.json", "check-config", "--config", "b.json"]).unwrap();
        assert!(matches!(
            &top.command,
            Some(Command::CheckConfig(args)) if args.config.as_deref() == Some("b.json")
        ));
        assert_eq!(top.flag_layer().config.as_deref(), Some("b.json"));
        let top = parse_args(&["--config", "a.json", "check-config"]).unwrap();
        assert_eq!(top.flag_layer().config.as_deref(), Some("a.json"));
    }

    #[test]
    fn demo_defaults_and_bounds() {
        let top = parse_args(&["demo"]).unwrap();
        assert_eq!(
            top.command,
            Some(Command::Demo(DemoArgs {
                miners: 5,
                seconds: 30.0,
                submit_rate: 2.0
            }))
        );
        let top = parse_args(&[
            "demo",
            "--miners",
            "50",
            "--seconds",
            "1.5",
            "--submit-rate",
            "10",
        ])
        .unwrap();
        assert_eq!(
            top.command,
            Some(Command::Demo(DemoArgs {
                miners: 50,
                seconds: 1.5,
                submit_rate: 10.0
            }))
        );
        for bad in [
            ["--miners", "0"],
            ["--seconds", "0"],
            ["--submit-rate", "-1"],
            ["--miners", "x"],
        ] {
            let (_, status) = parse_args(&["demo", bad[0], bad[1]]).err().unwrap();
            assert_eq!(status, EXIT_CONFIG_ERROR, "{bad:?}");
        }
    }

    #[test]
    fn help_and_usage_errors() {
        let (help, status) = parse_args(&["--help"]).err().unwrap();
        assert_eq!(status, 0);
        assert!(
            help.contains("--metrics-listen") && help.contains("check-config"),
            "{help}"
        );
        let (message, status) = parse_args(&["--no-such-flag"]).err().unwrap();
        assert_eq!(status, EXIT_CONFIG_ERROR);
        assert!(message.contains("--no-such-flag"), "{message}");
        let top = parse_args(&["--version"]).unwrap();
        assert!(top.version);
        assert_eq!(
            VERSION_LINE,
            format!("stratum-proxy {}", env!("CARGO_PKG_VERSION"))
        );
    }

    #[test]
    fn check_config_output_and_status() {
        let top = parse_args(&[
            "--pool",
            "pool.example.com:3333",
            "--metrics-token",
            "s3cr3t-marker",
            "check-config",
        ])
        .unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = check_config(&top, &no_env, &mut out, &mut err);
        assert_eq!(status, ExitCode::SUCCESS);
        let out = String::from_utf8(out).unwrap();
        assert!(err.is_empty());
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(json["pool"], "pool.example.com:3333");
        assert_eq!(json["metrics_token"], "********");
        assert!(!out.contains("s3cr3t"));

        let top = parse_args(&["--pool", "nope", "check-config"]).unwrap();
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let status = check_config(&top, &no_env, &mut out, &mut err);
        assert_eq!(status, ExitCode::from(EXIT_CONFIG_ERROR));
        assert!(out.is_empty());
        let err = String::from_utf8(err).unwrap();
        assert!(
            err.starts_with("error: invalid pool from flag --pool: \"nope\""),
            "{err}"
        );
        assert!(err.ends_with("configuration refused: 1 problem\n"), "{err}");
    }

    #[test]
    fn check_config_takes_every_flag_the_proxy_takes() {
        // After the subcommand, and winning over the same flag before it.
        let top = parse_args(&[
            "--threads",
            "2",
            "--listen",
            "127.0.0.1:0",
            "check-config",
            "--pool",
            "p.example:1",
            "--threads",
            "3",
        ])
        .unwrap();
        let config = top.load_config(&no_env).unwrap();
        assert_eq!(config.pool[0].to_string(), "p.example:1");
        assert_eq!(config.threads, 3);
        assert_eq!(config.listen, ["127.0.0.1:0".parse().unwrap()]);
        let (help, _) = parse_args(&["check-config", "--help"]).err().unwrap();
        for key in crate::config::KEYS {
            let flag = format!("--{}", key.replace('_', "-"));
            assert!(help.contains(&flag), "check-config --help lacks {flag}");
        }
    }
}
