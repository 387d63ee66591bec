//! The HTTP side: `/metrics`, `/healthz`, `/status`, the status page `/`
//! and its JSON API `/api/v1/` (see [`api`]) on tiny_http.
//!
//! It runs on its own threads, never on the relay's executor, so a slow or
//! hostile HTTP client cannot stall relaying. tiny_http reads request heads
//! without a size limit or a timeout and reads every connection on a thread
//! of its own: 16 clients sending `GET /` and then endless header bytes grew
//! the proxy by about 2.9 GiB in 20 s, and 40 idle connections from one
//! address kept every scraper out. So tiny_http listens only on an internal
//! loopback port, behind a front (the "gate", one thread) that:
//!
//! - reads each request head itself, into a buffer of [`MAX_HEAD_BYTES`],
//!   within [`HEAD_TIMEOUT`]: too long is answered 431, too slow 408, and the
//!   connection closed. Only the head is passed on, then the gate stops
//!   reading the client: bytes beyond the request stay in the kernel's
//!   socket buffer (bounded) and are dropped with the connection.
//! - admits at most [`MAX_HTTP_CONNECTIONS`] at once and
//!   [`MAX_HTTP_CONNECTIONS_PER_ADDRESS`] per source (an IPv4 address or
//!   an IPv6 /64). When either is
//!   full, a connection that has not sent a complete head yet is evicted
//!   (from the address holding the most, oldest first), so a new scraper
//!   always gets in; only when every slot is serving a complete request is
//!   the newcomer closed.
//! - reads a request body only when the head announces one with
//!   `Content-Length` (the admin API's `POST`s), at most [`MAX_BODY_BYTES`]
//!   (more is a 413, `Transfer-Encoding` a 411), within the same
//!   [`HEAD_TIMEOUT`]; the head is passed on with one header of the gate's
//!   own first, [`PEER_HEADER`], the client's address (tiny_http only sees
//!   the gate's loopback connection).
//! - cuts any connection after [`HTTP_CONNECTION_LIFETIME`].
//!
//! One request per connection (the gate half-closes tiny_http's side after
//! the head; scrapers reconnect). tiny_http's accept thread ends on its
//! first accept error (EMFILE, say) and its workers then wait forever; a
//! supervisor thread notices (a worker's `recv()` fails while not stopping,
//! or a worker thread ends) and starts a fresh tiny_http on a new internal
//! port, logging it. Threads: the gate, the supervisor, `http_threads`
//! workers and tiny_http's readers, which only ever see complete heads.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use smol::Timer;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::Secret;
use crate::metrics::{Collector, process};
use crate::relay::{PoolHealth, PoolStatus, Pools};
use crate::reload::Reloader;

pub mod api;

use api::{Action, ActionResult, RequestInfo};

/// The status page: HTML, CSS and JavaScript in one file, embedded.
pub const PAGE_HTML: &str = include_str!("page.html");
/// Longest request body accepted (an admin action's JSON is tens of bytes).
pub const MAX_BODY_BYTES: usize = 1024;
/// The header the gate puts first in every head it passes on: the client's
/// address. A client sending one too gets it ignored (the first one counts).
pub const PEER_HEADER: &str = "X-Stratum-Proxy-Peer";
/// Security headers of the page: no script, style or connection from
/// anywhere but itself, never framed.
const PAGE_HEADERS: &[(&str, &str)] = &[
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
];

/// Most HTTP connections held at once (reading a head or being served).
pub const MAX_HTTP_CONNECTIONS: usize = 32;
/// Most HTTP connections held at once from one source address.
pub const MAX_HTTP_CONNECTIONS_PER_ADDRESS: usize = 8;
/// Longest request head accepted, request line and headers (a Prometheus
/// scrape with a bearer token sends about 300 bytes); longer is a 431.
pub const MAX_HEAD_BYTES: usize = 4096;
/// Longest a client may take to send its request head; then a 408.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest an HTTP connection may stay open (a scrape takes milliseconds).
pub const HTTP_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Pause before starting tiny_http again after it died (EMFILE would
/// otherwise make the supervisor spin).
const RESTART_BACKOFF: Duration = Duration::from_millis(200);

/// Content type of the Prometheus text format 0.0.4.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Everything the endpoints read.
pub struct App {
    /// The metrics observer (health, status totals).
    pub collector: Arc<Collector>,
    /// Renders the registry.
    pub prometheus: PrometheusHandle,
    /// The effective configuration, secrets already masked.
    pub config: Value,
    /// If set, `/metrics`, `/status` and `/api/v1/` need
    /// `Authorization: Bearer <token>`, and admin actions are possible.
    pub token: Option<Secret>,
    /// Process start, for uptime.
    pub started: Instant,
    /// The relay's live connection count.
    pub active_connections: Box<dyn Fn() -> usize + Send + Sync>,
    /// The relay's pools, for their health in `/status` and admin actions.
    pub pools: Arc<Pools>,
    /// What SIGHUP runs, for the reload action (none in tests that have no
    /// configuration to reload).
    pub reloader: Option<Reloader>,
}

/// A response before it is written: status, content type, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status code.
    pub status: u16,
    /// Content-Type header value.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
    /// Other headers.
    pub headers: &'static [(&'static str, &'static str)],
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
            headers: &[],
        }
    }
}

impl App {
    /// Routes one request: method, URL, and what the API reads (headers,
    /// the client's address, the body).
    pub fn route(&self, method: &Method, url: &str, request: &RequestInfo<'_>) -> Reply {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        let request = RequestInfo { query, ..*request };
        if *method == Method::Post
            && let Some(action) = Action::parse(path)
        {
            return self.admin_post(&action, &request);
        }
        let api = path.starts_with("/api/v1/");
        let known = api || matches!(path, "/" | "/metrics" | "/healthz" | "/status");
        if !known {
            return Reply::text(
                404,
                "not found: try /, /metrics, /healthz, /status or /api/v1/\n",
            );
        }
        if !matches!(method, Method::Get | Method::Head) {
            return Reply::text(405, "method not allowed: use GET\n");
        }
        if path == "/" {
            return Reply {
                status: 200,
                content_type: "text/html; charset=utf-8",
                body: PAGE_HTML.to_owned(),
                headers: PAGE_HEADERS,
            };
        }
        if path != "/healthz"
            && let Some(token) = &self.token
            && !request
                .authorization
                .is_some_and(|a| token.matches_bearer(a))
        {
            return Reply::text(401, "unauthorized: send Authorization: Bearer <token>\n");
        }
        if api {
            return self.api_get(path, &request);
        }
        match path {
            "/metrics" => Reply {
                status: 200,
                content_type: METRICS_CONTENT_TYPE,
                body: self.render_metrics(),
                headers: &[],
            },
            "/healthz" => match self.collector.health() {
                Ok(text) => Reply::text(200, format!("{text}\n")),
                Err(text) => Reply::text(503, format!("{text}\n")),
            },
            _ => Reply {
                status: 200,
                content_type: "application/json",
                body: self.status().to_string(),
                headers: &[],
            },
        }
    }

    /// An admin `POST`: off without a token, same origin only, token checked.
    fn admin_post(&self, action: &Action, request: &RequestInfo<'_>) -> Reply {
        let Some(token) = &self.token else {
            return self.refuse(
                action,
                ActionResult::Forbidden,
                "admin actions are off: no metrics_token is configured",
                request,
            );
        };
        if let Some(origin) = request.origin {
            let own = request.host.map(|host| format!("http://{host}"));
            if own.as_deref() != Some(origin) {
                return self.refuse(
                    action,
                    ActionResult::Forbidden,
                    "cross-origin request refused: the Origin is not this gateway",
                    request,
                );
            }
        }
        if !request
            .authorization
            .is_some_and(|a| token.matches_bearer(a))
        {
            return self.refuse(
                action,
                ActionResult::Unauthorized,
                "unauthorized: send Authorization: Bearer <token>",
                request,
            );
        }
        self.admin(action, request)
    }

    /// The Prometheus exposition: the registry plus process figures.
    pub fn render_metrics(&self) -> String {
        // Refresh the reachability gauge before rendering it.
        let _ = self.collector.health();
        let mut out = self.prometheus.render();
        self.collector.render(&mut out);
        process::render(&mut out);
        out
    }

    fn status(&self) -> Value {
        let mut status = self.collector.status();
        status["version"] = json!(env!("CARGO_PKG_VERSION"));
        status["uptime_seconds"] = json!(self.started.elapsed().as_secs_f64());
        status["config"] = self.config.clone();
        status["connections"]["active"] = json!((self.active_connections)());
        status["healthy"] = json!(self.collector.health().is_ok());
        status["pools"] = pools_json(&self.pools.status());
        status
    }
}

/// Why the supervisor wakes up.
enum Notice {
    /// A worker saw tiny_http fail (its accept thread ended) or ended itself.
    Died { generation: u64, why: String },
    /// [`HttpServer::stop`].
    Stop,
}

/// One tiny_http instance on an internal loopback port, and its workers.
struct Backend {
    server: Arc<Server>,
    /// A handle on tiny_http's listening socket, to break it in tests.
    listener: TcpListener,
    workers: Vec<JoinHandle<()>>,
    port: u16,
}

impl Backend {
    fn start(
        generation: u64,
        threads: usize,
        app: &Arc<App>,
        notices: &mpsc::Sender<Notice>,
        stopping: &Arc<AtomicBool>,
    ) -> io::Result<Backend> {
        let internal = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let port = internal.local_addr()?.port();
        let listener = internal.try_clone()?;
        let server = Arc::new(
            Server::from_listener(internal, None).map_err(|e| io::Error::other(e.to_string()))?,
        );
        let workers = (0..threads.max(1))
            .map(|n| {
                let server = server.clone();
                let app = app.clone();
                let notices = notices.clone();
                let stopping = stopping.clone();
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || {
                        // Reports this worker's end however it ends (also by
                        // a panic in a debug build), unless we are stopping.
                        struct Ended {
                            generation: u64,
                            why: String,
                            notices: mpsc::Sender<Notice>,
                            stopping: Arc<AtomicBool>,
                        }
                        impl Drop for Ended {
                            fn drop(&mut self) {
                                if !self.stopping.load(Ordering::SeqCst) {
                                    let why = if std::thread::panicking() {
                                        "a worker panicked".to_owned()
                                    } else {
                                        std::mem::take(&mut self.why)
                                    };
                                    let _ = self.notices.send(Notice::Died {
                                        generation: self.generation,
                                        why,
                                    });
                                }
                            }
                        }
                        let mut ended = Ended {
                            generation,
                            why: String::new(),
                            notices,
                            stopping,
                        };
                        loop {
                            match server.recv() {
                                Ok(request) => answer(&app, request),
                                // Unblocked for a stop or a restart, or the
                                // accept thread's last error: done either way.
                                Err(e) => {
                                    ended.why = e.to_string();
                                    break;
                                }
                            }
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Backend {
            server,
            listener,
            workers,
            port,
        })
    }

    fn stop(self) {
        for _ in 0..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

/// The running HTTP server.
pub struct HttpServer {
    gate: Option<(smol::channel::Sender<()>, JoinHandle<()>)>,
    supervisor: Option<JoinHandle<()>>,
    notices: mpsc::Sender<Notice>,
    stopping: Arc<AtomicBool>,
    shared: Arc<Shared>,
    local_addr: SocketAddr,
}

/// What the gate, the supervisor and the handle share.
struct Shared {
    /// tiny_http's current internal port.
    port: AtomicU16,
    /// Times tiny_http was started again.
    restarts: AtomicU64,
    /// A clone of tiny_http's current listening socket.
    listener: std::sync::Mutex<Option<TcpListener>>,
}

impl HttpServer {
    /// Binds `listen` (port 0: any free port) and starts `threads` workers.
    pub fn start(listen: SocketAddr, threads: usize, app: Arc<App>) -> io::Result<HttpServer> {
        let public = TcpListener::bind(listen)?;
        let local_addr = public.local_addr()?;
        let stopping = Arc::new(AtomicBool::new(false));
        let (notices, notice_rx) = mpsc::channel();
        let backend = Backend::start(0, threads, &app, &notices, &stopping)?;
        let shared = Arc::new(Shared {
            port: AtomicU16::new(backend.port),
            restarts: AtomicU64::new(0),
            listener: std::sync::Mutex::new(backend.listener.try_clone().ok()),
        });
        let supervisor = std::thread::Builder::new()
            .name("http-supervisor".into())
            .spawn({
                let shared = shared.clone();
                let notices = notices.clone();
                let stopping = stopping.clone();
                move || supervise(backend, notice_rx, threads, app, notices, stopping, shared)
            })?;
        let (stop_gate, gate_stopped) = smol::channel::bounded::<()>(1);
        let public = async_net::TcpListener::try_from(public)?;
        let gate = std::thread::Builder::new()
            .name("http-gate".into())
            // Not smol::block_on: that would compete with the relay's thread
            // for async-io's reactor, and whichever thread holds it runs the
            // relay's epoll and must wake the relay thread for every event.
            .spawn({
                let shared = shared.clone();
                move || smol::future::block_on(gate(public, shared, gate_stopped))
            })?;
        Ok(HttpServer {
            gate: Some((stop_gate, gate)),
            supervisor: Some(supervisor),
            notices,
            stopping,
            shared,
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// How many times tiny_http was started again after it died.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts.load(Ordering::SeqCst)
    }

    /// Makes tiny_http's accept thread fail as it does on EMFILE (its
    /// listening socket is shut down, so `accept` returns an error): for
    /// tests of the supervisor.
    #[doc(hidden)]
    pub fn break_backend_accept(&self) {
        let listener = self
            .shared
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(listener) = listener.as_ref() {
            let _ = rustix::net::shutdown(listener, rustix::net::Shutdown::Read);
        }
    }

    /// Stops the gate, the supervisor and the workers.
    pub fn stop(mut self) {
        self.stopping.store(true, Ordering::SeqCst);
        if let Some((stop, gate)) = self.gate.take() {
            drop(stop);
            let _ = gate.join();
        }
        let _ = self.notices.send(Notice::Stop);
        if let Some(supervisor) = self.supervisor.take() {
            let _ = supervisor.join();
        }
    }
}

/// Restarts tiny_http whenever a worker of the current one reports its end.
fn supervise(
    mut backend: Backend,
    notices: mpsc::Receiver<Notice>,
    threads: usize,
    app: Arc<App>,
    notice_tx: mpsc::Sender<Notice>,
    stopping: Arc<AtomicBool>,
    shared: Arc<Shared>,
) {
    let mut generation = 0;
    while let Ok(notice) = notices.recv() {
        let why = match notice {
            Notice::Stop => break,
            // A late report from an instance already replaced.
            Notice::Died { generation: g, .. } if g != generation => continue,
            Notice::Died { why, .. } => why,
        };
        log::error!("metrics HTTP server stopped ({why}); starting it again");
        // The old instance's workers are unblocked and joined; its accept
        // thread has ended or ends when the last handle is dropped.
        backend.stop();
        generation += 1;
        loop {
            std::thread::sleep(RESTART_BACKOFF);
            match Backend::start(generation, threads, &app, &notice_tx, &stopping) {
                Ok(next) => {
                    backend = next;
                    break;
                }
                Err(e) => log::error!("metrics HTTP server: cannot start again ({e}); retrying"),
            }
            if stopping.load(Ordering::SeqCst) {
                return;
            }
        }
        shared.port.store(backend.port, Ordering::SeqCst);
        *shared.listener.lock().unwrap_or_else(|e| e.into_inner()) =
            backend.listener.try_clone().ok();
        shared.restarts.fetch_add(1, Ordering::SeqCst);
        log::warn!(
            "metrics HTTP server started again on internal port {}",
            backend.port
        );
    }
    backend.stop();
}

fn answer(app: &App, mut request: Request) {
    let header = |name: &str| {
        request
            .headers()
            .iter()
            .find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name))
            .map(|h| h.value.as_str().to_owned())
    };
    let authorization = header("Authorization");
    let origin = header("Origin");
    let host = header("Host");
    let peer = header(PEER_HEADER);
    // The gate passed on at most MAX_BODY_BYTES, and only what
    // Content-Length announced.
    let mut body = Vec::new();
    if request.body_length().is_some_and(|n| n > 0) {
        use std::io::Read;
        let _ = request
            .as_reader()
            .take(MAX_BODY_BYTES as u64)
            .read_to_end(&mut body);
    }
    let info = RequestInfo {
        query: "",
        authorization: authorization.as_deref(),
        origin: origin.as_deref(),
        host: host.as_deref(),
        peer: peer.as_deref(),
        body: &body,
    };
    let reply = app.route(request.method(), request.url(), &info);
    let header = Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes())
        .expect("static header is valid");
    let head = *request.method() == Method::Head;
    let mut response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header)
        // A Content-Length instead of chunks: the body is in memory anyway
        // and the simplest scrapers (busybox wget, nc) read it as is.
        .with_chunked_threshold(usize::MAX);
    for (name, value) in reply.headers {
        if let Ok(header) = Header::from_bytes(name.as_bytes(), value.as_bytes()) {
            response.add_header(header);
        }
    }
    if reply.status == 405 {
        response.add_header(Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..]).expect("static"));
    }
    let _ = if head {
        request.respond(Response::empty(reply.status))
    } else {
        request.respond(response)
    };
}

/// How a request head ended when it did not arrive whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HeadError {
    /// Longer than [`MAX_HEAD_BYTES`]: 431.
    TooLarge,
    /// Not complete within [`HEAD_TIMEOUT`]: 408.
    TooSlow,
    /// The client closed or the read failed: nothing to answer.
    Closed,
    /// Its slot was given to a newer connection.
    Evicted,
    /// A body longer than [`MAX_BODY_BYTES`]: 413.
    BodyTooLarge,
    /// A body without `Content-Length` (chunked): 411.
    LengthRequired,
    /// A malformed or repeated `Content-Length`: 400.
    BadLength,
}

/// The body length a request head announces: `Ok(0)` without one.
fn body_length(head: &[u8]) -> Result<usize, HeadError> {
    let mut length = None;
    for line in head.split(|&b| b == b'\n').skip(1) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HeadError::LengthRequired);
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let value = std::str::from_utf8(value)
                .ok()
                .map(str::trim)
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(HeadError::BadLength)?;
            if length.is_some_and(|l| l != value) {
                return Err(HeadError::BadLength);
            }
            length = Some(value);
        }
    }
    match length {
        None => Ok(0),
        Some(n) if n > MAX_BODY_BYTES as u64 => Err(HeadError::BodyTooLarge),
        Some(n) => Ok(n as usize),
    }
}

/// Where a request head ends: the index just past the blank line (`\r\n\r\n`,
/// or `\n\n` as lenient servers accept), if `bytes` holds one.
pub fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = memchr::memchr(b'\n', &bytes[from..]) {
        let at = from + i;
        let rest = &bytes[at + 1..];
        if rest.starts_with(b"\n") {
            return Some(at + 2);
        }
        if rest.starts_with(b"\r\n") {
            return Some(at + 3);
        }
        from = at + 1;
    }
    None
}

/// A connection's place in the gate's table.
struct Entry {
    addr: IpAddr,
    /// Set while the head is still being read: dropping it evicts.
    evict: Option<smol::channel::Sender<()>>,
}

/// The connections the gate holds, by admission order.
#[derive(Default)]
struct Table {
    entries: std::collections::BTreeMap<u64, Entry>,
    per_addr: HashMap<IpAddr, usize>,
    next: u64,
}

impl Table {
    /// Makes room for one more from `addr` (evicting a connection that is
    /// still reading its head if a limit is reached); `None` if every
    /// candidate is serving a request.
    fn admit(&mut self, addr: IpAddr) -> Option<(u64, smol::channel::Receiver<()>)> {
        if self.per_addr.get(&addr).copied().unwrap_or(0) >= MAX_HTTP_CONNECTIONS_PER_ADDRESS
            && !self.evict_one(Some(addr))
        {
            return None;
        }
        if self.entries.len() >= MAX_HTTP_CONNECTIONS && !self.evict_one(None) {
            return None;
        }
        let (evict, evicted) = smol::channel::bounded(1);
        let id = self.next;
        self.next += 1;
        self.entries.insert(
            id,
            Entry {
                addr,
                evict: Some(evict),
            },
        );
        *self.per_addr.entry(addr).or_default() += 1;
        Some((id, evicted))
    }

    /// Evicts the oldest connection still reading its head: from `addr`, or
    /// else from the address holding the most connections.
    fn evict_one(&mut self, addr: Option<IpAddr>) -> bool {
        let victim = self
            .entries
            .iter()
            .filter(|(_, e)| e.evict.is_some() && addr.is_none_or(|a| a == e.addr))
            // max_by_key keeps the last maximum: iterate newest first so the
            // oldest of the busiest address wins.
            .rev()
            .max_by_key(|(_, e)| self.per_addr.get(&e.addr).copied().unwrap_or(0))
            .map(|(id, _)| *id);
        match victim {
            Some(id) => {
                self.remove(id);
                true
            }
            None => false,
        }
    }

    /// The head is complete: no longer a candidate for eviction.
    fn serving(&mut self, id: u64) {
        if let Some(entry) = self.entries.get_mut(&id) {
            entry.evict = None;
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(entry) = self.entries.remove(&id)
            && let Some(count) = self.per_addr.get_mut(&entry.addr)
        {
            *count -= 1;
            if *count == 0 {
                self.per_addr.remove(&entry.addr);
            }
        }
    }
}

/// Admits public HTTP connections (bounded, per address, evicting the ones
/// without a complete request first) and serves each through tiny_http.
async fn gate(
    public: async_net::TcpListener,
    shared: Arc<Shared>,
    stopped: smol::channel::Receiver<()>,
) {
    let executor = smol::LocalExecutor::new();
    let table = Rc::new(RefCell::new(Table::default()));
    let accept = async {
        loop {
            let (client, peer) = match public.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("metrics port: accept failed, backing off: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let source = crate::relay::per_address::source_key(peer.ip());
            let Some((id, evicted)) = table.borrow_mut().admit(source) else {
                log::debug!("metrics port: every slot is serving a request; closed peer={peer}");
                continue; // Dropped: closed at once.
            };
            let table = table.clone();
            let shared = shared.clone();
            executor
                .spawn(async move {
                    let _ = smol::future::or(
                        serve(client, peer, id, &table, &shared, evicted),
                        async {
                            Timer::after(HTTP_CONNECTION_LIFETIME).await;
                            Ok(())
                        },
                    )
                    .await;
                    table.borrow_mut().remove(id);
                })
                .detach();
        }
    };
    executor
        .run(smol::future::or(accept, async {
            let _ = stopped.recv().await;
        }))
        .await;
}

/// A request as the gate read it: head and announced body, in one buffer.
struct Head {
    /// Where the head ends.
    head: usize,
    /// The body's announced length.
    body: usize,
}

/// Reads a request head into `buf`, then its body (if it announces one)
/// into `body`; returns their lengths.
async fn read_request(
    client: &mut async_net::TcpStream,
    buf: &mut [u8; MAX_HEAD_BYTES],
    body: &mut [u8; MAX_BODY_BYTES],
) -> Result<Head, HeadError> {
    use smol::io::AsyncReadExt;
    let (head, filled) = read_head(client, buf).await?;
    let length = body_length(&buf[..head])?;
    let early = (filled - head).min(length);
    body[..early].copy_from_slice(&buf[head..head + early]);
    client
        .read_exact(&mut body[early..length])
        .await
        .map_err(|_| HeadError::Closed)?;
    Ok(Head { head, body: length })
}

/// Reads a request head into `buf`; returns its length and the bytes read.
async fn read_head(
    client: &mut async_net::TcpStream,
    buf: &mut [u8; MAX_HEAD_BYTES],
) -> Result<(usize, usize), HeadError> {
    use smol::io::AsyncReadExt;
    let mut filled = 0;
    loop {
        if filled == buf.len() {
            return Err(HeadError::TooLarge);
        }
        let n = client
            .read(&mut buf[filled..])
            .await
            .map_err(|_| HeadError::Closed)?;
        if n == 0 {
            return Err(HeadError::Closed);
        }
        // The terminator may straddle two reads: look back three bytes.
        let from = filled.saturating_sub(3);
        filled += n;
        if let Some(end) = head_end(&buf[from..filled]) {
            return Ok((from + end, filled));
        }
    }
}

/// Serves one connection: its head through tiny_http, or a 408/431.
async fn serve(
    mut client: async_net::TcpStream,
    peer: SocketAddr,
    id: u64,
    table: &RefCell<Table>,
    shared: &Shared,
    evicted: smol::channel::Receiver<()>,
) -> io::Result<()> {
    use smol::io::AsyncWriteExt;
    let mut buf = Box::new([0u8; MAX_HEAD_BYTES]);
    let mut body = Box::new([0u8; MAX_BODY_BYTES]);
    let head = smol::future::or(
        smol::future::or(read_request(&mut client, &mut buf, &mut body), async {
            let _ = evicted.recv().await;
            Err(HeadError::Evicted)
        }),
        async {
            Timer::after(HEAD_TIMEOUT).await;
            Err(HeadError::TooSlow)
        },
    )
    .await;
    let request = match head {
        Ok(request) => request,
        Err(error) => {
            let answer: &[u8] = match error {
                HeadError::TooLarge => {
                    b"HTTP/1.1 431 Request Header Fields Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                }
                HeadError::TooSlow => {
                    b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                }
                HeadError::BodyTooLarge => {
                    b"HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                }
                HeadError::LengthRequired => {
                    b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                }
                HeadError::BadLength => {
                    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                }
                HeadError::Closed | HeadError::Evicted => return Ok(()),
            };
            // Best effort: a client that reads nothing gets nothing, and the
            // connection's lifetime bounds the wait.
            client.write_all(answer).await?;
            let _ = client.shutdown(Shutdown::Both);
            return Ok(());
        }
    };
    table.borrow_mut().serving(id);
    let port = shared.port.load(Ordering::SeqCst);
    let mut server = async_net::TcpStream::connect((Ipv4Addr::LOCALHOST, port)).await?;
    // The request line, the gate's own header first, the other headers and
    // the body: the bytes read past the body (pipelined) are dropped.
    let line_end = memchr::memchr(b'\n', &buf[..request.head]).map_or(request.head, |i| i + 1);
    server.write_all(&buf[..line_end]).await?;
    server
        .write_all(format!("{PEER_HEADER}: {peer}\r\n").as_bytes())
        .await?;
    server.write_all(&buf[line_end..request.head]).await?;
    server.write_all(&body[..request.body]).await?;
    // One request per connection: tiny_http answers it, reads end of stream
    // and closes, which ends the copy below.
    server.shutdown(Shutdown::Write)?;
    drop(buf);
    drop(body);
    smol::io::copy(server, &mut client).await?;
    let _ = client.shutdown(Shutdown::Write);
    Ok(())
}

/// The pools' state for `/status`.
pub fn pools_json(pools: &[PoolStatus]) -> Value {
    Value::from(
        pools
            .iter()
            .map(|p| {
                let (state, reason) = match p.health {
                    PoolHealth::Up => ("up", None),
                    PoolHealth::Down(reason) => ("down", Some(reason.as_str())),
                };
                json!({
                    "name": p.spec.name,
                    "address": p.spec.addr.to_string(),
                    "priority": p.spec.priority,
                    "weight": p.spec.weight,
                    "state": state,
                    "down_reason": reason,
                    "since_seconds": p.since.as_secs_f64(),
                    "draining": p.draining,
                    "removed": p.removed,
                    "miners": p.sessions,
                    "notify_interval_seconds": p.notify_interval.map(|d| d.as_secs_f64()),
                    // Submitted share difficulty per second; × 2^32 = hashes/s.
                    "difficulty_per_second": p.difficulty_per_second,
                })
            })
            .collect::<Vec<_>>(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn head_end_finds_the_blank_line() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.1\n\nrest"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
        assert_eq!(head_end(b""), None);
        assert_eq!(head_end(b"\n\n"), Some(2));
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, last))
    }

    #[test]
    fn a_full_address_evicts_its_own_oldest_waiting_connection() {
        let mut table = Table::default();
        let first: Vec<_> = (0..MAX_HTTP_CONNECTIONS_PER_ADDRESS)
            .map(|_| table.admit(ip(1)).expect("room"))
            .collect();
        let (_, newest) = table.admit(ip(1)).expect("room by eviction");
        // The oldest was told to go (its sender dropped), the others not.
        assert!(first[0].1.is_closed());
        assert!(first[1..].iter().all(|(_, rx)| !rx.is_closed()));
        assert!(!newest.is_closed());
        assert_eq!(table.per_addr[&ip(1)], MAX_HTTP_CONNECTIONS_PER_ADDRESS);
    }

    #[test]
    fn a_full_table_evicts_from_the_busiest_address_and_never_a_served_one() {
        let mut table = Table::default();
        let mut held = Vec::new();
        let mut last = 2;
        while table.entries.len() < MAX_HTTP_CONNECTIONS {
            for _ in 0..MAX_HTTP_CONNECTIONS_PER_ADDRESS {
                if table.entries.len() < MAX_HTTP_CONNECTIONS {
                    held.push(table.admit(ip(last)).expect("room"));
                }
            }
            last += 1;
        }
        let (scraper, _rx) = table.admit(ip(1)).expect("a new scraper gets in");
        assert_eq!(held.iter().filter(|(_, rx)| rx.is_closed()).count(), 1);
        // Once every slot serves a request, nobody is evicted.
        table.serving(scraper);
        for (id, _) in &held {
            table.serving(*id);
        }
        assert!(table.admit(ip(200)).is_none());
    }

    proptest! {
        /// The head end is found whatever the chunking, as read_head scans.
        #[test]
        fn head_end_is_found_the_same_whatever_the_chunking(
            bytes in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'a'), any::<u8>()], 0..64),
            cuts in proptest::collection::vec(1usize..8, 0..16),
        ) {
            let whole = head_end(&bytes);
            if let Some(end) = whole {
                prop_assert!(end <= bytes.len());
                prop_assert!(head_end(&bytes[..end - 1]).is_none());
            }
            let mut filled = 0;
            let mut found = None;
            let mut cuts = cuts.into_iter();
            while filled < bytes.len() && found.is_none() {
                let n = cuts.next().unwrap_or(bytes.len()).min(bytes.len() - filled);
                let from = filled.saturating_sub(3);
                filled += n;
                found = head_end(&bytes[from..filled]).map(|e| from + e);
            }
            prop_assert_eq!(found, whole);
        }
    }
}
