//! No allocation per relayed message in steady state.
//!
//! A counting global allocator wraps the system one for this test binary
//! only. A miner and a pool (blocking sockets on plain threads, buffers sized
//! up front, messages pre-built) exchange submits and answers in lock-step
//! through a relay on its own executor thread, so every message is its own
//! read, frame, parse and observer call. Every allocation in the process is
//! counted during the steady phase: a single allocation per message anywhere
//! on the path would add at least one per message, so the assertion (well
//! under one per message averaged over 20,000 messages) can genuinely fail.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{Runtime, collector, start_relay};
use stratum_proxy::relay::{Limits, NoObserver, Observer};

/// Allocations (alloc, alloc_zeroed, realloc) since start, all threads.
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct CountingAllocator;

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged; the only addition is a relaxed atomic increment, which neither
// allocates nor touches the memory handed out. (`#![forbid(unsafe_code)]`
// covers the library crate; this test binary needs `unsafe impl GlobalAlloc`.)
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Round trips (a submit up, an answer down) measured per observer.
const ROUND_TRIPS: usize = 10_000;
/// Round trips before measuring: connection set-up, first timers, caches.
const WARM_UP: usize = 1_000;

/// `count` submits of one fixed length, ids 1000000.. so no two are alike.
fn submits(count: usize) -> (Vec<u8>, usize) {
    let mut all = Vec::new();
    let mut len = 0;
    for i in 0..count {
        let line = format!(
            "{{\"params\":[\"alice.rig1\",\"1f\",\"{i:08x}\",\"65f2a1b0\",\"{:08x}\"],\"id\":{},\"method\":\"mining.submit\"}}\n",
            i * 7919,
            1_000_000 + i
        );
        assert!(len == 0 || len == line.len(), "submits are all one length");
        len = line.len();
        all.extend_from_slice(line.as_bytes());
    }
    (all, len)
}

/// The matching answers, every tenth a reject, all padded to one length.
fn answers(count: usize) -> (Vec<u8>, usize) {
    const LEN: usize = 64;
    let mut all = Vec::new();
    for i in 0..count {
        let id = 1_000_000 + i;
        let body = if i % 10 == 9 {
            format!("{{\"id\":{id},\"result\":null,\"error\":[23,\"Low diff\",null]")
        } else {
            format!("{{\"id\":{id},\"result\":true,\"error\":null")
        };
        let line = format!("{body:<width$}}}\n", width = LEN - 2);
        assert_eq!(line.len(), LEN);
        all.extend_from_slice(line.as_bytes());
    }
    (all, LEN)
}

/// What sits between the miner and the pool.
enum Middle<O: Observer> {
    /// The relay with this observer.
    Relay(Arc<O>),
    /// A reference forwarder: two copy tasks on the same executor over
    /// async-io sockets, with a timer armed like the relay's. It costs
    /// async-io's own allocations per wakeup (its reactor collects wakers
    /// into a fresh `Vec` and splits its timer map on every turn) and nothing
    /// per message of its own.
    Reference,
}

/// Relays `WARM_UP + ROUND_TRIPS` round trips, `batch` submits per write and
/// `batch` answers per write, in lock-step; returns the allocations counted
/// (process-wide) during the last `ROUND_TRIPS`.
fn steady_state_allocations<O: Observer>(middle: Middle<O>, batch: usize) -> u64 {
    let total = WARM_UP + ROUND_TRIPS;
    let (up, up_len) = submits(total);
    let (down, down_len) = answers(total);
    let (up_batch, down_batch) = (up_len * batch, down_len * batch);
    let rt = Runtime::new(1);
    let pool_listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let pool_addr: SocketAddr = pool_listener.local_addr().unwrap();
    let (_relay, addr) = match middle {
        Middle::Relay(observer) => {
            let relay = start_relay(&rt, pool_addr, Limits::default(), observer);
            let addr = relay.addr;
            (Some(relay), addr)
        }
        Middle::Reference => (None, start_reference_forwarder(&rt, pool_addr)),
    };

    let pool = std::thread::spawn(move || {
        let (mut stream, _) = pool_listener.accept().unwrap();
        stream.set_nodelay(true).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        let mut buffer = vec![0u8; up_batch];
        // The handshake, answered before the measured submits.
        let mut byte = [0u8; 1];
        while byte[0] != b'\n' {
            stream.read_exact(&mut byte).unwrap();
        }
        stream
            .write_all(b"{\"id\":1,\"result\":true,\"error\":null}\n{\"id\":null,\"method\":\"mining.set_difficulty\",\"params\":[1024]}\n")
            .unwrap();
        for answers in down.chunks(down_batch) {
            stream.read_exact(&mut buffer).unwrap();
            stream.write_all(answers).unwrap();
        }
        // Until the miner closes.
        let _ = stream.read(&mut buffer);
    });

    let mut miner = TcpStream::connect(addr).unwrap();
    miner.set_nodelay(true).unwrap();
    miner
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    miner
        .write_all(
            b"{\"id\":1,\"method\":\"mining.authorize\",\"params\":[\"alice.rig1\",\"x\"]}\n",
        )
        .unwrap();
    let mut newlines = 0;
    let mut byte = [0u8; 1];
    while newlines < 2 {
        miner.read_exact(&mut byte).unwrap();
        newlines += usize::from(byte[0] == b'\n');
    }
    let mut buffer = vec![0u8; down_batch];
    let mut before = 0;
    for (i, submits) in up.chunks(up_batch).enumerate() {
        if i * batch == WARM_UP {
            before = ALLOCATIONS.load(Ordering::SeqCst);
        }
        miner.write_all(submits).unwrap();
        miner.read_exact(&mut buffer).unwrap();
    }
    let after = ALLOCATIONS.load(Ordering::SeqCst);
    drop(miner);
    pool.join().unwrap();
    after - before
}

/// Accepts one connection and copies bytes both ways to `pool`; returns its address.
fn start_reference_forwarder(rt: &Runtime, pool: SocketAddr) -> SocketAddr {
    use smol::Async;
    use smol::io::{AsyncReadExt, AsyncWriteExt};
    let listener = Async::<TcpListener>::bind(([127, 0, 0, 1], 0)).unwrap();
    let addr = listener.get_ref().local_addr().unwrap();
    let executor = rt.executor.clone();
    rt.executor
        .spawn(async move {
            let (miner, _) = listener.accept().await.unwrap();
            let upstream = Async::<TcpStream>::connect(pool).await.unwrap();
            miner.get_ref().set_nodelay(true).unwrap();
            upstream.get_ref().set_nodelay(true).unwrap();
            let (miner, upstream) = (Arc::new(miner), Arc::new(upstream));
            // An armed timer, as every relayed connection has.
            executor
                .spawn(smol::Timer::after(Duration::from_secs(3600)))
                .detach();
            for (from, to) in [(miner.clone(), upstream.clone()), (upstream, miner)] {
                executor
                    .spawn(async move {
                        let mut buffer = vec![0u8; 64 * 1024];
                        let (mut reader, mut writer) = (&*from, &*to);
                        while let Ok(n @ 1..) = reader.read(&mut buffer).await {
                            if writer.write_all(&buffer[..n]).await.is_err() {
                                break;
                            }
                        }
                        let _ = to.get_ref().shutdown(std::net::Shutdown::Write);
                    })
                    .detach();
            }
        })
        .detach();
    addr
}

/// Allocations of the relay (no observer, and the metrics collector) and of
/// the reference forwarder for one exchange shape.
fn measure(batch: usize) -> [u64; 3] {
    let messages = 2 * ROUND_TRIPS;
    let reference = steady_state_allocations(Middle::<NoObserver>::Reference, batch);
    let bare = steady_state_allocations(Middle::Relay(Arc::new(NoObserver)), batch);
    let metered = steady_state_allocations(Middle::Relay(collector()), batch);
    eprintln!(
        "{messages} messages, {batch} per write: reference forwarder {reference}, \
         relay {bare}, relay with collector {metered} allocations"
    );
    [reference, bare, metered]
}

/// The relay must not allocate per message: measured with many messages
/// per read (a busy gateway) and with one (every message its own wakeup,
/// read, frame and parse), against an absolute bound and against a
/// reference forwarder on async-io doing the same exchange (which allocates
/// per reactor turn, so it shows what one allocation per wakeup looks like).
#[test]
fn no_allocation_per_relayed_message_in_steady_state() {
    // One test function: the counter is process-wide, so runs must not overlap.
    let messages = 2 * ROUND_TRIPS as u64;
    for batch in [50, 1] {
        let [reference, bare, metered] = measure(batch);
        // A single allocation per message would be `messages`. What is left
        // is the test's own (the pool and miner threads, the observer), the
        // same few hundred for the reference.
        assert!(
            bare < messages / 20,
            "{batch} per write: relay {bare} allocations for {messages} messages"
        );
        assert!(
            bare < reference + messages / 10,
            "{batch} per write: relay {bare} vs reference {reference} allocations for {messages} messages"
        );
        // The exporter's histogram buffer takes a block per 64 samples until
        // upkeep drains it (1/64 per response): well below one per message.
        assert!(
            metered < messages / 10,
            "{batch} per write: relay with collector {metered} allocations for {messages} messages"
        );
        assert!(
            metered < reference + messages / 5,
            "{batch} per write: relay with collector {metered} vs reference {reference} allocations for {messages} messages"
        );
    }
}
