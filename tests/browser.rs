//! The status page in a real browser: Debian's Chromium, headless, driven
//! over the DevTools protocol, loads `/` from the real binary with three
//! pool simulators (one rejecting a fifth of the shares) and 30 miners
//! behind it. The page first asks for the token (no figures, no buttons);
//! once it is typed in, the rendered DOM must show the pools, their states
//! and miner counts as the API reports them, the admin buttons, and no
//! console error or exception; a pool killed during
//! the test shows as down on a later refresh, and a stopped gateway shows
//! the "not answering" banner. Screenshots go to the test's output folder
//! (`target/tmp/browser/`).
//!
//! Ignored by default (it needs `apt-get install chromium`); CI runs it
//! with `cargo test --test browser -- --ignored`. `CHROMIUM` names another
//! binary.
//!
//! The protocol runs over `--remote-debugging-pipe`: Chromium reads
//! commands on fd 3 and writes answers on fd 4, NUL-terminated JSON. A
//! shell maps them to the child's stdin and stdout (no unsafe `pre_exec`,
//! no WebSocket client).

mod daemon;
mod runner;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use daemon::{Proxy, SimRuntime, http, temp_path};
use serde_json::{Value, json};
use stratum_proxy::sim::RejectCode;
use stratum_proxy::sim::miner::{MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

const TOKEN: &str = "page-token-81d2";
const MINERS: usize = 30;
/// Longest the browser may take for any one condition (the page refreshes
/// every 5 s; a loaded CI machine runs Chromium slowly).
const BROWSER_WAIT: Duration = Duration::from_secs(90);

/// A headless Chromium and one page of it, over the DevTools pipe.
struct Browser {
    child: Child,
    input: ChildStdin,
    output: Receiver<Value>,
    session: String,
    next_id: u64,
    /// Console errors, exceptions and error log entries seen so far.
    errors: Vec<String>,
    /// Whether errors are still collected (not once the gateway is stopped
    /// on purpose).
    watching: bool,
}

impl Browser {
    fn start(profile: &std::path::Path) -> Browser {
        let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "chromium".into());
        let flags = [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--no-first-run",
            "--no-default-browser-check",
            "--remote-debugging-pipe",
        ];
        let mut child = Command::new("sh")
            .arg("-c")
            // fd 3 = commands (our stdin), fd 4 = answers (our stdout).
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(&chromium)
            .args(flags)
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {chromium}: {e}"));
        let input = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut message = Vec::new();
            while reader.read_until(0, &mut message).is_ok_and(|n| n > 0) {
                if message.last() == Some(&0) {
                    message.pop();
                }
                if let Ok(value) = serde_json::from_slice::<Value>(&message)
                    && tx.send(value).is_err()
                {
                    break;
                }
                message.clear();
            }
        });
        let mut browser = Browser {
            child,
            input,
            output,
            session: String::new(),
            next_id: 0,
            errors: Vec::new(),
            watching: true,
        };
        let target = browser.call(None, "Target.createTarget", json!({ "url": "about:blank" }));
        let target_id = target["targetId"].as_str().expect("targetId").to_owned();
        let attached = browser.call(
            None,
            "Target.attachToTarget",
            json!({ "targetId": target_id, "flatten": true }),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_owned();
        for domain in ["Runtime.enable", "Page.enable", "Log.enable"] {
            browser.page(domain, json!({}));
        }
        browser
    }

    /// Sends a command (to the page's session, or the browser's) and waits
    /// for its answer; events seen meanwhile are checked for errors.
    fn call(&mut self, session: Option<&str>, method: &str, params: Value) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut command = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = session {
            command["sessionId"] = json!(session);
        }
        let mut bytes = command.to_string().into_bytes();
        bytes.push(0);
        self.input.write_all(&bytes).expect("write to chromium");
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = self
                .output
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no answer from chromium to {method}"));
            if message["id"] == id {
                if let Some(error) = message.get("error") {
                    panic!("{method}: {error}");
                }
                return message["result"].clone();
            }
            self.event(&message);
        }
    }

    fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.call(Some(&session), method, params)
    }

    fn event(&mut self, message: &Value) {
        if !self.watching {
            return;
        }
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.consoleAPICalled")
                if matches!(params["type"].as_str(), Some("error" | "assert")) =>
            {
                self.errors.push(format!("console: {}", params["args"]));
            }
            Some("Runtime.exceptionThrown") => {
                self.errors
                    .push(format!("exception: {}", params["exceptionDetails"]));
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                self.errors.push(format!("log: {}", params["entry"]));
            }
            _ => {}
        }
    }

    /// Evaluates `expression` in the page; its value, or the exception.
    fn try_eval(&mut self, expression: &str) -> Result<Value, String> {
        let result = self.page(
            "Runtime.evaluate",
            json!({ "expression": expression, "returnByValue": true }),
        );
        match result.get("exceptionDetails") {
            Some(details) => Err(format!("evaluating {expression}: {details}")),
            None => Ok(result["result"]["value"].clone()),
        }
    }

    /// Evaluates `expression` in the page; its value.
    fn eval(&mut self, expression: &str) -> Value {
        self.try_eval(expression).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Evaluates `expression` until `done` holds of its value (bounded). An
    /// exception counts as "not yet": right after a navigation the document
    /// may still be the previous one, without the elements it reads.
    fn eval_until(&mut self, what: &str, expression: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + BROWSER_WAIT;
        loop {
            let last = match self.try_eval(expression) {
                Ok(value) if done(&value) => return value,
                Ok(value) => value.to_string(),
                Err(e) => e,
            };
            assert!(
                Instant::now() < deadline,
                "the page never showed {what}; last: {last}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn viewport(&mut self, width: u32, height: u32, mobile: bool) {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({ "width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile }),
        );
    }

    fn screenshot(&mut self, path: &std::path::Path) {
        let shot = self.page(
            "Page.captureScreenshot",
            json!({ "format": "png", "captureBeyondViewport": true }),
        );
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        std::fs::write(path, png).expect("write screenshot");
        eprintln!("screenshot: {}", path.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}

/// What the test reads off the rendered page.
const PAGE_STATE: &str = r#"JSON.stringify({
  pools: Array.from(document.querySelectorAll('#pools tbody tr')).map(tr => ({
    name: tr.dataset.pool, state: tr.dataset.state,
    miners: Number(tr.querySelector('td.miners').textContent.replace(/,/g, '')),
    chart: !!tr.querySelector('svg.chart') })),
  clients: Array.from(document.querySelectorAll('#clients tbody tr')).map(tr => tr.dataset.client),
  miner_rows: document.querySelectorAll('#miners tbody tr').length,
  farm_miners: document.getElementById('farm-miners').textContent,
  rejected: document.getElementById('farm-rejected').textContent,
  banner: document.getElementById('banner').className.includes('show') ? document.getElementById('banner').textContent : '',
  admin_buttons: Array.from(document.querySelectorAll('#pools td.admin')).filter(td => getComputedStyle(td).display !== 'none').length,
  overflow: document.documentElement.scrollWidth - window.innerWidth
})"#;

fn state(browser: &mut Browser) -> Value {
    let text = browser.eval(PAGE_STATE);
    serde_json::from_str(text.as_str().expect("page state")).expect("page state JSON")
}

fn pool(rt: &SimRuntime, reject_ratio: f64) -> PoolSim {
    let config = PoolConfig {
        difficulty: 1024.0,
        notify_interval: Some(Duration::from_millis(500)),
        reject_ratio,
        reject_codes: vec![RejectCode::JobNotFound, RejectCode::Duplicate],
        latency: Duration::ZERO,
    };
    PoolSim::start(&rt.executor, "127.0.0.1:0".parse().unwrap(), config).expect("pool-sim")
}

fn output_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("browser");
    std::fs::create_dir_all(&dir).expect("create the output folder");
    dir
}

/// Pools as the API reports them: (name, state, miners).
fn api_pools(proxy: &Proxy) -> Vec<(String, String, u64)> {
    let auth = format!("Bearer {TOKEN}");
    let (status, body) = http(
        proxy.metrics,
        "GET",
        "/api/v1/pools",
        &[("Authorization", &auth)],
    );
    assert_eq!(status, 200, "{body}");
    let value: Value = serde_json::from_str(&body).unwrap();
    value["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
                p["miners"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn page_pools(page: &Value) -> Vec<(String, String, u64)> {
    page["pools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_owned(),
                p["state"].as_str().unwrap().to_owned(),
                p["miners"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs Debian's chromium (apt-get install chromium); CI runs it with --ignored"]
fn the_status_page_shows_pools_states_and_miners_in_chromium() {
    let rt = SimRuntime::new();
    let (a, b, c) = (pool(&rt, 0.2), pool(&rt, 0.0), pool(&rt, 0.0));
    let pools = json!([
        { "name": "alpha", "address": a.local_addr().to_string(), "weight": 2 },
        { "name": "beta", "address": b.local_addr().to_string() },
        { "name": "gamma", "address": c.local_addr().to_string() },
    ])
    .to_string();
    let mut proxy = Proxy::start_without_pool(
        &[
            "--pools",
            &pools,
            "--metrics-token",
            TOKEN,
            // Miners stay where they were dialled: counts hold still.
            "--balance-tolerance",
            "1",
            "--pool-check-interval-seconds",
            "0.5",
        ],
        &[],
    );
    let mut config = MinerConfig::new(proxy.listen, MINERS);
    config.accounts = vec!["alice".into(), "bob".into(), "carol".into()];
    config.rate_per_second = 4.0;
    config.reconnect = true;
    config.connect_per_second = 30.0;
    let sim = MinerSim::start(&rt.executor, config);
    let deadline = Instant::now() + BROWSER_WAIT;
    while api_pools(&proxy).iter().map(|p| p.2).sum::<u64>() != MINERS as u64 {
        assert!(Instant::now() < deadline, "miners never all relayed");
        std::thread::sleep(Duration::from_millis(100));
    }

    let profile = temp_path("chromium-profile");
    let mut browser = Browser::start(&profile);
    browser.viewport(1280, 900, false);
    let url = format!("http://{}/", proxy.metrics);
    // Without the token the API answers 401 (which the browser logs as an
    // error): the page asks for it and shows no figures and no buttons.
    browser.watching = false;
    browser.page("Page.navigate", json!({ "url": url }));
    let locked = browser.eval_until("the token prompt", PAGE_STATE, |v| {
        let page: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        page["banner"]
            .as_str()
            .is_some_and(|b| b.contains("needs its token"))
    });
    let locked: Value = serde_json::from_str(locked.as_str().unwrap()).unwrap();
    assert_eq!(locked["pools"], json!([]), "{locked}");
    assert_eq!(locked["admin_buttons"], 0, "{locked}");
    // The operator types the token into the form.
    browser.eval(&format!(
        "document.getElementById('token').value = '{TOKEN}'; \
         document.getElementById('tokenform').requestSubmit(); true"
    ));
    browser.eval_until("figures after the token", PAGE_STATE, |v| {
        let page: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        page["pools"].as_array().is_some_and(|p| p.len() == 3)
    });
    // Kept in the session only: not in the URL, not in the input.
    let kept = browser.eval(
        "JSON.stringify([location.href, sessionStorage.getItem('stratum-proxy-token'), \
         document.getElementById('token').value, document.cookie])",
    );
    assert_eq!(
        kept.as_str().unwrap(),
        json!([url, TOKEN, "", ""]).to_string()
    );
    // From here on, any console error fails the test.
    browser.errors.clear();
    browser.watching = true;

    // The page shows what the API says: every pool up with its miners.
    let page = browser.eval_until("three pools, 30 miners, some rejects", PAGE_STATE, |v| {
        let page: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        page["pools"].as_array().is_some_and(|p| p.len() == 3)
            && page["farm_miners"].as_str().and_then(|m| m.parse().ok()) == Some(MINERS)
            && page["rejected"].as_str().is_some_and(|r| r != "0")
    });
    let page: Value = serde_json::from_str(page.as_str().unwrap()).unwrap();
    assert_eq!(page_pools(&page), api_pools(&proxy), "{page}");
    for (name, state, _) in page_pools(&page) {
        assert_eq!(state, "up", "{name}");
    }
    assert!(
        page["pools"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["chart"] == true)
    );
    assert_eq!(page["clients"], json!(["alice", "bob", "carol"]));
    assert_eq!(page["miner_rows"], MINERS);
    assert_eq!(page["banner"], "");
    assert_eq!(page["admin_buttons"], 3, "admin buttons with the token");
    assert!(page["overflow"].as_i64().unwrap() <= 0, "{page}");
    let dir = output_dir();
    browser.screenshot(&dir.join("status-page.png"));

    // On a phone-sized screen nothing sticks out sideways (wide tables
    // scroll inside their boxes).
    browser.viewport(390, 844, true);
    let phone = state(&mut browser);
    assert!(phone["overflow"].as_i64().unwrap() <= 0, "{phone}");
    browser.screenshot(&dir.join("status-page-phone.png"));
    browser.viewport(1280, 900, false);

    // Kill gamma: the API says down, then the page does on a refresh.
    c.kill();
    let deadline = Instant::now() + BROWSER_WAIT;
    while !api_pools(&proxy)
        .iter()
        .any(|(name, state, _)| name == "gamma" && state == "down")
    {
        assert!(Instant::now() < deadline, "gamma never went down");
        std::thread::sleep(Duration::from_millis(100));
    }
    browser.eval_until("gamma down", PAGE_STATE, |v| {
        let page: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        page["pools"].as_array().is_some_and(|p| {
            p.iter()
                .any(|p| p["name"] == "gamma" && p["state"] == "down")
        })
    });
    let page = state(&mut browser);
    let states: Vec<(String, String)> = page_pools(&page)
        .into_iter()
        .map(|(name, state, _)| (name, state))
        .collect();
    assert_eq!(
        states,
        [("alpha", "up"), ("beta", "up"), ("gamma", "down")].map(|(n, s)| (n.into(), s.into()))
    );
    browser.screenshot(&dir.join("status-page-pool-down.png"));
    assert_eq!(browser.errors, Vec::<String>::new(), "console errors");

    // Stop the gateway: the page says so instead of showing stale figures
    // silently (the failed fetches are expected errors from here on).
    browser.watching = false;
    let _ = proxy.child.kill();
    let _ = proxy.child.wait();
    browser.eval_until("the not-answering banner", PAGE_STATE, |v| {
        let page: Value = serde_json::from_str(v.as_str().unwrap_or("{}")).unwrap_or_default();
        page["banner"]
            .as_str()
            .is_some_and(|b| b.starts_with("Gateway not answering"))
    });
    browser.screenshot(&dir.join("status-page-gateway-down.png"));
    sim.stop();
    drop(browser);
    let _ = std::fs::remove_dir_all(profile);
}
