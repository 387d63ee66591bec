//! Helpers for tests that run the real `stratum-proxy` binary as a child
//! process: start it on port 0, learn its addresses from its log, speak
//! plain HTTP to it and read its Prometheus text.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStderr, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::process::Signal;

/// Longest a test waits for any one condition.
pub const WAIT: Duration = Duration::from_secs(20);

/// A running proxy and everything it logged so far.
pub struct Proxy {
    pub child: Child,
    pub listen: SocketAddr,
    pub metrics: SocketAddr,
    pub log: Arc<Mutex<String>>,
    lines: Receiver<String>,
}

impl Proxy {
    /// Starts the proxy with `args` (plus port-0 listeners) and `env`, and
    /// waits until its log names both bound addresses.
    pub fn start(pool: SocketAddr, args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let pool = pool.to_string();
        let args: Vec<&str> = ["--pool", pool.as_str()]
            .into_iter()
            .chain(args.iter().copied())
            .collect();
        Proxy::start_without_pool(&args, env)
    }

    /// Like [`Proxy::start`], with no `--pool` flag (pools from a file).
    pub fn start_without_pool(args: &[&str], env: &[(&str, &str)]) -> Proxy {
        let mut command = crate::runner::command(env!("CARGO_BIN_EXE_stratum-proxy"));
        command
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command.spawn().expect("spawn stratum-proxy");
        let stderr = child.stderr.take().expect("stderr piped");
        let log = Arc::new(Mutex::new(String::new()));
        let lines = tail(stderr, log.clone());
        let mut listen = None;
        let mut metrics = None;
        let deadline = Instant::now() + WAIT;
        while listen.is_none() || metrics.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = lines.recv_timeout(left) else {
                // Not left running after the test (no Proxy to drop yet).
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "proxy did not report its addresses; log:\n{}",
                    log.lock().unwrap()
                )
            };
            if let Some(rest) = line.split("listening for miners on ").nth(1) {
                listen = rest.split([',', ' ']).next().and_then(|a| a.parse().ok());
            }
            if let Some(rest) = line.split("serving metrics on http://").nth(1) {
                metrics = rest.split('/').next().and_then(|a| a.parse().ok());
            }
        }
        Proxy {
            child,
            listen: listen.unwrap(),
            metrics: metrics.unwrap(),
            log,
            lines,
        }
    }

    /// Waits until a log line contains `needle`; returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(line) = self
                .log
                .lock()
                .unwrap()
                .lines()
                .find(|l| l.contains(needle))
            {
                return line.to_owned();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if self.lines.recv_timeout(left).is_err() {
                panic!(
                    "no log line with {needle:?}; log:\n{}",
                    self.log.lock().unwrap()
                );
            }
        }
    }

    /// GET `path` from the metrics port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http(self.metrics, "GET", path, &[])
    }

    /// Scrapes and parses `/metrics`.
    pub fn scrape(&self) -> Metrics {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Scrapes and parses `/metrics` with `headers` (a bearer token).
    pub fn scrape_with(&self, headers: &[(&str, &str)]) -> Metrics {
        let (status, body) = http(self.metrics, "GET", "/metrics", headers);
        assert_eq!(status, 200, "{body}");
        Metrics::parse(&body)
    }

    /// Re-scrapes until `done` holds (bounded by [`WAIT`]); returns the last scrape.
    pub fn scrape_until(&self, what: &str, done: impl Fn(&Metrics) -> bool) -> Metrics {
        let deadline = Instant::now() + WAIT;
        loop {
            let metrics = self.scrape();
            if done(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (`Signal::TERM`, `Signal::INT`) to the proxy.
    pub fn signal(&self, signal: Signal) {
        crate::runner::signal(&self.child, signal);
    }

    /// Waits for the process to exit (bounded); returns its exit code.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + WAIT + Duration::from_secs(40);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Let the stderr reader drain what is left.
                while self.lines.recv_timeout(Duration::from_millis(200)).is_ok() {}
                return status.code();
            }
            assert!(Instant::now() < deadline, "proxy did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Copies the child's stderr into `log` and forwards each line.
fn tail(stderr: ChildStderr, log: Arc<Mutex<String>>) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            {
                let mut log = log.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A minimal HTTP/1.1 request: (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    try_http(addr, method, path, headers).unwrap_or_else(|| panic!("no HTTP answer from {addr}"))
}

/// Like [`http`], but `None` when nothing answers (not listening yet).
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(u16, String)> {
    try_http_with_body(addr, method, path, headers, "")
}

/// Like [`http`], with a request body (sent with its `Content-Length`).
pub fn http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    try_http_with_body(addr, method, path, headers, body)
        .unwrap_or_else(|| panic!("no HTTP answer from {addr}"))
}

fn try_http_with_body(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(WAIT)).unwrap();
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Some((status, body))
}

/// The sample lines of a Prometheus text exposition, by `name{labels}`.
#[derive(Debug, Clone)]
pub struct Metrics {
    pub samples: BTreeMap<String, f64>,
    pub text: String,
}

impl Metrics {
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(|l| {
                let (key, value) = l
                    .rsplit_once(' ')
                    .unwrap_or_else(|| panic!("bad sample {l:?}"));
                (
                    key.to_owned(),
                    value
                        .parse::<f64>()
                        .unwrap_or_else(|_| panic!("bad value {l:?}")),
                )
            })
            .collect();
        Metrics {
            samples,
            text: text.to_owned(),
        }
    }

    /// Sum of every sample of `name` whose labels include all of `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.samples
            .iter()
            .filter(|(key, _)| {
                let (n, rest) = key.split_once('{').unwrap_or((key, ""));
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")))
            })
            .map(|(_, v)| v)
            .sum()
    }

    /// Whether any sample of `name` exists.
    pub fn has(&self, name: &str) -> bool {
        self.samples
            .keys()
            .any(|k| k == name || k.starts_with(&format!("{name}{{")))
    }
}

/// An executor on its own thread for the in-process simulators.
pub struct SimRuntime {
    pub executor: Arc<smol::Executor<'static>>,
    stop: Option<smol::channel::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SimRuntime {
    pub fn new() -> SimRuntime {
        let executor = Arc::new(smol::Executor::new());
        let (stop, stopped) = smol::channel::bounded::<()>(1);
        let thread = std::thread::spawn({
            let executor = executor.clone();
            move || {
                let _ = smol::block_on(executor.run(stopped.recv()));
            }
        });
        SimRuntime {
            executor,
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for SimRuntime {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A unique path in the temp dir for this test process.
pub fn temp_path(name: &str) -> std::path::PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    std::env::temp_dir().join(format!(
        "stratum-proxy-test-{}-{}-{name}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A pool-sim with default settings on a free loopback port.
pub fn default_pool(rt: &SimRuntime) -> stratum_proxy::sim::pool::PoolSim {
    stratum_proxy::sim::pool::PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        stratum_proxy::sim::pool::PoolConfig::default(),
    )
    .expect("pool-sim")
}
