//! The listener: accepts miners, applies the connection limits and spawns one
//! relay task per miner on the executor it is given.

use std::future::Future;
use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_net::TcpListener;
use smol::{Async, Executor, Timer};

use super::connection;
use super::event::{ConnectionInfo, Observer, RefuseReason};
use super::limits::Limits;
use super::per_address::AddressTable;
use super::pools::Pools;

/// Shortest pause after a failed `accept` (EMFILE and friends).
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
/// Longest pause after repeated failed `accept`s.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// What the accept loops share: the limits in force and their state.
struct Admission {
    limits: Arc<Limits>,
    bucket: TokenBucket,
    per_address: AddressTable,
}

impl Admission {
    fn new(limits: Limits) -> Admission {
        Admission {
            bucket: TokenBucket::new(limits.accept_rate_per_second, limits.accept_burst),
            per_address: AddressTable::new(limits.per_address.clone()),
            limits: Arc::new(limits),
        }
    }

    /// New limits for new connections; open ones keep theirs. The
    /// per-address counts carry over; the bucket restarts full only if its
    /// rate or size changed.
    fn replace(&mut self, limits: Limits) {
        if limits.accept_rate_per_second != self.limits.accept_rate_per_second
            || limits.accept_burst != self.limits.accept_burst
        {
            self.bucket = TokenBucket::new(limits.accept_rate_per_second, limits.accept_burst);
        }
        self.per_address = self.per_address.with_limits(limits.per_address.clone());
        self.limits = Arc::new(limits);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the listeners and their tasks share.
struct Shared<O> {
    pools: Arc<Pools>,
    admission: Arc<Mutex<Admission>>,
    observer: Arc<O>,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
}

/// A cheap handle to the relay's live state, from other threads.
#[derive(Clone)]
pub struct ServerHandle {
    active: Arc<AtomicUsize>,
    local_addrs: Vec<SocketAddr>,
    admission: Arc<Mutex<Admission>>,
}

impl ServerHandle {
    /// Miner connections open now.
    pub fn active_connections(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The address the (first) listener is bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every listener's address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Applies new limits to connections accepted from now on (a reload).
    pub fn set_limits(&self, limits: Limits) {
        lock(&self.admission).replace(limits);
    }
}

/// Bound listeners, ready to [`run`](Server::run).
pub struct Server<O: Observer> {
    listeners: Vec<TcpListener>,
    shared: Arc<Shared<O>>,
    handle: ServerHandle,
}

impl<O: Observer> Server<O> {
    /// Binds the listener (port 0 picks a free port; see [`Server::local_addr`]).
    pub async fn bind(
        listen: SocketAddr,
        pools: Arc<Pools>,
        limits: Limits,
        observer: Arc<O>,
    ) -> io::Result<Self> {
        Server::bind_all(&[listen], pools, limits, observer).await
    }

    /// Binds every address of `listens` (miners may arrive on any; routes
    /// may tell them apart). At least one address is needed.
    pub async fn bind_all(
        listens: &[SocketAddr],
        pools: Arc<Pools>,
        limits: Limits,
        observer: Arc<O>,
    ) -> io::Result<Self> {
        if listens.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no listen address",
            ));
        }
        let mut listeners = Vec::with_capacity(listens.len());
        let mut local_addrs = Vec::with_capacity(listens.len());
        for listen in listens {
            let listener = bind_listener(*listen)?;
            local_addrs.push(listener.local_addr()?);
            listeners.push(listener);
        }
        let active = Arc::new(AtomicUsize::new(0));
        let admission = Arc::new(Mutex::new(Admission::new(limits)));
        let handle = ServerHandle {
            active: active.clone(),
            local_addrs,
            admission: admission.clone(),
        };
        Ok(Server {
            listeners,
            shared: Arc::new(Shared {
                pools,
                admission,
                observer,
                active,
                next_id: AtomicU64::new(1),
            }),
            handle,
        })
    }

    /// The (first) bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// Every bound address.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        self.handle.local_addrs()
    }

    /// A handle for live state (active connections).
    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }

    /// Accepts and relays miners on `executor` until `stop` completes, then
    /// stops accepting and returns. Relays already open keep running on the
    /// executor; dropping the executor closes them.
    pub async fn run(self, executor: Arc<Executor<'static>>, stop: impl Future<Output = ()>) {
        // The accept loop is its own task: as the caller's future it would be
        // re-polled (an accept4 and a re-arm) on every executor wakeup.
        let checks = executor.spawn(self.shared.pools.clone().run_checks());
        let moves = executor.spawn(self.shared.pools.clone().run_moves());
        let accepts: Vec<_> = self
            .listeners
            .into_iter()
            .map(|listener| {
                executor.spawn(accept_loop(listener, self.shared.clone(), executor.clone()))
            })
            .collect();
        stop.await;
        for accept in accepts {
            let _ = accept.cancel().await;
        }
        let _ = checks.cancel().await;
        let _ = moves.cancel().await;
    }
}

/// Connections the kernel queues for `accept` per listener. std's 128 is
/// too few for a farm: when a pool dies, every miner reconnects at once,
/// and a SYN the full queue drops is retried only after a second (the
/// failover benchmark's slowest 1% was exactly that). Linux caps it at
/// `net.core.somaxconn` (4096 by default).
pub const LISTEN_BACKLOG: i32 = 4096;

/// Binds a listener with [`LISTEN_BACKLOG`] (address reuse as std does).
fn bind_listener(addr: SocketAddr) -> io::Result<TcpListener> {
    TcpListener::try_from(bind_std_listener(addr)?)
}

/// A blocking std listener with [`LISTEN_BACKLOG`] (the pool simulator
/// uses it too).
pub fn bind_std_listener(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType, ipproto, sockopt};
    let family = if addr.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let socket = rustix::net::socket_with(
        family,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        Some(ipproto::TCP),
    )?;
    sockopt::set_socket_reuseaddr(&socket, true)?;
    rustix::net::bind(&socket, &addr)?;
    rustix::net::listen(&socket, LISTEN_BACKLOG)?;
    Ok(std::net::TcpListener::from(socket))
}

/// Accepts miners forever, applying `max_connections` and the rate limit.
async fn accept_loop<O: Observer>(
    listener: TcpListener,
    shared: Arc<Shared<O>>,
    executor: Arc<Executor<'static>>,
) {
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => {
                backoff = ACCEPT_BACKOFF_MIN;
                accepted
            }
            Err(e) if is_transient_accept_error(&e) => continue,
            Err(e) => {
                // Out of descriptors or memory: back off instead of spinning;
                // the pending miner stays in the backlog until we can take it.
                shared.observer.accept_failed(&e);
                Timer::after(backoff).await;
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        let admitted = {
            let mut admission = lock(&shared.admission);
            let now = Instant::now();
            if shared.active.load(Ordering::Relaxed) >= admission.limits.max_connections {
                Err(RefuseReason::MaxConnections)
            } else {
                // Per address before the global bucket: a flooding host is
                // refused without spending the tokens every other miner needs.
                admission
                    .per_address
                    .admit(peer.ip(), now)
                    .and_then(|address| {
                        if admission.bucket.take(now) {
                            Ok((address, admission.limits.clone()))
                        } else {
                            Err(RefuseReason::RateLimit)
                        }
                    })
            }
        };
        let (address, limits) = match admitted {
            Ok(admitted) => admitted,
            Err(reason) => {
                drop(stream);
                shared.observer.refused(peer, reason);
                continue;
            }
        };
        // async-net keeps the socket in an Arc, registered with async-io; it
        // is ours alone here. The relay task registers it with its own
        // reactor instead (see `crate::reactor`).
        let Ok(stream) = Arc::try_unwrap(Arc::<Async<TcpStream>>::from(stream)) else {
            continue;
        };
        let Ok(stream) = stream.into_inner() else {
            continue;
        };
        let guard = ActiveGuard::new(&shared.active);
        let info = ConnectionInfo {
            id: shared.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            accepted_at: Instant::now(),
        };
        executor
            .spawn(connection::serve(
                stream,
                info,
                shared.pools.clone(),
                limits,
                shared.observer.clone(),
                (guard, address),
            ))
            .detach();
    }
}

/// Errors from `accept` that concern only the one connection being accepted.
fn is_transient_accept_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Counts a connection as active from accept until its task ends or is dropped.
struct ActiveGuard(Arc<AtomicUsize>);

impl ActiveGuard {
    fn new(active: &Arc<AtomicUsize>) -> Self {
        active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard(active.clone())
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// New-connection rate limit: `rate` tokens per second, at most `burst` saved.
#[derive(Debug)]
struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    fn new(rate: f64, burst: u32) -> Self {
        TokenBucket {
            rate,
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: Instant::now(),
        }
    }

    /// Takes one token if there is one.
    fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_bucket_allows_burst_then_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10.0, 3);
        bucket.last = start;
        assert!((0..3).all(|_| bucket.take(start)));
        assert!(!bucket.take(start));
        assert!(bucket.take(start + Duration::from_millis(100)));
        assert!(!bucket.take(start + Duration::from_millis(150)));
        // Saved tokens never exceed the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.take(later)));
        assert!(!bucket.take(later));
    }
}
