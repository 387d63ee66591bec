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
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use smol::Timer;

use super::deadline::Deadline;
use super::event::{CloseReason, ConnectionInfo, Direction, Event, Observer, UpstreamFailure};
use super::limits::Limits;
use super::upstream::PoolAddr;
use crate::reactor::Registered;
use crate::stratum::{Frame, Kind, LineFramer, Message, ParseFailure};

/// Size of the per-thread read buffer, in bytes.
pub const READ_BUFFER_BYTES: usize = 64 * 1024;

/// How long a half-closed connection waits for the other side to close too.
pub const HALF_CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// The one read buffer of this executor thread, shared by all its connections.
    static READ_BUFFER: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_BUFFER_BYTES].into_boxed_slice());
}

/// Relays one accepted miner connection until it ends; reports to `observer`.
pub(crate) async fn serve<O: Observer>(
    miner: TcpStream,
    info: ConnectionInfo,
    upstream: &PoolAddr,
    limits: &Limits,
    observer: &O,
) {
    // Consumes `info`, which so does not live in the task for good.
    let mut conn = ObservedConnection::open(observer, info);
    let _ = miner.set_nodelay(true);
    let _ = limits.keepalive.apply(&miner);
    // Registered here, on the executor thread that runs the task, so its
    // events are that thread's reactor's.
    let miner = match Registered::new(miner) {
        Ok(miner) => miner,
        Err(e) => {
            conn.close(CloseReason::MinerError(e.kind()));
            return;
        }
    };

    let started = Instant::now();
    // Boxed: the connect future (resolver, connect, timer) is large and
    // short-lived; inline it would size every relay task for good.
    let pool = match Box::pin(connect(upstream, limits.connect_timeout)).await {
        Ok((pool, addr)) => {
            conn.emit(Event::UpstreamConnected {
                addr,
                latency: started.elapsed(),
            });
            pool
        }
        Err((failure, error)) => {
            conn.emit(Event::UpstreamFailed {
                failure,
                latency: started.elapsed(),
                error: &error,
            });
            conn.close(CloseReason::UpstreamFailed(failure));
            return;
        }
    };
    let _ = pool.get_ref().set_nodelay(true);
    let _ = limits.keepalive.apply(pool.get_ref());

    let relay = Relay {
        sockets: [miner, pool],
        pipes: [Pipe::default(), Pipe::default()],
        deadline: Deadline::new(),
        limits,
        last_miner_read: Instant::now(),
        handshake_done: false,
        half_closed_at: None,
        first_eof: None,
        conn: &mut conn,
    };
    let reason = relay.await;
    conn.close(reason);
}

/// Opens the upstream connection within `timeout`.
async fn connect(
    upstream: &PoolAddr,
    timeout: Duration,
) -> Result<(Registered<TcpStream>, SocketAddr), (UpstreamFailure, io::Error)> {
    let attempt = async {
        let addrs = upstream.resolve().await?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address for pool host");
        for addr in addrs {
            match connect_to(addr).await {
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

/// Connects a non-blocking socket and waits for it on the reactor.
async fn connect_to(addr: SocketAddr) -> io::Result<Registered<TcpStream>> {
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
    let stream = Registered::new(TcpStream::from(socket))?;
    std::future::poll_fn(|cx| stream.poll_writable(cx)).await?;
    match stream.get_ref().take_error()? {
        Some(error) => Err(error),
        None => Ok(stream),
    }
}

/// The observer's per-connection state plus what `Closed` needs.
struct ObservedConnection<'o, O: Observer> {
    observer: &'o O,
    state: Option<O::Connection>,
    accepted_at: Instant,
    /// Bytes relayed, indexed by direction (miner→pool, pool→miner).
    bytes: [u64; 2],
    closed: bool,
}

impl<'o, O: Observer> ObservedConnection<'o, O> {
    fn open(observer: &'o O, info: ConnectionInfo) -> Self {
        ObservedConnection {
            observer,
            state: Some(observer.accepted(&info)),
            accepted_at: info.accepted_at,
            bytes: [0, 0],
            closed: false,
        }
    }

    #[inline]
    fn emit(&mut self, event: Event<'_>) {
        if let Some(state) = self.state.as_mut() {
            self.observer.event(state, event);
        }
    }

    fn close(&mut self, reason: CloseReason) {
        if self.closed {
            return;
        }
        self.closed = true;
        self.emit(Event::Closed {
            duration: self.accepted_at.elapsed(),
            miner_to_pool_bytes: self.bytes[0],
            pool_to_miner_bytes: self.bytes[1],
            reason,
        });
        self.state = None;
    }
}

impl<O: Observer> Drop for ObservedConnection<'_, O> {
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

/// The relay future: resolves with why the connection ended.
struct Relay<'c, 'o, O: Observer> {
    /// [miner, pool].
    sockets: [Registered<TcpStream>; 2],
    /// Indexed by direction: [miner→pool, pool→miner].
    pipes: [Pipe; 2],
    deadline: Deadline,
    limits: &'c Limits,
    last_miner_read: Instant,
    handshake_done: bool,
    half_closed_at: Option<Instant>,
    first_eof: Option<CloseReason>,
    conn: &'c mut ObservedConnection<'o, O>,
}

const DIRECTIONS: [Direction; 2] = [Direction::MinerToPool, Direction::PoolToMiner];

/// Index of a direction in `pipes` and of its source in `sockets`.
#[inline]
const fn index(direction: Direction) -> usize {
    match direction {
        Direction::MinerToPool => 0,
        Direction::PoolToMiner => 1,
    }
}

/// The close reason for an I/O error on the socket at `socket` index.
fn error_on(socket: usize, error: &io::Error) -> CloseReason {
    if socket == 0 {
        CloseReason::MinerError(error.kind())
    } else {
        CloseReason::PoolError(error.kind())
    }
}

impl<O: Observer> Relay<'_, '_, O> {
    /// Moves bytes one way until neither side can make progress now.
    fn pump(
        &mut self,
        direction: Direction,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> Result<(), CloseReason> {
        let d = index(direction);
        let (src, dst) = (d, 1 - d);
        loop {
            if !self.flush(direction, cx)? {
                return Ok(()); // Destination full: stop reading (backpressure).
            }
            let pipe = &mut self.pipes[d];
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
                let result = self.sockets[src].get_ref().read(&mut buffer);
                match result {
                    Ok(0) => Ok(0),
                    Ok(n) => {
                        self.forward(direction, &buffer[..n])?;
                        self.observe(direction, &buffer[..n]);
                        Ok(n)
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.pipes[d].maybe_readable = false;
                        Ok(usize::MAX)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(usize::MAX),
                    Err(e) => Err(error_on(src, &e)),
                }
            })?;
            match read {
                0 => {
                    self.pipes[d].eof = true;
                    if self.first_eof.is_none() {
                        self.first_eof = Some(if d == 0 {
                            CloseReason::MinerClosed
                        } else {
                            CloseReason::PoolClosed
                        });
                        self.half_closed_at = Some(now);
                    }
                }
                usize::MAX => {}
                n => {
                    if d == 0 {
                        self.last_miner_read = now;
                    }
                    // A short read drained the socket: wait for readiness
                    // instead of a read that would only say EAGAIN.
                    if n < READ_BUFFER_BYTES {
                        self.pipes[d].maybe_readable = false;
                    }
                }
            }
        }
    }

    /// Writes `bytes` to the destination; keeps what it does not take.
    fn forward(&mut self, direction: Direction, bytes: &[u8]) -> Result<(), CloseReason> {
        let d = index(direction);
        let dst = 1 - d;
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
            self.pipes[d].unsent.extend_from_slice(&bytes[written..]);
        }
        Ok(())
    }

    /// Writes what is left in `unsent`; true once nothing is left.
    fn flush(&mut self, direction: Direction, cx: &mut Context<'_>) -> Result<bool, CloseReason> {
        let d = index(direction);
        let dst = 1 - d;
        loop {
            let pipe = &mut self.pipes[d];
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
        self.conn.bytes[index(direction)] += bytes as u64;
        self.conn.emit(Event::Relayed { direction, bytes });
    }

    /// Frames the bytes just forwarded and reports every line.
    fn observe(&mut self, direction: Direction, bytes: &[u8]) {
        let d = index(direction);
        let conn = &mut *self.conn;
        let mut lines = false;
        self.pipes[d].framer.push(bytes, |frame| {
            lines = true;
            report(conn, direction, frame);
        });
        if lines && d == 0 {
            self.handshake_done = true;
        }
    }

    /// The earliest moment a timeout could fire, and which.
    fn next_deadline(&self) -> (Instant, CloseReason) {
        let idle = (
            self.last_miner_read + self.limits.idle_timeout,
            CloseReason::IdleTimeout,
        );
        let mut next = idle;
        if !self.handshake_done {
            let handshake = (
                self.conn.accepted_at + self.limits.handshake_timeout,
                CloseReason::HandshakeTimeout,
            );
            if handshake.0 < next.0 {
                next = handshake;
            }
        }
        if let Some(at) = self.half_closed_at {
            let half = (at + HALF_CLOSE_TIMEOUT, CloseReason::HalfCloseTimeout);
            if half.0 < next.0 {
                next = half;
            }
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
}

/// Reports one framed line to the observer.
fn report<O: Observer>(
    conn: &mut ObservedConnection<'_, O>,
    direction: Direction,
    frame: Frame<'_>,
) {
    match frame {
        Frame::Overlong(line_bytes) => conn.emit(Event::ParseFailed {
            direction,
            failure: ParseFailure::TooLong,
            line_bytes,
        }),
        Frame::Line(line) => match Message::parse(line) {
            Ok(message) => {
                let message = &message;
                conn.emit(match message.kind() {
                    Kind::Request => Event::Request { direction, message },
                    Kind::Response => Event::Response { direction, message },
                    Kind::Notification => Event::Notification { direction, message },
                })
            }
            Err(failure) => conn.emit(Event::ParseFailed {
                direction,
                failure,
                line_bytes: line.len(),
            }),
        },
    }
}

impl<O: Observer> Future for Relay<'_, '_, O> {
    type Output = CloseReason;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<CloseReason> {
        let this = self.get_mut();
        // One clock read per poll serves the activity stamps and the deadline check.
        let now = Instant::now();
        for direction in DIRECTIONS {
            if let Err(reason) = this.pump(direction, now, cx) {
                return Poll::Ready(reason);
            }
        }
        let done = |p: &Pipe| p.eof && p.shut;
        if done(&this.pipes[0]) && done(&this.pipes[1]) {
            return Poll::Ready(this.first_eof.unwrap_or(CloseReason::MinerClosed));
        }
        this.poll_deadlines(now, cx)
    }
}
