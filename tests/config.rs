//! Configuration: the four-layer precedence table, the fixture folders, the
//! shipped configuration, and `check-config` / `--version` through the
//! built binary.
//!
//! Fixtures under `tests/fixtures/config/invalid/` are named
//! `<expected key>--<what is wrong>.json`: the key (or `file` for a file
//! that is not one JSON object) must appear as a word in the errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::{Value, json};
use stratum_proxy::cli;
use stratum_proxy::config::{ClientIdMode, Config, ConfigError, FlagLayer, KEYS, Secret};
use stratum_proxy::logging::LogFormat;

mod runner;

const BIN: &str = env!("CARGO_BIN_EXE_stratum-proxy");

fn manifest_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Writes `text` to a fresh file in a per-process temporary folder.
fn temp_file(text: &str) -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir =
        std::env::temp_dir().join(format!("stratum-proxy-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.json", COUNTER.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, text).unwrap();
    path
}

fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name| map.get(name).cloned()
}

/// Loads through the real command line parser, as the binary does.
fn load(args: &[&str], env: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    let top = cli::parse_args(args).unwrap_or_else(|(text, _)| panic!("{args:?}: {text}"));
    top.load_config(&env_of(env))
}

fn load_file(path: &Path) -> Result<Config, Vec<ConfigError>> {
    Config::load(
        &FlagLayer {
            config: Some(path.to_str().unwrap().to_string()),
            ..FlagLayer::default()
        },
        &|_| None,
    )
}

fn joined(errors: &[ConfigError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

/// One key's value at each layer, and what the configuration must show
/// (`effective_json()[key]`) as each layer is added.
struct Row {
    key: &'static str,
    file: Value,
    env: (&'static str, &'static str),
    flag: (&'static str, &'static str),
    /// Effective value with: defaults only, + file, + env, + flag.
    expected: [Value; 4],
}

fn precedence_rows() -> Vec<Row> {
    let row = |key, file, env, flag, expected| Row {
        key,
        file,
        env,
        flag,
        expected,
    };
    vec![
        row(
            "listen",
            json!("127.0.0.1:4000"),
            ("LISTEN_PORT", "5000"),
            ("--listen", "[::1]:6000"),
            [
                json!("0.0.0.0:3333"),
                json!("127.0.0.1:4000"),
                json!("127.0.0.1:5000"),
                json!("[::1]:6000"),
            ],
        ),
        row(
            "metrics_listen",
            json!("127.0.0.1:9200"),
            ("METRICS_HOST", "::1"),
            ("--metrics-listen", "127.0.0.3:9300"),
            [
                json!("0.0.0.0:9100"),
                json!("127.0.0.1:9200"),
                json!("[::1]:9200"),
                json!("127.0.0.3:9300"),
            ],
        ),
        row(
            "log_level",
            json!("warn"),
            ("LOG_LEVEL", "debug"),
            ("--log-level", "TRACE"),
            [json!("info"), json!("warn"), json!("debug"), json!("trace")],
        ),
        row(
            "log_format",
            json!("text"),
            ("LOG_FORMAT", "json"),
            ("--log-format", "journald"),
            [
                json!("auto"),
                json!("text"),
                json!("json"),
                json!("journald"),
            ],
        ),
        row(
            "max_connections",
            json!(50),
            ("MAX_CONNECTIONS", "60"),
            ("--max-connections", "70"),
            [json!(10000), json!(50), json!(60), json!(70)],
        ),
        row(
            "accept_rate_per_second",
            json!(0.5),
            ("ACCEPT_RATE_PER_SECOND", "10"),
            ("--accept-rate-per-second", "20.5"),
            [json!(500.0), json!(0.5), json!(10.0), json!(20.5)],
        ),
        row(
            "accept_burst",
            json!(1),
            ("ACCEPT_BURST", "2"),
            ("--accept-burst", "1000000"),
            [json!(1000), json!(1), json!(2), json!(1000000)],
        ),
        row(
            "max_connections_per_address",
            json!(2),
            ("MAX_CONNECTIONS_PER_ADDRESS", "3"),
            ("--max-connections-per-address", "4"),
            [json!(64), json!(2), json!(3), json!(4)],
        ),
        row(
            "accept_rate_per_address",
            json!(0.5),
            ("ACCEPT_RATE_PER_ADDRESS", "1"),
            ("--accept-rate-per-address", "2.5"),
            [json!(4.0), json!(0.5), json!(1.0), json!(2.5)],
        ),
        row(
            "address_overrides",
            json!(["10.0.0.0/8=100/10"]),
            ("ADDRESS_OVERRIDES", "10.0.5.0/24=1000"),
            ("--address-overrides", "::1=5/0.5, 192.168.0.0/16=7"),
            [
                json!([]),
                json!(["10.0.0.0/8=100/10"]),
                json!(["10.0.5.0/24=1000/1000"]),
                json!(["::1/128=5/0.5", "192.168.0.0/16=7/7"]),
            ],
        ),
        row(
            "tcp_keepalive_idle_seconds",
            json!(15),
            ("TCP_KEEPALIVE_IDLE_SECONDS", "0"),
            ("--tcp-keepalive-idle-seconds", "45"),
            [json!(30.0), json!(15.0), json!(0.0), json!(45.0)],
        ),
        row(
            "tcp_keepalive_interval_seconds",
            json!(2),
            ("TCP_KEEPALIVE_INTERVAL_SECONDS", "3"),
            ("--tcp-keepalive-interval-seconds", "4"),
            [json!(10.0), json!(2.0), json!(3.0), json!(4.0)],
        ),
        row(
            "tcp_keepalive_probes",
            json!(1),
            ("TCP_KEEPALIVE_PROBES", "5"),
            ("--tcp-keepalive-probes", "127"),
            [json!(3), json!(1), json!(5), json!(127)],
        ),
        row(
            "tcp_user_timeout_seconds",
            json!(30),
            ("TCP_USER_TIMEOUT_SECONDS", "0"),
            ("--tcp-user-timeout-seconds", "90"),
            [json!(60.0), json!(30.0), json!(0.0), json!(90.0)],
        ),
        row(
            "connect_timeout_seconds",
            json!(1),
            ("CONNECT_TIMEOUT_SECONDS", "2.5"),
            ("--connect-timeout-seconds", "3"),
            [json!(10.0), json!(1.0), json!(2.5), json!(3.0)],
        ),
        row(
            "idle_timeout_seconds",
            json!(100),
            ("IDLE_TIMEOUT_SECONDS", "200"),
            ("--idle-timeout-seconds", "300"),
            [json!(900.0), json!(100.0), json!(200.0), json!(300.0)],
        ),
        row(
            "handshake_timeout_seconds",
            json!(11),
            ("HANDSHAKE_TIMEOUT_SECONDS", "12"),
            ("--handshake-timeout-seconds", "13"),
            [json!(30.0), json!(11.0), json!(12.0), json!(13.0)],
        ),
        row(
            "shutdown_grace_seconds",
            json!(5),
            ("SHUTDOWN_GRACE_SECONDS", "0"),
            ("--shutdown-grace-seconds", "7.5"),
            [json!(30.0), json!(5.0), json!(0.0), json!(7.5)],
        ),
        row(
            "request_timeout_seconds",
            json!(21),
            ("REQUEST_TIMEOUT_SECONDS", "22"),
            ("--request-timeout-seconds", "23"),
            [json!(60.0), json!(21.0), json!(22.0), json!(23.0)],
        ),
        row(
            "health_interval_seconds",
            json!(31),
            ("HEALTH_INTERVAL_SECONDS", "32"),
            ("--health-interval-seconds", "33"),
            [json!(60.0), json!(31.0), json!(32.0), json!(33.0)],
        ),
        row(
            "client_id",
            json!("worker"),
            ("CLIENT_ID", "peer_ip"),
            ("--client-id", "none"),
            [
                json!("account"),
                json!("worker"),
                json!("peer_ip"),
                json!("none"),
            ],
        ),
        row(
            "client_id_cap",
            json!(10),
            ("CLIENT_ID_CAP", "20"),
            ("--client-id-cap", "100000"),
            [json!(1000), json!(10), json!(20), json!(100000)],
        ),
        row(
            "threads",
            json!(2),
            ("THREADS", "3"),
            ("--threads", "64"),
            [json!(1), json!(2), json!(3), json!(64)],
        ),
        row(
            "http_threads",
            json!(3),
            ("HTTP_THREADS", "16"),
            ("--http-threads", "1"),
            [json!(2), json!(3), json!(16), json!(1)],
        ),
        row(
            "pool_check_interval_seconds",
            json!(1),
            ("POOL_CHECK_INTERVAL_SECONDS", "0.5"),
            ("--pool-check-interval-seconds", "10"),
            [json!(2.0), json!(1.0), json!(0.5), json!(10.0)],
        ),
        row(
            "pool_fall",
            json!(1),
            ("POOL_FALL", "5"),
            ("--pool-fall", "100"),
            [json!(3), json!(1), json!(5), json!(100)],
        ),
        row(
            "pool_rise",
            json!(2),
            ("POOL_RISE", "4"),
            ("--pool-rise", "1"),
            [json!(3), json!(2), json!(4), json!(1)],
        ),
        row(
            "pool_probe",
            json!("tcp"),
            ("POOL_PROBE", "SUBSCRIBE"),
            ("--pool-probe", "tcp"),
            [
                json!("subscribe"),
                json!("tcp"),
                json!("subscribe"),
                json!("tcp"),
            ],
        ),
        row(
            "pool_stall_factor",
            json!(2),
            ("POOL_STALL_FACTOR", "4.5"),
            ("--pool-stall-factor", "10"),
            [json!(2.5), json!(2.0), json!(4.5), json!(10.0)],
        ),
        row(
            "failover_wait_seconds",
            json!(0),
            ("FAILOVER_WAIT_SECONDS", "1"),
            ("--failover-wait-seconds", "0.25"),
            [json!(2.0), json!(0.0), json!(1.0), json!(0.25)],
        ),
        row(
            "failback_after_seconds",
            json!(0),
            ("FAILBACK_AFTER_SECONDS", "300"),
            ("--failback-after-seconds", "60"),
            [json!(120.0), json!(0.0), json!(300.0), json!(60.0)],
        ),
        row(
            "move_rate_per_second",
            json!(1),
            ("MOVE_RATE_PER_SECOND", "0.5"),
            ("--move-rate-per-second", "100"),
            [json!(10.0), json!(1.0), json!(0.5), json!(100.0)],
        ),
        row(
            "reconnect_message",
            json!(true),
            ("RECONNECT_MESSAGE", "off"),
            ("--reconnect-message", "yes"),
            [json!(false), json!(true), json!(false), json!(true)],
        ),
        row(
            "balance_tolerance",
            json!(0.1),
            ("BALANCE_TOLERANCE", "1"),
            ("--balance-tolerance", "0.02"),
            [json!(0.05), json!(0.1), json!(1.0), json!(0.02)],
        ),
    ]
}

/// The arguments and environment of one stage of a precedence row.
type Stage<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>);

#[test]
fn precedence_default_file_env_flag() {
    let rows = precedence_rows();
    // Every key but pool and the secret (tested below) has a row.
    let covered: Vec<&str> = rows.iter().map(|r| r.key).collect();
    for key in KEYS {
        assert!(
            covered.contains(&key) || ["pool", "pools", "routes", "metrics_token"].contains(&key),
            "no precedence row for {key}"
        );
    }
    // The pool comes from a flag throughout, so it never interferes.
    let pool_flag = ["--pool", "pool.example.com:3333"];
    for row in &rows {
        let file = temp_file(&json!({ row.key: row.file }).to_string());
        let file = file.to_str().unwrap();
        let stages: [Stage; 4] = [
            (pool_flag.to_vec(), vec![]),
            ([&pool_flag[..], &["--config", file]].concat(), vec![]),
            (
                [&pool_flag[..], &["--config", file]].concat(),
                vec![row.env],
            ),
            (
                [&pool_flag[..], &["--config", file, row.flag.0, row.flag.1]].concat(),
                vec![row.env],
            ),
        ];
        for (stage, (args, env)) in stages.iter().enumerate() {
            let config = load(args, env)
                .unwrap_or_else(|e| panic!("{} stage {stage}: {}", row.key, joined(&e)));
            assert_eq!(
                config.effective_json()[row.key],
                row.expected[stage],
                "{} at stage {stage} ({args:?}, {env:?})",
                row.key
            );
        }
    }
}

#[test]
fn precedence_of_the_pool() {
    let file = temp_file(r#"{ "pool": "file.example:1" }"#);
    let file = file.to_str().unwrap();
    // Default: there is none.
    let errors = load(&[], &[]).unwrap_err();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].key(), Some("pool"));
    assert!(matches!(errors[0], ConfigError::Missing { .. }));
    let pool = |args: &[&str], env: &[(&str, &str)]| load(args, env).unwrap().pool[0].to_string();
    assert_eq!(pool(&["--config", file], &[]), "file.example:1");
    assert_eq!(
        pool(&["--config", file], &[("POOL_HOST", "env.example")]),
        "env.example:1"
    );
    assert_eq!(
        pool(
            &["--config", file],
            &[("POOL_HOST", "env.example"), ("POOL_PORT", "2")]
        ),
        "env.example:2"
    );
    assert_eq!(
        pool(
            &["--config", file, "--pool", "flag.example:3"],
            &[("POOL_HOST", "env.example"), ("POOL_PORT", "2")]
        ),
        "flag.example:3"
    );
}

#[test]
fn precedence_of_the_secret() {
    let file = temp_file(r#"{ "pool": "p.example:1", "metrics_token": "from-file" }"#);
    let file = file.to_str().unwrap();
    let token = |args: &[&str], env: &[(&str, &str)]| {
        load(args, env)
            .unwrap()
            .metrics_token
            .as_ref()
            .map(|t: &Secret| t.expose().to_string())
    };
    assert_eq!(token(&["--pool", "p.example:1"], &[]), None);
    assert_eq!(
        token(&["--config", file], &[]).as_deref(),
        Some("from-file")
    );
    assert_eq!(
        token(&["--config", file], &[("METRICS_TOKEN", "from-env")]).as_deref(),
        Some("from-env")
    );
    assert_eq!(
        token(
            &["--config", file, "--metrics-token", "from-flag"],
            &[("METRICS_TOKEN", "from-env")]
        )
        .as_deref(),
        Some("from-flag")
    );
}

#[test]
fn config_file_from_env_and_flag_wins() {
    let from_env = temp_file(r#"{ "pool": "env-file.example:1" }"#);
    let from_flag = temp_file(r#"{ "pool": "flag-file.example:2" }"#);
    let env = [("CONFIG_FILE", from_env.to_str().unwrap())];
    assert_eq!(
        load(&[], &env).unwrap().pool[0].to_string(),
        "env-file.example:1"
    );
    assert_eq!(
        load(&["--config", from_flag.to_str().unwrap()], &env)
            .unwrap()
            .pool[0]
            .to_string(),
        "flag-file.example:2"
    );
}

#[test]
fn a_bad_value_is_refused_even_when_a_later_layer_overrides_it() {
    let file = temp_file(r#"{ "pool": "p.example:1", "threads": 0 }"#);
    let errors = load(&["--config", file.to_str().unwrap(), "--threads", "2"], &[]).unwrap_err();
    assert_eq!(
        joined(&errors),
        format!(
            "invalid threads from file {}: 0 (out of range); allowed: a whole number from 1 to 64",
            file.display()
        )
    );
}

#[test]
fn errors_from_every_layer_are_collected() {
    let file = temp_file(r#"{ "pool": "p.example:1", "max_connections": -5, "colour": "blue" }"#);
    let errors = load(
        &["--config", file.to_str().unwrap(), "--log-format", "xml"],
        &[("ACCEPT_BURST", "many"), ("LISTEN_HOST", "gateway.local")],
    )
    .unwrap_err();
    let path = file.display();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        vec![
            format!(
                "unknown key \"colour\" in file {path}; allowed keys: listen, pool, pools, routes, metrics_listen, \
                 log_level, log_format, max_connections, accept_rate_per_second, accept_burst, \
                 max_connections_per_address, accept_rate_per_address, address_overrides, \
                 tcp_keepalive_idle_seconds, tcp_keepalive_interval_seconds, \
                 tcp_keepalive_probes, tcp_user_timeout_seconds, connect_timeout_seconds, idle_timeout_seconds, handshake_timeout_seconds, \
                 shutdown_grace_seconds, request_timeout_seconds, health_interval_seconds, \
                 client_id, client_id_cap, threads, http_threads, pool_check_interval_seconds, \
                 pool_fall, pool_rise, pool_probe, pool_stall_factor, failover_wait_seconds, \
                 failback_after_seconds, move_rate_per_second, reconnect_message, balance_tolerance, \
                 metrics_token"
            ),
            "invalid listen from environment variable LISTEN_HOST: \"gateway.local\"; \
             allowed: an IPv4 or IPv6 address, e.g. 0.0.0.0 or ::"
                .to_string(),
            "invalid log_format from flag --log-format: \"xml\"; allowed: auto, text, journald or json"
                .to_string(),
            format!(
                "invalid max_connections from file {path}: -5 (not a whole number); \
                 allowed: a whole number from 1 to 1000000"
            ),
            "invalid accept_burst from environment variable ACCEPT_BURST: \"many\"; \
             allowed: a whole number from 1 to 1000000"
                .to_string(),
        ]
    );
}

#[test]
fn unreadable_file_names_who_named_it() {
    let errors = load(
        &["--pool", "p.example:1"],
        &[("CONFIG_FILE", "/nonexistent/stratum.json")],
    )
    .unwrap_err();
    assert_eq!(
        joined(&errors),
        "cannot read configuration file /nonexistent/stratum.json (named by environment variable \
         CONFIG_FILE): No such file or directory (os error 2)"
    );
}

#[test]
fn full_fixture_has_exact_values() {
    let config = load_file(&manifest_path("tests/fixtures/config/valid/full.json")).unwrap();
    assert_eq!(config.listen, ["0.0.0.0:13333".parse().unwrap()]);
    assert_eq!(config.pool[0].host(), "eu1.pool.example.org");
    assert_eq!(config.pool[0].port(), 4444);
    assert_eq!(config.metrics_listen, "127.0.0.1:19100".parse().unwrap());
    assert_eq!(config.log_level, log::LevelFilter::Debug);
    assert_eq!(config.log_format, LogFormat::Json);
    assert_eq!(config.max_connections, 5000);
    assert_eq!(config.accept_rate_per_second, 50.5);
    assert_eq!(config.accept_burst, 200);
    assert_eq!(config.connect_timeout, Duration::from_secs(5));
    assert_eq!(config.idle_timeout, Duration::from_secs(600));
    assert_eq!(config.handshake_timeout, Duration::from_secs(20));
    assert_eq!(config.shutdown_grace, Duration::from_secs(10));
    assert_eq!(config.request_timeout, Duration::from_secs(45));
    assert_eq!(config.health_interval, Duration::from_secs(30));
    assert_eq!(config.client_id, ClientIdMode::Worker);
    assert_eq!(config.client_id_cap, 500);
    assert_eq!(config.threads, 2);
    assert_eq!(config.http_threads, 4);
    assert_eq!(
        config.metrics_token.as_ref().map(Secret::expose),
        Some("scrape-token-0123456789")
    );
}

#[test]
fn nulls_mean_defaults() {
    let config = load_file(&manifest_path("tests/fixtures/config/valid/nulls.json")).unwrap();
    let defaults = load(&["--pool", "10.20.30.40:3333"], &[]).unwrap();
    assert_eq!(config, defaults);
}

fn fixtures(kind: &str) -> Vec<PathBuf> {
    let dir = manifest_path(&format!("tests/fixtures/config/{kind}"));
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_valid_fixture_parses_and_round_trips() {
    let files = fixtures("valid");
    assert!(files.len() >= 8, "{files:?}");
    for path in files {
        let config =
            load_file(&path).unwrap_or_else(|e| panic!("{}:\n{}", path.display(), joined(&e)));
        // The effective configuration is itself a valid file describing the
        // same configuration (the masked token aside).
        let mut effective = config.effective_json();
        effective["metrics_token"] = Value::Null;
        let again = load_file(&temp_file(&effective.to_string()))
            .unwrap_or_else(|e| panic!("{} round trip:\n{}", path.display(), joined(&e)));
        let mut expected = config.clone();
        expected.metrics_token = None;
        assert_eq!(again, expected, "{}", path.display());
    }
}

/// Whether `word` appears in `text` delimited by non-identifier characters.
fn has_word(text: &str, word: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .any(|token| token == word)
}

#[test]
fn every_invalid_fixture_is_refused_naming_its_key() {
    let files = fixtures("invalid");
    assert!(files.len() >= 30, "{files:?}");
    for path in files {
        let name = path.file_stem().unwrap().to_str().unwrap();
        let (expected, _) = name
            .split_once("--")
            .unwrap_or_else(|| panic!("fixture {name} is not named <key>--<what>.json"));
        let errors = match load_file(&path) {
            Ok(config) => panic!("{} accepted: {config:?}", path.display()),
            Err(errors) => errors,
        };
        let text = joined(&errors);
        assert!(
            has_word(&text, expected),
            "{}: no {expected:?} in\n{text}",
            path.display()
        );
        if expected == "file" {
            // Only the file's own problem: not also "missing pool", which
            // may well be in the file.
            assert_eq!(errors.len(), 1, "{}:\n{text}", path.display());
        } else {
            assert!(
                errors.iter().any(|e| e.key() == Some(expected)),
                "{}: no error keyed {expected:?} in\n{text}",
                path.display()
            );
        }
        for error in &errors {
            if let ConfigError::InvalidValue { layer, .. } = error {
                assert_eq!(layer.to_string(), format!("file {}", path.display()));
            }
        }
        assert!(
            !text.contains("secret-marker"),
            "{}: secret printed:\n{text}",
            path.display()
        );
    }
}

#[test]
fn shipped_overlay_config_parses() {
    // The configuration the firmware overlay installs as
    // /etc/stratum-proxy/config.json.
    let path = manifest_path("systemd/config.json");
    let config = load_file(&path).unwrap_or_else(|e| panic!("{}:\n{}", path.display(), joined(&e)));
    assert!(!config.pool[0].host().is_empty());
    assert_eq!(config.listen[0].port(), 3333);
    assert_eq!(config.metrics_listen.port(), 9100);
}

// ---- the binary -----------------------------------------------------------

/// Runs the built binary with only the given environment (and `PATH`, which
/// the configuration does not read, so that a runner script finds its
/// emulator).
fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = runner::command(BIN);
    command.args(args).env_clear();
    if let Some(path) = std::env::var_os("PATH") {
        command.env("PATH", path);
    }
    command.envs(env.iter().copied()).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[test]
fn binary_check_config_prints_the_masked_effective_config() {
    let fixture = manifest_path("tests/fixtures/config/valid/full.json");
    let out = run(
        &["check-config", "--config", fixture.to_str().unwrap()],
        &[("THREADS", "3")],
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(!stdout.contains("scrape-token"), "{stdout}");
    let printed: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(
        printed,
        json!({
            "listen": "0.0.0.0:13333",
            "pool": "eu1.pool.example.org:4444",
            "pools": null,
            "routes": null,
            "metrics_listen": "127.0.0.1:19100",
            "log_level": "debug",
            "log_format": "json",
            "max_connections": 5000,
            "accept_rate_per_second": 50.5,
            "accept_burst": 200,
            "max_connections_per_address": 500,
            "accept_rate_per_address": 2.5,
            "address_overrides": ["10.0.5.0/24=1000/100", "192.168.1.10/32=200/200"],
            "tcp_keepalive_idle_seconds": 20.0,
            "tcp_keepalive_interval_seconds": 5.0,
            "tcp_keepalive_probes": 4,
            "tcp_user_timeout_seconds": 40.0,
            "connect_timeout_seconds": 5.0,
            "idle_timeout_seconds": 600.0,
            "handshake_timeout_seconds": 20.0,
            "shutdown_grace_seconds": 10.0,
            "request_timeout_seconds": 45.0,
            "health_interval_seconds": 30.0,
            "client_id": "worker",
            "client_id_cap": 500,
            "threads": 3,
            "http_threads": 4,
            "pool_check_interval_seconds": 2.0,
            "pool_fall": 3,
            "pool_rise": 3,
            "pool_probe": "subscribe",
            "pool_stall_factor": 2.5,
            "failover_wait_seconds": 2.0,
            "failback_after_seconds": 120.0,
            "move_rate_per_second": 10.0,
            "reconnect_message": false,
            "balance_tolerance": 0.05,
            "metrics_token": "********",
        })
    );
}

#[test]
fn binary_check_config_exits_2_with_every_error() {
    let fixture = manifest_path("tests/fixtures/config/invalid/threads--too-many.json");
    let out = run(
        &[
            "--log-level",
            "loud",
            "check-config",
            "--config",
            fixture.to_str().unwrap(),
        ],
        &[("METRICS_TOKEN", "secret-marker with space")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(text(&out.stdout), "");
    assert_eq!(
        text(&out.stderr),
        format!(
            "error: invalid log_level from flag --log-level: \"loud\"; allowed: off, error, warn, info, debug or trace\n\
             error: invalid threads from file {}: 65 (out of range); allowed: a whole number from 1 to 64\n\
             error: invalid metrics_token from environment variable METRICS_TOKEN: (secret value not shown); \
             allowed: 1 to 4096 visible ASCII characters without spaces\n\
             configuration refused: 3 problems\n",
            fixture.display()
        )
    );
}

#[test]
fn binary_without_pool_exits_2() {
    let out = run(&["check-config"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: missing pool: no default;"));
    // Running the proxy refuses the same configuration the same way.
    let out = run(&[], &[("POOL_HOST", "p.example")]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).starts_with("error: missing pool: the host is set but not the port"));
}

#[test]
fn binary_version_help_and_usage_errors() {
    let out = run(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout),
        format!("stratum-proxy {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = run(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("check-config"));
    let out = run(&["--bogus"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("--bogus"));
}

// ---- fuzzing the loader ------------------------------------------------------

mod fuzz {
    use super::*;
    use proptest::prelude::*;
    use stratum_proxy::config::ENV_VARS;

    /// Text an operator (or a fuzzer) might put in a variable.
    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[0-9.:/=, \\[\\]a-f-]{0,24}",
            any::<String>().prop_map(|s| s.chars().take(24).collect()),
            Just("18446744073709551616".to_string()),
            Just("1e309".to_string()),
            Just("NaN".to_string()),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            text().prop_map(Value::String),
            prop::collection::vec(text().prop_map(Value::String), 0..3).prop_map(Value::Array),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// Any value for any key in the file and any text in any variable:
        /// the loader never panics, and a configuration it accepts is
        /// printed (check-config) as a file that loads back to the same.
        #[test]
        fn any_file_and_environment_load_or_are_refused_cleanly(
            file_key in prop::sample::select(KEYS.to_vec()),
            file_value in json_value(),
            env in prop::collection::vec(
                (prop::sample::select(ENV_VARS
                    .iter()
                    .flat_map(|(_, v)| v.iter().copied())
                    // The secret is printed masked: it cannot round-trip.
                    .filter(|v| *v != "METRICS_TOKEN")
                    .collect::<Vec<_>>()), text()),
                0..3,
            ),
        ) {
            prop_assume!(file_key != "metrics_token");
            let file = temp_file(&json!({ file_key: file_value }).to_string());
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let loaded = load(
                &["--config", file.to_str().unwrap(), "--pool", "pool.example.com:3333"],
                &env,
            );
            let _ = std::fs::remove_file(&file);
            if let Ok(config) = loaded {
                let printed = temp_file(&config.effective_json().to_string());
                let again = load_file(&printed);
                let _ = std::fs::remove_file(&printed);
                let again = again.unwrap_or_else(|e| panic!("{:?}", e.iter().map(ToString::to_string).collect::<Vec<_>>()));
                prop_assert_eq!(again, config);
            }
        }
    }
}

#[test]
fn several_pools_and_routes_from_the_file() {
    let config = load_file(&manifest_path(
        "tests/fixtures/config/valid/several-pools.json",
    ))
    .unwrap_or_else(|e| panic!("{}", joined(&e)));
    let specs = config.pool_specs();
    let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["main", "second", "backup"]);
    assert_eq!(
        specs
            .iter()
            .map(|s| (s.priority, s.weight))
            .collect::<Vec<_>>(),
        [(0, 7), (0, 3), (1, 1)]
    );
    assert_eq!(config.listen.len(), 2);
    assert_eq!(config.routes.len(), 2);
    assert_eq!(config.routes[0].pools, ["backup"]);
    // --pool flags win over the file's pools (a higher layer).
    let path = manifest_path("tests/fixtures/config/valid/several-pools.json");
    let config = load(
        &[
            "--config",
            path.to_str().unwrap(),
            "--pool",
            "a.example:1",
            "--pool",
            "b.example:2",
        ],
        &[],
    );
    // The file's routes name pools the flags no longer have: refused.
    let errors = config.unwrap_err();
    assert!(
        errors.iter().any(|e| e.key() == Some("routes")),
        "{}",
        joined(&errors)
    );
}

#[test]
fn repeated_pool_flags_are_primary_then_backups() {
    let config = load(&["--pool", "a.example:1", "--pool", "b.example:2"], &[]).unwrap();
    let specs = config.pool_specs();
    assert_eq!(
        specs
            .iter()
            .map(|s| (s.name.as_str(), s.priority, s.weight))
            .collect::<Vec<_>>(),
        [("a.example:1", 0, 1), ("b.example:2", 1, 1)]
    );
    // The effective configuration shows them as a list, which loads back.
    let json = config.effective_json();
    assert_eq!(json["pool"], json!(["a.example:1", "b.example:2"]));
    let again = load_file(&temp_file(&json.to_string())).unwrap();
    assert_eq!(again.pool_specs(), specs);
}
