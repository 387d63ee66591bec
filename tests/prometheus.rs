//! A real scrape checked by `promtool check metrics`, and a real Prometheus
//! server on loopback scraping the proxy, read back through its HTTP API.
//!
//! Needs Debian's `prometheus` package (promtool and the server), so these
//! tests are ignored by a plain `cargo test`; `.ci/run` installs the package
//! and runs them with `cargo test --test prometheus -- --ignored`.

mod daemon;
mod runner;

use std::io::Write;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use daemon::{Proxy, SimRuntime, WAIT, temp_path, try_http};
use serde_json::Value;
use stratum_proxy::sim::miner::{MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

/// Starts pool-sim, the proxy and one round of known submits.
fn proxy_with_traffic(rt: &SimRuntime) -> (PoolSim, Proxy, u64) {
    let pool = PoolSim::start(
        &rt.executor,
        "127.0.0.1:0".parse().unwrap(),
        PoolConfig::default(),
    )
    .expect("pool-sim");
    let proxy = Proxy::start(pool.local_addr(), &[], &[]);
    let mut config = MinerConfig::new(proxy.listen, 3);
    config.accounts = vec!["alice".into(), "bob".into()];
    config.submits = Some(7);
    config.rate_per_second = 100.0;
    let report = smol::block_on(MinerSim::start(&rt.executor, config).finish());
    assert_eq!(report.totals.errors, 0);
    (pool, proxy, report.totals.submits)
}

#[test]
#[ignore = "needs promtool (Debian package prometheus); run by .ci/run"]
fn promtool_accepts_a_real_scrape() {
    let rt = SimRuntime::new();
    let (_pool, proxy, _) = proxy_with_traffic(&rt);
    let (status, body) = proxy.get("/metrics");
    assert_eq!(status, 200);
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool on PATH (apt-get install prometheus)");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{report}"
    );
    assert!(
        report.trim().is_empty(),
        "promtool lint findings:\n{report}"
    );
}

/// A Prometheus server killed on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs an instant query; returns the first sample's value, if any.
fn query(prometheus: std::net::SocketAddr, expr: &str) -> Option<f64> {
    let encoded: String = expr
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'.' | b'-' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    let (status, body) = try_http(
        prometheus,
        "GET",
        &format!("/api/v1/query?query={encoded}"),
        &[],
    )?;
    if status != 200 {
        return None;
    }
    let v: Value = serde_json::from_str(&body).ok()?;
    assert_eq!(v["status"], "success", "{body}");
    v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
}

#[test]
#[ignore = "needs the prometheus server (Debian package prometheus); run by .ci/run"]
fn prometheus_scrapes_the_proxy() {
    let rt = SimRuntime::new();
    let (_pool, proxy, submits) = proxy_with_traffic(&rt);
    let dir = temp_path("prometheus");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: stratum-proxy\n    static_configs:\n      - targets: ['{}']\n",
            proxy.metrics
        ),
    )
    .unwrap();
    let web = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let _server = Prometheus(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={web}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus on PATH (apt-get install prometheus)"),
    );
    let deadline = Instant::now() + WAIT + Duration::from_secs(40);
    let up = loop {
        if let Some(up) = query(web, "up{job=\"stratum-proxy\"}") {
            break up;
        }
        assert!(
            Instant::now() < deadline,
            "prometheus never scraped the proxy"
        );
        std::thread::sleep(Duration::from_millis(250));
    };
    assert_eq!(up, 1.0);
    let scraped = query(web, "sum(stratum_submits_total{job=\"stratum-proxy\"})");
    assert_eq!(scraped, Some(submits as f64));
    let alice = query(web, "stratum_accepted_shares_total{client_id=\"alice\"}");
    assert!(alice.is_some_and(|a| a > 0.0), "{alice:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
