//! One miner connection relayed 1:1 to one pool connection.
//!
//! Both directions run in one task over the readiness of two sockets
//! registered with the relay's reactor (`crate::reactor`), not two copy
//! loops: a connection owns no read buffer. Every read goes into a
//! per-thread buffer, is written straight to the other socket, and only what
//! the other socket did not take is kept (and reading that way pauses until
//! it drains). The line framer keeps only an unfinished line. So an idle
//! connection holds two sockets, two small framers and its observer state.
//!
//! Readiness is edge-triggered: after a short read the socket is not read
//! again until the next event, and timeouts are checked lazily against a
//! timestamp; the next one is handed to the deadline sweeper (see
//! `deadline`) rather than an async-io timer.

use std::cell::RefCell;
use std::io::{self, Read as _, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::ops::{Index, IndexMut};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::Timer;

use std::sync::Arc;

use super::deadline::Deadline;
use super::event::{
    CloseReason, ConnectionInfo, Direction, Event, Observer, Side, UpstreamFailure,
};
use super::limits::Limits;
use super::pools::{Leave, PoolId, Pools, Session};
use super::upstream::PoolAddr;
use crate::reactor::Registered;
use crate::stratum::{Frame, Kind, LineFramer, Method, ParseFailure, Shapes};

/// Size of the per-thread read buffer, in bytes.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How long a half-closed connection waits for the other side to close too.
pub const HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// The one read buffer of this executor thread, shared by all its connections.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice());
    /// The shapes of the lines this executor thread viewed lately (see
    /// `stratum::shape`), one cache per direction (a miner's submits do not
    /// push out its pool's answers).
    static SHAPES: RefCell<ByDirection<Shapes>> = RefCell::new(ByDirection::default());
}

/// The line sent to move a miner when `reconnect_message` is on: no host,
/// so firmware reconnects to the proxy itself (cgminer's `parse_reconnect`).
pub const RECONNECT_LINE: &[u8] = b"{\"id\":null,\"method\":\"client.reconnect\",\"params\":[]}\n";

/// Most bytes held from a miner before its pool is dialled; also the most
/// kept to replay to the next pool when one closes before answering.
pub const HOLD_BYTES: usize = 16 * 1024;

/// Relays one accepted miner connection until it ends; reports to `observer`.
/// `keep` (the listener's guards for this connection) is dropped at the end.
///
/// The pool is dialled when the miner's first complete line has arrived (a
/// silent or flooding client costs no pool anything), those bytes held
/// (at most [`HOLD_BYTES`]) and then forwarded unchanged. A dial that is
/// refused or times out, or a pool that closes before its first byte, is
/// retried on the next pool of [`Pools::dial_order`] for the same miner: it
/// has been answered nothing yet, so it sees only a slower subscribe.
pub(crate) fn serve<O: Observer, K: Send + 'static>(
    miner: TcpStream,
    info: ConnectionInfo,
    pools: Arc<Pools>,
    limits: Arc<Limits>,
    observer: Arc<O>,
    keep: K,
) -> impl Future<Output = ()> + Send + 'static {
    // Boxed, and freed once relaying starts: holding the first line and
    // dialling take more state than relaying (the connect future, the
    // arguments, the held bytes). In the task it would size every
    // connection for its whole life; the task keeps only the `Relay`.
    let opening = Box::pin(open(miner, info, pools, limits, observer));
    async move {
        // `let else`: the awaited `Option` is a temporary of this statement
        // only (an `if let` would keep it, a second relay, across the
        // awaits below).
        let Some(mut relay) = opening.await else {
            drop(keep);
            return;
        };
        loop {
            match std::future::poll_fn(|cx| relay.poll_relay(cx)).await {
                Ended::Closed(reason) => {
                    relay.conn.close(reason);
                    break;
                }
                // Boxed, like the opening: a dial's state is short-lived.
                Ended::Redial(failure) => {
                    if !Box::pin(relay.redial_next(failure)).await {
                        break;
                    }
                }
            }
        }
        drop(keep);
    }
}

/// Holds the miner's first line and dials its pool: the relay, or `None`
/// when the connection ended first (its close is reported).
async fn open<O: Observer>(
    miner: TcpStream,
    info: ConnectionInfo,
    pools: Arc<Pools>,
    limits: Arc<Limits>,
    observer: Arc<O>,
) -> Option<Relay<O>> {
    let (id, peer) = (info.id, info.peer.ip());
    let mut conn = ObservedConnection::open(observer, info);
    // Routes may depend on the address the miner connected to.
    let local = miner
        .local_addr()
        .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
    let _ = miner.set_nodelay(true);
    let _ = limits.keepalive.apply(&miner);
    // Registered here, on the executor thread that runs the task, so its
    // events are that thread's reactor's.
    let miner = match Registered::new(miner) {
        Ok(miner) => miner,
        Err(e) => {
            conn.close(CloseReason::MinerError(e.kind()));
            return None;
        }
    };
    let Held { bytes: held, eof } = match hold_first_line(&miner, conn.accepted_at, &limits).await {
        Ok(held) => held,
        Err(reason) => {
            conn.close(reason);
            return None;
        }
    };
    let order = pools.dial_order(local, peer);
    let mut tried = 0;
    let (pool, session) =
        dial_next(&miner, &order, &mut tried, id, &pools, &limits, &mut conn).await?;
    // Kept only while another pool could still answer instead.
    let redial = (tried < order.len()).then(|| {
        Box::new(Redial {
            replay: held.clone(),
            order,
            tried,
            conn_id: id,
        })
    });
    let mut relay = Relay {
        sockets: Sockets { miner, pool },
        pipes: ByDirection::default(),
        deadline: Deadline::new(),
        limits,
        last_miner_read: Instant::now(),
        handshake_done: false,
        half_closed_at: None,
        first_eof: None,
        redial,
        pool_spoke: false,
        in_flight: 0,
        difficulty: 0.0,
        leaving: None,
        reconnect_sent: false,
        evict_by: None,
        session,
        conn,
    };
    // Holding stopped at a line end, maybe with more bytes waiting: the
    // edge that announced them was taken, so read before waiting for one.
    relay.pipes.miner_to_pool.maybe_readable = !eof;
    if eof {
        // The miner sent its last bytes without a newline and closed: they
        // are relayed, then the FIN.
        relay.pipes.miner_to_pool.eof = true;
        relay.first_eof = Some(CloseReason::MinerClosed);
        relay.half_closed_at = Some(Instant::now());
    }
    // Observed once, as if just read: a replay to another pool is not.
    relay.observe(Direction::MinerToPool, &held, Instant::now());
    relay.pipes.miner_to_pool.unsent = held;
    Some(relay)
}

/// What a relay keeps to dial the next pool, until its pool has spoken.
struct Redial {
    /// Every byte sent to the pool so far (at most [`HOLD_BYTES`]), to
    /// replay to the next one.
    replay: Vec<u8>,
    /// The pools to try, in order.
    order: Vec<PoolId>,
    /// How many of `order` were tried.
    tried: usize,
    conn_id: u64,
}

/// What a miner sent before its pool was dialled.
struct Held {
    bytes: Vec<u8>,
    /// It closed its side after these bytes (no newline came).
    eof: bool,
}

/// Reads the miner until its first complete line (or [`HOLD_BYTES`], or
/// its end of stream after some bytes).
async fn hold_first_line(
    miner: &Registered<TcpStream>,
    accepted_at: Instant,
    limits: &Limits,
) -> Result<Held, CloseReason> {
    let mut held = Vec::new();
    let mut deadline = Deadline::new();
    let due = accepted_at + limits.handshake_timeout;
    let mut maybe_readable = false;
    std::future::poll_fn(|cx| {
        loop {
            if Instant::now() >= due {
                return Poll::Ready(Err(CloseReason::HandshakeTimeout));
            }
            if !maybe_readable {
                match miner.poll_readable(cx) {
                    Poll::Pending => {
                        deadline.wake_at(due, cx.waker());
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) => {
                        return Poll::Ready(Err(CloseReason::MinerError(e.kind())));
                    }
                    Poll::Ready(Ok(())) => maybe_readable = true,
                }
            }
            let room = HOLD_BYTES - held.len();
            let read = READ_BUFFER.with(|buffer| {
                let mut buffer = buffer.borrow_mut();
                let room = room.min(buffer.len());
                match read_into(miner.get_ref(), &mut buffer[..room]) {
                    Ok(Read::Data(n)) => {
                        held.extend_from_slice(&buffer[..n]);
                        Ok(Read::Data(n))
                    }
                    other => other,
                }
            });
            match read {
                Err(e) => return Poll::Ready(Err(CloseReason::MinerError(e.kind()))),
                Ok(Read::Eof) if held.is_empty() => {
                    return Poll::Ready(Err(CloseReason::MinerClosed));
                }
                Ok(Read::Eof) => {
                    return Poll::Ready(Ok(Held {
                        bytes: std::mem::take(&mut held),
                        eof: true,
                    }));
                }
                Ok(Read::WouldBlock) => maybe_readable = false,
                Ok(Read::Data(n)) => {
                    if held.contains(&b'\n') || held.len() >= HOLD_BYTES {
                        return Poll::Ready(Ok(Held {
                            bytes: std::mem::take(&mut held),
                            eof: false,
                        }));
                    }
                    if n < room {
                        maybe_readable = false;
                    }
                }
            }
        }
    })
    .await
}

/// What one read gave.
enum Read {
    /// This many bytes (more than zero).
    Data(usize),
    /// End of stream.
    Eof,
    /// Nothing now: wait for readiness.
    WouldBlock,
}

/// One non-blocking read; `Interrupted` counts as `WouldBlock` (the caller
/// comes back on the next readiness event or poll).
fn read_into(mut socket: &TcpStream, buffer: &mut [u8]) -> io::Result<Read> {
    match socket.read(buffer) {
        Ok(0) => Ok(Read::Eof),
        Ok(n) => Ok(Read::Data(n)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Read::WouldBlock),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Read::WouldBlock),
        Err(e) => Err(e),
    }
}

/// Dials the pools of `order` from `*tried` on until one connects (its
/// socket registered beside `miner`'s); reports each attempt. `None` (the
/// miner closed) when every pool failed.
async fn dial_next<O: Observer>(
    miner: &Registered<TcpStream>,
    order: &[PoolId],
    tried: &mut usize,
    conn_id: u64,
    pools: &Arc<Pools>,
    limits: &Limits,
    conn: &mut ObservedConnection<O>,
) -> Option<(Registered<TcpStream>, Session)> {
    let mut last = UpstreamFailure::Other;
    while let Some(&pool) = order.get(*tried) {
        *tried += 1;
        let started = Instant::now();
        match connect(&pools.spec(pool).addr, limits.connect_timeout, miner).await {
            Ok((socket, addr)) => {
                let _ = socket.get_ref().set_nodelay(true);
                let _ = limits.keepalive.apply(socket.get_ref());
                conn.emit(Event::UpstreamConnected {
                    pool,
                    addr,
                    latency: started.elapsed(),
                });
                return Some((socket, pools.session(pool, conn_id)));
            }
            Err((failure, error)) => {
                pools.dial_failed(pool);
                conn.emit(Event::UpstreamFailed {
                    pool,
                    failure,
                    latency: started.elapsed(),
                    error: &error,
                });
                last = failure;
            }
        }
    }
    conn.close(CloseReason::UpstreamFailed(last));
    None
}

/// Opens the upstream connection within `timeout`.
async fn connect(
    upstream: &PoolAddr,
    timeout: Duration,
    miner: &Registered<TcpStream>,
) -> Result<(Registered<TcpStream>, SocketAddr), (UpstreamFailure, io::Error)> {
    let attempt = async {
        let addrs = upstream.resolve().await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for pool host");
        for addr in addrs {
            match connect_to(addr, miner).await {
                Ok(stream) => return Ok((stream, addr)),
                Err(e) => last = e,
            }
        }
        Err(last)
    };
    let timed_out = async {
        Timer::after(timeout).await;
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no connection within {timeout:?}"),
        ))
    };
    smol::future::or(attempt, timed_out).await.map_err(|e| {
        let failure = match e.kind() {
            io::ErrorKind::TimedOut => UpstreamFailure::Timeout,
            io::ErrorKind::ConnectionRefused => UpstreamFailure::Refused,
            _ => UpstreamFailure::Other,
        };
        (failure, e)
    })
}

/// Connects a non-blocking socket beside `miner` and waits for it on the reactor.
async fn connect_to(
    addr: SocketAddr,
    miner: &Registered<TcpStream>,
) -> io::Result<Registered<TcpStream>> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
    let socket = rustix::net::socket_with(family, SocketType::STREAM, flags, Some(ipproto::TCP))?;
    match rustix::net::connect(&socket, &addr) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::INPROGRESS => {}
        Err(e) => return Err(e.into()),
    }
    let stream = Registered::new_beside(TcpStream::from(socket), miner)?;
    std::future::poll_fn(|cx| stream.poll_writable(cx)).await?;
    match stream.get_ref().take_error()? {
        Some(error) => Err(error),
        None => Ok(stream),
    }
}

/// The observer's per-connection state plus what `Closed` needs.
struct ObservedConnection<O: Observer> {
    observer: Arc<O>,
    state: Option<O::Connection>,
    accepted_at: Instant,
    /// Bytes relayed each way.
    bytes: ByDirection<u64>,
    closed: bool,
}

impl<O: Observer> ObservedConnection<O> {
    fn open(observer: Arc<O>, info: ConnectionInfo) -> Self {
        ObservedConnection {
            state: Some(observer.accepted(&info)),
            observer,
            accepted_at: info.accepted_at,
            bytes: ByDirection::default(),
            closed: false,
        }
    }

    #[inline]
    fn emit(&mut self, event: Event<'_>) {
        if let Some(state) = self.state.as_mut() {
            self.observer.event(state, event);
        }
    }

    #[inline]
    fn lines_done(&mut self, at: Instant) {
        if let Some(state) = self.state.as_mut() {
            self.observer.lines_done(state, at);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.emit(Event::Closed {
            duration: self.accepted_at.elapsed(),
            miner_to_pool_bytes: self.bytes.miner_to_pool,
            pool_to_miner_bytes: self.bytes.pool_to_miner,
            reason,
        });
        self.state = None;
    }
}

impl<O: Observer> Drop for ObservedConnection<O> {
    /// A task dropped mid-relay (the executor shut down after the grace
    /// period) still reports its close.
    fn drop(&mut self) {
        self.close(CloseReason::Shutdown);
    }
}

/// One direction's state.
#[derive(Default)]
struct Pipe {
    framer: LineFramer,
    /// Bytes read but not yet taken by the destination socket.
    unsent: Vec<u8>,
    /// How much of `unsent` was written already.
    unsent_from: u32,
    /// The source may have more to read without waiting for readiness.
    maybe_readable: bool,
    /// The source reached end of stream.
    eof: bool,
    /// The destination's write side was shut down after `eof`.
    shut: bool,
}

/// How a relay ended.
enum Ended {
    /// The connection is over.
    Closed(CloseReason),
    /// The pool closed or reset before its first byte, and everything the
    /// miner sent is still held: dial the next pool and replay it.
    Redial(UpstreamFailure),
}

/// The relay: both directions of one miner and its pool. Everything a
/// connection holds while relaying is here (the task holds little else).
struct Relay<O: Observer> {
    sockets: Sockets,
    pipes: ByDirection<Pipe>,
    deadline: Deadline,
    limits: Arc<Limits>,
    last_miner_read: Instant,
    handshake_done: bool,
    half_closed_at: Option<Instant>,
    first_eof: Option<CloseReason>,
    /// What a redial needs while another pool could answer instead;
    /// `None` once the pool spoke, past [`HOLD_BYTES`] sent, or when no
    /// pool is left to try (boxed: most relays never need it).
    redial: Option<Box<Redial>>,
    /// The pool sent its first byte.
    pool_spoke: bool,
    /// Requests of the miner not answered yet (by count, not by id).
    in_flight: u32,
    /// The share difficulty the pool set last (for the pool's hashrate).
    difficulty: f64,
    /// Why the session is leaving its pool, once it is.
    leaving: Option<Leave>,
    /// The `client.reconnect` line was sent.
    reconnect_sent: bool,
    /// Leaving: close between two lines, by this time at the latest.
    evict_by: Option<Instant>,
    session: Session,
    conn: ObservedConnection<O>,
}

const DIRECTIONS: [Direction; 2] = [Direction::MinerToPool, Direction::PoolToMiner];

/// One value for each way bytes go through a relay.
#[derive(Debug, Default)]
struct ByDirection<T> {
    miner_to_pool: T,
    pool_to_miner: T,
}

impl<T> Index<Direction> for ByDirection<T> {
    type Output = T;

    #[inline]
    fn index(&self, direction: Direction) -> &T {
        match direction {
            Direction::MinerToPool => &self.miner_to_pool,
            Direction::PoolToMiner => &self.pool_to_miner,
        }
    }
}

impl<T> IndexMut<Direction> for ByDirection<T> {
    #[inline]
    fn index_mut(&mut self, direction: Direction) -> &mut T {
        match direction {
            Direction::MinerToPool => &mut self.miner_to_pool,
            Direction::PoolToMiner => &mut self.pool_to_miner,
        }
    }
}

/// One end of a relay: its socket to the miner or to the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Miner,
    Pool,
}

impl End {
    /// The end `direction`'s bytes are read from.
    #[inline]
    const fn source(direction: Direction) -> End {
        match direction {
            Direction::MinerToPool => End::Miner,
            Direction::PoolToMiner => End::Pool,
        }
    }

    /// The end they are written to.
    #[inline]
    const fn destination(direction: Direction) -> End {
        match direction {
            Direction::MinerToPool => End::Pool,
            Direction::PoolToMiner => End::Miner,
        }
    }
}

/// A relay's two sockets.
struct Sockets {
    miner: Registered<TcpStream>,
    pool: Registered<TcpStream>,
}

impl Index<End> for Sockets {
    type Output = Registered<TcpStream>;

    #[inline]
    fn index(&self, end: End) -> &Registered<TcpStream> {
        match end {
            End::Miner => &self.miner,
            End::Pool => &self.pool,
        }
    }
}

/// The close reason for an I/O error on the socket at `end`.
fn error_on(end: End, error: &io::Error) -> CloseReason {
    match end {
        End::Miner => CloseReason::MinerError(error.kind()),
        End::Pool => CloseReason::PoolError(error.kind()),
    }
}

impl<O: Observer> Relay<O> {
    /// Dials the next pool after the current one failed before its first
    /// byte (reported as `failure`); whether relaying goes on (else the
    /// close was reported).
    async fn redial_next(&mut self, failure: UpstreamFailure) -> bool {
        let pool = self.session.pool();
        let pools = self.session.pools().clone();
        pools.dial_failed(pool);
        self.conn.emit(Event::UpstreamFailed {
            pool,
            failure,
            latency: Duration::ZERO,
            error: &io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the pool closed before its first byte",
            ),
        });
        // `may_redial` said there is one.
        let Some(redial) = self.redial.as_mut() else {
            self.conn.close(CloseReason::PoolClosed);
            return false;
        };
        // The failed pool hears no more: its socket's readiness bits are
        // to be the next one's.
        self.sockets.pool.deregister();
        let next = dial_next(
            &self.sockets.miner,
            &redial.order,
            &mut redial.tried,
            redial.conn_id,
            &pools,
            &self.limits,
            &mut self.conn,
        )
        .await;
        let Some((socket, session)) = next else {
            return false;
        };
        self.redial(socket, session);
        true
    }

    /// Whether the pool failing now may be answered by another pool.
    fn may_redial(&self) -> bool {
        !self.pool_spoke
            && self
                .redial
                .as_ref()
                .is_some_and(|r| r.tried < r.order.len())
    }

    /// Continues on a new pool: the held bytes are sent again (they were
    /// observed once already), the pool→miner side starts afresh.
    fn redial(&mut self, socket: Registered<TcpStream>, session: Session) {
        self.sockets.pool = socket;
        self.session = session;
        self.pipes.pool_to_miner = Pipe::default();
        let replay = match self.redial.take() {
            // No pool left after this one: nothing more to replay to.
            Some(redial) if redial.tried >= redial.order.len() => redial.replay,
            Some(redial) => {
                let replay = redial.replay.clone();
                self.redial = Some(redial);
                replay
            }
            None => Vec::new(),
        };
        self.pipes.miner_to_pool.unsent = replay;
        self.pipes.miner_to_pool.unsent_from = 0;
        // A miner that already closed its side gets that passed on to the
        // new pool too, after the replay.
        self.pipes.miner_to_pool.shut = false;
        if !self.pipes.miner_to_pool.eof {
            self.first_eof = None;
            self.half_closed_at = None;
        }
    }

    /// Moves bytes one way until neither side can make progress now.
    fn pump(
        &mut self,
        direction: Direction,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        let (src, dst) = (End::source(direction), End::destination(direction));
        loop {
            if !self.flush(direction, cx)? {
                return Ok(()); // Destination full: stop reading (backpressure).
            }
            let pipe = &mut self.pipes[direction];
            if pipe.eof {
                if !pipe.shut {
                    pipe.shut = true;
                    // Propagate the FIN; the other side may still answer.
                    let _ = self.sockets[dst].get_ref().shutdown(Shutdown::Write);
                }
                return Ok(());
            }
            if !pipe.maybe_readable {
                match self.sockets[src].poll_readable(cx) {
                    Poll::Pending => return Ok(()),
                    Poll::Ready(Err(e)) => return Err(error_on(src, &e)),
                    Poll::Ready(Ok(())) => pipe.maybe_readable = true,
                }
            }
            let read = READ_BUFFER.with(|buffer| {
                let mut buffer = buffer.borrow_mut();
                let read = read_into(self.sockets[src].get_ref(), &mut buffer);
                if let Ok(Read::Data(n)) = read {
                    if src == End::Pool && !self.pool_spoke {
                        self.pool_spoke = true;
                        self.redial = None;
                        self.session.spoke();
                    }
                    self.forward(direction, &buffer[..n])?;
                    // The benchmarks' floor (Cargo.toml): bytes relayed, no
                    // line observed.
                    if !cfg!(feature = "bench-unobserved") {
                        self.observe(direction, &buffer[..n], now);
                    }
                }
                read.map_err(|e| error_on(src, &e))
            })?;
            match read {
                Read::Eof => {
                    if src == End::Pool && self.may_redial() {
                        // Not propagated: the next pool may answer instead.
                        return Err(CloseReason::PoolClosed);
                    }
                    self.pipes[direction].eof = true;
                    if self.first_eof.is_none() {
                        self.first_eof = Some(match src {
                            End::Miner => CloseReason::MinerClosed,
                            End::Pool => CloseReason::PoolClosed,
                        });
                        self.half_closed_at = Some(now);
                    }
                }
                Read::WouldBlock => self.pipes[direction].maybe_readable = false,
                Read::Data(n) => {
                    if src == End::Miner {
                        self.last_miner_read = now;
                    }
                    // A short read drained the socket: wait for readiness
                    // instead of a read that would only say EAGAIN.
                    if n < READ_BUFFER_BYTES {
                        self.pipes[direction].maybe_readable = false;
                    }
                }
            }
        }
    }

    /// Writes `bytes` to the destination; keeps what it does not take.
    fn forward(&mut self, direction: Direction, bytes: &[u8]) -> Result<(), CloseReason> {
        let dst = End::destination(direction);
        if direction == Direction::MinerToPool
            && let Some(redial) = &mut self.redial
        {
            if redial.replay.len() + bytes.len() <= HOLD_BYTES {
                redial.replay.extend_from_slice(bytes);
            } else {
                self.redial = None;
            }
        }
        let written = match self.sockets[dst].get_ref().write(bytes) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                0
            }
            Err(e) => return Err(error_on(dst, &e)),
        };
        if written > 0 {
            self.relayed(direction, written);
        }
        if written < bytes.len() {
            self.pipes[direction]
                .unsent
                .extend_from_slice(&bytes[written..]);
        }
        Ok(())
    }

    /// Writes what is left in `unsent`; true once nothing is left.
    fn flush(&mut self, direction: Direction, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let dst = End::destination(direction);
        loop {
            let pipe = &mut self.pipes[direction];
            let from = pipe.unsent_from as usize;
            if from == pipe.unsent.len() {
                if !pipe.unsent.is_empty() {
                    // Give the buffer back: it exists only while a peer is slow.
                    pipe.unsent = Vec::new();
                    pipe.unsent_from = 0;
                }
                return Ok(true);
            }
            match self.sockets[dst].get_ref().write(&pipe.unsent[from..]) {
                Ok(n) => {
                    // At most one read (READ_BUFFER_BYTES) is ever unsent.
                    pipe.unsent_from += n as u32;
                    self.relayed(direction, n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    match self.sockets[dst].poll_writable(cx) {
                        Poll::Pending => return Ok(false),
                        Poll::Ready(Err(e)) => return Err(error_on(dst, &e)),
                        Poll::Ready(Ok(())) => {}
                    }
                }
                Err(e) => return Err(error_on(dst, &e)),
            }
        }
    }

    #[inline]
    fn relayed(&mut self, direction: Direction, bytes: usize) {
        self.conn.bytes[direction] += bytes as u64;
        self.conn.emit(Event::Relayed { direction, bytes });
    }

    /// Frames the bytes just forwarded and reports every line.
    fn observe(&mut self, direction: Direction, bytes: &[u8], now: Instant) {
        let conn = &mut self.conn;
        let mut flow = Flow::default();
        // Borrowed once per read, not once per line (`LocalKey::with` was
        // 1.1% of the relay's CPU at saturation under perf).
        SHAPES.with_borrow_mut(|shapes| {
            let shapes = &mut shapes[direction];
            self.pipes[direction].framer.push(bytes, |frame| {
                flow.lines = true;
                report(conn, direction, frame, now, &mut flow, shapes);
            });
        });
        if flow.lines {
            conn.lines_done(now);
        }
        let was_waiting = self.in_flight > 0;
        self.in_flight = (self.in_flight + flow.requests).saturating_sub(flow.responses);
        // Waiting since the last answer (a pipelining miner always has
        // something in flight, but answers keep coming).
        if flow.responses > 0 || was_waiting != (self.in_flight > 0) {
            self.session.waiting(self.in_flight > 0, now);
        }
        if let Some(difficulty) = flow.difficulty {
            self.difficulty = difficulty;
        }
        if flow.submits > 0 {
            self.session
                .submitted(f64::from(flow.submits) * self.difficulty);
        }
        if flow.lines && direction == Direction::MinerToPool {
            self.handshake_done = true;
        }
        if flow.lines && direction == Direction::PoolToMiner {
            self.session.heard(now);
        }
        if flow.notified {
            self.session.saw_notify(now);
        }
    }

    /// The earliest moment a timeout could fire, and which.
    fn next_deadline(&self) -> (Instant, CloseReason) {
        let idle = (
            self.last_miner_read + self.limits.idle_timeout,
            CloseReason::IdleTimeout,
        );
        let mut next = idle;
        let mut earlier = |candidate: (Instant, CloseReason)| {
            if candidate.0 < next.0 {
                next = candidate;
            }
        };
        if !self.handshake_done {
            earlier((
                self.conn.accepted_at + self.limits.handshake_timeout,
                CloseReason::HandshakeTimeout,
            ));
        }
        if let Some(at) = self.half_closed_at {
            earlier((at + HALF_CLOSE_TIMEOUT, CloseReason::HalfCloseTimeout));
        }
        if let Some(at) = self.evict_by {
            earlier((at, self.leave_reason()));
        }
        next
    }

    /// Checks timeouts; asks the sweeper to wake us at the next one.
    fn poll_deadlines(&mut self, now: Instant, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let (deadline, reason) = self.next_deadline();
        if now >= deadline {
            return Poll::Ready(reason);
        }
        self.deadline.wake_at(deadline, cx.waker());
        Poll::Pending
    }

    /// The close reason while leaving.
    fn leave_reason(&self) -> CloseReason {
        match self.leaving {
            Some(Leave::Move) => CloseReason::Moved,
            Some(Leave::Disconnect) => CloseReason::Disconnected,
            _ => CloseReason::PoolDown,
        }
    }

    /// Writes one `client.reconnect` line to the miner, between two whole
    /// lines: the only bytes the proxy ever adds (off by default, counted).
    fn send_reconnect(&mut self) -> Poll<Ended> {
        let line = RECONNECT_LINE;
        let written = match self.sockets.miner.get_ref().write(line) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Poll::Ready(Ended::Closed(CloseReason::MinerError(e.kind()))),
        };
        // What the socket did not take goes out with the next relayed bytes.
        self.pipes
            .pool_to_miner
            .unsent
            .extend_from_slice(&line[written..]);
        self.conn.emit(Event::ReconnectSent { bytes: line.len() });
        Poll::Pending
    }

    /// Relays until the connection ends or should move to another pool.
    fn poll_relay(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        // One clock read per poll serves the activity stamps and the deadline check.
        let now = Instant::now();
        for direction in DIRECTIONS {
            if let Err(reason) = self.pump(direction, now, cx) {
                if reason.side() == Side::Pool && self.may_redial() {
                    return Poll::Ready(Ended::Redial(UpstreamFailure::Reset));
                }
                return Poll::Ready(Ended::Closed(reason));
            }
        }
        let done = |p: &Pipe| p.eof && p.shut;
        if done(&self.pipes.miner_to_pool) && done(&self.pipes.pool_to_miner) {
            return Poll::Ready(Ended::Closed(
                self.first_eof.unwrap_or(CloseReason::MinerClosed),
            ));
        }
        if self.leaving.is_none()
            && let Some(leave) = self.session.evicted(cx)
        {
            self.leaving = Some(leave);
            self.evict_by = Some(now + self.session.pools().policy().failover_wait);
        }
        // Leaving: between two lines, once every request is answered.
        let quiet = self.in_flight == 0
            && self.pipes.miner_to_pool.framer.buffered_bytes() == 0
            && self.pipes.miner_to_pool.unsent.is_empty();
        match self.leaving {
            Some(Leave::Move) if self.session.pools().policy().reconnect_message => {
                let miner_between_lines = self.pipes.pool_to_miner.framer.buffered_bytes() == 0
                    && self.pipes.pool_to_miner.unsent.is_empty();
                if quiet && miner_between_lines && !self.reconnect_sent {
                    if let Poll::Ready(ended) = self.send_reconnect() {
                        return Poll::Ready(ended);
                    }
                    self.reconnect_sent = true;
                    // The miner leaves by itself; closed at the deadline if not.
                    self.evict_by = Some(now + self.session.pools().policy().failover_wait);
                }
            }
            Some(_) if quiet => return Poll::Ready(Ended::Closed(self.leave_reason())),
            _ => {}
        }
        self.poll_deadlines(now, cx).map(Ended::Closed)
    }
}

/// What the lines of one read were, for the relay's own bookkeeping.
#[derive(Default)]
struct Flow {
    lines: bool,
    requests: u32,
    responses: u32,
    /// Share submits (their work counts toward the pool's hashrate).
    submits: u32,
    /// The last difficulty the pool set.
    difficulty: Option<f64>,
    notified: bool,
}

/// Reports one framed line to the observer.
fn report<O: Observer>(
    conn: &mut ObservedConnection<O>,
    direction: Direction,
    frame: Frame<'_>,
    at: Instant,
    flow: &mut Flow,
    shapes: &mut Shapes,
) {
    match frame {
        Frame::Overlong(line_bytes) => conn.emit(Event::ParseFailed {
            direction,
            failure: ParseFailure::TooLong,
            line_bytes,
        }),
        // Matched by reference: moving the view out of the `Result` was a
        // `rep movsq` of its 120 bytes per line, 1.6% of the relay's CPU at
        // saturation (perf annotate).
        Frame::Line(line) => match &shapes.parse(line) {
            Ok(message) => conn.emit(match message.kind() {
                Kind::Request => {
                    if direction == Direction::MinerToPool {
                        flow.requests += 1;
                        flow.submits +=
                            u32::from(message.method().is_some_and(|m| m.is_share_submit()));
                    }
                    Event::Request {
                        direction,
                        message,
                        at,
                    }
                }
                Kind::Response => {
                    flow.responses += u32::from(direction == Direction::PoolToMiner);
                    Event::Response {
                        direction,
                        message,
                        at,
                    }
                }
                Kind::Notification => {
                    if direction == Direction::PoolToMiner {
                        match message.method() {
                            Some(Method::Notify) => flow.notified = true,
                            Some(Method::SetDifficulty) => {
                                flow.difficulty = message.difficulty().or(flow.difficulty);
                            }
                            _ => {}
                        }
                    }
                    Event::Notification {
                        direction,
                        message,
                        at,
                    }
                }
            }),
            Err(failure) => conn.emit(Event::ParseFailed {
                direction,
                failure: *failure,
                line_bytes: line.len(),
            }),
        },
    }
}
