//! The HTTP side: `/metrics`, `/healthz` and `/status` on tiny_http.
//!
//! It runs on its own threads, never on the relay's executor, so a slow or
//! hostile HTTP client cannot stall relaying. A fixed number of worker
//! threads answer requests; tiny_http reads each connection on a thread of
//! its own, so accepted sockets inherit read/write timeouts from the listener
//! and a client that stops sending is dropped after [`HTTP_IO_TIMEOUT`].

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Value, json};
use tiny_http::{Header, Method, Request, Response, Server};

use crate::config::Secret;
use crate::metrics::{Collector, process};

/// Read and write timeout of every HTTP connection.
pub const HTTP_IO_TIMEOUT: Duration = Duration::from_secs(10);

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
        if path != "/healthz" {
            if let Some(token) = &self.token {
                if !authorization.is_some_and(|a| token.matches_bearer(a)) {
                    return Reply::text(401, "unauthorized: send Authorization: Bearer <token>\n");
                }
            }
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
        status
    }
}

/// The running HTTP server.
pub struct HttpServer {
    server: Arc<Server>,
    workers: Vec<JoinHandle<()>>,
    local_addr: SocketAddr,
}

impl HttpServer {
    /// Binds `listen` (port 0: any free port) and starts `threads` workers.
    pub fn start(listen: SocketAddr, threads: usize, app: Arc<App>) -> io::Result<HttpServer> {
        let listener = TcpListener::bind(listen)?;
        let local_addr = listener.local_addr()?;
        let listener = with_io_timeouts(listener, HTTP_IO_TIMEOUT)?;
        let server = Arc::new(
            Server::from_listener(listener, None).map_err(|e| io::Error::other(e.to_string()))?,
        );
        let workers = (0..threads.max(1))
            .map(|n| {
                let server = server.clone();
                let app = app.clone();
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || {
                        while let Ok(request) = server.recv() {
                            answer(&app, request);
                        }
                    })
            })
            .collect::<io::Result<Vec<_>>>()?;
        Ok(HttpServer {
            server,
            workers,
            local_addr,
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the workers.
    pub fn stop(self) {
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
        .with_header(header);
    if reply.status == 405 {
        response.add_header(Header::from_bytes(&b"Allow"[..], &b"GET, HEAD"[..]).expect("static"));
    }
    let _ = if head {
        request.respond(Response::empty(reply.status))
    } else {
        request.respond(response)
    };
}

/// Sets SO_RCVTIMEO/SO_SNDTIMEO on a listening socket; Linux copies them to
/// every socket it accepts, which is how tiny_http's per-connection threads
/// get a timeout without us owning its accept loop.
fn with_io_timeouts(listener: TcpListener, timeout: Duration) -> io::Result<TcpListener> {
    // The fd is the same socket throughout; TcpStream only lends its setters.
    let stream = TcpStream::from(OwnedFd::from(listener));
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    Ok(TcpListener::from(OwnedFd::from(stream)))
}
