//! The relay's own readiness reactor: edge-triggered epoll, one per executor
//! thread, driven by [`block_on`] on that thread.
//!
//! Why not async-io's reactor for the relay sockets: measured with `strace -c`
//! in the steady benchmark (one message per wakeup), async-io's `polling`
//! backend re-arms a one-shot registration with `epoll_ctl` after every
//! event, and around every `epoll_wait` it arms a timerfd (`timerfd_settime`
//! plus an `epoll_ctl`) and clears its notifier (an eventfd `read` plus an
//! `epoll_ctl`); a second thread of its own competes for the reactor lock
//! (`futex`). That was 6.6 system calls per relayed message against HAProxy's
//! 4.2. Here a socket is registered once, edge-triggered, for reading and
//! writing; a wakeup costs one `epoll_wait`, and an event costs nothing more
//! than setting a bit and waking the one task that owns the socket. The
//! registration is also smaller than async-io's (two waker lists per socket).
//!
//! Everything else (the listener, timers, channels, the simulators) stays on
//! smol and async-io: async-io's own thread drives its reactor while
//! executor threads sleep in [`block_on`] here, and its wakeups reach us
//! through an eventfd.
//!
//! Readiness is edge-triggered, so it is a bit that an event sets and a
//! caller takes: [`Registered::poll_readable`] returns `Ready` once per event
//! and clears the bit, and the caller then reads until a short read or
//! `WouldBlock`. Data arriving after that read raises a new event.
//!
//! A socket registered on a thread that is not running [`block_on`] (a test
//! on smol's own `block_on`, say) goes to a shared reactor that a thread of
//! its own drives, so it works everywhere and is fast where it matters.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Wake, Waker};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::{EventfdFlags, Timespec, eventfd};

/// Readiness bits of a source: taken by the poll that returns `Ready`.
const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
/// Sticky bits, never taken: the peer shut its write side (reads will end)
/// or the socket hung up or failed (both ways will end). Without them a FIN
/// that arrives with the last data, in the same event, would be lost after
/// the short read that takes that data: no new edge follows.
const READ_CLOSED: u8 = 4;
const WRITE_CLOSED: u8 = 8;
/// The four bits of one socket; a second socket of the same task (see
/// [`Registered::new_beside`]) has them shifted by [`SECOND_SHIFT`].
const SOCKET_BITS: u8 = 0xf;
const SECOND_SHIFT: u8 = 4;

/// The epoll key of a reactor's wakeup eventfd.
const WAKE_KEY: u64 = u64::MAX;

/// Events taken from the kernel per `epoll_wait`.
const EVENTS_PER_TURN: usize = 256;

/// One epoll instance with its registered sources.
pub struct Reactor {
    epoll: OwnedFd,
    /// Written by other threads to end an `epoll_wait` (see [`Unparker`]).
    wake: OwnedFd,
    /// A thread is in, or about to enter, a blocking `epoll_wait`.
    sleeping: AtomicBool,
    sources: Mutex<Slab>,
}

/// Registered sources by key: the slot index in the low 32 bits and the
/// slot's generation in the high 32, so an event that was already taken from
/// the kernel for a source removed since is recognised and dropped.
#[derive(Default)]
struct Slab {
    slots: Vec<Slot>,
    free: Vec<u32>,
}

struct Slot {
    generation: u32,
    /// Where this socket's bits are in `source.ready`.
    shift: u8,
    source: Option<Arc<Source>>,
}

/// What an event updates and a task polls: one per task, for up to two
/// sockets (a relay's miner and pool), four readiness bits each.
struct Source {
    ready: AtomicU8,
    /// The task waiting on this source. Its sockets belong to one task,
    /// which waits for reading and writing with the same waker, so one
    /// slot does.
    waker: Mutex<Option<Waker>>,
}

impl Slab {
    fn insert(&mut self, source: Arc<Source>, shift: u8) -> u64 {
        let index = match self.free.pop() {
            Some(index) => index,
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    shift: 0,
                    source: None,
                });
                u32::try_from(self.slots.len() - 1).expect("fewer than 2^32 sources")
            }
        };
        let slot = &mut self.slots[index as usize];
        slot.source = Some(source);
        slot.shift = shift;
        u64::from(slot.generation) << 32 | u64::from(index)
    }

    /// The source of `key` and the shift of its bits.
    fn get(&self, key: u64) -> Option<(&Arc<Source>, u8)> {
        let slot = self.slots.get((key & 0xffff_ffff) as usize)?;
        if u64::from(slot.generation) != key >> 32 {
            return None;
        }
        Some((slot.source.as_ref()?, slot.shift))
    }

    fn remove(&mut self, key: u64) {
        let index = (key & 0xffff_ffff) as u32;
        if let Some(slot) = self.slots.get_mut(index as usize)
            && u64::from(slot.generation) == key >> 32
            && slot.source.take().is_some()
        {
            slot.generation = slot.generation.wrapping_add(1);
            self.free.push(index);
        }
    }
}

impl Reactor {
    fn new() -> io::Result<Reactor> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let wake = eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)?;
        epoll::add(
            &epoll,
            &wake,
            EventData::new_u64(WAKE_KEY),
            EventFlags::IN | EventFlags::ET,
        )?;
        Ok(Reactor {
            epoll,
            wake,
            sleeping: AtomicBool::new(false),
            sources: Mutex::new(Slab::default()),
        })
    }

    fn sources(&self) -> MutexGuard<'_, Slab> {
        // The slab is consistent at every await-free step; a panic elsewhere
        // while it was held leaves nothing half-done.
        self.sources.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits for events (or only looks, if `block` is false) and wakes the
    /// tasks they concern. `sleeping` must have been set by the caller.
    fn turn(
        &self,
        events: &mut Vec<epoll::Event>,
        wakers: &mut Vec<Waker>,
        block: bool,
    ) -> io::Result<()> {
        const NO_WAIT: Timespec = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        events.clear();
        let result = epoll::wait(
            &self.epoll,
            rustix::buffer::spare_capacity(events),
            if block { None } else { Some(&NO_WAIT) },
        );
        self.sleeping.store(false, Ordering::SeqCst);
        match result {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        {
            let sources = self.sources();
            for event in events.iter() {
                let key = event.data.u64();
                if key == WAKE_KEY {
                    let mut count = [0u8; 8];
                    let _ = rustix::io::read(&self.wake, &mut count);
                    continue;
                }
                let Some((source, shift)) = sources.get(key) else {
                    continue;
                };
                let flags = event.flags;
                let mut bits = 0;
                if flags.intersects(EventFlags::IN | EventFlags::PRI) {
                    bits |= READABLE;
                }
                if flags.contains(EventFlags::OUT) {
                    bits |= WRITABLE;
                }
                if flags.contains(EventFlags::RDHUP) {
                    bits |= READABLE | READ_CLOSED;
                }
                if flags.intersects(EventFlags::HUP | EventFlags::ERR) {
                    bits |= READABLE | WRITABLE | READ_CLOSED | WRITE_CLOSED;
                }
                source.ready.fetch_or(bits << shift, Ordering::AcqRel);
                if let Some(waker) = lock(&source.waker).as_ref() {
                    wakers.push(waker.clone());
                }
            }
        }
        // Woken outside the slab lock: a waker may do anything.
        for waker in wakers.drain(..) {
            waker.wake();
        }
        Ok(())
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// This thread's reactor, once it has run [`block_on`].
    static THREAD_REACTOR: RefCell<Option<Arc<Reactor>>> = const { RefCell::new(None) };
    /// Whether this thread is inside [`block_on`] (and so drives its reactor).
    static DRIVING: Cell<u32> = const { Cell::new(0) };
}

/// The reactor for a socket registered now: this thread's while it runs
/// [`block_on`], else the shared one.
fn current() -> io::Result<Arc<Reactor>> {
    if DRIVING.get() > 0
        && let Some(reactor) = THREAD_REACTOR.with(|r| r.borrow().clone())
    {
        return Ok(reactor);
    }
    shared()
}

/// The reactor for sources registered off the executor threads, driven by a
/// thread of its own.
fn shared() -> io::Result<Arc<Reactor>> {
    static SHARED: OnceLock<Arc<Reactor>> = OnceLock::new();
    if let Some(reactor) = SHARED.get() {
        return Ok(reactor.clone());
    }
    let reactor = Arc::new(Reactor::new()?);
    if SHARED.set(reactor.clone()).is_ok() {
        let driven = reactor.clone();
        std::thread::Builder::new()
            .name("relay-reactor".into())
            .spawn(move || {
                let mut events = Vec::with_capacity(EVENTS_PER_TURN);
                let mut wakers = Vec::new();
                loop {
                    driven.sleeping.store(true, Ordering::SeqCst);
                    if let Err(e) = driven.turn(&mut events, &mut wakers, true) {
                        log::error!("relay reactor: epoll_wait failed: {e}");
                        std::thread::sleep(std::time::Duration::from_millis(100));
                    }
                }
            })?;
    }
    Ok(SHARED.get().expect("set above").clone())
}

/// Wakes a thread in [`block_on`]: a flag, plus an eventfd write only when
/// that thread is asleep in `epoll_wait`, so wakeups from the thread itself
/// (an event waking a task it runs) cost no system call.
struct Unparker {
    reactor: Arc<Reactor>,
    notified: AtomicBool,
}

impl Wake for Unparker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // SeqCst pairs with block_on's store of `sleeping` then swap of
        // `notified`: at least one side sees the other's store.
        if !self.notified.swap(true, Ordering::SeqCst)
            && self.reactor.sleeping.load(Ordering::SeqCst)
        {
            let _ = rustix::io::write(&self.reactor.wake, &1u64.to_ne_bytes());
        }
    }
}

/// Runs `future` to completion on this thread, driving this thread's reactor
/// while it waits: the executor threads of the relay run
/// `block_on(executor.run(..))`.
pub fn block_on<T>(future: impl Future<Output = T>) -> T {
    let reactor = THREAD_REACTOR.with(|r| {
        r.borrow_mut()
            .get_or_insert_with(|| Arc::new(Reactor::new().expect("create epoll reactor")))
            .clone()
    });
    struct Driving;
    impl Drop for Driving {
        fn drop(&mut self) {
            DRIVING.set(DRIVING.get() - 1);
        }
    }
    DRIVING.set(DRIVING.get() + 1);
    let _driving = Driving;

    let unparker = Arc::new(Unparker {
        reactor: reactor.clone(),
        notified: AtomicBool::new(false),
    });
    let waker = Waker::from(unparker.clone());
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    let mut events = Vec::with_capacity(EVENTS_PER_TURN);
    let mut wakers = Vec::new();
    loop {
        // Wakes from the last turn's events are answered by this poll; only
        // one during the poll (or after) may keep us from sleeping.
        unparker.notified.store(false, Ordering::SeqCst);
        if let Poll::Ready(value) = future.as_mut().poll(&mut cx) {
            return value;
        }
        reactor.sleeping.store(true, Ordering::SeqCst);
        // Woken while polling: only look for events, do not sleep.
        let block = !unparker.notified.swap(false, Ordering::SeqCst);
        if let Err(e) = reactor.turn(&mut events, &mut wakers, block) {
            // EBADF/EINVAL cannot happen on our own epoll fd; do not spin.
            log::error!("relay reactor: epoll_wait failed: {e}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
}

/// An I/O object registered with a reactor, edge-triggered, for reading and
/// writing. It must already be in non-blocking mode.
pub struct Registered<T: AsFd> {
    source: Arc<Source>,
    reactor: Arc<Reactor>,
    key: u64,
    io: T,
    /// Where its bits are in `source.ready`.
    shift: u8,
}

impl<T: AsFd> Registered<T> {
    /// Registers `io` (non-blocking) with this thread's reactor.
    pub fn new(io: T) -> io::Result<Registered<T>> {
        let source = Arc::new(Source {
            ready: AtomicU8::new(0),
            waker: Mutex::new(None),
        });
        Registered::register(io, source, 0)
    }

    /// Registers `io` for the task that owns `first` (registered with
    /// [`new`](Self::new)): the two share one readiness record and waker,
    /// one allocation per task instead of one per socket. At most one
    /// socket is beside `first` at a time (a relay's pool, replaced on a
    /// redial after the previous one was dropped).
    pub fn new_beside<U: AsFd>(io: T, first: &Registered<U>) -> io::Result<Registered<T>> {
        debug_assert_eq!(first.shift, 0, "beside a first socket only");
        let source = first.source.clone();
        // Bits left by a previous socket in this place are not this one's.
        source
            .ready
            .fetch_and(!(SOCKET_BITS << SECOND_SHIFT), Ordering::AcqRel);
        Registered::register(io, source, SECOND_SHIFT)
    }

    fn register(io: T, source: Arc<Source>, shift: u8) -> io::Result<Registered<T>> {
        let reactor = current()?;
        let key = reactor.sources().insert(source.clone(), shift);
        let flags = EventFlags::IN | EventFlags::OUT | EventFlags::RDHUP | EventFlags::ET;
        if let Err(e) = epoll::add(&reactor.epoll, &io, EventData::new_u64(key), flags) {
            reactor.sources().remove(key);
            return Err(e.into());
        }
        Ok(Registered {
            source,
            reactor,
            key,
            io,
            shift,
        })
    }

    /// The I/O object, for reads and writes.
    pub fn get_ref(&self) -> &T {
        &self.io
    }

    /// `Ready` once per readiness event since the last `Ready`: read until a
    /// short read or `WouldBlock` before asking again.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(READABLE, READ_CLOSED, cx)
    }

    /// Like [`poll_readable`](Self::poll_readable), for writing: ask after a
    /// write returned `WouldBlock`.
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_ready(WRITABLE, WRITE_CLOSED, cx)
    }

    /// Takes `bit`, or sees the sticky `closed` bit, or waits.
    fn poll_ready(&self, bit: u8, closed: u8, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let (bit, closed) = (bit << self.shift, closed << self.shift);
        let ready = &self.source.ready;
        let now = ready.load(Ordering::Acquire);
        if now & closed != 0 {
            return Poll::Ready(Ok(()));
        }
        if now & bit != 0 {
            ready.fetch_and(!bit, Ordering::AcqRel);
            return Poll::Ready(Ok(()));
        }
        {
            let mut waker = lock(&self.source.waker);
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        // An event between the check above and storing the waker set the
        // bit without waking us: look again.
        if ready.fetch_and(!bit, Ordering::AcqRel) & (bit | closed) != 0 {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
}

impl<T: AsFd> Registered<T> {
    /// Stops taking events for `io` (it stays open until dropped): no
    /// event of it can touch the readiness bits afterwards, so a socket
    /// registered beside the same first one may take its place.
    pub fn deregister(&mut self) {
        if self.key == DEREGISTERED {
            return;
        }
        let _ = epoll::delete(&self.reactor.epoll, &self.io);
        // A later generation: an event already taken from the kernel for
        // this key is dropped.
        self.reactor.sources().remove(self.key);
        self.key = DEREGISTERED;
    }
}

/// The key of a [`Registered`] that no longer takes events.
const DEREGISTERED: u64 = u64::MAX - 1;

impl<T: AsFd> Drop for Registered<T> {
    fn drop(&mut self) {
        // Before `io` is closed (fields drop after this body).
        self.deregister();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        a.set_nonblocking(true).unwrap();
        b.set_nonblocking(true).unwrap();
        (a, b)
    }

    /// Reads until `want` bytes arrived, waiting on readiness in between.
    async fn read_exact(socket: &Registered<TcpStream>, want: usize) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buffer = [0u8; 4096];
        while got.len() < want {
            match socket.get_ref().read(&mut buffer) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::future::poll_fn(|cx| socket.poll_readable(cx))
                        .await
                        .unwrap();
                }
                Err(e) => panic!("read: {e}"),
            }
        }
        got
    }

    /// Two sockets of one task share one readiness record, each with its
    /// own bits; a socket put beside the first after the previous one was
    /// deregistered inherits none of its bits (a closed one's sticky bits
    /// would make every poll ready).
    #[test]
    fn sockets_beside_each_other_keep_their_own_readiness() {
        let (_a1, b1) = pair();
        let (mut a2, b2) = pair();
        let (mut a3, b3) = pair();
        block_on(async {
            let first = Registered::new(b1).unwrap();
            let mut second = Registered::new_beside(b2, &first).unwrap();
            a2.write_all(b"x").unwrap();
            assert_eq!(read_exact(&second, 1).await, b"x");
            drop(a2);
            // The peer's close reaches the second socket only.
            let mut buffer = [0u8; 8];
            std::future::poll_fn(|cx| second.poll_readable(cx))
                .await
                .unwrap();
            assert_eq!(second.get_ref().read(&mut buffer).unwrap(), 0);
            let waker = Waker::noop();
            let mut cx = Context::from_waker(waker);
            assert!(first.poll_readable(&mut cx).is_pending());
            second.deregister();
            let third = Registered::new_beside(b3, &first).unwrap();
            // Writable at once (a fresh connected socket), readable not yet.
            std::future::poll_fn(|cx| third.poll_writable(cx))
                .await
                .unwrap();
            assert!(third.poll_readable(&mut cx).is_pending(), "stale bits");
            assert!(first.poll_readable(&mut cx).is_pending());
            a3.write_all(b"y").unwrap();
            assert_eq!(read_exact(&third, 1).await, b"y");
            drop(second);
        });
    }

    #[test]
    fn block_on_wakes_on_data_from_another_thread() {
        let (a, b) = pair();
        let writer = std::thread::spawn(move || {
            let mut a = a;
            for chunk in [&b"first "[..], b"second"] {
                std::thread::sleep(std::time::Duration::from_millis(20));
                // Blocking write on a non-blocking socket: retry on WouldBlock.
                let mut rest = chunk;
                while !rest.is_empty() {
                    match a.write(rest) {
                        Ok(n) => rest = &rest[n..],
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("write: {e}"),
                    }
                }
            }
            a
        });
        let got = block_on(async {
            let b = Registered::new(b).unwrap();
            read_exact(&b, 12).await
        });
        assert_eq!(got, b"first second");
        drop(writer.join().unwrap());
    }

    /// Data and FIN in one event: after the short read that takes the data,
    /// readiness must still lead to the read that sees end of stream.
    #[test]
    fn end_of_stream_after_the_last_data_is_seen() {
        let (mut a, b) = pair();
        a.write_all(b"last words").unwrap();
        a.shutdown(std::net::Shutdown::Write).unwrap();
        // Both arrive before the first wait.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let got = block_on(smol::future::or(
            async {
                smol::Timer::after(std::time::Duration::from_secs(10)).await;
                panic!("end of stream never seen");
            },
            async {
                let b = Registered::new(b).unwrap();
                let mut got = Vec::new();
                let mut buffer = [0u8; 4096];
                loop {
                    std::future::poll_fn(|cx| b.poll_readable(cx))
                        .await
                        .unwrap();
                    match b.get_ref().read(&mut buffer) {
                        Ok(0) => break got,
                        // A short read: the relay waits for readiness next.
                        Ok(n) => got.extend_from_slice(&buffer[..n]),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(e) => panic!("read: {e}"),
                    }
                }
            },
        ));
        assert_eq!(got, b"last words");
    }

    #[test]
    fn writable_after_the_peer_drains() {
        let (a, mut b) = pair();
        // Small fixed buffers (no autotuning): 8 MiB cannot fit in them.
        rustix::net::sockopt::set_socket_send_buffer_size(&a, 16 * 1024).unwrap();
        rustix::net::sockopt::set_socket_recv_buffer_size(&b, 16 * 1024).unwrap();
        let reader = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(50));
            let mut total = 0;
            let mut buffer = [0u8; 65536];
            loop {
                match b.read(&mut buffer) {
                    Ok(0) => break total,
                    Ok(n) => total += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(std::time::Duration::from_millis(1))
                    }
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
        let written = block_on(async {
            let a = Registered::new(a).unwrap();
            let chunk = vec![7u8; 65536];
            let mut written = 0;
            let mut waits = 0;
            while written < 8 << 20 {
                match a.get_ref().write(&chunk) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        waits += 1;
                        std::future::poll_fn(|cx| a.poll_writable(cx))
                            .await
                            .unwrap();
                    }
                    Err(e) => panic!("write: {e}"),
                }
            }
            assert!(waits > 0, "8 MiB never filled the socket buffers");
            written
            // `a` closes here: the reader sees end of stream.
        });
        assert_eq!(reader.join().unwrap(), written);
    }

    #[test]
    fn sockets_registered_off_block_on_use_the_shared_reactor() {
        let (mut a, b) = pair();
        let b = Registered::new(b).unwrap();
        a.write_all(b"hello").unwrap();
        // smol's block_on does not drive our reactor; the shared one's thread does.
        let got = smol::block_on(read_exact(&b, 5));
        assert_eq!(got, b"hello");
    }

    #[test]
    fn removed_keys_are_not_found_again() {
        let mut slab = Slab::default();
        let source = || {
            Arc::new(Source {
                ready: AtomicU8::new(0),
                waker: Mutex::new(None),
            })
        };
        let first = slab.insert(source(), 0);
        slab.remove(first);
        let second = slab.insert(source(), 0);
        assert_eq!(first & 0xffff_ffff, second & 0xffff_ffff, "slot reused");
        assert!(slab.get(first).is_none(), "stale key must miss");
        assert!(slab.get(second).is_some());
        slab.remove(first);
        assert!(slab.get(second).is_some(), "stale remove must not remove");
    }
}
