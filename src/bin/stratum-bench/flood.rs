//! The generator of the `saturation` and `burst` scenarios: pool and miners
//! on one thread, with their own non-blocking sockets and their own epoll
//! loop, no executor.
//!
//! **saturation** (a *flood*): each miner subscribes and authorizes as the
//! miner-sim does, then keeps `pipeline` `mining.submit` lines in flight;
//! every answer it reads lets it send one more, and all the lines it may
//! send go out in one `write`. The pool answers every submit at once with
//! `{"id":N,"result":true,"error":null}`, the answers to one read in one
//! write. Per line: a `memchr` for the line end, a suffix compare and a
//! `memrchr` for the id (ids are fixed-width decimal, so the pool copies
//! their bytes), copies of precomputed templates; no allocation, no JSON
//! parser.
//!
//! **burst**: the miners authorize and stay silent; then the pool writes one
//! set_difficulty + clean_jobs `mining.notify` to every connection, reading
//! CLOCK_REALTIME just before each connection's write. Every miner socket
//! has `SO_TIMESTAMPNS` on and is read with `recvmsg`, so the fan-out of a
//! connection is the kernel's receive time of the notify at the miner minus
//! the pool's send time for that connection: what the relay added, not when
//! this one thread got round to reading. A notify read without a timestamp
//! fails the run.
//!
//! Both check every connection byte for byte: each side keeps a
//! [`WordDigest`] of what it sent and received, and after the miners
//! half-close and the pool closes in turn, the miner's sent must equal the
//! pool's received and the pool's sent the miner's received.
//!
//! Readiness is level-triggered: one read per event, no read that ends in
//! `EAGAIN`; a socket asks for `EPOLLOUT` only while a write is unfinished.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use memchr::{memchr, memchr_iter, memmem, memrchr};
use rustix::event::Timespec;
use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::io::Errno;
use rustix::net::{AddressFamily, Shutdown, SocketFlags, SocketType};
use serde_json::{Value, json};
use stratum_proxy::sim::pool::{
    DEFAULT_DIFFICULTY, EXTRANONCE2_BYTES, notify_line, set_difficulty_line,
};

use crate::digest::WordDigest;
use crate::procfs::{Sample, clock_ticks_per_second, rss_kib, window_json};
use crate::{quantile_ms, stamp};

/// The epoll key of the pool's listener.
const LISTENER_KEY: u64 = u64::MAX;
/// Keys from here on are pool connections (key − `POOL_KEY`); below, miners.
const POOL_KEY: u64 = 1 << 32;
/// One read buffer for the whole loop: every read is consumed at once.
const READ_BUFFER_BYTES: usize = 256 * 1024;
/// Events taken per `epoll_wait`.
const EVENTS_PER_WAIT: usize = 1024;
/// Backlog of the pool's listener (a 9,500-miner connect burst).
const POOL_BACKLOG: i32 = 4096;
/// The clock is read once per this many loop turns while busy
/// (`clock_gettime` is a real system call on the benchmark machine).
const TURNS_PER_CLOCK_READ: u32 = 32;
/// Longest sleep in `epoll_wait`, so deadlines are noticed when idle.
const MAX_WAIT: Duration = Duration::from_millis(5);
/// Bound on the drain at the end (answers in flight, half-closes, EOFs).
const DRAIN_LIMIT: Duration = Duration::from_secs(30);
/// Bound on the fan-out: every miner must hold the notify by then.
const FAN_OUT_LIMIT: Duration = Duration::from_secs(30);
/// At most this many distinct failure messages are kept for the report.
const ERRORS_KEPT: usize = 5;

/// Lines a miner receives during its handshake: the subscribe answer, the
/// authorize answer, set_difficulty and the first notify.
const HANDSHAKE_LINES: u64 = 4;
/// Lines of the burst: set_difficulty and the clean_jobs notify.
const BURST_LINES: u64 = 2;
/// The first submit id: ten digits, so every id has the same width (and no
/// leading zero, which JSON forbids) up to 9,999,999,999.
const FIRST_SUBMIT_ID: [u8; 10] = *b"1000000000";
/// How a submit line ends after its id (the pool recognises submits by it).
const SUBMIT_END: &[u8] = b",\"method\":\"mining.submit\"}";
/// The pool's answer to a submit, around the id.
const ANSWER_HEAD: &[u8] = b"{\"id\":";
const ANSWER_TRUE_TAIL: &[u8] = b",\"result\":true,\"error\":null}\n";

/// What the generator does once the miners are in.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Keep `pipeline` submits in flight per miner for `window`.
    Flood { pipeline: usize, window: Duration },
    /// One set_difficulty + notify to every miner, fan-out timed by the kernel.
    Burst,
}

/// One run of the generator.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Scenario name, for the report.
    pub scenario: String,
    /// Target name, for the report.
    pub name: String,
    /// Where the miners connect (the target, or the pool for direct).
    pub target: SocketAddr,
    /// Where the pool listens.
    pub pool: SocketAddr,
    /// The target's pid, for /proc figures.
    pub target_pid: Option<u32>,
    /// Miner connections.
    pub miners: usize,
    /// New miner connections per second (0: all at once).
    pub connect_per_second: f64,
    /// Pause after the last miner authorized, before measuring.
    pub settle: Duration,
    /// Extra bound on the connect phase.
    pub slack: Duration,
    /// Flood or burst.
    pub mode: Mode,
}

/// Where a miner is in its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Subscribing,
    Authorizing,
    /// Handshake done: flooding, or silent in a burst.
    Running,
    /// Half-closed; reading until the end of file.
    Draining,
    Done,
    Failed,
}

/// Bytes waiting to be written on one socket, and the digest of those that were.
#[derive(Default)]
struct Outbox {
    bytes: Vec<u8>,
    /// Already written up to here.
    at: usize,
    /// `EPOLLOUT` is asked for (a write was unfinished).
    watching: bool,
    sent: WordDigest,
}

impl Outbox {
    fn is_empty(&self) -> bool {
        self.at == self.bytes.len()
    }

    /// Writes as much as the socket takes; asks for `EPOLLOUT` while
    /// something is left, and stops asking once it is all written.
    /// `writes` counts the write calls.
    fn flush(
        &mut self,
        epoll: &OwnedFd,
        fd: &OwnedFd,
        key: u64,
        writes: &mut u64,
    ) -> io::Result<()> {
        while self.at < self.bytes.len() {
            *writes += 1;
            match rustix::io::write(fd, &self.bytes[self.at..]) {
                Ok(n) => {
                    self.sent.update(&self.bytes[self.at..self.at + n]);
                    self.at += n;
                }
                Err(Errno::AGAIN) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let done = self.is_empty();
        if done {
            self.bytes.clear();
            self.at = 0;
        }
        if done == self.watching {
            let flags = if done {
                EventFlags::IN
            } else {
                EventFlags::IN | EventFlags::OUT
            };
            epoll::modify(epoll, fd, EventData::new_u64(key), flags)?;
            self.watching = !done;
        }
        Ok(())
    }
}

struct Miner {
    fd: Option<OwnedFd>,
    user: String,
    phase: Phase,
    /// Lines received.
    lines: u64,
    /// Bytes received during the handshake (checked once, then dropped).
    handshake: Vec<u8>,
    /// Submits sent and not answered yet.
    in_flight: usize,
    /// A submit line up to and including `"id":`.
    submit_head: Vec<u8>,
    /// The last submit id sent, in ASCII.
    id: [u8; 10],
    out: Outbox,
    received: WordDigest,
    /// Kernel receive time of the burst's notify (ns since the epoch).
    notify_received_ns: Option<i64>,
}

struct PoolConnection {
    fd: Option<OwnedFd>,
    /// Who authorized on it (the cross-check's key).
    user: Option<String>,
    /// The start of a line whose end has not arrived yet.
    carry: Vec<u8>,
    out: Outbox,
    received: WordDigest,
    read_closed: bool,
    /// Pool's send time of the burst (ns since the epoch, CLOCK_REALTIME).
    burst_sent_ns: Option<i64>,
}

/// Pool-wide counts.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    /// Lines the pool received (miner → pool).
    lines_up: u64,
    /// Lines the pool wrote (pool → miner).
    lines_down: u64,
    /// `mining.submit` lines the pool received.
    pool_submits: u64,
    /// Submits the miners sent.
    miner_submits: u64,
    /// Lines the pool did not recognise.
    pool_other: u64,
    /// Miner lines beyond the submits in flight (should stay 0).
    unexpected_lines: u64,
    /// Miners that finished the handshake.
    running: u64,
    /// Miners that failed.
    failed: u64,
    /// Miners that saw the end of their connection after half-closing.
    done: u64,
    /// Miners holding the burst's notify.
    notified: u64,
    /// Pool connections accepted, and closed both ways.
    pool_accepted: u64,
    pool_finished: u64,
    /// Pool connections that ended with an error.
    pool_errors: u64,
    /// System calls of the loop: write, read (or recvmsg), epoll_wait.
    writes: u64,
    reads: u64,
    waits: u64,
}

struct Engine {
    epoll: OwnedFd,
    listener: OwnedFd,
    target: SocketAddr,
    miners: Vec<Miner>,
    pools: Vec<PoolConnection>,
    events: Vec<epoll::Event>,
    buf: Vec<u8>,
    counts: Counts,
    /// Submits each miner keeps in flight; 0 in a burst (silent miners).
    pipeline: usize,
    /// Miners replace answered submits (false once the window is over).
    refill: bool,
    /// Miners read with `recvmsg` and kernel timestamps.
    stamped: bool,
    /// Lines the pool sends after an authorize answer.
    after_authorize: Vec<u8>,
    errors: Vec<String>,
}

/// CLOCK_REALTIME now, in ns since the epoch.
fn realtime_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// The next id in the same width (ten digits; see [`FIRST_SUBMIT_ID`]).
fn next_id(id: &mut [u8; 10]) {
    for digit in id.iter_mut().rev() {
        if *digit == b'9' {
            *digit = b'0';
        } else {
            *digit += 1;
            return;
        }
    }
}

/// The raw value of a line's `"id"` member (up to `,` or `}`), or `null`.
fn raw_id(line: &[u8]) -> &[u8] {
    let Some(at) = memmem::find(line, b"\"id\":") else {
        return b"null";
    };
    let rest = &line[at + 5..];
    let end = rest
        .iter()
        .position(|&b| b == b',' || b == b'}')
        .unwrap_or(rest.len());
    rest[..end].trim_ascii()
}

/// The first string in a line's `"params":[...]`.
fn first_param(line: &[u8]) -> Option<&[u8]> {
    let at = memmem::find(line, b"\"params\":[\"")? + 11;
    let len = memchr(b'"', &line[at..])?;
    Some(&line[at..at + len])
}

/// What the pool does with one complete line (without its newline) of
/// connection `index`: a submit the fast way, anything else (the handshake)
/// the slow way. Answers go to `out`; an authorize sets `user`.
fn answer(
    line: &[u8],
    index: usize,
    user: &mut Option<String>,
    out: &mut Vec<u8>,
    counts: &mut Counts,
    after_authorize: &[u8],
) {
    {
        counts.lines_up += 1;
        if let Some(rest) = line.strip_suffix(SUBMIT_END)
            && let Some(colon) = memrchr(b':', rest)
            && rest[..colon].ends_with(b"\"id\"")
        {
            counts.pool_submits += 1;
            counts.lines_down += 1;
            out.extend_from_slice(ANSWER_HEAD);
            out.extend_from_slice(&rest[colon + 1..]);
            out.extend_from_slice(ANSWER_TRUE_TAIL);
            return;
        }
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let id = raw_id(line);
        let mut respond = |result: &[u8]| {
            out.extend_from_slice(ANSWER_HEAD);
            out.extend_from_slice(id);
            out.extend_from_slice(b",\"result\":");
            out.extend_from_slice(result);
            out.extend_from_slice(b",\"error\":null}\n");
        };
        if memmem::find(line, b"\"mining.submit\"").is_some() {
            counts.pool_submits += 1;
            respond(b"true");
            counts.lines_down += 1;
        } else if memmem::find(line, b"\"mining.subscribe\"").is_some() {
            // Subscription id and extranonce1 unique per connection.
            let result = format!(
                "[[[\"mining.set_difficulty\",\"{index:016x}\"],[\"mining.notify\",\"{index:016x}\"]],\"{:08x}\",{EXTRANONCE2_BYTES}]",
                (index as u32).wrapping_mul(0x9e37_79b1)
            );
            respond(result.as_bytes());
            counts.lines_down += 1;
        } else if memmem::find(line, b"\"mining.authorize\"").is_some() {
            *user = first_param(line).map(|u| String::from_utf8_lossy(u).into_owned());
            respond(b"true");
            out.extend_from_slice(after_authorize);
            counts.lines_down += 1 + BURST_LINES;
        } else {
            counts.pool_other += 1;
        }
    }
}

impl Engine {
    fn new(setup: &Setup) -> Result<Engine, String> {
        let epoll =
            epoll::create(epoll::CreateFlags::CLOEXEC).map_err(|e| format!("epoll: {e}"))?;
        let listener = rustix::net::socket_with(
            AddressFamily::INET,
            SocketType::STREAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| format!("pool socket: {e}"))?;
        rustix::net::sockopt::set_socket_reuseaddr(&listener, true)
            .map_err(|e| format!("pool socket: {e}"))?;
        rustix::net::bind(&listener, &setup.pool)
            .and_then(|()| rustix::net::listen(&listener, POOL_BACKLOG))
            .map_err(|e| format!("pool cannot listen on {}: {e}", setup.pool))?;
        epoll::add(
            &epoll,
            &listener,
            EventData::new_u64(LISTENER_KEY),
            EventFlags::IN,
        )
        .map_err(|e| format!("epoll: {e}"))?;
        let (pipeline, stamped) = match setup.mode {
            Mode::Flood { pipeline, .. } => (pipeline.max(1), false),
            Mode::Burst => (0, true),
        };
        let mut after_authorize = set_difficulty_line(DEFAULT_DIFFICULTY);
        after_authorize.extend_from_slice(&notify_line(1, true));
        Ok(Engine {
            epoll,
            listener,
            target: setup.target,
            miners: Vec::with_capacity(setup.miners),
            pools: Vec::with_capacity(setup.miners),
            events: Vec::with_capacity(EVENTS_PER_WAIT),
            buf: vec![0; READ_BUFFER_BYTES],
            counts: Counts::default(),
            pipeline,
            refill: true,
            stamped,
            after_authorize,
            errors: Vec::new(),
        })
    }

    fn note_error(&mut self, error: String) {
        if self.errors.len() < ERRORS_KEPT && !self.errors.contains(&error) {
            self.errors.push(error);
        }
    }

    /// Opens miner number `index`'s connection (non-blocking connect).
    fn start_miner(&mut self, index: usize) {
        let user = format!("account.worker{index}");
        let mut miner = Miner {
            fd: None,
            user,
            phase: Phase::Connecting,
            lines: 0,
            handshake: Vec::new(),
            in_flight: 0,
            submit_head: Vec::new(),
            id: FIRST_SUBMIT_ID,
            out: Outbox {
                watching: true,
                ..Outbox::default()
            },
            received: WordDigest::default(),
            notify_received_ns: None,
        };
        let opened = (|| -> io::Result<OwnedFd> {
            let fd = rustix::net::socket_with(
                AddressFamily::INET,
                SocketType::STREAM,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
                None,
            )?;
            // Many lines per write: Nagle would only hold them back.
            rustix::net::sockopt::set_tcp_nodelay(&fd, true)?;
            if self.stamped {
                stamp::enable(fd.as_fd())?;
            }
            match rustix::net::connect(&fd, &self.target) {
                Ok(()) | Err(Errno::INPROGRESS) => {}
                Err(e) => return Err(e.into()),
            }
            epoll::add(
                &self.epoll,
                &fd,
                EventData::new_u64(index as u64),
                EventFlags::IN | EventFlags::OUT,
            )?;
            Ok(fd)
        })();
        match opened {
            Ok(fd) => miner.fd = Some(fd),
            Err(e) => {
                miner.phase = Phase::Failed;
                self.counts.failed += 1;
                self.note_error(format!("connect to {}: {e}", self.target));
            }
        }
        self.miners.push(miner);
    }

    fn fail_miner(&mut self, index: usize, error: String) {
        let miner = &mut self.miners[index];
        if let Some(fd) = miner.fd.take() {
            let _ = epoll::delete(&self.epoll, &fd);
        }
        if miner.phase != Phase::Failed {
            miner.phase = Phase::Failed;
            self.counts.failed += 1;
        }
        self.note_error(error);
    }

    /// Waits up to `timeout` for events and handles them; returns how many.
    fn turn(&mut self, timeout: Duration) -> Result<usize, String> {
        let timeout = Timespec {
            tv_sec: timeout.as_secs() as _,
            tv_nsec: timeout.subsec_nanos() as _,
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        self.counts.waits += 1;
        let result = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        );
        match result {
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(format!("epoll_wait: {e}")),
        }
        let n = events.len();
        for event in &events {
            let key = event.data.u64();
            let flags = event.flags;
            if key == LISTENER_KEY {
                self.accept();
            } else if key >= POOL_KEY {
                let index = (key - POOL_KEY) as usize;
                if let Err(e) = self.pool_event(index, flags) {
                    self.fail_pool(index, e);
                }
            } else {
                let index = key as usize;
                if let Err(e) = self.miner_event(index, flags) {
                    self.fail_miner(index, e);
                }
            }
        }
        self.events = events;
        Ok(n)
    }

    /// Handles events until `done` or `deadline`; reads the clock only
    /// every [`TURNS_PER_CLOCK_READ`] busy turns. Whether `done` holds.
    fn serve_until(
        &mut self,
        deadline: Instant,
        done: impl Fn(&Engine) -> bool,
    ) -> Result<bool, String> {
        let mut turns = 0u32;
        loop {
            if done(self) {
                return Ok(true);
            }
            let events = self.turn(MAX_WAIT)?;
            turns = turns.wrapping_add(1);
            if (events == 0 || turns.is_multiple_of(TURNS_PER_CLOCK_READ))
                && Instant::now() >= deadline
            {
                return Ok(done(self));
            }
        }
    }

    fn accept(&mut self) {
        loop {
            match rustix::net::accept_with(
                &self.listener,
                SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            ) {
                Ok(fd) => {
                    let index = self.pools.len();
                    let added = rustix::net::sockopt::set_tcp_nodelay(&fd, true).and_then(|()| {
                        epoll::add(
                            &self.epoll,
                            &fd,
                            EventData::new_u64(POOL_KEY + index as u64),
                            EventFlags::IN,
                        )
                    });
                    if let Err(e) = added {
                        self.counts.pool_errors += 1;
                        self.note_error(format!("pool connection setup: {e}"));
                        continue;
                    }
                    self.counts.pool_accepted += 1;
                    self.pools.push(PoolConnection {
                        fd: Some(fd),
                        user: None,
                        carry: Vec::new(),
                        out: Outbox::default(),
                        received: WordDigest::default(),
                        read_closed: false,
                        burst_sent_ns: None,
                    });
                }
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR | Errno::CONNABORTED) => {}
                Err(e) => {
                    self.note_error(format!("pool accept: {e}"));
                    return;
                }
            }
        }
    }

    fn fail_pool(&mut self, index: usize, error: String) {
        let pool = &mut self.pools[index];
        if let Some(fd) = pool.fd.take() {
            let _ = epoll::delete(&self.epoll, &fd);
            self.counts.pool_errors += 1;
            self.counts.pool_finished += 1;
        }
        self.note_error(error);
    }

    fn pool_event(&mut self, index: usize, flags: EventFlags) -> Result<(), String> {
        let key = POOL_KEY + index as u64;
        let pool = &mut self.pools[index];
        let Some(fd) = pool.fd.as_ref() else {
            return Ok(());
        };
        if flags.contains(EventFlags::OUT) {
            pool.out
                .flush(&self.epoll, fd, key, &mut self.counts.writes)
                .map_err(|e| format!("pool write: {e}"))?;
        }
        if !pool.read_closed && flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR)
        {
            self.counts.reads += 1;
            let n = match rustix::io::read(fd, &mut self.buf[..]) {
                Ok(n) => n,
                Err(Errno::AGAIN | Errno::INTR) => return Ok(()),
                Err(e) => return Err(format!("pool read: {e}")),
            };
            if n == 0 {
                pool.read_closed = true;
            } else {
                let data = &self.buf[..n];
                pool.received.update(data);
                let mut rest = data;
                if !pool.carry.is_empty() {
                    match memchr(b'\n', rest) {
                        None => {
                            pool.carry.extend_from_slice(rest);
                            rest = &[];
                        }
                        Some(end) => {
                            let mut line = std::mem::take(&mut pool.carry);
                            line.extend_from_slice(&rest[..end]);
                            answer(
                                &line,
                                index,
                                &mut pool.user,
                                &mut pool.out.bytes,
                                &mut self.counts,
                                &self.after_authorize,
                            );
                            line.clear();
                            pool.carry = line;
                            rest = &rest[end + 1..];
                        }
                    }
                }
                let mut start = 0;
                for end in memchr_iter(b'\n', rest) {
                    answer(
                        &rest[start..end],
                        index,
                        &mut pool.user,
                        &mut pool.out.bytes,
                        &mut self.counts,
                        &self.after_authorize,
                    );
                    start = end + 1;
                }
                pool.carry.extend_from_slice(&rest[start..]);
                pool.out
                    .flush(&self.epoll, fd, key, &mut self.counts.writes)
                    .map_err(|e| format!("pool write: {e}"))?;
            }
        }
        // The miner half-closed and everything is answered: close in turn.
        if pool.read_closed && pool.out.is_empty() {
            let _ = rustix::net::shutdown(fd, Shutdown::Write);
            let _ = epoll::delete(&self.epoll, fd);
            pool.fd = None;
            self.counts.pool_finished += 1;
        }
        Ok(())
    }

    fn miner_event(&mut self, index: usize, flags: EventFlags) -> Result<(), String> {
        let key = index as u64;
        let miner = &mut self.miners[index];
        let Some(fd) = miner.fd.as_ref() else {
            return Ok(());
        };
        if miner.phase == Phase::Connecting {
            if !flags.intersects(EventFlags::OUT | EventFlags::ERR | EventFlags::HUP) {
                return Ok(());
            }
            match rustix::net::sockopt::socket_error(fd) {
                Ok(Ok(())) => {}
                Ok(Err(e)) | Err(e) => return Err(format!("connect to {}: {e}", self.target)),
            }
            miner.phase = Phase::Subscribing;
            miner.out.bytes.extend_from_slice(
                format!(
                    "{{\"id\":1,\"method\":\"mining.subscribe\",\"params\":[\"miner-sim/{}\"]}}\n",
                    env!("CARGO_PKG_VERSION")
                )
                .as_bytes(),
            );
            // Still watching: the flush stops asking for EPOLLOUT.
            return miner
                .out
                .flush(&self.epoll, fd, key, &mut self.counts.writes)
                .map_err(|e| format!("write: {e}"));
        }
        if flags.contains(EventFlags::OUT) {
            miner
                .out
                .flush(&self.epoll, fd, key, &mut self.counts.writes)
                .map_err(|e| format!("write: {e}"))?;
        }
        if !flags.intersects(EventFlags::IN | EventFlags::HUP | EventFlags::ERR) {
            return Ok(());
        }
        self.counts.reads += 1;
        let read = if self.stamped {
            stamp::recv(fd, &mut self.buf[..])
                .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
        } else {
            rustix::io::read(fd, &mut self.buf[..]).map(|n| (n, None))
        };
        let (n, stamp) = match read {
            Ok(read) => read,
            Err(Errno::AGAIN | Errno::INTR) => return Ok(()),
            Err(e) => return Err(format!("read: {e}")),
        };
        if n == 0 {
            if miner.phase == Phase::Draining {
                miner.phase = Phase::Done;
                let _ = epoll::delete(&self.epoll, fd);
                miner.fd = None;
                self.counts.done += 1;
                return Ok(());
            }
            return Err(format!(
                "the target closed the connection ({:?}, {} lines in)",
                miner.phase, miner.lines
            ));
        }
        let data = &self.buf[..n];
        miner.received.update(data);
        let lines = memchr_iter(b'\n', data).count() as u64;
        let before = miner.lines;
        miner.lines += lines;
        match miner.phase {
            Phase::Subscribing | Phase::Authorizing => {
                miner.handshake.extend_from_slice(data);
                if miner.phase == Phase::Subscribing && miner.lines >= 1 {
                    miner.phase = Phase::Authorizing;
                    miner.out.bytes.extend_from_slice(
                        format!(
                            "{{\"params\":[\"{}\",\"x\"],\"id\":2,\"method\":\"mining.authorize\"}}\n",
                            miner.user
                        )
                        .as_bytes(),
                    );
                    miner
                        .out
                        .flush(&self.epoll, fd, key, &mut self.counts.writes)
                        .map_err(|e| format!("write: {e}"))?;
                }
                if miner.phase == Phase::Authorizing && miner.lines >= HANDSHAKE_LINES {
                    let job = handshake_job(&miner.handshake)?;
                    miner.submit_head = format!(
                        "{{\"params\":[\"{}\",\"{job}\",\"{index:08x}\",\"{:08x}\",\"{:08x}\"],\"id\":",
                        miner.user,
                        realtime_ns() / 1_000_000_000,
                        (index as u32).wrapping_mul(0x2545_f491)
                    )
                    .into_bytes();
                    miner.handshake = Vec::new();
                    miner.phase = Phase::Running;
                    self.counts.running += 1;
                    if self.pipeline > 0 && self.refill {
                        push_submits(
                            &mut miner.out.bytes,
                            &miner.submit_head,
                            &mut miner.id,
                            self.pipeline,
                        );
                        miner.in_flight += self.pipeline;
                        self.counts.miner_submits += self.pipeline as u64;
                        miner
                            .out
                            .flush(&self.epoll, fd, key, &mut self.counts.writes)
                            .map_err(|e| format!("write: {e}"))?;
                    }
                }
            }
            Phase::Running | Phase::Draining if self.pipeline == 0 => {
                let notify_line = HANDSHAKE_LINES + BURST_LINES;
                if before < notify_line && miner.lines >= notify_line {
                    let Some(ns) = stamp else {
                        return Err(
                            "no SO_TIMESTAMPNS timestamp came with the notify (recvmsg gave no \
                             SCM_TIMESTAMPNS control message): kernel receive times are not \
                             available here"
                                .into(),
                        );
                    };
                    miner.notify_received_ns = Some(ns);
                    self.counts.notified += 1;
                }
            }
            Phase::Running | Phase::Draining => {
                let answered = (lines as usize).min(miner.in_flight);
                self.counts.unexpected_lines += lines - answered as u64;
                miner.in_flight -= answered;
                if miner.phase == Phase::Running {
                    if self.refill {
                        push_submits(
                            &mut miner.out.bytes,
                            &miner.submit_head,
                            &mut miner.id,
                            answered,
                        );
                        miner.in_flight += answered;
                        self.counts.miner_submits += answered as u64;
                        miner
                            .out
                            .flush(&self.epoll, fd, key, &mut self.counts.writes)
                            .map_err(|e| format!("write: {e}"))?;
                    } else if miner.in_flight == 0 {
                        rustix::net::shutdown(fd, Shutdown::Write)
                            .map_err(|e| format!("shutdown: {e}"))?;
                        miner.phase = Phase::Draining;
                    }
                }
            }
            other => return Err(format!("read in phase {other:?}")),
        }
        Ok(())
    }

    /// The burst: set_difficulty + a clean_jobs notify to every authorized
    /// pool connection, each write stamped with CLOCK_REALTIME just before.
    fn burst(&mut self) -> Result<(), String> {
        let mut bytes = set_difficulty_line(DEFAULT_DIFFICULTY);
        bytes.extend_from_slice(&notify_line(2, true));
        for index in 0..self.pools.len() {
            let pool = &mut self.pools[index];
            let Some(fd) = pool.fd.as_ref() else { continue };
            if pool.user.is_none() {
                continue;
            }
            pool.out.bytes.extend_from_slice(&bytes);
            self.counts.lines_down += BURST_LINES;
            pool.burst_sent_ns = Some(realtime_ns());
            if let Err(e) = pool.out.flush(
                &self.epoll,
                fd,
                POOL_KEY + index as u64,
                &mut self.counts.writes,
            ) {
                self.fail_pool(index, format!("pool write: {e}"));
            }
        }
        Ok(())
    }

    /// Ends the window: miners stop submitting, half-close once their
    /// submits are answered (silent miners at once).
    fn stop(&mut self) -> Result<(), String> {
        self.refill = false;
        for index in 0..self.miners.len() {
            let miner = &mut self.miners[index];
            let Some(fd) = miner.fd.as_ref() else {
                continue;
            };
            if miner.phase == Phase::Running && miner.in_flight == 0 && miner.out.is_empty() {
                if let Err(e) = rustix::net::shutdown(fd, Shutdown::Write) {
                    self.fail_miner(index, format!("shutdown: {e}"));
                    continue;
                }
                miner.phase = Phase::Draining;
            }
        }
        Ok(())
    }

    /// Every connection ended on both sides.
    fn drained(&self) -> bool {
        self.counts.done + self.counts.failed >= self.miners.len() as u64
            && self.counts.pool_finished >= self.counts.pool_accepted
    }
}

/// Appends `n` submit lines (`head`, the next id, the end) to `out`.
fn push_submits(out: &mut Vec<u8>, head: &[u8], id: &mut [u8; 10], n: usize) {
    for _ in 0..n {
        next_id(id);
        out.extend_from_slice(head);
        out.extend_from_slice(id);
        out.extend_from_slice(SUBMIT_END);
        out.push(b'\n');
    }
}

/// Checks the handshake's answers (authorize accepted) and returns the job
/// id of its notify.
fn handshake_job(handshake: &[u8]) -> Result<String, String> {
    let mut lines = handshake.split(|&b| b == b'\n');
    let _subscribe = lines.next();
    let authorize = lines.next().unwrap_or_default();
    if memmem::find(authorize, b"\"result\":true").is_none() {
        return Err(format!(
            "authorize not accepted: {}",
            String::from_utf8_lossy(authorize)
        ));
    }
    let at =
        memmem::find(handshake, b"\"mining.notify\"").ok_or("no mining.notify in the handshake")?;
    let job = first_param(&handshake[at..]).ok_or("a mining.notify without a job id")?;
    Ok(String::from_utf8_lossy(job).into_owned())
}

/// Runs the generator; the report is the same JSON as the other scenarios'
/// (plus the fan-out fields in a burst).
pub fn run(setup: &Setup) -> Result<Value, String> {
    let rss_idle = setup.target_pid.and_then(rss_kib);
    let mut engine = Engine::new(setup)?;
    let n = setup.miners;

    // Connect at the set rate; each miner does its handshake as it goes.
    let start = Instant::now();
    let connect_time = if setup.connect_per_second > 0.0 {
        Duration::from_secs_f64(n as f64 / setup.connect_per_second)
    } else {
        Duration::ZERO
    };
    let deadline = start + connect_time + setup.slack;
    let mut started = 0;
    let ready = loop {
        if engine.counts.running + engine.counts.failed >= n as u64 {
            break engine.counts.failed == 0;
        }
        let now = Instant::now();
        if now >= deadline {
            break false;
        }
        let due = if setup.connect_per_second > 0.0 {
            (((now - start).as_secs_f64() * setup.connect_per_second).ceil() as usize).min(n)
        } else {
            n
        };
        while started < due {
            engine.start_miner(started);
            started += 1;
        }
        engine.turn(Duration::from_millis(1))?;
    };
    if !ready {
        engine.note_error(format!(
            "{} of {n} miners finished the handshake",
            engine.counts.running
        ));
    }
    engine.serve_until(Instant::now() + setup.settle, |_| false)?;
    let rss_loaded = setup.target_pid.and_then(rss_kib);

    let ticks = clock_ticks_per_second();
    let before = engine.counts;
    let s0 = Sample::take(setup.target_pid);
    let mut first_sent_ns = None;
    match setup.mode {
        Mode::Flood { window, .. } => {
            engine.serve_until(Instant::now() + window, |_| false)?;
        }
        Mode::Burst => {
            first_sent_ns = Some(realtime_ns());
            engine.burst()?;
            let running = engine.counts.running;
            engine.serve_until(Instant::now() + FAN_OUT_LIMIT, |e| {
                e.counts.notified + e.counts.failed >= running.max(1)
            })?;
        }
    }
    let s1 = Sample::take(setup.target_pid);
    let after = engine.counts;

    engine.stop()?;
    let drained = engine.serve_until(Instant::now() + DRAIN_LIMIT, Engine::drained)?;
    if !drained {
        engine.note_error("connections did not all end within the drain limit".into());
    }

    // Byte-exact check: each miner against the pool connection it authorized on.
    let by_user: HashMap<&str, &PoolConnection> = engine
        .pools
        .iter()
        .filter_map(|p| p.user.as_deref().map(|u| (u, p)))
        .collect();
    let (mut matched, mut mismatched, mut missing) = (0u64, 0u64, 0u64);
    let mut fan_out_us = Vec::new();
    let mut from_first_us = Vec::new();
    for miner in &engine.miners {
        let Some(pool) = by_user.get(miner.user.as_str()) else {
            missing += 1;
            continue;
        };
        if pool.received == miner.out.sent && pool.out.sent == miner.received {
            matched += 1;
        } else {
            mismatched += 1;
        }
        if let (Some(rx), Some(tx)) = (miner.notify_received_ns, pool.burst_sent_ns) {
            fan_out_us.push(((rx - tx).max(0) / 1000) as u64);
            if let Some(first) = first_sent_ns {
                from_first_us.push(((rx - first).max(0) / 1000) as u64);
            }
        }
    }
    fan_out_us.sort_unstable();
    from_first_us.sort_unstable();

    let up = after.lines_up - before.lines_up;
    let down = after.lines_down - before.lines_down;
    let burst = matches!(setup.mode, Mode::Burst);
    let counts = engine.counts;
    let ok = ready
        && drained
        && counts.failed == 0
        && counts.pool_errors == 0
        && counts.unexpected_lines == 0
        && matched == n as u64
        && counts.pool_submits == counts.miner_submits
        && (!burst || fan_out_us.len() == n);
    // The loop's own system calls over the window, per line relayed.
    let messages = up + down;
    let calls = |c: &Counts| c.writes + c.reads + c.waits;
    let syscalls_per_msg =
        (messages > 0).then(|| (calls(&after) - calls(&before)) as f64 / messages as f64);
    let writes = after.writes - before.writes;
    let lines_per_write = (writes > 0).then(|| messages as f64 / writes as f64);
    let waits = after.waits - before.waits;
    let reads_per_wait = (waits > 0).then(|| (after.reads - before.reads) as f64 / waits as f64);
    let mut report = json!({
        "scenario": setup.scenario,
        "target": setup.name,
        "generator": "flood",
        "ok": ok,
        "miners": n,
        "all_connected": ready,
        "drained": drained,
        "miner_errors": counts.failed,
        "errors": engine.errors,
        "messages_up": up,
        "messages_down": down,
        "submits_total": counts.miner_submits,
        "pool_submits_total": counts.pool_submits,
        "pool_other_lines": counts.pool_other,
        "unexpected_lines": counts.unexpected_lines,
        "rss_idle_kib": rss_idle,
        "rss_loaded_kib": rss_loaded,
        "rss_per_miner_kib": match (rss_idle, rss_loaded) {
            (Some(idle), Some(loaded)) => Some((loaded as f64 - idle as f64) / n.max(1) as f64),
            _ => None,
        },
        "rtt_count": 0,
        "rtt_p50_ms": null,
        "rtt_p99_ms": null,
        "rtt_p999_ms": null,
        "fanout_count": fan_out_us.len(),
        "fanout_p50_ms": quantile_ms(&fan_out_us, 0.50),
        "fanout_p99_ms": quantile_ms(&fan_out_us, 0.99),
        "fanout_max_ms": quantile_ms(&fan_out_us, 1.0),
        "fanout_from_first_p99_ms": quantile_ms(&from_first_us, 0.99),
        "fanout_from_first_max_ms": quantile_ms(&from_first_us, 1.0),
        "gen_syscalls_per_msg": syscalls_per_msg,
        "gen_lines_per_write": lines_per_write,
        "gen_reads_per_wait": reads_per_wait,
        "bytes_match": matched,
        "bytes_mismatch": mismatched,
        "bytes_missing": missing,
    });
    if let (Some(report), Value::Object(window)) = (
        report.as_object_mut(),
        window_json(&s0, &s1, up + down, ticks),
    ) {
        report.extend(window);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_keep_their_width() {
        let mut id = FIRST_SUBMIT_ID;
        next_id(&mut id);
        assert_eq!(&id, b"1000000001");
        let mut id = *b"1000000999";
        next_id(&mut id);
        assert_eq!(&id, b"1000001000");
    }

    #[test]
    fn the_pool_answers_a_submit_with_its_id_bytes() {
        let (mut user, mut out) = (None, Vec::new());
        let mut counts = Counts::default();
        let line = b"{\"params\":[\"a.w1\",\"1\",\"00000001\",\"65000000\",\"00000002\"],\"id\":1000000007,\"method\":\"mining.submit\"}";
        answer(line, 0, &mut user, &mut out, &mut counts, b"");
        assert_eq!(out, b"{\"id\":1000000007,\"result\":true,\"error\":null}\n");
        assert_eq!(
            (counts.pool_submits, counts.lines_up, counts.lines_down),
            (1, 1, 1)
        );
        out.clear();
        let authorize =
            b"{\"params\":[\"account7.worker3\",\"x\"],\"id\":2,\"method\":\"mining.authorize\"}";
        answer(authorize, 0, &mut user, &mut out, &mut counts, b"NOTIFY\n");
        assert_eq!(user.as_deref(), Some("account7.worker3"));
        assert_eq!(out, b"{\"id\":2,\"result\":true,\"error\":null}\nNOTIFY\n");
    }
}
