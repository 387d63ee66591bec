//! Heap per relayed miner, measured: where each byte of a connection goes.
//!
//! A counting global allocator (this test binary only) keeps the live heap
//! in bytes requested, in glibc chunk bytes (what `malloc` really takes: the
//! request plus its 8-byte header, rounded up to 16, at least 32) and by
//! request size. Miners and a pool on blocking sockets in this thread go
//! through the relay with the metrics collector, as in the `steady`
//! benchmark: 1000 miners over 100 accounts (a `client_id` each, so a set
//! of per-account series every 10 miners), a subscribe, an authorize the
//! pool accepts, a difficulty and a job, then submits answered and more
//! jobs. The heap is read before the miners, after their handshake (idle)
//! and after the submits (steady); the difference per miner is asserted
//! under a budget, and with `--nocapture` the live allocations are listed
//! by size, so each can be matched to the type that made it (see
//! BENCHMARKS.md, "Memory per miner, where each byte goes").

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Runtime, start_relay};
use stratum_proxy::relay::Limits;

/// Requests up to this many bytes are counted by exact size.
const EXACT_SIZES: usize = 4096;

/// Live heap, all threads.
struct Live {
    bytes: AtomicI64,
    chunk_bytes: AtomicI64,
    blocks: AtomicI64,
    /// Live blocks by requested size; the last entry is every larger one.
    by_size: [AtomicI64; EXACT_SIZES + 1],
    /// Bytes of the blocks larger than [`EXACT_SIZES`].
    large_bytes: AtomicI64,
}

static LIVE: Live = Live {
    bytes: AtomicI64::new(0),
    chunk_bytes: AtomicI64::new(0),
    blocks: AtomicI64::new(0),
    by_size: [const { AtomicI64::new(0) }; EXACT_SIZES + 1],
    large_bytes: AtomicI64::new(0),
};

/// What glibc's malloc takes for a request of `size` bytes (below its mmap
/// threshold): 8 bytes of header, 16-byte granules, 32 bytes at least.
fn chunk_bytes(size: usize) -> usize {
    (size + 8).div_ceil(16).max(2) * 16
}

/// `MEMORY_TRACE_SIZE`: the request size whose allocations are traced
/// (0: none, `usize::MAX`: every one over [`EXACT_SIZES`]), and how many traces are left to print.
static TRACE_SIZE: AtomicUsize = AtomicUsize::new(0);
static TRACES_LEFT: AtomicI64 = AtomicI64::new(0);

thread_local! {
    /// This thread is printing a trace (whose own allocations are not traced).
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

/// Prints where an allocation of `size` bytes comes from, for the first
/// few once tracing is armed.
fn trace(size: usize) {
    let traced = match TRACE_SIZE.load(Ordering::Relaxed) {
        usize::MAX => size > EXACT_SIZES,
        n => size == n,
    };
    if !traced || TRACING.with(Cell::get) {
        return;
    }
    if TRACES_LEFT.fetch_sub(1, Ordering::Relaxed) <= 0 {
        return;
    }
    TRACING.with(|t| t.set(true));
    eprintln!(
        "allocation of {size} bytes:\n{}",
        std::backtrace::Backtrace::force_capture()
    );
    TRACING.with(|t| t.set(false));
}

fn count(size: usize, sign: i64) {
    if sign > 0 {
        trace(size);
    }
    LIVE.bytes.fetch_add(sign * size as i64, Ordering::Relaxed);
    LIVE.chunk_bytes
        .fetch_add(sign * chunk_bytes(size) as i64, Ordering::Relaxed);
    LIVE.blocks.fetch_add(sign, Ordering::Relaxed);
    LIVE.by_size[size.min(EXACT_SIZES)].fetch_add(sign, Ordering::Relaxed);
    if size > EXACT_SIZES {
        LIVE.large_bytes
            .fetch_add(sign * size as i64, Ordering::Relaxed);
    }
}

struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the only additions are relaxed atomic adds to static counters,
// which neither allocate nor touch the memory handed out. (The library crate
// forbids unsafe code; this test binary needs `unsafe impl GlobalAlloc`.)
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            count(layout.size(), 1);
        }
        ptr
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            count(layout.size(), -1);
            count(new_size, 1);
        }
        new
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(layout.size(), -1);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// A copy of the counters at one moment.
struct Snapshot {
    bytes: i64,
    chunk_bytes: i64,
    blocks: i64,
    /// On the stack: a snapshot on the heap would count in the next one.
    by_size: [i64; EXACT_SIZES + 1],
    large_bytes: i64,
    rss_kib: i64,
}

fn snapshot() -> Snapshot {
    // Read /proc first: reading it allocates (and frees) a little.
    let rss_kib = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0);
    Snapshot {
        bytes: LIVE.bytes.load(Ordering::SeqCst),
        chunk_bytes: LIVE.chunk_bytes.load(Ordering::SeqCst),
        blocks: LIVE.blocks.load(Ordering::SeqCst),
        by_size: std::array::from_fn(|size| LIVE.by_size[size].load(Ordering::SeqCst)),
        large_bytes: LIVE.large_bytes.load(Ordering::SeqCst),
        rss_kib,
    }
}

/// The heap added between two snapshots, per miner.
struct PerMiner {
    bytes: f64,
    chunk_bytes: f64,
    blocks: f64,
    rss_bytes: f64,
}

fn per_miner(before: &Snapshot, after: &Snapshot, miners: usize) -> PerMiner {
    let n = miners as f64;
    PerMiner {
        bytes: (after.bytes - before.bytes) as f64 / n,
        chunk_bytes: (after.chunk_bytes - before.chunk_bytes) as f64 / n,
        blocks: (after.blocks - before.blocks) as f64 / n,
        rss_bytes: (after.rss_kib - before.rss_kib) as f64 * 1024.0 / n,
    }
}

/// The live blocks added between two snapshots, by request size, as text:
/// sizes holding at least 1 byte per miner, largest share first.
fn by_size(before: &Snapshot, after: &Snapshot, miners: usize) -> String {
    let n = miners as f64;
    let mut rows: Vec<(usize, i64)> = (0..=EXACT_SIZES)
        .map(|size| (size, after.by_size[size] - before.by_size[size]))
        .filter(|&(_, blocks)| blocks != 0)
        .collect();
    let share = |&(size, blocks): &(usize, i64)| {
        if size == EXACT_SIZES {
            (after.large_bytes - before.large_bytes) as f64 / n
        } else {
            (blocks * chunk_bytes(size) as i64) as f64 / n
        }
    };
    rows.sort_by(|a, b| share(b).total_cmp(&share(a)));
    let mut text = String::from("  size B   blocks/miner   chunk B/miner\n");
    for row in rows.iter().filter(|row| share(row).abs() >= 1.0) {
        let size = if row.0 == EXACT_SIZES {
            format!(">{EXACT_SIZES}")
        } else {
            row.0.to_string()
        };
        let _ = writeln!(
            text,
            "  {size:>6} {:>14.3} {:>15.1}",
            row.1 as f64 / n,
            share(row)
        );
    }
    text
}

/// Reads from `stream` until `lines` newlines have come (lines are short
/// and answered in lock-step, so no read takes part of a later line).
fn read_lines(stream: &mut TcpStream, buffer: &mut [u8], mut lines: usize) {
    while lines > 0 {
        let n = stream.read(buffer).expect("read");
        assert!(n > 0, "connection closed");
        lines -= buffer[..n].iter().filter(|&&b| b == b'\n').count();
    }
}

/// Miners in the measurement (4 descriptors each in this process).
const MINERS: usize = 1000;
/// Accounts they are spread over, round-robin: one `client_id` each.
const ACCOUNTS: usize = 100;
/// Submit rounds after the handshake.
const ROUNDS: usize = 3;

/// Heap per miner the relay and the collector may hold (glibc chunk
/// bytes), idle and steady. See BENCHMARKS.md for what it is made of.
const BUDGET_CHUNK_BYTES: f64 = 1400.0;

#[test]
fn heap_per_relayed_miner_stays_within_budget() {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    let _ = rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        },
    );
    let open_files = rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(u64::MAX);
    // Miner and pool ends here, two relay sockets; a margin for the rest.
    let miners = MINERS.min((open_files.saturating_sub(200) / 4) as usize / ACCOUNTS * ACCOUNTS);
    assert!(
        miners >= ACCOUNTS,
        "too few open files allowed: {open_files}"
    );

    let rt = Runtime::new(1);
    let collector = common::collector();
    let pool = TcpListener::bind("127.0.0.1:0").unwrap();
    let limits = Limits {
        max_connections: 30_000,
        accept_rate_per_second: 100_000.0,
        accept_burst: 30_000,
        ..Limits::default()
    };
    let relay = start_relay(&rt, pool.local_addr().unwrap(), limits, collector.clone());

    let mut ends: Vec<(TcpStream, TcpStream)> = Vec::with_capacity(miners + 1);
    let mut line = String::with_capacity(4096);
    let mut buffer = vec![0u8; 64 * 1024];
    let notify = format!(
        "{{\"id\":null,\"method\":\"mining.notify\",\"params\":[\"1f\",\"{:064x}\",\"{}\",\"{}\",[{}],\"20000000\",\"1703a30c\",\"65f2a1b0\",true]}}\n",
        7,
        "01".repeat(60),
        "ff".repeat(40),
        vec![format!("\"{:064x}\"", 9); 12].join(","),
    );
    let open = |index: usize, account: &str, line: &mut String, buffer: &mut [u8]| {
        let mut miner = TcpStream::connect(relay.addr).unwrap();
        miner.set_nodelay(true).unwrap();
        miner
            .write_all(b"{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"miner-sim/1\"]}\n")
            .unwrap();
        let (mut upstream, _) = pool.accept().unwrap();
        upstream.set_nodelay(true).unwrap();
        read_lines(&mut upstream, buffer, 1);
        upstream
            .write_all(b"{\"id\":1,\"result\":[[[\"mining.set_difficulty\",\"1\"],[\"mining.notify\",\"1\"]],\"08000002\",4],\"error\":null}\n")
            .unwrap();
        read_lines(&mut miner, buffer, 1);
        line.clear();
        let _ = writeln!(
            line,
            "{{\"params\":[\"{account}.worker{index}\",\"x\"],\"id\":2,\"method\":\"mining.authorize\"}}"
        );
        miner.write_all(line.as_bytes()).unwrap();
        read_lines(&mut upstream, buffer, 1);
        upstream
            .write_all(b"{\"id\":2,\"result\":true,\"error\":null}\n{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[1024]}\n")
            .unwrap();
        upstream.write_all(notify.as_bytes()).unwrap();
        read_lines(&mut miner, buffer, 3);
        (miner, upstream)
    };
    // Warm up: first-use costs (buffers, thread locals, the pool's series).
    ends.push(open(0, "warmup", &mut line, &mut buffer));

    let before = snapshot();
    // A size in bytes, or "large" (over EXACT_SIZES).
    if let Some(size) = std::env::var("MEMORY_TRACE_SIZE")
        .ok()
        .and_then(|s| match s.as_str() {
            "large" => Some(usize::MAX),
            s => s.parse().ok(),
        })
    {
        TRACES_LEFT.store(3, Ordering::SeqCst);
        TRACE_SIZE.store(size, Ordering::SeqCst);
    }
    for index in 0..miners {
        let account = format!("account{}", index % ACCOUNTS);
        ends.push(open(index, &account, &mut line, &mut buffer));
    }
    let idle = snapshot();
    for round in 0..ROUNDS {
        for (index, (miner, upstream)) in ends.iter_mut().enumerate().skip(1) {
            let id = 3 + round;
            line.clear();
            let _ = writeln!(
                line,
                "{{\"params\":[\"account{}.worker{index}\",\"1f\",\"{:08x}\",\"65f2a1b0\",\"{:08x}\"],\"id\":{id},\"method\":\"mining.submit\"}}",
                (index - 1) % ACCOUNTS,
                index * 7 + round,
                index * 7919 + round
            );
            miner.write_all(line.as_bytes()).unwrap();
            read_lines(upstream, &mut buffer, 1);
            line.clear();
            let _ = writeln!(line, "{{\"id\":{id},\"result\":true,\"error\":null}}");
            upstream.write_all(line.as_bytes()).unwrap();
            upstream
                .write_all(
                    b"{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[1024]}\n",
                )
                .unwrap();
            upstream.write_all(notify.as_bytes()).unwrap();
            read_lines(miner, &mut buffer, 3);
        }
    }
    // Let the relay's task finish observing the last reads.
    std::thread::sleep(Duration::from_millis(200));
    let steady = snapshot();

    for (name, after) in [("idle", &idle), ("steady", &steady)] {
        let m = per_miner(&before, after, miners);
        eprintln!(
            "{name}: {miners} miners, {ACCOUNTS} accounts: heap per miner {:.0} B requested, \
             {:.0} B in glibc chunks, {:.2} blocks; RSS {:.0} B\n{}",
            m.bytes,
            m.chunk_bytes,
            m.blocks,
            m.rss_bytes,
            by_size(&before, after, miners)
        );
        assert!(
            m.chunk_bytes <= BUDGET_CHUNK_BYTES,
            "{name}: {:.0} heap bytes per miner, over the budget of {BUDGET_CHUNK_BYTES}",
            m.chunk_bytes
        );
    }
    drop(ends);
}
