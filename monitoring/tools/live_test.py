#!/usr/bin/env python3
"""Live test of the monitoring kit against a real Prometheus.

Starts, all on 127.0.0.1 with free ports:
  - pool-sim with a fixed difficulty;
  - stratum-proxy in front of it;
  - a Prometheus server (the Debian package's binary, run directly) with a
    temporary TSDB, scrape and evaluation interval 1 s, and the kit's
    recording and alert rules;
  - miner-sims with known account names and a known submit rate.
It also provokes the error paths the dashboard draws (an upstream connect
refused, a handshake timeout, a connection over max_connections), so that
every dashboard query has a series to return.

Then, through Prometheus' HTTP API, it checks:
  1. the rule files loaded and every rule evaluates without error;
  2. the 5 m hashrate recording rules per client and per pool equal
     submits/s x difficulty x 2^32 (see HASHRATE CHECK below);
  3. every query of the Grafana dashboard, variables substituted, executes
     without error and returns data, and its label_values variables list the
     known clients and pool.

Every wait is bounded; every process it started is stopped at the end,
whatever happens; it exits 0 only if every check passed.

HASHRATE CHECK. The rule is rate(stratum_accepted_difficulty_total[5m]) *
2^32. While the series is younger than 5 m, rate() over 5 m does not see a
full window and reads low by about age/300 (Prometheus extrapolates at most
half a scrape interval past the first sample). So the test waits until the
miners have submitted for longer than the window (5 m + margin) and then
compares the recorded value with the expected hashrate. Remaining error:
  - share quantisation: the window holds a whole number of shares; with
    scrapes every second, each end of the window may miss up to one share
    per miner, so +-2 shares per miner over 300 s;
  - the miners' own timer: miner-sim paces submits itself; its achieved rate
    is measured independently from two direct reads of the proxy's
    /metrics (wall clock, no Prometheus) and both figures are reported.
Tolerance = 2 shares per miner per 300 s + 2 % (timer slack on a loaded
2-core CI machine). With --quick it does not wait 5 m: it checks the same
expression with a 1 m window instead, and says so.

Usage: live_test.py --bin-dir target/release [--prometheus /usr/bin/prometheus] [--quick]
Stdlib only.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dashboard_check  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = [os.path.join(HERE, "..", "prometheus", "recording_rules.yml"),
         os.path.join(HERE, "..", "prometheus", "alert_rules.yml")]
JOB = "stratum-proxy"
TWO_32 = 2 ** 32
WINDOW_SECONDS = 300          # the recording rules' rate window
SCRAPE_SECONDS = 1

# The known workload. Each miner-sim is one connection authorizing as
# "<account>.<worker>"; the proxy's client_id is the account.
DIFFICULTY = 64
SUBMITS_PER_SECOND = 2.0      # per miner
MINERS = {"alice": ["rig1", "rig2"], "bob": ["rig1"]}
# A miner of this account gets a known share of its submits rejected, so
# the reject panels and the reject-ratio rule have data. It is left out of
# the hashrate check, which needs an exact accepted rate.
REJECTING_ACCOUNT = "carol"

DEADLINE_SECONDS = 15 * 60    # the whole test, whatever happens

procs = []                    # (name, Popen, log path)
workdir = None


def log(msg):
    print(f"live_test: {msg}", flush=True)


class Failure(Exception):
    pass


# ---------------------------------------------------------------- processes

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv):
    path = os.path.join(workdir, f"{name}.log")
    f = open(path, "wb")
    log(f"start {name}: {' '.join(argv)}")
    p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    procs.append((name, p, path))
    return p


def stop_all():
    # Each child runs in its own session; signal its group by the pid we got.
    for name, p, _ in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    end = time.monotonic() + 10
    for name, p, _ in reversed(procs):
        try:
            p.wait(timeout=max(0.1, end - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait(timeout=5)


def tail(path, n=30):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
        return "\n".join("    " + line for line in lines[-n:])
    except OSError:
        return "    (no log)"


def check_alive():
    for name, p, path in procs:
        if p.poll() is not None and name != "short-lived":
            raise Failure(f"{name} exited with {p.returncode}:\n{tail(path)}")


def wait_for(what, fn, timeout, interval=0.25):
    """Poll fn() until it returns a true value; bounded."""
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        check_alive()
        try:
            v = fn()
            if v:
                return v
        except Exception as e:  # noqa: BLE001 - reported if we time out
            last = e
        time.sleep(interval)
    raise Failure(f"timed out after {timeout}s waiting for {what}" + (f" (last error: {last})" if last else ""))


def read_log_address(name, pattern, timeout):
    path = [pth for n, _, pth in procs if n == name][0]

    def found():
        with open(path, "rb") as f:
            m = re.search(pattern, f.read().decode("utf-8", "replace"))
        return m and m.group(1)
    return wait_for(f"{name} to log its address", found, timeout)


# ---------------------------------------------------------------- HTTP

def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode("utf-8", "replace")


class Prom:
    def __init__(self, base):
        self.base = base

    def api(self, path, params):
        url = f"{self.base}{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            _, body = http_get(url, timeout=30)
        except urllib.error.HTTPError as e:
            body = e.read().decode("utf-8", "replace")
        data = json.loads(body)
        if data.get("status") != "success":
            raise Failure(f"{path} {params}: {data.get('errorType')}: {data.get('error')}")
        return data["data"]

    def query(self, expr):
        d = self.api("/api/v1/query", {"query": expr, "time": f"{time.time():.3f}"})
        return d["result"]

    def by(self, expr, label):
        return {s["metric"].get(label, ""): float(s["value"][1]) for s in self.query(expr)}


def scrape_metrics(url):
    """Direct read of the proxy's /metrics: {(name, frozenset(labels)): value}."""
    _, text = http_get(url)
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)', line)
        if not m:
            continue
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        try:
            out[(m.group(1), labels)] = float(m.group(4))
        except ValueError:
            pass
    return out


def sum_by(samples, name, label):
    out = {}
    for (n, labels), v in samples.items():
        if n == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + v
    return out


# ---------------------------------------------------------------- scenario

def raw_connect(port, timeout=5):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    return s


def main():
    global workdir
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True, help="directory with stratum-proxy, pool-sim, miner-sim")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--quick", action="store_true",
                    help="do not wait for a full 5 m window: check the hashrate expression over 1 m instead")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    args = ap.parse_args()

    binaries = {b: os.path.join(args.bin_dir, b) for b in ("stratum-proxy", "pool-sim", "miner-sim")}
    for b, p in list(binaries.items()) + [("prometheus", args.prometheus)]:
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            raise Failure(f"{b} not found at {p}")

    workdir = tempfile.mkdtemp(prefix="stratum-monitoring-")
    log(f"work directory {workdir}")
    ports = {k: free_port() for k in ("pool", "listen", "metrics", "prometheus")}

    # 1. The proxy first, with the pool not yet listening: the first miner
    # connection's upstream connect is refused.
    start("stratum-proxy", [
        binaries["stratum-proxy"],
        "--pool", f"127.0.0.1:{ports['pool']}",
        "--listen", f"127.0.0.1:{ports['listen']}",
        "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
        "--max-connections", str(MAX_CONNECTIONS),
        "--handshake-timeout-seconds", "2",
        "--health-interval-seconds", "5",
        "--log-level", "info",
    ])
    metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
    wait_for("the proxy's /metrics", lambda: http_get(metrics_url)[0] == 200, 20)

    # 2. Prometheus, scraping the proxy every second.
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w") as f:
        f.write(prometheus_config(ports["metrics"]))
    start("prometheus", [
        args.prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={os.path.join(workdir, 'tsdb')}",
        f"--web.listen-address=127.0.0.1:{ports['prometheus']}",
        "--storage.tsdb.retention.time=1d",
    ])
    prom = Prom(f"http://127.0.0.1:{ports['prometheus']}")
    wait_for("Prometheus to be ready", lambda: http_get(prom.base + "/-/ready")[0] == 200, 60)
    wait_for("the first successful scrape",
             lambda: prom.by(f'up{{job="{JOB}"}}', "job").get(JOB) == 1.0, 30)

    # 3. Error paths: upstream refused (pool not up yet) ...
    s = raw_connect(ports["listen"])
    wait_for("an upstream connect failure to be counted",
             lambda: sum_by(scrape_metrics(metrics_url), "stratum_upstream_connect_failures_total", "reason").get("refused"), 20)
    s.close()

    # ... then the pool comes up ...
    start("pool-sim", pool_sim_argv(binaries["pool-sim"], ports["pool"]))
    wait_for("pool-sim to listen", lambda: raw_connect(ports["pool"], 1).close() or True, 20)

    # ... a miner that never says anything (handshake timeout, 2 s) ...
    s = raw_connect(ports["listen"])
    wait_for("a handshake timeout to be counted",
             lambda: sum_by(scrape_metrics(metrics_url), "stratum_connection_timeouts_total", "kind").get("handshake"), 20)
    s.close()

    # 4. The miners.
    n_miners = 0
    for account, workers in MINERS.items():
        for w in workers:
            start(f"miner-{account}.{w}", miner_sim_argv(binaries["miner-sim"], ports["listen"], f"{account}.{w}", SUBMITS_PER_SECOND))
            n_miners += 1
    start(f"miner-{REJECTING_ACCOUNT}.rig1", miner_sim_argv(binaries["miner-sim"], ports["listen"], f"{REJECTING_ACCOUNT}.rig1", SUBMITS_PER_SECOND))
    n_miners += 1
    mining_started = time.monotonic()

    def all_submitting():
        return set(sum_by(scrape_metrics(metrics_url), "stratum_submits_total", "client_id")) >= set(MINERS) | {REJECTING_ACCOUNT}
    wait_for("every account to submit", all_submitting, 30)
    wait_for("every miner connected",
             lambda: sum(sum_by(scrape_metrics(metrics_url), "stratum_active_connections", "pool_host").values()) == n_miners, 30)

    # ... and connections over max_connections are refused.
    extra = []
    try:
        for _ in range(MAX_CONNECTIONS - n_miners + 2):
            extra.append(raw_connect(ports["listen"]))
        wait_for("a refused connection to be counted",
                 lambda: sum_by(scrape_metrics(metrics_url), "stratum_refused_connections_total", "reason").get("max_connections"), 20)
    finally:
        for s in extra:
            s.close()

    # 5. Wait for the window, measuring the proxy's own counters directly.
    first = (time.monotonic(), scrape_metrics(metrics_url))
    settle = 10 if args.quick else 0
    wait_seconds = (70 if args.quick else WINDOW_SECONDS + 20) - (time.monotonic() - mining_started) + settle
    log(f"mining; waiting {wait_seconds:.0f}s for the {'1 m' if args.quick else '5 m'} rate window to fill")
    end = time.monotonic() + max(0, wait_seconds)
    while time.monotonic() < end:
        check_alive()
        time.sleep(min(5, max(0.1, end - time.monotonic())))
    last = (time.monotonic(), scrape_metrics(metrics_url))

    failures = []
    failures += check_rules(prom)
    failures += check_hashrate(prom, first, last, quick=args.quick)
    failures += check_dashboard(prom)
    return failures


MAX_CONNECTIONS = 6


def prometheus_config(metrics_port):
    rules = "\n".join(f"  - {os.path.abspath(r)}" for r in RULES)
    return f"""global:
  scrape_interval: {SCRAPE_SECONDS}s
  scrape_timeout: {SCRAPE_SECONDS}s
  evaluation_interval: {SCRAPE_SECONDS}s
rule_files:
{rules}
scrape_configs:
  - job_name: {JOB}
    static_configs:
      - targets: ['127.0.0.1:{metrics_port}']
"""


def pool_sim_argv(binary, port):
    return [binary, "--listen", f"127.0.0.1:{port}", "--difficulty", str(DIFFICULTY),
            "--reject-user", REJECTING_ACCOUNT, "--reject-every", "4"]


def miner_sim_argv(binary, listen_port, user, rate):
    return [binary, "--pool", f"127.0.0.1:{listen_port}", "--user", user,
            "--submits-per-second", str(rate)]


# ---------------------------------------------------------------- checks

def check_rules(prom):
    failures = []
    groups = prom.api("/api/v1/rules", {})["groups"]
    names = sorted(g["name"] for g in groups)
    n_rules = sum(len(g["rules"]) for g in groups)
    log(f"rule groups loaded: {names}, {n_rules} rules")
    for g in groups:
        for r in g["rules"]:
            if r.get("health") != "ok":
                failures.append(f"rule {r.get('name')} health {r.get('health')}: {r.get('lastError')}")
    expected = {"stratum-proxy.rates", "stratum-proxy.billing", "stratum-proxy.alerts"}
    if not expected <= set(names):
        failures.append(f"rule groups {sorted(expected - set(names))} not loaded")
    firing = [a for a in prom.api("/api/v1/alerts", {})["alerts"] if a.get("state") == "firing"]
    log(f"alerts firing: {[a['labels'].get('alertname') for a in firing] or 'none'}")
    return failures


def check_hashrate(prom, first, last, quick):
    failures = []
    (t0, m0), (t1, m1) = first, last
    d0 = sum_by(m0, "stratum_accepted_difficulty_total", "client_id")
    d1 = sum_by(m1, "stratum_accepted_difficulty_total", "client_id")
    if quick:
        rule = "1m expression"
        window = 60
        got = prom.by(f'sum by (client_id) (rate(stratum_accepted_difficulty_total[{window}s])) * 2^32', "client_id")
    else:
        rule = "client_id:stratum_accepted_hashes:rate5m"
        window = WINDOW_SECONDS
        got = prom.by(rule, "client_id")
    log(f"hashrate check ({rule}); expected = miners x {SUBMITS_PER_SECOND} submits/s x difficulty {DIFFICULTY} x 2^32")
    for account, workers in MINERS.items():
        expected = len(workers) * SUBMITS_PER_SECOND * DIFFICULTY * TWO_32
        measured_direct = (d1.get(account, 0) - d0.get(account, 0)) / (t1 - t0) * TWO_32
        tolerance = 2 * len(workers) * DIFFICULTY * TWO_32 / window + 0.02 * expected
        value = got.get(account)
        ok = value is not None and abs(value - expected) <= tolerance
        log(f"  {account}: recorded {fmt_hs(value)}  expected {fmt_hs(expected)} +- {fmt_hs(tolerance)}"
            f"  (direct from /metrics over {t1 - t0:.0f}s: {fmt_hs(measured_direct)})  {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"hashrate of {account}: {value} not within {tolerance} of {expected}")
    if not quick:
        # per pool: one pool, all accepted difficulty of every account
        pools = prom.by("pool_host:stratum_accepted_hashes:rate5m", "pool_host")
        per_client_total = sum(prom.by("client_id:stratum_accepted_hashes:rate5m", "client_id").values())
        pool_total = sum(pools.values())
        ok = len(pools) == 1 and abs(pool_total - per_client_total) <= 1e-9 * max(1.0, pool_total) + 1
        log(f"  pool_host:stratum_accepted_hashes:rate5m {pools} = sum over clients {fmt_hs(per_client_total)}: {'OK' if ok else 'FAIL'}")
        if not ok:
            failures.append(f"per-pool hashrate {pools} != sum of per-client {per_client_total}")
    return failures


def fmt_hs(v):
    if v is None:
        return "none"
    for unit, scale in (("TH/s", 1e12), ("GH/s", 1e9), ("MH/s", 1e6)):
        if abs(v) >= scale:
            return f"{v / scale:.3f} {unit}"
    return f"{v:.1f} H/s"


def check_dashboard(prom):
    failures = []
    dash = dashboard_check.load()
    problems = dashboard_check.check(dash)
    failures += [f"dashboard: {p}" for p in problems]
    qs = dashboard_check.queries(dash)
    ok = 0
    for where, kind, q in qs:
        try:
            if kind == "label_values":
                selector, label = q
                values = prom.api(f"/api/v1/label/{label}/values", {"match[]": selector})
                if not values:
                    raise Failure("no values")
                want = set(MINERS) | {REJECTING_ACCOUNT} if label == "client_id" else None
                if want and not want <= set(values):
                    raise Failure(f"values {values} lack {sorted(want - set(values))}")
                detail = f"{len(values)} values {values}"
            else:
                result = prom.query(q)
                if not result:
                    raise Failure("no data")
                detail = f"{len(result)} series"
            ok += 1
            log(f"  ok    {where}: {detail}")
        except Failure as e:
            failures.append(f"dashboard query {where}: {e}\n      {q}")
            log(f"  FAIL  {where}: {e}\n      {q}")
    log(f"dashboard: {ok} of {len(qs)} queries returned data")
    return failures


def run():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(Failure(f"deadline of {DEADLINE_SECONDS}s passed")))
    signal.alarm(DEADLINE_SECONDS)
    keep = "--keep" in sys.argv
    code = 1
    try:
        failures = main()
        if failures:
            log(f"{len(failures)} check(s) failed:")
            for f in failures:
                log(f"  - {f}")
        else:
            code = 0
    except Failure as e:
        log(f"FAILED: {e}")
    finally:
        signal.alarm(0)
        stop_all()
        if code != 0 and workdir:
            for name, _, path in procs:
                log(f"--- last lines of {name} ---\n{tail(path, 15)}")
        if workdir and not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    log("PASSED" if code == 0 else "FAILED")
    return code


if __name__ == "__main__":
    sys.exit(run())
