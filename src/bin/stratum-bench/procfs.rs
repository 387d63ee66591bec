//! What /proc says about the target and about this process: CPU time,
//! resident memory and context switches, sampled at the edges of a window.

use std::time::Instant;

use serde_json::{Value, json};

/// Resident memory of `pid`, in KiB (VmRSS).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of all threads of `pid`, in clock ticks.
pub fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Time on CPU summed over every thread of `pid`, in nanoseconds
/// (/proc/PID/task/*/schedstat): a fine-grained cross-check of [`cpu_ticks`].
pub fn cpu_sched_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(stat) = std::fs::read_to_string(task.path().join("schedstat")) else {
            continue;
        };
        total += stat
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    }
    Some(total)
}

/// Voluntary + involuntary context switches summed over every thread of `pid`.
pub fn context_switches(pid: u32) -> Option<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let Ok(task) = task else { continue };
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
            continue;
        };
        for line in status.lines() {
            let value = line
                .strip_prefix("voluntary_ctxt_switches:")
                .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"));
            if let Some(v) = value.and_then(|v| v.trim().parse::<u64>().ok()) {
                total += v;
            }
        }
    }
    Some(total)
}

/// User + system CPU time of this process, all threads, in microseconds
/// (`getrusage(RUSAGE_SELF)`: the kernel scales the tick samples to the
/// exact run time, so it is fine-grained even over a burst of milliseconds).
pub fn own_cpu_us() -> Option<u64> {
    // SAFETY: rusage is plain data; getrusage fills the struct it is given.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return None;
    }
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Some(us(usage.ru_utime) + us(usage.ru_stime))
}

/// Clock ticks per second for /proc/PID/stat (`getconf CLK_TCK`, else 100).
pub fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

/// The counters of the target (if any) and of this process at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: Instant,
    target_ticks: Option<u64>,
    target_sched_ns: Option<u64>,
    target_switches: Option<u64>,
    own_cpu_us: Option<u64>,
}

impl Sample {
    /// Reads the counters now; `target` is the target's pid, if known.
    pub fn take(target: Option<u32>) -> Sample {
        Sample {
            at: Instant::now(),
            target_ticks: target.and_then(cpu_ticks),
            target_sched_ns: target.and_then(cpu_sched_ns),
            target_switches: target.and_then(context_switches),
            own_cpu_us: own_cpu_us(),
        }
    }
}

/// The window's figures from two samples as JSON fields: the target's CPU
/// per message (ticks and schedstat), its wakeups per second, and this
/// generator's own CPU use in % of one core (utime+stime, getrusage).
pub fn window_json(start: &Sample, end: &Sample, messages: u64, ticks_per_s: f64) -> Value {
    let elapsed = (end.at - start.at).as_secs_f64();
    let diff = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => Some(b.saturating_sub(a)),
        _ => None,
    };
    let target_ticks = diff(start.target_ticks, end.target_ticks);
    let target_sched = diff(start.target_sched_ns, end.target_sched_ns);
    let switches = diff(start.target_switches, end.target_switches);
    let own_cpu_s = diff(start.own_cpu_us, end.own_cpu_us).map(|us| us as f64 / 1e6);
    let per_msg = |us: Option<f64>| us.filter(|_| messages > 0).map(|us| us / messages as f64);
    let pct = |s: Option<f64>| s.filter(|_| elapsed > 0.0).map(|s| s / elapsed * 100.0);
    json!({
        "window_s": elapsed,
        "messages": messages,
        "messages_per_s": if elapsed > 0.0 { messages as f64 / elapsed } else { 0.0 },
        "cpu_s": target_ticks.map(|t| t as f64 / ticks_per_s),
        "cpu_us_per_msg": per_msg(target_ticks.map(|t| t as f64 / ticks_per_s * 1e6)),
        "cpu_sched_us_per_msg": per_msg(target_sched.map(|ns| ns as f64 / 1e3)),
        "wakeups_per_s": switches.filter(|_| elapsed > 0.0).map(|n| n as f64 / elapsed),
        "gen_cpu_s": own_cpu_s,
        "gen_cpu_pct": pct(own_cpu_s),
    })
}
