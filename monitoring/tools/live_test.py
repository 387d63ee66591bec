#!/usr/bin/env python3
"""Live test of the monitoring kit against a real Prometheus.

Starts, all on 127.0.0.1 with free ports:
  - stratum-proxy, before anything listens on its pool's port;
  - a Prometheus server (the Debian package's binary, run directly) with a
    temporary TSDB, scrape and evaluation interval 1 s, and the kit's
    recording and alert rules;
  - briefly, a pool-sim rejecting half the shares (reasons stale and
    low_difficulty) and a short-lived miner-sim on it;
  - then a pool-sim with a fixed difficulty that rejects nothing, and
    miner-sims with known account names, connection counts and submit rates.
It also provokes the error paths the dashboard draws (an upstream connect
refused, a handshake timeout, connections over max_connections), so that
every dashboard query has a series to return.

Then, through Prometheus' HTTP API, it checks:
  1. the rule files loaded, every rule evaluates without error, and no
     alert fires on this healthy workload;
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
  - the miners' own timer: miner-sim schedules submit n at start + n/rate,
    so it does not drift, but a loaded machine may delay some; the achieved
    rate is also measured independently from two direct reads of the
    proxy's /metrics (wall clock, no Prometheus) and reported beside it.
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

# The known workload: per account, (miner connections, submits/s per miner).
# miner-sim authorizes each as "<account>.workerN"; the proxy's client_id is
# the account. The pool sets a fixed difficulty and rejects nothing while the
# hashrate is measured.
DIFFICULTY = 64
MINERS = {"alice": (2, 2.0), "bob": (1, 2.0), "carol": (1, 1.0)}
# Before the measured window, a miner of this account mines briefly on a pool
# that rejects half its shares, so the reject panels and rules have series.
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
        if p.poll() is not None and name not in FINITE and not name.startswith("pool-sim-rejecting"):
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
    return socket.create_connection(("127.0.0.1", port), timeout=timeout)


def stop(name):
    for n, p, _ in procs:
        if n == name and p.poll() is None:
            os.killpg(p.pid, signal.SIGTERM)
            p.wait(timeout=10)


def main(args):
    global workdir
    binaries = {b: os.path.join(args.bin_dir, b) for b in ("stratum-proxy", "pool-sim", "miner-sim")}
    for b, p in list(binaries.items()) + [("prometheus", args.prometheus)]:
        if not (os.path.isfile(p) and os.access(p, os.X_OK)):
            raise Failure(f"{b} not found at {p}")

    workdir = tempfile.mkdtemp(prefix="stratum-monitoring-")
    log(f"work directory {workdir}")
    ports = {k: free_port() for k in ("pool", "listen", "metrics", "prometheus")}
    pool_addr = f"127.0.0.1:{ports['pool']}"

    # 1. The proxy first, while nothing listens on the pool's port.
    start("stratum-proxy", [
        binaries["stratum-proxy"],
        "--pool", pool_addr,
        "--listen", f"127.0.0.1:{ports['listen']}",
        "--metrics-listen", f"127.0.0.1:{ports['metrics']}",
        "--max-connections", str(MAX_CONNECTIONS),
        "--handshake-timeout-seconds", "2",
        "--health-interval-seconds", "5",
        "--log-level", "info",
    ])
    metrics_url = f"http://127.0.0.1:{ports['metrics']}/metrics"
    wait_for("the proxy's /metrics", lambda: http_get(metrics_url)[0] == 200, 30)

    def counted(name, label, value):
        return lambda: sum_by(scrape_metrics(metrics_url), name, label).get(value)

    # 2. Prometheus, scraping the proxy every second with the kit's rules.
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
    wait_for("Prometheus' first successful scrape of the proxy",
             lambda: prom.by(f'up{{job="{JOB}"}}', "job").get(JOB) == 1.0, 30)

    # 3. A miner connects while the pool is down: upstream connect refused.
    # (The pool is dialled at the miner's first line.)
    with raw_connect(ports["listen"]) as miner:
        miner.sendall(b'{"id":1,"method":"mining.subscribe","params":[]}\n')
        wait_for("an upstream connect failure (refused)",
                 counted("stratum_upstream_connect_failures_total", "reason", "refused"), 20)

    # 4. A rejecting pool, and one short-lived miner of REJECTING_ACCOUNT:
    # rejects with reasons stale (code 21) and low_difficulty (23), and a
    # closed connection for the duration histogram. Done well before the
    # hashrate window, which must hold accepted shares only.
    start("pool-sim-rejecting", [binaries["pool-sim"], "--listen", pool_addr, "--difficulty", str(DIFFICULTY),
                                 "--reject-ratio", "0.5", "--reject-codes", "21,23"])
    read_log_address("pool-sim-rejecting", r"listening on (\S+)", 20)
    short = start(f"miner-{REJECTING_ACCOUNT}-rejected", [
        binaries["miner-sim"], "--pool", f"127.0.0.1:{ports['listen']}", "--miners", "1",
        "--accounts", REJECTING_ACCOUNT, "--rate", "10", "--submits", "20"])
    FINITE.add(f"miner-{REJECTING_ACCOUNT}-rejected")
    try:
        short.wait(timeout=30)
    except subprocess.TimeoutExpired:
        raise Failure("the short-lived miner did not finish in 30s")
    wait_for("rejected shares (stale, low_difficulty) counted",
             lambda: {"stale", "low_difficulty"} <= set(sum_by(scrape_metrics(metrics_url), "stratum_rejected_shares_total", "reason")), 20)
    stop("pool-sim-rejecting")

    # 5. The pool the rest of the test mines on: fixed difficulty, no rejects.
    start("pool-sim", [binaries["pool-sim"], "--listen", pool_addr, "--difficulty", str(DIFFICULTY),
                       "--reject-ratio", "0"])
    read_log_address("pool-sim", r"listening on (\S+)", 20)

    # 6. A miner that never says anything: handshake timeout after 2 s.
    with raw_connect(ports["listen"]):
        wait_for("a handshake timeout", counted("stratum_connection_timeouts_total", "kind", "handshake"), 20)

    # 7. The miners: one miner-sim per account, `--miners N` connections each.
    n_miners = 0
    for account, (workers, rate) in MINERS.items():
        start(f"miner-{account}", [binaries["miner-sim"], "--pool", f"127.0.0.1:{ports['listen']}",
                                   "--miners", str(workers), "--accounts", account,
                                   "--rate", str(rate), "--seconds", str(DEADLINE_SECONDS)])
        n_miners += workers
    mining_started = time.monotonic()
    wait_for("every miner connected",
             lambda: sum(sum_by(scrape_metrics(metrics_url), "stratum_active_connections", "pool_host").values()) == n_miners, 30)

    # 8. Connections past max_connections are refused.
    extra = []
    try:
        for _ in range(MAX_CONNECTIONS - n_miners + 2):
            extra.append(raw_connect(ports["listen"]))
        wait_for("a refused connection (max_connections)",
                 counted("stratum_refused_connections_total", "reason", "max_connections"), 20)
    finally:
        for s in extra:
            s.close()

    # 9. Let the rate window fill with steady mining, measuring the proxy's
    # own counters directly at both ends.
    first = (time.monotonic(), scrape_metrics(metrics_url))
    window = 60 if args.quick else WINDOW_SECONDS
    # + 3 scrapes so the window's first sample is taken after mining started,
    # + 10 s so every miner's first submit is inside it too.
    wait_seconds = window + 3 * SCRAPE_SECONDS + 10 - (time.monotonic() - mining_started)
    log(f"{n_miners} miners mining; waiting {wait_seconds:.0f}s for a full {window}s rate window")
    end = time.monotonic() + max(0.0, wait_seconds)
    while time.monotonic() < end:
        check_alive()
        time.sleep(min(5, max(0.1, end - time.monotonic())))
    last = (time.monotonic(), scrape_metrics(metrics_url))

    failures = []
    failures += check_rules(prom)
    failures += check_hashrate(prom, first, last, quick=args.quick)
    failures += check_dashboard(prom)
    return failures


# Every miner connection plus one: the refusal test opens a few more.
MAX_CONNECTIONS = sum(w for w, _ in MINERS.values()) + 1
FINITE = set()   # processes that are meant to exit by themselves


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
    # The workload is healthy and every error provoked above was brief, far
    # shorter than any alert's `for:`: nothing may fire.
    alerts = prom.api("/api/v1/alerts", {})["alerts"]
    for state in ("pending", "firing"):
        names = sorted(a["labels"].get("alertname", "?") + str({k: v for k, v in a["labels"].items() if k in ("client_id", "pool_host")})
                       for a in alerts if a.get("state") == state)
        log(f"alerts {state}: {names or 'none'}")
        if state == "firing" and names:
            failures.append(f"alerts firing on a healthy run: {names}")
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
    log(f"hashrate check ({rule}); expected = miners x submits/s x difficulty {DIFFICULTY} x 2^32")
    for account, (workers, rate) in MINERS.items():
        expected = workers * rate * DIFFICULTY * TWO_32
        measured_direct = (d1.get(account, 0) - d0.get(account, 0)) / (t1 - t0) * TWO_32
        # A whole number of shares per window: up to one share missed at each
        # end of the window per miner; plus 2 % for timer slack under load.
        tolerance = 2 * workers * DIFFICULTY * TWO_32 / window + 0.02 * expected
        value = got.get(account)
        ok = value is not None and abs(value - expected) <= tolerance
        dev = f"{(value - expected) / expected:+.2%}" if value is not None else "n/a"
        log(f"  {account}: recorded {fmt_hs(value)} ({value if value is None else round(value)} H/s)"
            f"  expected {fmt_hs(expected)} ({round(expected)} H/s) +- {fmt_hs(tolerance)}: {dev}"
            f"  [direct from /metrics over {t1 - t0:.0f}s: {fmt_hs(measured_direct)}]  {'OK' if ok else 'FAIL'}")
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
                values = [float(r["value"][1]) for r in result]
                finite = [v for v in values if v == v and abs(v) != float("inf")]
                if not finite:
                    raise Failure(f"{len(result)} series, none with a finite value")
                nonzero = sum(1 for v in finite if v != 0)
                detail = f"{len(result)} series, {nonzero} non-zero"
            ok += 1
            log(f"  ok    {where}: {detail}")
        except Failure as e:
            failures.append(f"dashboard query {where}: {e}\n      {q}")
            log(f"  FAIL  {where}: {e}\n      {q}")
    log(f"dashboard: {ok} of {len(qs)} queries returned data")
    return failures


def run():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bin-dir", required=True, help="directory with stratum-proxy, pool-sim, miner-sim")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "/usr/bin/prometheus")
    ap.add_argument("--quick", action="store_true",
                    help="do not wait for a full 5 m window: check the hashrate expression over 1 m instead")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, TSDB)")
    args = ap.parse_args()

    def on_deadline(*_):
        raise Failure(f"deadline of {DEADLINE_SECONDS}s passed")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGALRM, on_deadline)
    signal.alarm(DEADLINE_SECONDS)
    code = 1
    try:
        failures = main(args)
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
        if workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif workdir:
            log(f"kept {workdir}")
    log("PASSED" if code == 0 else "FAILED")
    return code


if __name__ == "__main__":
    sys.exit(run())
