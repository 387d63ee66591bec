//! Process figures in the standard Prometheus `process_*` names, read from
//! /proc at scrape time (Linux only; elsewhere nothing is rendered).
//!
//! `process_start_time_seconds` is the wall-clock time recorded by
//! [`record_start`] at the top of `main` (milliseconds after exec): the
//! systemd unit's `ProcSubset=pid` hides `/proc/stat`, whose boot time the
//! /proc computation needs, and the metric was never exported there. Without
//! a recorded start (tests, the library alone) /proc is used.

use std::fmt::Write as _;
use std::fs;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch when the process started.
static START: OnceLock<f64> = OnceLock::new();

/// Records now as the process start (call first thing in `main`; later
/// calls change nothing).
pub fn record_start() {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let _ = START.set(now);
}

/// Clock ticks per second for /proc CPU times; 100 on every Linux port we ship.
const CLOCK_TICKS_PER_SECOND: f64 = 100.0;
/// Page size used by /proc/self/statm on aarch64/armv7/x86_64 gateways.
const PAGE_BYTES: u64 = 4096;

/// Appends process metrics (resident memory, CPU seconds, fds, start time) to `out`.
pub fn render(out: &mut String) {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesised command name, which may contain spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    if let (Some(utime), Some(stime)) = (field(14), field(15)) {
        metric(
            out,
            "process_cpu_seconds_total",
            "counter",
            "Total user and system CPU time spent in seconds.",
            (utime + stime) / CLOCK_TICKS_PER_SECOND,
        );
    }
    let resident_pages = fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
    if let Some(pages) = resident_pages {
        metric(
            out,
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            (pages * PAGE_BYTES) as f64,
        );
    }
    if let Ok(dir) = fs::read_dir("/proc/self/fd") {
        metric(
            out,
            "process_open_fds",
            "gauge",
            "Number of open file descriptors.",
            dir.count() as f64,
        );
    }
    if let Some(max) = max_open_files() {
        metric(
            out,
            "process_max_fds",
            "gauge",
            "Maximum number of open file descriptors.",
            max,
        );
    }
    let from_proc = || {
        let boot_time = fs::read_to_string("/proc/stat").ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("btime "))
                .and_then(|v| v.trim().parse::<f64>().ok())
        })?;
        Some(boot_time + field(22)? / CLOCK_TICKS_PER_SECOND)
    };
    if let Some(start) = START.get().copied().or_else(from_proc) {
        metric(
            out,
            "process_start_time_seconds",
            "gauge",
            "Start time of the process since unix epoch in seconds.",
            start,
        );
    }
}

fn max_open_files() -> Option<f64> {
    let limits = fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str, value: f64) {
    let _ = write!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
    );
}

#[cfg(test)]
mod tests {
    #[test]
    fn renders_resident_memory_and_fds() {
        let mut out = String::new();
        super::render(&mut out);
        let value = |name: &str| -> f64 {
            out.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .unwrap_or_else(|| panic!("{name} missing in {out}"))
                .parse()
                .unwrap()
        };
        assert!(value("process_resident_memory_bytes") > 0.0);
        assert!(value("process_open_fds") >= 3.0);
        assert!(value("process_max_fds") >= value("process_open_fds"));
        assert!(value("process_start_time_seconds") > 1.6e9);
    }

    #[test]
    fn start_time_is_the_recorded_one_without_reading_proc_stat() {
        super::record_start();
        let recorded = *super::START.get().unwrap();
        let mut out = String::new();
        super::render(&mut out);
        let line = out
            .lines()
            .find(|l| l.starts_with("process_start_time_seconds "))
            .unwrap_or_else(|| panic!("missing in {out}"));
        assert_eq!(line, format!("process_start_time_seconds {recorded}"));
    }
}
