//! Logging setup: one `log` backend for the whole process, in one of three
//! line formats.
//!
//! - **text**: human readable, `<RFC 3339 UTC time> [LEVEL] target: message`.
//! - **journald**: every line starts with its syslog priority (`<3>` error,
//!   `<4>` warn, `<6>` info, `<7>` debug and trace) and has no timestamp, so
//!   journald stores the right priority and `journalctl -p warning` filters
//!   correctly. Chosen by `auto` when stderr is the journal stream that
//!   systemd named in `JOURNAL_STREAM`.
//! - **json**: one object per line, `{"ts","level","target","msg"}`, `ts` in
//!   RFC 3339 UTC with milliseconds.
//!
//! Logs that cannot lie: every control character in a message (newline,
//! carriage return, escape, DEL, C1 ...) is written escaped (`\n`, `\u{1b}`),
//! in every format, so a peer-supplied string such as a user name
//! `"x\n<3>forged"` stays inside its own line and cannot pick a priority.
//! Records from other crates are capped at `info`, so `LOG_LEVEL=trace`
//! traces this program without flooding the journal with the I/O reactor's
//! own trace lines.
//!
//! Logs that cannot drown or stall: the process logger formats a record on
//! the calling thread and hands the line to a writer thread through a
//! bounded queue ([`QUEUE_LINES`]); when the queue is full (journald
//! throttling us, a stuck terminal) the line is dropped and counted, and the
//! writer reports "N log lines dropped" once it catches up. A relay thread
//! never waits for a write. Lines about peers (connections opened, closed,
//! refused, authorizing ...) go through [`peer_line`], a token bucket per
//! [`PeerLine`] kind ([`PEER_LINE_BURST`], [`PEER_LINES_PER_SECOND`]); what
//! it holds back is reported every [`SUMMARY_INTERVAL`] as "N similar lines
//! suppressed".
//!
//! Call sites follow the house format: connection lines carry
//! `conn=<id> peer=<addr>`; never a password or a whole authorize line.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use log::{Level, LevelFilter, Log, Metadata, Record};

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

/// Lines the writer thread may have waiting; more are dropped and counted.
pub const QUEUE_LINES: usize = 4096;
/// How often the writer reports dropped and suppressed lines.
pub const SUMMARY_INTERVAL: Duration = Duration::from_secs(10);
/// Lines of one [`PeerLine`] kind allowed at once.
pub const PEER_LINE_BURST: u32 = 200;
/// Lines of one [`PeerLine`] kind allowed per second, on average.
pub const PEER_LINES_PER_SECOND: u32 = 50;
/// Longest `flush` waits for the writer thread.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// Installs the process logger writing to stderr and returns the format it
/// chose (`auto` decided from the process's `JOURNAL_STREAM`).
pub fn init(level: LevelFilter, format: LogFormat) -> Result<LogFormat, InitError> {
    let journal_stream = std::env::var(JOURNAL_STREAM_VAR).ok();
    let format = format.resolve(journal_stream.as_deref());
    install(Logger::queued(level, format, io::stderr(), QUEUE_LINES))?;
    Ok(format)
}

/// Installs the process logger writing every line to `writer`, e.g. a
/// [`MemoryWriter`] in a test. `format` `auto` means text here.
pub fn init_with_writer<W: Write + Send + 'static>(
    level: LevelFilter,
    format: LogFormat,
    writer: W,
) -> Result<(), InitError> {
    install(Logger::queued(level, format, writer, QUEUE_LINES))
}

fn install(logger: Logger) -> Result<(), InitError> {
    let max = logger.level;
    log::set_boxed_logger(Box::new(logger)).map_err(|_| InitError::AlreadyInitialized)?;
    log::set_max_level(max);
    Ok(())
}

/// Flushes the installed logger: waits (a bounded time) until the writer
/// thread has written every queued line (call before exiting).
pub fn flush() {
    log::logger().flush();
}

/// Kinds of log lines about peers, each rate-limited on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerLine {
    /// A miner connection opened.
    Opened,
    /// A miner connection closed.
    Closed,
    /// A `mining.authorize` (or login) seen.
    Authorizing,
    /// The pool accepted an authorize.
    Authorized,
    /// A connection refused by a limit.
    Refused,
    /// The pool could not be reached for a miner.
    UpstreamFailed,
}

impl PeerLine {
    /// Every kind, in declaration order.
    pub const ALL: [PeerLine; 6] = [
        PeerLine::Opened,
        PeerLine::Closed,
        PeerLine::Authorizing,
        PeerLine::Authorized,
        PeerLine::Refused,
        PeerLine::UpstreamFailed,
    ];

    /// The name used in the suppression summary.
    pub const fn as_str(self) -> &'static str {
        match self {
            PeerLine::Opened => "connection opened",
            PeerLine::Closed => "connection closed",
            PeerLine::Authorizing => "authorizing",
            PeerLine::Authorized => "authorized",
            PeerLine::Refused => "connection refused",
            PeerLine::UpstreamFailed => "pool unreachable",
        }
    }
}

/// Token buckets, one per [`PeerLine`] kind, and what each suppressed.
pub struct PeerLimiter {
    buckets: Mutex<[(f64, Option<Instant>); 6]>,
    suppressed: [AtomicU64; 6],
    burst: u32,
    per_second: u32,
}

impl PeerLimiter {
    /// A limiter allowing `burst` lines at once and `per_second` on average.
    pub const fn new(burst: u32, per_second: u32) -> PeerLimiter {
        PeerLimiter {
            buckets: Mutex::new([(0.0, None); 6]),
            suppressed: [const { AtomicU64::new(0) }; 6],
            burst,
            per_second,
        }
    }

    /// Whether a line of `kind` may be written at `now` (else it is counted).
    pub fn allow_at(&self, kind: PeerLine, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let (tokens, last) = &mut buckets[kind as usize];
        let refill = match last {
            None => f64::from(self.burst),
            Some(last) => {
                now.saturating_duration_since(*last).as_secs_f64() * f64::from(self.per_second)
            }
        };
        *tokens = (*tokens + refill).min(f64::from(self.burst));
        *last = Some(now);
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            self.suppressed[kind as usize].fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// Lines of `kind` suppressed since the last call (and resets that).
    pub fn take_suppressed(&self, kind: PeerLine) -> u64 {
        self.suppressed[kind as usize].swap(0, Ordering::Relaxed)
    }
}

static PEER_LIMITER: PeerLimiter = PeerLimiter::new(PEER_LINE_BURST, PEER_LINES_PER_SECOND);

/// Whether a log line of `kind` about a peer may be written now; call it
/// only when the line's level is enabled (it spends a token). What it holds
/// back is reported as "N similar lines suppressed".
pub fn peer_line(kind: PeerLine) -> bool {
    PEER_LIMITER.allow_at(kind, Instant::now())
}

/// `text` with every control character escaped (`\n`, `\r`, `\t`,
/// else `\u{..}`); borrowed when there is none.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// A `log::Log` backend: filters by level and target, then formats each
/// record as one line. Can be built on any writer, so tests can use one
/// without installing it globally.
pub struct Logger {
    level: LevelFilter,
    format: LogFormat,
    output: Output,
}

enum Output {
    /// Written on the calling thread (tests).
    Direct(Mutex<Box<dyn Write + Send>>),
    /// Handed to the writer thread.
    Queue {
        lines: SyncSender<Command>,
        dropped: Arc<AtomicU64>,
    },
}

enum Command {
    Line(Vec<u8>),
    Flush(SyncSender<()>),
}

impl Logger {
    /// A logger at `level` writing `format` lines to `writer` on the calling
    /// thread; `auto` means text.
    pub fn new<W: Write + Send + 'static>(
        level: LevelFilter,
        format: LogFormat,
        writer: W,
    ) -> Logger {
        Logger {
            level,
            format,
            output: Output::Direct(Mutex::new(Box::new(writer))),
        }
    }

    /// A logger whose lines a writer thread writes to `writer`, with at
    /// most `capacity` lines waiting (more are dropped and counted).
    pub fn queued<W: Write + Send + 'static>(
        level: LevelFilter,
        format: LogFormat,
        writer: W,
        capacity: usize,
    ) -> Logger {
        let (lines, queue) = mpsc::sync_channel(capacity);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        // If the thread cannot start, every line is dropped and counted:
        // logging must not take the process down.
        let _ = std::thread::Builder::new()
            .name("log-writer".into())
            .spawn(move || write_lines(queue, writer, format, &counted));
        Logger {
            level,
            format,
            output: Output::Queue { lines, dropped },
        }
    }

    /// Lines dropped because the writer thread was behind (not yet reported).
    pub fn dropped(&self) -> u64 {
        match &self.output {
            Output::Direct(_) => 0,
            Output::Queue { dropped, .. } => dropped.load(Ordering::Relaxed),
        }
    }
}

/// The writer thread: writes queued lines, and every [`SUMMARY_INTERVAL`]
/// reports lines dropped or suppressed since the last report.
fn write_lines<W: Write>(
    queue: mpsc::Receiver<Command>,
    mut writer: W,
    format: LogFormat,
    dropped: &AtomicU64,
) {
    let mut next_summary = Instant::now() + SUMMARY_INTERVAL;
    loop {
        let wait = next_summary.saturating_duration_since(Instant::now());
        match queue.recv_timeout(wait) {
            Ok(Command::Line(line)) => {
                // Nowhere to report a failed log write: drop the line.
                let _ = writer.write_all(&line);
            }
            Ok(Command::Flush(done)) => {
                let _ = writer.flush();
                let _ = done.send(());
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if Instant::now() >= next_summary {
            next_summary = Instant::now() + SUMMARY_INTERVAL;
            let mut summary = Vec::new();
            let lost = dropped.swap(0, Ordering::Relaxed);
            if lost > 0 {
                summary.push(format!(
                    "{lost} log lines dropped: the log writer could not keep up"
                ));
            }
            for kind in PeerLine::ALL {
                let n = PEER_LIMITER.take_suppressed(kind);
                if n > 0 {
                    summary.push(format!(
                        "{n} similar lines suppressed in the last {}s ({})",
                        SUMMARY_INTERVAL.as_secs(),
                        kind.as_str()
                    ));
                }
            }
            for message in summary {
                let line = format_line(
                    format,
                    Level::Warn,
                    "stratum_proxy::logging",
                    &message,
                    SystemTime::now(),
                );
                let _ = writer.write_all(&line);
            }
            let _ = writer.flush();
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
        let message = record.args().to_string();
        let line = format_line(
            self.format,
            record.level(),
            record.target(),
            &message,
            SystemTime::now(),
        );
        match &self.output {
            Output::Direct(writer) => {
                // A poisoned lock only means another thread panicked while
                // logging; the writer itself is still usable.
                let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = writer.write_all(&line);
                let _ = writer.flush();
            }
            Output::Queue { lines, dropped } => match lines.try_send(Command::Line(line)) {
                Ok(()) => {}
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                    dropped.fetch_add(1, Ordering::Relaxed);
                }
            },
        }
    }

    fn flush(&self) {
        match &self.output {
            Output::Direct(writer) => {
                let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
                let _ = writer.flush();
            }
            Output::Queue { lines, .. } => {
                let (done, flushed) = mpsc::sync_channel(1);
                // Blocking here is fine: flush is called at exit, never on
                // the relay's path; the wait is bounded.
                if lines.send(Command::Flush(done)).is_ok() {
                    let _ = flushed.recv_timeout(FLUSH_WAIT);
                }
            }
        }
    }
}

/// One record as a line in `format` (`auto` means text), control
/// characters in `message` escaped.
fn format_line(
    format: LogFormat,
    level: Level,
    target: &str,
    message: &str,
    now: SystemTime,
) -> Vec<u8> {
    let message = escape_controls(message);
    match format {
        LogFormat::Json => json_line(level, target, &message, now),
        LogFormat::Journald => {
            let mut out = Vec::with_capacity(message.len() + target.len() + 8);
            let _ = writeln!(out, "<{}>{target}: {message}", syslog_priority(level));
            out
        }
        LogFormat::Auto | LogFormat::Text => {
            let mut out = Vec::with_capacity(message.len() + target.len() + 40);
            let _ = writeln!(
                out,
                "{} [{}] {target}: {message}",
                rfc3339_utc(now),
                level.as_str()
            );
            out
        }
    }
}

/// Formats a record as one JSON object and a newline.
fn json_line(level: Level, target: &str, message: &str, now: SystemTime) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Line<'a> {
        ts: String,
        level: &'static str,
        target: &'a str,
        msg: &'a str,
    }
    let line = Line {
        ts: rfc3339_utc(now),
        level: level_name(level),
        target,
        msg: message,
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
             <4>stratum_proxy: two\\nlines\n"
        );
    }

    #[test]
    fn json_line_is_one_object() {
        let line = format_line(
            LogFormat::Json,
            Level::Warn,
            "stratum_proxy::config",
            "say \"hi\"\nbye",
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
                "msg": "say \"hi\"\\nbye",
            })
        );
    }

    #[test]
    fn a_forged_line_stays_one_escaped_line_in_every_format() {
        let message = "authorizing user=x\n<3>forged\r\u{1b}[2J\u{85}end";
        for format in [LogFormat::Text, LogFormat::Journald, LogFormat::Json] {
            let line = format_line(format, Level::Info, "stratum_proxy", message, at(0, 0));
            let text = String::from_utf8(line).unwrap();
            assert_eq!(text.matches('\n').count(), 1, "{format}: {text:?}");
            assert!(text.ends_with('\n'), "{format}: {text:?}");
            assert!(
                !text[..text.len() - 1].chars().any(char::is_control),
                "{format}: {text:?}"
            );
            let shown = if format == LogFormat::Json {
                let v: serde_json::Value = serde_json::from_str(&text).unwrap();
                v["msg"].as_str().unwrap().to_owned()
            } else {
                text.clone()
            };
            assert!(
                shown.contains("user=x\\n<3>forged\\r\\u{1b}[2J\\u{85}end"),
                "{format}: {shown:?}"
            );
        }
        assert!(matches!(
            escape_controls("plain é"),
            Cow::Borrowed("plain é")
        ));
    }

    #[test]
    fn peer_lines_are_limited_per_kind_and_counted() {
        let limiter = PeerLimiter::new(3, 2);
        let t0 = Instant::now();
        let allowed = (0..10)
            .filter(|_| limiter.allow_at(PeerLine::Opened, t0))
            .count();
        assert_eq!(allowed, 3);
        assert_eq!(limiter.take_suppressed(PeerLine::Opened), 7);
        assert_eq!(limiter.take_suppressed(PeerLine::Opened), 0);
        // Another kind has its own bucket.
        assert!(limiter.allow_at(PeerLine::Refused, t0));
        // Two tokens a second: one second later, two more lines.
        let t1 = t0 + Duration::from_secs(1);
        let allowed = (0..10)
            .filter(|_| limiter.allow_at(PeerLine::Opened, t1))
            .count();
        assert_eq!(allowed, 2);
        assert_eq!(limiter.take_suppressed(PeerLine::Opened), 8);
    }

    /// A writer that blocks until told to go on, like a stalled journald.
    struct Stalled(Arc<(Mutex<bool>, std::sync::Condvar)>, MemoryWriter);
    impl Write for Stalled {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.0;
            let mut open = open.lock().unwrap();
            while !*open {
                open = cv.wait(open).unwrap();
            }
            self.1.write(bytes)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_never_blocks_the_caller_and_drops_are_counted() {
        let gate = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let out = MemoryWriter::new();
        let logger = Logger::queued(
            LevelFilter::Info,
            LogFormat::Journald,
            Stalled(gate.clone(), out.clone()),
            4,
        );
        // The writer takes one line and blocks on it; four wait; the rest
        // are dropped. If log() blocked, this loop would never finish.
        for n in 0..100 {
            log_through(&logger, Level::Info, "stratum_proxy", &format!("line {n}"));
        }
        let dropped = logger.dropped();
        assert!((95..=96).contains(&dropped), "dropped {dropped}");
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        logger.flush();
        assert_eq!(out.contents().lines().count() as u64, 100 - dropped);
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
