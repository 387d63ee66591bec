//! Logging through the real process-wide logger: capture into memory, and
//! the `auto` format decided from `JOURNAL_STREAM` in a child process whose
//! stderr is a file (the journal stream's stand-in).
//!
//! A process has one logger, so each format is checked in its own child:
//! this test binary re-runs itself with `--exact logger_child` and
//! `LOGGER_CHILD_FORMAT` set.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};

use log::LevelFilter;
use stratum_proxy::logging::{self, InitError, LogFormat, MemoryWriter};

mod runner;

const CHILD_VAR: &str = "LOGGER_CHILD_FORMAT";

/// What the child logs: one line per level, a trace line the level hides,
/// and a debug line from another crate (capped at info).
fn log_sample() {
    log::error!("conn=3 peer=10.0.0.9:4100 upstream refused");
    log::warn!("conn=3 peer=10.0.0.9:4100 slow");
    log::info!("conn=3 peer=10.0.0.9:4100 opened");
    log::debug!("conn=3 peer=10.0.0.9:4100 first line");
    log::trace!("hidden at debug");
    log::debug!(target: "async_io::reactor", "hidden: foreign debug");
}

/// Runs only inside a child started by [`run_child`].
#[test]
fn logger_child() {
    let Ok(format) = std::env::var(CHILD_VAR) else {
        return;
    };
    let format: LogFormat = format.parse().unwrap();
    let chosen = logging::init(LevelFilter::Debug, format).unwrap();
    log_sample();
    logging::flush();
    // On its own line: libtest prints "test logger_child ... " before it.
    println!("\nchosen={chosen}");
}

/// Runs [`logger_child`] with stderr to a fresh file; `journal_stream`
/// decides `JOURNAL_STREAM` from that file's (dev, inode). Returns the
/// format the child chose and what it wrote to stderr.
fn run_child(format: &str, journal_stream: impl Fn(u64, u64) -> String) -> (String, String) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let path: PathBuf = std::env::temp_dir().join(format!(
        "stratum-proxy-log-{}-{}.txt",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let stderr = File::create(&path).unwrap();
    let meta = stderr.metadata().unwrap();
    let output = runner::command(std::env::current_exe().unwrap())
        .args(["--exact", "logger_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_VAR, format)
        .env("JOURNAL_STREAM", journal_stream(meta.dev(), meta.ino()))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .output()
        .unwrap();
    assert!(output.status.success(), "child failed");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let chosen = stdout
        .lines()
        .find_map(|line| line.split_once("chosen=").map(|(_, rest)| rest.trim()))
        .unwrap_or_else(|| panic!("child printed no format:\n{stdout}"))
        .to_string();
    let written = std::fs::read_to_string(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    (chosen, written)
}

#[test]
fn auto_under_a_matching_journal_stream_writes_priorities() {
    let (chosen, written) = run_child("auto", |dev, ino| format!("{dev}:{ino}"));
    assert_eq!(chosen, "journald");
    assert_eq!(
        written,
        "<3>config_logging: conn=3 peer=10.0.0.9:4100 upstream refused\n\
         <4>config_logging: conn=3 peer=10.0.0.9:4100 slow\n\
         <6>config_logging: conn=3 peer=10.0.0.9:4100 opened\n"
    );
}

#[test]
fn auto_with_another_stream_writes_text() {
    // JOURNAL_STREAM inherited from a parent whose stderr was the journal:
    // ours is not, so no priority prefixes.
    let (chosen, written) = run_child("auto", |dev, ino| format!("{dev}:{}", ino + 1));
    assert_eq!(chosen, "text");
    let lines: Vec<&str> = written.lines().collect();
    assert_eq!(lines.len(), 3, "{written}");
    let expected = [
        "[ERROR] config_logging: conn=3 peer=10.0.0.9:4100 upstream refused",
        "[WARN] config_logging: conn=3 peer=10.0.0.9:4100 slow",
        "[INFO] config_logging: conn=3 peer=10.0.0.9:4100 opened",
    ];
    for (line, expected) in lines.iter().zip(expected) {
        let (time, rest) = line.split_once(' ').unwrap();
        // RFC 3339 UTC, e.g. 2026-11-26T02:15:49.123456789Z
        assert!(
            time.len() >= 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T',
            "{line}"
        );
        assert_eq!(rest, expected);
    }
}

#[test]
fn explicit_json_ignores_the_journal_stream() {
    let (chosen, written) = run_child("json", |dev, ino| format!("{dev}:{ino}"));
    assert_eq!(chosen, "json");
    let lines: Vec<serde_json::Value> = written
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 3, "{written}");
    let levels: Vec<&str> = lines.iter().map(|l| l["level"].as_str().unwrap()).collect();
    assert_eq!(levels, ["error", "warn", "info"]);
    assert_eq!(lines[2]["msg"], "conn=3 peer=10.0.0.9:4100 opened");
    assert_eq!(lines[2]["target"], "config_logging");
    assert!(lines[2]["ts"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn captured_logs_in_this_process() {
    // The only test in this process that installs the logger.
    let captured = MemoryWriter::new();
    logging::init_with_writer(LevelFilter::Info, LogFormat::Journald, captured.clone()).unwrap();
    log::info!("conn=9 peer=[::1]:6000 opened");
    log::debug!("not at info");
    logging::flush();
    assert_eq!(
        captured.contents(),
        "<6>config_logging: conn=9 peer=[::1]:6000 opened\n"
    );
    assert!(matches!(
        logging::init_with_writer(LevelFilter::Info, LogFormat::Json, MemoryWriter::new()),
        Err(InitError::AlreadyInitialized)
    ));
}
