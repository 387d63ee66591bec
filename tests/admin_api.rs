//! The status API and its admin actions against the real binary, with two
//! pool simulators and a fleet of miner simulators behind it: each action
//! works with the token and is refused without it, with a wrong one, when
//! no token is configured, and from another origin; a drain moves every
//! miner off its pool no faster than the move rate.

mod daemon;
mod runner;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use daemon::{Proxy, SimRuntime, WAIT, http, http_with_body, temp_path};
use serde_json::{Value, json};
use stratum_proxy::sim::RejectCode;
use stratum_proxy::sim::miner::{MinerConfig, MinerSim};
use stratum_proxy::sim::pool::{PoolConfig, PoolSim};

const TOKEN: &str = "admin-tok-5c1e";
const AUTH: (&str, &str) = ("Authorization", "Bearer admin-tok-5c1e");

fn pool(rt: &SimRuntime, reject_ratio: f64) -> PoolSim {
    let config = PoolConfig {
        difficulty: 256.0,
        notify_interval: Some(Duration::from_millis(500)),
        reject_ratio,
        reject_codes: vec![RejectCode::JobNotFound, RejectCode::LowDifficulty],
        latency: Duration::ZERO,
    };
    PoolSim::start(&rt.executor, "127.0.0.1:0".parse().unwrap(), config).expect("pool-sim")
}

/// Writes a config file naming pools `a` (priority 0) and `b` (backup,
/// priority 1) with `b`'s weight.
fn write_config(path: &std::path::Path, a: SocketAddr, b: SocketAddr, b_weight: u32) {
    let config = json!({ "pools": [
        { "name": "a", "address": a.to_string(), "priority": 0 },
        { "name": "b", "address": b.to_string(), "priority": 1, "weight": b_weight },
    ]});
    std::fs::write(path, config.to_string()).unwrap();
}

fn fleet(proxy: &Proxy, miners: usize) -> MinerConfig {
    let mut config = MinerConfig::new(proxy.listen, miners);
    config.accounts = vec!["alice".into(), "bob".into()];
    config.rate_per_second = 10.0;
    config.reconnect = true;
    config
}

fn get_json(proxy: &Proxy, path: &str, auth: bool) -> Value {
    let headers: &[(&str, &str)] = if auth { &[AUTH] } else { &[] };
    let (status, body) = http(proxy.metrics, "GET", path, headers);
    assert_eq!(status, 200, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

fn pool_entry(proxy: &Proxy, name: &str, auth: bool) -> Value {
    let pools = get_json(proxy, "/api/v1/pools", auth);
    pools["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {pools}"))
        .clone()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn post(proxy: &Proxy, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let (status, text) = http_with_body(proxy.metrics, "POST", path, headers, body);
    let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, value)
}

#[test]
fn each_admin_action_works_with_the_token_and_is_refused_without_it() {
    let rt = SimRuntime::new();
    let (a, b) = (pool(&rt, 0.2), pool(&rt, 0.0));
    let file = temp_path("admin.json");
    write_config(&file, a.local_addr(), b.local_addr(), 1);
    let proxy = Proxy::start_without_pool(
        &[
            "--config",
            file.to_str().unwrap(),
            "--metrics-token",
            TOKEN,
            "--log-level",
            "info",
        ],
        &[],
    );
    let sim = MinerSim::start(&rt.executor, fleet(&proxy, 6));
    wait_until("six authorized miners on a", || {
        let miners = get_json(&proxy, "/api/v1/miners?pool=a", true);
        miners["matched"] == 6
            && miners["miners"]
                .as_array()
                .unwrap()
                .iter()
                .all(|m| m["worker"].is_string())
    });

    // Reads need the token like /status; the page itself does not.
    assert_eq!(http(proxy.metrics, "GET", "/api/v1/farm", &[]).0, 401);
    assert_eq!(http(proxy.metrics, "GET", "/", &[]).0, 200);
    let farm = get_json(&proxy, "/api/v1/farm", true);
    assert_eq!(farm["admin"], true);
    assert_eq!(farm["miners"], 6);

    let every_action = [
        ("/api/v1/pools/a/drain", ""),
        ("/api/v1/pools/a/undrain", ""),
        ("/api/v1/pools/b", r#"{"weight":5}"#),
        ("/api/v1/miners/1/disconnect", ""),
        ("/api/v1/reload", ""),
    ];
    let own_origin = format!("http://{}", proxy.metrics);
    for (path, body) in every_action {
        // No token, a wrong one: 401. The right one from another site: 403.
        assert_eq!(post(&proxy, path, &[], body).0, 401, "{path}");
        let wrong = [("Authorization", "Bearer admin-tok-5c1f")];
        assert_eq!(post(&proxy, path, &wrong, body).0, 401, "{path}");
        let cross = [AUTH, ("Origin", "http://evil.example")];
        assert_eq!(post(&proxy, path, &cross, body).0, 403, "{path}");
        let null_origin = [AUTH, ("Origin", "null")];
        assert_eq!(post(&proxy, path, &null_origin, body).0, 403, "{path}");
    }
    // Nothing refused had an effect.
    assert_eq!(pool_entry(&proxy, "a", true)["draining"], false);
    assert_eq!(pool_entry(&proxy, "b", true)["weight"], 1);
    assert_eq!(get_json(&proxy, "/api/v1/farm", true)["miners"], 6);

    // Drain and undrain (same origin, as the page sends them).
    let same = [AUTH, ("Origin", own_origin.as_str())];
    let (status, reply) = post(&proxy, "/api/v1/pools/a/drain", &same, "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(pool_entry(&proxy, "a", true)["draining"], true);
    let (status, reply) = post(&proxy, "/api/v1/pools/a/undrain", &[AUTH], "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(pool_entry(&proxy, "a", true)["draining"], false);
    assert_eq!(post(&proxy, "/api/v1/pools/nope/drain", &[AUTH], "").0, 404);

    // Weight and priority.
    let (status, reply) = post(
        &proxy,
        "/api/v1/pools/b",
        &[AUTH],
        r#"{"weight":5,"priority":2}"#,
    );
    assert_eq!(status, 200, "{reply}");
    let b_now = pool_entry(&proxy, "b", true);
    assert_eq!(
        (b_now["weight"].clone(), b_now["priority"].clone()),
        (json!(5), json!(2))
    );
    for bad in [r#"{"weight":0}"#, r#"{"colour":1}"#, "{", r#"{}"#] {
        assert_eq!(
            post(&proxy, "/api/v1/pools/b", &[AUTH], bad).0,
            400,
            "{bad}"
        );
    }

    // Disconnect one miner: its id leaves the list, the others stay.
    let miners = get_json(&proxy, "/api/v1/miners?sort=id", true);
    let id = miners["miners"][0]["id"].as_u64().unwrap();
    let (status, reply) = post(
        &proxy,
        &format!("/api/v1/miners/{id}/disconnect"),
        &[AUTH],
        "",
    );
    assert_eq!(status, 200, "{reply}");
    wait_until("the disconnected miner gone", || {
        let miners = get_json(&proxy, "/api/v1/miners?sort=id", true);
        miners["miners"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["id"] != id)
    });
    assert_eq!(
        post(
            &proxy,
            &format!("/api/v1/miners/{id}/disconnect"),
            &[AUTH],
            ""
        )
        .0,
        404
    );
    let closed = proxy.wait_for_log("closed by Proxy: disconnected");
    assert!(closed.contains(&format!("conn={id} peer=")), "{closed}");

    // Reload: what SIGHUP does, from the file.
    write_config(&file, a.local_addr(), b.local_addr(), 7);
    let (status, reply) = post(&proxy, "/api/v1/reload", &[AUTH], "");
    assert_eq!(status, 200, "{reply}");
    assert!(
        reply["applied"]
            .as_array()
            .unwrap()
            .contains(&json!("pools")),
        "{reply}"
    );
    let b_now = pool_entry(&proxy, "b", true);
    assert_eq!(
        (b_now["weight"].clone(), b_now["priority"].clone()),
        (json!(7), json!(1))
    );
    // A file that does not load changes nothing and says so.
    std::fs::write(&file, "{ not json").unwrap();
    let (status, reply) = post(&proxy, "/api/v1/reload", &[AUTH], "");
    assert_eq!(status, 422, "{reply}");
    assert_eq!(pool_entry(&proxy, "b", true)["weight"], 7);

    // Each action is logged with who asked and counted by result; the
    // token is in no log line and no answer.
    let log = proxy.log_text();
    assert!(log.contains("admin: drain by 127.0.0.1:"), "{log}");
    assert!(log.contains("admin: reload by 127.0.0.1:"), "{log}");
    assert!(log.contains("refused (forbidden): cross-origin"), "{log}");
    assert!(!log.contains(TOKEN), "the token was logged");
    let m = proxy.scrape_with(&[AUTH]);
    let count = |action: &str, result: &str| {
        m.sum(
            "stratum_admin_actions_total",
            &[("action", action), ("result", result)],
        )
    };
    assert_eq!(count("drain", "unauthorized"), 2.0);
    assert_eq!(count("drain", "forbidden"), 2.0);
    assert_eq!(count("drain", "ok"), 1.0);
    assert_eq!(count("drain", "not_found"), 1.0);
    assert_eq!(count("undrain", "ok"), 1.0);
    assert_eq!(count("pool_update", "ok"), 1.0);
    assert_eq!(count("pool_update", "invalid"), 4.0);
    assert_eq!(count("disconnect", "ok"), 1.0);
    assert_eq!(count("disconnect", "not_found"), 1.0);
    assert_eq!(count("reload", "ok"), 1.0);
    assert_eq!(count("reload", "failed"), 1.0);
    for path in [
        "/",
        "/status",
        "/api/v1/farm",
        "/api/v1/pools",
        "/api/v1/miners",
    ] {
        let (_, body) = http(proxy.metrics, "GET", path, &[AUTH]);
        assert!(!body.contains(TOKEN), "the token is in {path}");
    }
    sim.stop();
    let report = smol::block_on(sim.finish());
    assert!(report.miners.iter().all(|m| m.error.is_none()));
}

#[test]
fn admin_actions_are_refused_outright_when_no_token_is_configured() {
    let rt = SimRuntime::new();
    let (a, b) = (pool(&rt, 0.0), pool(&rt, 0.0));
    let file = temp_path("admin-off.json");
    write_config(&file, a.local_addr(), b.local_addr(), 1);
    let proxy = Proxy::start_without_pool(&["--config", file.to_str().unwrap()], &[]);
    // Reads are open, like /status without a token.
    let farm = get_json(&proxy, "/api/v1/farm", false);
    assert_eq!(farm["admin"], false);
    for path in [
        "/api/v1/pools/a/drain",
        "/api/v1/pools/a/undrain",
        "/api/v1/pools/b",
        "/api/v1/miners/1/disconnect",
        "/api/v1/reload",
    ] {
        for headers in [&[][..], &[AUTH][..]] {
            let (status, reply) = post(&proxy, path, headers, r#"{"weight":2}"#);
            assert_eq!(status, 403, "{path}: {reply}");
            assert!(
                reply["error"]
                    .as_str()
                    .unwrap()
                    .contains("no metrics_token")
            );
        }
    }
    assert_eq!(pool_entry(&proxy, "a", false)["draining"], false);
    assert_eq!(pool_entry(&proxy, "b", false)["weight"], 1);
    // GET on an action is not an action; a body too large is refused by the gate.
    assert_eq!(http(proxy.metrics, "GET", "/api/v1/reload", &[]).0, 404);
    let big = "x".repeat(stratum_proxy::http::MAX_BODY_BYTES + 1);
    assert_eq!(post(&proxy, "/api/v1/pools/b", &[AUTH], &big).0, 413);
    let chunked = [("Transfer-Encoding", "chunked")];
    assert_eq!(
        http(proxy.metrics, "POST", "/api/v1/reload", &chunked).0,
        411
    );
}

#[test]
fn a_drain_moves_every_miner_off_the_pool_no_faster_than_the_move_rate() {
    const MINERS: usize = 10;
    const RATE: f64 = 2.0;
    // The proxy saves up at most one second of moves (at least one).
    const SAVED: f64 = 2.0;
    let rt = SimRuntime::new();
    let (a, b) = (pool(&rt, 0.0), pool(&rt, 0.0));
    let file = temp_path("drain.json");
    write_config(&file, a.local_addr(), b.local_addr(), 1);
    let proxy = Proxy::start_without_pool(
        &[
            "--config",
            file.to_str().unwrap(),
            "--metrics-token",
            TOKEN,
            "--move-rate-per-second",
            "2",
        ],
        &[],
    );
    let sim = MinerSim::start(&rt.executor, fleet(&proxy, MINERS));
    wait_until("every miner on a", || {
        pool_entry(&proxy, "a", true)["miners"] == MINERS
    });
    let asked = Instant::now();
    let (status, reply) = post(&proxy, "/api/v1/pools/a/drain", &[AUTH], "");
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["miners"], MINERS);
    // Each look is bounded by what the rate allows since the drain was
    // asked for (taken before the request: a lower bound on the proxy's
    // own clock), whatever the machine's speed.
    let mut looks = 0;
    let deadline = Instant::now() + WAIT;
    loop {
        let on_a = pool_entry(&proxy, "a", true)["miners"].as_u64().unwrap() as usize;
        let elapsed = asked.elapsed().as_secs_f64();
        let moved = MINERS - on_a.min(MINERS);
        assert!(
            moved as f64 <= SAVED + RATE * elapsed,
            "{moved} miners moved {elapsed:.2}s after the drain at {RATE}/s"
        );
        looks += 1;
        if on_a == 0 {
            break;
        }
        assert!(Instant::now() < deadline, "a still has {on_a} miners");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(looks > 1, "the drain was not observed in progress");
    wait_until("every miner on b", || {
        pool_entry(&proxy, "b", true)["miners"] == MINERS
    });
    let a_now = pool_entry(&proxy, "a", true);
    assert_eq!(a_now["draining"], true);
    assert_eq!(a_now["state"], "up");
    let m = proxy.scrape_with(&[AUTH]);
    assert_eq!(
        m.sum("stratum_moves_total", &[("pool_host", "a")]),
        MINERS as f64
    );
    sim.stop();
    let report = smol::block_on(sim.finish());
    for miner in &report.miners {
        assert_eq!(miner.error, None, "{}", miner.user);
        assert_eq!(miner.sessions, 2, "{} moved once", miner.user);
    }
}
