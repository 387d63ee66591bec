//! Logging setup: one `log` backend for the whole process, in one of three
//! line formats.
//!
//! - **text**: human readable, with an RFC 3339 UTC timestamp, through
//!   simplelog (`TermLogger` with colours on a terminal, `WriteLogger`
//!   otherwise).
//! - **journald**: every line starts with its syslog priority (`<3>` error,
//!   `<4>` warn, `<6>` info, `<7>` debug and trace) and has no timestamp, so
//!   journald stores the right priority and `journalctl -p warning` filters
//!   correctly. Chosen by `auto` when stderr is the journal stream that
//!   systemd named in `JOURNAL_STREAM`.
//! - **json**: one object per line, `{"ts","level","target","msg"}`, `ts` in
//!   RFC 3339 UTC with milliseconds.
//!
//! Each record is written with a single `write` of a whole line (or, for a
//! multi-line message in journald format, of all its prefixed lines), so
//! lines from different threads never interleave. Records from other crates
//! are capped at `info`, so `LOG_LEVEL=trace` traces this program without
//! flooding the journal with the I/O reactor's own trace lines.
//!
//! Call sites follow the house format: connection lines carry
//! `conn=<id> peer=<addr>`; never a password or a whole authorize line.

use std::fmt;
use std::io::{self, IsTerminal, LineWriter, Write};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};
use simplelog::{ColorChoice, ConfigBuilder, SharedLogger, TermLogger, TerminalMode, WriteLogger};

/// Log targets (crate names) that get the full configured level; records from
/// any other crate are shown at `info` and above only.
pub const OWN_TARGETS: [&str; 3] = ["stratum_proxy", "pool_sim", "miner_sim"];

/// The most verbose level shown for records from crates not in [`OWN_TARGETS`].
pub const FOREIGN_MAX_LEVEL: LevelFilter = LevelFilter::Info;

/// Environment variable systemd sets to `<dev>:<inode>` of the journal stream
/// it connected to stdout/stderr.
pub const JOURNAL_STREAM_VAR: &str = "JOURNAL_STREAM";

/// Log line format as configured (`log_format`), before `auto` is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Journald when stderr is systemd's journal stream, text otherwise.
    Auto,
    /// Human-readable lines with a timestamp.
    Text,
    /// Syslog priority prefix, no timestamp.
    Journald,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// Every accepted spelling, in the order shown in messages.
    pub const ALL: [LogFormat; 4] = [
        LogFormat::Auto,
        LogFormat::Text,
        LogFormat::Journald,
        LogFormat::Json,
    ];

    /// The configuration spelling: `auto`, `text`, `journald` or `json`.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Auto => "auto",
            LogFormat::Text => "text",
            LogFormat::Journald => "journald",
            LogFormat::Json => "json",
        }
    }

    /// Decides `auto` from the value of `JOURNAL_STREAM` (if any) and the
    /// identity of stderr; other formats are returned unchanged.
    pub fn resolve(self, journal_stream: Option<&str>) -> LogFormat {
        match self {
            LogFormat::Auto => match journal_stream {
                Some(value) if stderr_is_journal_stream(value) => LogFormat::Journald,
                _ => LogFormat::Text,
            },
            other => other,
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for LogFormat {
    type Err = ();

    /// Parses one of the configuration spellings (ASCII case-insensitive).
    fn from_str(s: &str) -> Result<Self, ()> {
        LogFormat::ALL
            .into_iter()
            .find(|format| format.as_str().eq_ignore_ascii_case(s))
            .ok_or(())
    }
}

/// Whether `journal_stream` (`<dev>:<inode>`, decimal, as systemd writes it)
/// names the file open as our stderr.
///
/// Stderr is inspected through `/proc/self/fd/2`, whose `stat` describes the
/// open file itself (also for sockets). Without `/proc`, or when the value
/// does not parse, the answer is `false` and text is used.
pub fn stderr_is_journal_stream(journal_stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = parse_journal_stream(journal_stream) else {
        return false;
    };
    match std::fs::metadata("/proc/self/fd/2") {
        Ok(meta) => meta.dev() == dev && meta.ino() == ino,
        Err(_) => false,
    }
}

/// Parses `<dev>:<inode>` into its two numbers.
fn parse_journal_stream(value: &str) -> Option<(u64, u64)> {
    let (dev, ino) = value.trim().split_once(':')?;
    Some((dev.parse().ok()?, ino.parse().ok()?))
}

/// The syslog priority journald stores for a level.
pub fn syslog_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 6,
        Level::Debug | Level::Trace => 7,
    }
}

/// Why the logger could not be installed.
#[derive(Debug)]
pub enum InitError {
    /// A logger was already installed in this process (only one can be).
    AlreadyInitialized,
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::AlreadyInitialized => f.write_str("a logger is already installed"),
        }
    }
}

impl std::error::Error for InitError {}

/// Installs the process logger writing to stderr and returns the format it
/// chose (`auto` decided from the process's `JOURNAL_STREAM`).
pub fn init(level: LevelFilter, format: LogFormat) -> Result<LogFormat, InitError> {
    let journal_stream = std::env::var(JOURNAL_STREAM_VAR).ok();
    let format = format.resolve(journal_stream.as_deref());
    let logger = match format {
        LogFormat::Text if io::stderr().is_terminal() => Logger::from_shared(
            level,
            TermLogger::new(
                LevelFilter::Trace,
                text_config(),
                TerminalMode::Stderr,
                ColorChoice::Auto,
            ),
        ),
        // The line writer turns simplelog's several small writes per record
        // into one write per line.
        _ => Logger::new(
            level,
            format,
            LineWriter::with_capacity(64 * 1024, io::stderr()),
        ),
    };
    install(logger)?;
    Ok(format)
}

/// Installs the process logger writing every line to `writer`, e.g. a
/// [`MemoryWriter`] in a test. `format` `auto` means text here.
pub fn init_with_writer<W: Write + Send + 'static>(
    level: LevelFilter,
    format: LogFormat,
    writer: W,
) -> Result<(), InitError> {
    install(Logger::new(level, format, writer))
}

fn install(logger: Logger) -> Result<(), InitError> {
    let max = logger.level;
    log::set_boxed_logger(Box::new(logger)).map_err(|_| InitError::AlreadyInitialized)?;
    log::set_max_level(max);
    Ok(())
}

/// Flushes the installed logger (call before exiting).
pub fn flush() {
    log::logger().flush();
}

/// simplelog settings for the text format: RFC 3339 UTC time, level, target.
fn text_config() -> simplelog::Config {
    ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_time_level(LevelFilter::Error)
        .set_target_level(LevelFilter::Error)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build()
}

/// A `log::Log` backend: filters by level and target, then formats each
/// record as one line. Can be built on any writer, so tests can use one
/// without installing it globally.
pub struct Logger {
    level: LevelFilter,
    sink: Sink,
}

enum Sink {
    /// simplelog's text format (it filters by our level before us only
    /// through `enabled`, so it is built with `Trace`).
    Text(Box<dyn SharedLogger>),
    /// Our own line formats: `Journald` or `Json`.
    Lines {
        format: LogFormat,
        writer: Mutex<Box<dyn Write + Send>>,
    },
}

impl Logger {
    /// A logger at `level` writing `format` lines to `writer`; `auto` means text.
    pub fn new<W: Write + Send + 'static>(
        level: LevelFilter,
        format: LogFormat,
        writer: W,
    ) -> Logger {
        match format {
            LogFormat::Journald | LogFormat::Json => Logger {
                level,
                sink: Sink::Lines {
                    format,
                    writer: Mutex::new(Box::new(writer)),
                },
            },
            LogFormat::Auto | LogFormat::Text => Logger::from_shared(
                level,
                WriteLogger::new(LevelFilter::Trace, text_config(), writer),
            ),
        }
    }

    fn from_shared(level: LevelFilter, inner: Box<dyn SharedLogger>) -> Logger {
        Logger {
            level,
            sink: Sink::Text(inner),
        }
    }
}

/// Whether a record at `level` from `target` passes a `configured` level.
fn target_enabled(configured: LevelFilter, level: Level, target: &str) -> bool {
    let own = OWN_TARGETS.iter().any(|own| {
        target == *own
            || target
                .strip_prefix(own)
                .is_some_and(|rest| rest.starts_with("::"))
    });
    let limit = if own {
        configured
    } else {
        configured.min(FOREIGN_MAX_LEVEL)
    };
    level <= limit
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        target_enabled(self.level, metadata.level(), metadata.target())
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        match &self.sink {
            Sink::Text(inner) => inner.log(record),
            Sink::Lines { format, writer } => {
                let line = match format {
                    LogFormat::Json => json_line(record, SystemTime::now()),
                    _ => journald_lines(record),
                };
                // A poisoned lock only means another thread panicked while
                // logging; the writer itself is still usable.
                let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                // Nowhere to report a failed log write: drop the line.
                let _ = writer.write_all(&line);
                let _ = writer.flush();
            }
        }
    }

    fn flush(&self) {
        match &self.sink {
            Sink::Text(inner) => inner.flush(),
            Sink::Lines { writer, .. } => {
                let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = writer.flush();
            }
        }
    }
}

/// Formats a record for journald: `<N>target: message`, each line of a
/// multi-line message prefixed with the priority so none is stored at the
/// default priority.
fn journald_lines(record: &Record<'_>) -> Vec<u8> {
    let priority = syslog_priority(record.level());
    let message = record.args().to_string();
    let mut out = Vec::with_capacity(message.len() + 64);
    for (index, line) in message.split('\n').enumerate() {
        if index == 0 {
            let _ = writeln!(out, "<{priority}>{}: {line}", record.target());
        } else {
            let _ = writeln!(out, "<{priority}>{line}");
        }
    }
    out
}

/// Formats a record as one JSON object and a newline.
fn json_line(record: &Record<'_>, now: SystemTime) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: String,
        level: &'static str,
        target: &'a str,
        msg: String,
    }
    let line = Line {
        ts: rfc3339_utc(now),
        level: level_name(record.level()),
        target: record.target(),
        msg: record.args().to_string(),
    };
    // Serializing plain strings into a Vec cannot fail.
    let mut out = serde_json::to_vec(&line).unwrap_or_default();
    out.push(b'\n');
    out
}

/// The lowercase level name used in JSON lines and the configuration.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Error => "error",
        Level::Warn => "warn",
        Level::Info => "info",
        Level::Debug => "debug",
        Level::Trace => "trace",
    }
}

/// Formats a time as RFC 3339 UTC with milliseconds,
/// e.g. `2023-11-14T22:13:20.000Z`. Times before 1970 print as the epoch.
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since_epoch = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since_epoch.as_secs();
    let millis = since_epoch.subsec_millis();
    let (year, month, day) = civil_from_days(secs / 86_400);
    let second_of_day = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        second_of_day / 3600,
        second_of_day / 60 % 60,
        second_of_day % 60,
    )
}

/// Converts days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar, counting in 400-year eras of 146 097 days from
/// 0000-03-01 so that leap days fall at the end of each counted year.
fn civil_from_days(days_since_epoch: u64) -> (u64, u64, u64) {
    // 719 468 days from 0000-03-01 to 1970-01-01.
    let days = days_since_epoch + 719_468;
    let era = days / 146_097;
    let day_of_era = days % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// A cloneable in-memory writer for capturing log output in tests: every
/// clone appends to the same buffer.
#[derive(Clone, Default)]
pub struct MemoryWriter {
    buffer: Arc<Mutex<Vec<u8>>>,
}

impl MemoryWriter {
    /// An empty buffer.
    pub fn new() -> MemoryWriter {
        MemoryWriter::default()
    }

    /// Everything written so far, lossily decoded as UTF-8.
    pub fn contents(&self) -> String {
        let buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

impl Write for MemoryWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(secs: u64, millis: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(secs * 1000 + millis)
    }

    fn log_through(logger: &Logger, level: Level, target: &str, message: &str) {
        logger.log(
            &Record::builder()
                .level(level)
                .target(target)
                .args(format_args!("{message}"))
                .build(),
        );
    }

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339_utc(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(at(951_782_400, 0)), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            rfc3339_utc(at(1_700_000_000, 42)),
            "2023-11-14T22:13:20.042Z"
        );
        assert_eq!(
            rfc3339_utc(at(4_107_542_399, 999)),
            "2100-02-28T23:59:59.999Z"
        );
        assert_eq!(
            rfc3339_utc(at(4_107_542_400, 0)),
            "2100-03-01T00:00:00.000Z"
        );
        assert_eq!(
            rfc3339_utc(at(1_735_689_599, 0)),
            "2024-12-31T23:59:59.000Z"
        );
    }

    #[test]
    fn civil_dates_match_a_day_by_day_count() {
        // Walk 1970..2401 one day at a time with the plain leap-year rule and
        // compare every date.
        let (mut year, mut month, mut day) = (1970u64, 1u64, 1u64);
        for days in 0..157_000u64 {
            assert_eq!(civil_from_days(days), (year, month, day), "day {days}");
            let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
            let month_len = match month {
                2 if leap => 29,
                2 => 28,
                4 | 6 | 9 | 11 => 30,
                _ => 31,
            };
            day += 1;
            if day > month_len {
                day = 1;
                month += 1;
                if month > 12 {
                    month = 1;
                    year += 1;
                }
            }
        }
    }

    #[test]
    fn journald_lines_carry_priority_and_no_time() {
        let out = MemoryWriter::new();
        let logger = Logger::new(LevelFilter::Trace, LogFormat::Journald, out.clone());
        log_through(
            &logger,
            Level::Error,
            "stratum_proxy::relay",
            "conn=1 peer=10.0.0.2:4000 failed",
        );
        log_through(&logger, Level::Warn, "stratum_proxy", "w");
        log_through(&logger, Level::Info, "stratum_proxy", "i");
        log_through(&logger, Level::Debug, "stratum_proxy", "d");
        log_through(&logger, Level::Trace, "stratum_proxy", "t");
        log_through(&logger, Level::Warn, "stratum_proxy", "two\nlines");
        assert_eq!(
            out.contents(),
            "<3>stratum_proxy::relay: conn=1 peer=10.0.0.2:4000 failed\n\
             <4>stratum_proxy: w\n<6>stratum_proxy: i\n<7>stratum_proxy: d\n<7>stratum_proxy: t\n\
             <4>stratum_proxy: two\n<4>lines\n"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let record_args = "say \"hi\"\nbye";
        let line = json_line(
            &Record::builder()
                .level(Level::Warn)
                .target("stratum_proxy::config")
                .args(format_args!("{record_args}"))
                .build(),
            at(1_700_000_000, 5),
        );
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with('\n'));
        assert_eq!(text.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            value,
            serde_json::json!({
                "ts": "2023-11-14T22:13:20.005Z",
                "level": "warn",
                "target": "stratum_proxy::config",
                "msg": "say \"hi\"\nbye",
            })
        );
    }

    #[test]
    fn level_and_foreign_targets_are_filtered() {
        let out = MemoryWriter::new();
        let logger = Logger::new(LevelFilter::Debug, LogFormat::Journald, out.clone());
        log_through(&logger, Level::Trace, "stratum_proxy", "own trace");
        log_through(&logger, Level::Debug, "stratum_proxy::relay", "own debug");
        log_through(&logger, Level::Debug, "miner_sim", "sim debug");
        log_through(&logger, Level::Debug, "async_io::reactor", "foreign debug");
        log_through(&logger, Level::Debug, "stratum_proxyx", "lookalike debug");
        log_through(&logger, Level::Info, "tiny_http", "foreign info");
        assert_eq!(
            out.contents(),
            "<7>stratum_proxy::relay: own debug\n<7>miner_sim: sim debug\n<6>tiny_http: foreign info\n"
        );
    }

    #[test]
    fn off_logs_nothing() {
        let out = MemoryWriter::new();
        let logger = Logger::new(LevelFilter::Off, LogFormat::Json, out.clone());
        log_through(&logger, Level::Error, "stratum_proxy", "x");
        assert_eq!(out.contents(), "");
    }

    #[test]
    fn text_lines_are_human_readable() {
        let out = MemoryWriter::new();
        let logger = Logger::new(LevelFilter::Info, LogFormat::Text, out.clone());
        log_through(
            &logger,
            Level::Info,
            "stratum_proxy::relay",
            "conn=7 peer=[::1]:5000 opened",
        );
        log_through(&logger, Level::Debug, "stratum_proxy::relay", "hidden");
        let text = out.contents();
        assert_eq!(text.lines().count(), 1, "{text}");
        // "<rfc3339 time> [INFO] stratum_proxy::relay: conn=7 ..."
        let (time, rest) = text.split_once(' ').unwrap();
        assert!(
            time.len() >= 20 && time.as_bytes()[4] == b'-' && time.contains('T'),
            "{text}"
        );
        assert_eq!(
            rest,
            "[INFO] stratum_proxy::relay: conn=7 peer=[::1]:5000 opened\n"
        );
    }

    #[test]
    fn format_names_parse() {
        for format in LogFormat::ALL {
            assert_eq!(format.as_str().parse(), Ok(format));
        }
        assert_eq!("JSON".parse(), Ok(LogFormat::Json));
        assert_eq!("syslog".parse::<LogFormat>(), Err(()));
    }

    #[test]
    fn auto_is_text_without_a_matching_journal_stream() {
        assert_eq!(LogFormat::Auto.resolve(None), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(Some("garbage")), LogFormat::Text);
        assert_eq!(LogFormat::Auto.resolve(Some("0:0")), LogFormat::Text);
        assert_eq!(LogFormat::Json.resolve(Some("0:0")), LogFormat::Json);
    }

    #[test]
    fn auto_is_journald_when_stderr_matches() {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
            return; // no /proc: nothing to compare against
        };
        let value = format!("{}:{}", meta.dev(), meta.ino());
        assert_eq!(LogFormat::Auto.resolve(Some(&value)), LogFormat::Journald);
        let other = format!("{}:{}", meta.dev(), meta.ino() + 1);
        assert_eq!(LogFormat::Auto.resolve(Some(&other)), LogFormat::Text);
    }

    #[test]
    fn journal_stream_parses() {
        assert_eq!(parse_journal_stream("8:12345"), Some((8, 12345)));
        assert_eq!(parse_journal_stream("8:"), None);
        assert_eq!(parse_journal_stream("x:1"), None);
    }
}
