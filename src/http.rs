//! The HTTP side: `/metrics`, `/healthz` and `/status` on tiny_http.
//!
//! It runs on its own threads, never on the relay's executor, so a slow or
//! hostile HTTP client cannot stall relaying. tiny_http reads every
//! connection on a thread of its own and offers no connection limit or
//! socket timeout, so it listens only on an internal loopback port behind a
//! gate: one thread accepts the public port, admits at most
//! [`MAX_HTTP_CONNECTIONS`] at once, cuts each after [`HTTP_CONNECTION_LIFETIME`]
//! and splices the bytes through. Threads: the gate, at most
//! `MAX_HTTP_CONNECTIONS` tiny_http readers, and `http_threads` workers.

use std::cell::Cell;
use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener};
use std::rc::Rc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use smol::Timer;
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::Secret;
use crate::metrics::{Collector, process};
use crate::relay::{PoolHealth, PoolStatus, Pools};

/// Most HTTP connections served at once; more are closed on accept.
pub const MAX_HTTP_CONNECTIONS: usize = 16;
/// Longest an HTTP connection may stay open (a scrape takes milliseconds;
/// a keep-alive scraper simply reconnects).
pub const HTTP_CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

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
    /// If set, `/metrics` and `/status` need `Authorization: Bearer <token>`.
    pub token: Option<Secret>,
    /// Process start, for uptime.
    pub started: Instant,
    /// The relay's live connection count.
    pub active_connections: Box<dyn Fn() -> usize + Send + Sync>,
    /// The relay's pools, for their health in `/status`.
    pub pools: Arc<Pools>,
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
}

impl Reply {
    fn text(status: u16, body: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }
}

impl App {
    /// Routes one request: method, path (query ignored), Authorization header.
    pub fn route(&self, method: &Method, url: &str, authorization: Option<&str>) -> Reply {
        let path = url.split('?').next().unwrap_or(url);
        let known = matches!(path, "/metrics" | "/healthz" | "/status");
        if !known {
            return Reply::text(404, "not found: try /metrics, /healthz or /status\n");
        }
        if !matches!(method, Method::Get | Method::Head) {
            return Reply::text(405, "method not allowed: use GET\n");
        }
        if path != "/healthz"
            && let Some(token) = &self.token
            && !authorization.is_some_and(|a| token.matches_bearer(a))
        {
            return Reply::text(401, "unauthorized: send Authorization: Bearer <token>\n");
        }
        match path {
            "/metrics" => Reply {
                status: 200,
                content_type: METRICS_CONTENT_TYPE,
                body: self.render_metrics(),
            },
            "/healthz" => match self.collector.health() {
                Ok(text) => Reply::text(200, format!("{text}\n")),
                Err(text) => Reply::text(503, format!("{text}\n")),
            },
            _ => Reply {
                status: 200,
                content_type: "application/json",
                body: self.status().to_string(),
            },
        }
    }

    /// The Prometheus exposition: the registry plus process figures.
    pub fn render_metrics(&self) -> String {
        // Refresh the reachability gauge before rendering it.
        let _ = self.collector.health();
        let mut out = self.prometheus.render();
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

/// The running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
    gate: Option<(smol::channel::Sender<()>, JoinHandle<()>)>,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Binds `listen` (port 0: any free port) and starts `threads` workers.
    pub fn start(listen: SocketAddr, threads: usize, app: Arc<App>) -> io::Result<HttpServer> {
        let public = TcpListener::bind(listen)?;
        let local_addr = public.local_addr()?;
        let internal = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        let internal_addr = internal.local_addr()?;
        let server = Arc::new(
            Server::from_listener(internal, None).map_err(|e| io::Error::other(e.to_string()))?,
        );
        let (stop_gate, gate_stopped) = smol::channel::bounded::<()>(1);
        let public = async_net::TcpListener::try_from(public)?;
        let gate = std::thread::Builder::new()
            .name("http-gate".into())
            // Not smol::block_on: that would compete with the relay's thread
            // for async-io's reactor, and whichever thread holds it runs the
            // relay's epoll and must wake the relay thread for every event.
            .spawn(move || smol::future::block_on(gate(public, internal_addr, gate_stopped)))?;
        let workers = (0..threads.max(1))
            .map(|n| {
                let server = server.clone();
                let app = app.clone();
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || {
                        // recv() fails only when unblocked for shutdown or
                        // when tiny_http's accept thread died (then it will
                        // fail forever): either way this worker is done.
                        while let Ok(request) = server.recv() {
                            answer(&app, request);
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(HttpServer {
            server,
            workers,
            gate: Some((stop_gate, gate)),
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the gate and the workers.
    pub fn stop(mut self) {
        if let Some((stop, gate)) = self.gate.take() {
            drop(stop);
            let _ = gate.join();
        }
        self.server.unblock();
        for _ in 1..self.workers.len() {
            self.server.unblock();
        }
        for worker in self.workers {
            let _ = worker.join();
        }
    }
}

fn answer(app: &App, request: Request) {
    let authorization = request
        .headers()
        .iter()
        .find(|h| h.field.equiv("Authorization"))
        .map(|h| h.value.as_str().to_owned());
    let reply = app.route(request.method(), request.url(), authorization.as_deref());
    let header = Header::from_bytes(&b"Content-Type"[..], reply.content_type.as_bytes())
        .expect("static header is valid");
    let head = *request.method() == Method::Head;
    let mut response = Response::from_string(reply.body)
        .with_status_code(reply.status)
        .with_header(header)
        // A Content-Length instead of chunks: the body is in memory anyway
        // and the simplest scrapers (busybox wget, nc) read it as is.
        .with_chunked_threshold(usize::MAX);
    if reply.status == 405 {
        response.add_header(Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..]).expect("static"));
    }
    let _ = if head {
        request.respond(Response::empty(reply.status))
    } else {
        request.respond(response)
    };
}

/// Admits public HTTP connections (bounded, time-limited) and splices each
/// to tiny_http's internal listener.
async fn gate(
    public: async_net::TcpListener,
    internal: SocketAddr,
    stopped: smol::channel::Receiver<()>,
) {
    let executor = smol::LocalExecutor::new();
    let open = Rc::new(Cell::new(0usize));
    let accept = async {
        loop {
            let client = match public.accept().await {
                Ok((client, _)) => client,
                Err(e) => {
                    log::warn!("metrics port: accept failed, backing off: {e}");
                    Timer::after(Duration::from_millis(100)).await;
                    continue;
                }
            };
            if open.get() >= MAX_HTTP_CONNECTIONS {
                continue; // Dropped: closed at once.
            }
            open.set(open.get() + 1);
            let open = open.clone();
            executor
                .spawn(async move {
                    let _ = smol::future::or(splice(client, internal), async {
                        Timer::after(HTTP_CONNECTION_LIFETIME).await;
                        Ok(())
                    })
                    .await;
                    open.set(open.get() - 1);
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

/// Copies bytes both ways between a client and tiny_http until either ends.
async fn splice(client: async_net::TcpStream, internal: SocketAddr) -> io::Result<()> {
    let server = async_net::TcpStream::connect(internal).await?;
    let (client_read, server_write) = (client.clone(), server.clone());
    let up = async {
        let r = smol::io::copy(client_read, server_write.clone()).await;
        let _ = server_write.shutdown(Shutdown::Write);
        r
    };
    let down = async {
        let r = smol::io::copy(server, client.clone()).await;
        let _ = client.shutdown(Shutdown::Write);
        r
    };
    let (a, b) = smol::future::zip(up, down).await;
    a.and(b).map(drop)
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
                    "miners": p.sessions,
                    "notify_interval_seconds": p.notify_interval.map(|d| d.as_secs_f64()),
                })
            })
            .collect::<Vec<_>>(),
    )
}
