#!/usr/bin/env python3
"""Host side of the boot test (tests/boot/run.sh calls it).

start-pool: start pool-sim on loopback in the background, record its port.
run:        with the guest booting: wait for /healthz; check the unit's state
            (active, Type=notify, its own user); relay a miner-sim session
            through the guest and check /metrics against what miner-sim
            reports; read the unit's journal in the guest (connection lines at
            info); stop the pool so the proxy logs a warning and check that
            `journalctl -p warning` shows it and no info line; check that a
            WATCHDOG=1 reached systemd and the unit never restarted; power
            the guest off.

Every wait is bounded; any failure exits 1 after printing what it saw and
the guest's own view (systemctl status, journal) when the guest still answers.
Stage timings go to RUN/check-timings.txt for run.sh's table.
"""

import argparse
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

# Command-line shapes of the simulators. {addr} is host:port of the gateway's
# forwarded Stratum port; override with POOL_SIM_ARGS / MINER_SIM_ARGS.
POOL_SIM_ARGS = os.environ.get("POOL_SIM_ARGS", "--listen 127.0.0.1:0")
MINER_SIM_ARGS = os.environ.get(
    "MINER_SIM_ARGS", "--pool {addr} --miners {miners} --submits {shares} --rate 10")

POOL_START_TIMEOUT_SECONDS = 30
HTTP_TIMEOUT_SECONDS = 10
CTL_TIMEOUT_SECONDS = 120
MINER_TIMEOUT_SECONDS = 600
METRICS_SETTLE_TIMEOUT_SECONDS = 60
SHUTDOWN_TIMEOUT_SECONDS = 180
WATCHDOG_WAIT_MAX_SECONDS = 120

CONN_RE = re.compile(r"\bconn=\d+")

PRIORITY_NAMES = ["emerg", "alert", "crit", "err", "warning", "notice", "info", "debug"]


class Failure(Exception):
    """A check that did not hold; its message says what was seen."""


def say(msg):
    print(f"boot: {msg}", flush=True)


# ---- pool-sim ---------------------------------------------------------------

ADDR_RE = re.compile(r"(?:127\.0\.0\.1|0\.0\.0\.0|localhost|\[::1?\]):(\d{2,5})\b")


def start_pool(args):
    log_path = os.path.join(args.run, "pool-sim.log")
    argv = [args.pool_sim] + shlex.split(POOL_SIM_ARGS)
    say("pool-sim: " + " ".join(shlex.quote(a) for a in argv))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + POOL_START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        with open(log_path, "r", errors="replace") as f:
            text = f.read()
        m = ADDR_RE.search(text)
        if m:
            port = int(m.group(1))
            # The address is printed once it listens; make sure it does.
            with socket.create_connection(("127.0.0.1", port), timeout=5):
                pass
            with open(os.path.join(args.run, "pool.port"), "w") as f:
                f.write(f"{port}\n")
            with open(os.path.join(args.run, "pool.pid"), "w") as f:
                f.write(f"{proc.pid}\n")
            say(f"pool-sim listening on 127.0.0.1:{port} (pid {proc.pid})")
            return 0
        if proc.poll() is not None:
            break
        time.sleep(0.2)
    proc.kill()
    with open(log_path, "r", errors="replace") as f:
        sys.stderr.write(f.read())
    say("FAILED: pool-sim printed no loopback listening address "
        f"within {POOL_START_TIMEOUT_SECONDS} s (set POOL_SIM_ARGS?)")
    return 1


# ---- guest access -------------------------------------------------------------

def http_get(port, path):
    url = f"http://127.0.0.1:{port}{path}"
    with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_SECONDS) as r:
        return r.status, r.read().decode("utf-8", "replace")


def ctl(port, command, timeout=CTL_TIMEOUT_SECONDS):
    """One command over the guest's boot-test-ctl socket; returns its output."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(command.encode() + b"\n")
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    return b"".join(chunks).decode("utf-8", "replace")


def qemu_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by run.sh) counts as gone.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


# ---- Prometheus text ------------------------------------------------------------

SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")


def samples(text, name):
    """(labels, value) of every sample of metric `name`."""
    out = []
    for line in text.splitlines():
        m = SAMPLE_RE.match(line)
        if m and m.group(1) == name:
            out.append((m.group(2) or "", float(m.group(3))))
    return out


def total(text, name):
    return sum(v for _, v in samples(text, name))


# ---- miner-sim summary ------------------------------------------------------------

def flatten(obj, prefix=""):
    out = {}
    for k, v in obj.items():
        key = f"{prefix}{k}".lower()
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = v
    return out


def parse_summary(text):
    """Numbers miner-sim reports: its JSON summary (pretty-printed or one
    line), else key=value / key: value words."""
    start = text.find("{")
    if start >= 0:
        try:
            obj, _ = json.JSONDecoder().raw_decode(text[start:])
            if isinstance(obj, dict):
                return flatten(obj)
        except ValueError:
            pass
    found = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                stack = [("", obj)]
                while stack:
                    prefix, d = stack.pop()
                    for k, v in d.items():
                        key = f"{prefix}{k}".lower()
                        if isinstance(v, dict):
                            stack.append((key + ".", v))
                        elif isinstance(v, (int, float)) and not isinstance(v, bool):
                            found[key] = v
                continue
        for k, v in re.findall(r"([A-Za-z_][\w.-]*)\s*[=:]\s*(\d+)\b", line):
            found.setdefault(k.lower(), int(v))
    return found


def pick(found, *patterns, exclude=()):
    for pat in patterns:
        for k, v in found.items():
            if re.search(pat, k) and not any(re.search(x, k) for x in exclude):
                return k, v
    return None, None


# ---- the run ----------------------------------------------------------------------

class Run:
    def __init__(self, args):
        self.a = args
        self.timings = []
        self.ctl_up = False
        self.props = {}
        self.conn_lines = []
        with open(os.path.join(args.run, "pool.port")) as f:
            self.pool_port = int(f.read())

    def timed(self, name, fn):
        t0 = time.monotonic()
        try:
            return fn()
        finally:
            self.timings.append((name, time.monotonic() - t0))
            with open(os.path.join(self.a.run, "check-timings.txt"), "w") as f:
                for n, s in self.timings:
                    f.write(f"{n:<22} {s:7.1f} s\n")

    def wait_healthz(self):
        deadline = time.monotonic() + self.a.boot_timeout
        last = "no answer yet"
        next_unit_check = time.monotonic() + 5
        while time.monotonic() < deadline:
            if not qemu_alive(self.a.qemu_pid):
                raise Failure(f"qemu exited during boot ({last})")
            try:
                status, body = http_get(self.a.metrics_port, "/healthz")
                if status == 200:
                    say(f"/healthz: 200 {body.strip()[:80]!r}")
                    return
                last = f"status {status}"
            except (OSError, urllib.error.URLError) as e:
                last = str(e)
            # A unit that gave up will never answer: fail now, not at the
            # timeout. (The command channel is up once sockets.target is.)
            if time.monotonic() >= next_unit_check:
                next_unit_check = time.monotonic() + 5
                try:
                    _, props = self.unit_props(timeout=5)
                    # Restart=on-failure with RestartSec=2s never trips the
                    # start limit: a crashing daemon shows as restarts.
                    restarts = props.get("NRestarts", "0")
                    if props.get("ActiveState") == "failed" or restarts not in ("", "0"):
                        raise Failure("stratum-proxy.service failed before /healthz answered "
                                      f"(ActiveState={props.get('ActiveState')}, "
                                      f"Result={props.get('Result')}, NRestarts={restarts})")
                except OSError:
                    pass
            time.sleep(1)
        raise Failure(f"no /healthz 200 within {self.a.boot_timeout} s ({last})")

    def unit_props(self, timeout=CTL_TIMEOUT_SECONDS):
        out = ctl(self.a.ctl_port, "show", timeout=timeout)
        return out, dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def check_unit(self):
        out, props = self.unit_props()
        self.ctl_up = True
        self.props = props
        say("unit state:\n" + indent(out))
        if props.get("ActiveState") != "active" or props.get("SubState") != "running":
            raise Failure("stratum-proxy.service is not active (running)")
        if props.get("Type") != "notify":
            raise Failure(f"stratum-proxy.service is Type={props.get('Type')}, want notify")
        user = props.get("MainPIDUser", "")
        if not user or user == "root":
            raise Failure(f"stratum-proxy runs as {user or 'unknown user'}, want its system user")
        # For the record (the systemd check asserts the score offline): the
        # exposure systemd itself computes for the running unit on the gateway.
        out = ctl(self.a.ctl_port, "security")
        overall = [l.strip() for l in out.splitlines() if "Overall exposure" in l]
        say("systemd-analyze security in the guest: " + (overall[0] if overall else out.strip()[-200:]))
        out = ctl(self.a.ctl_port, "boot-time")
        say("systemd-analyze time in the guest: " + " ".join(out.split())[:200])

    def traffic(self):
        addr = f"127.0.0.1:{self.a.proxy_port}"
        argv = [self.a.miner_sim] + [
            w.format(addr=addr, host="127.0.0.1", port=self.a.proxy_port,
                     miners=self.a.miners, shares=self.a.shares)
            for w in shlex.split(MINER_SIM_ARGS)]
        say("miner-sim: " + " ".join(shlex.quote(a) for a in argv))
        try:
            p = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=MINER_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            raise Failure(f"miner-sim did not finish within {MINER_TIMEOUT_SECONDS} s")
        found = parse_summary(p.stdout + "\n" + p.stderr)
        totals = {k: v for k, v in found.items() if k.startswith("totals.")}
        if p.returncode != 0 or not totals:
            say("miner-sim output:\n" + indent(p.stdout + p.stderr))
        else:
            say("miner-sim totals: " + ", ".join(f"{k[7:]}={v:g}" for k, v in totals.items()))
        if p.returncode != 0:
            raise Failure(f"miner-sim exited {p.returncode}")
        k_sent, sent = pick(found, r"^totals\.submits$", r"submit.*sent|sent.*submit", r"submits?$",
                            exclude=(r"accept", r"reject", r"fail", r"error", r"rate"))
        for key in ("totals.errors", "totals.unanswered"):
            if found.get(key):
                raise Failure(f"miner-sim reports {key}={found[key]}")
        k_acc, accepted = pick(found, r"^totals\.accepted$", r"accept")
        if sent is None:
            raise Failure(f"miner-sim reported no submit count (parsed {found})")
        if sent <= 0:
            raise Failure(f"miner-sim sent no submits ({k_sent}={sent})")
        say(f"miner-sim reports {k_sent}={sent}" + (f", {k_acc}={accepted}" if k_acc else ""))

        # Counters are updated by the proxy's observer after relaying; poll
        # (bounded) until they reach what the miners sent.
        deadline = time.monotonic() + METRICS_SETTLE_TIMEOUT_SECONDS
        while True:
            status, text = http_get(self.a.metrics_port, "/metrics")
            if status != 200:
                raise Failure(f"/metrics answered {status}")
            subs = total(text, "stratum_submits_total")
            conns = total(text, "stratum_connections_total")
            acc = total(text, "stratum_accepted_shares_total")
            active = total(text, "stratum_active_connections")
            settled = subs >= sent and (accepted is None or acc >= accepted) and active == 0
            if settled or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        shown = sorted(l for l in text.splitlines() if re.match(
            r"stratum_(connections_total|active_connections|submits_total|accepted_shares_total|"
            r"rejected_shares_total|bytes_sent_total|bytes_received_total)\b", l)
            and (l.startswith("stratum_active_connections") or not re.search(r"\s0$", l)))
        say("/metrics (relevant samples, zeros left out):\n" + indent("\n".join(shown)))
        if subs != sent:
            raise Failure(f"sum of stratum_submits_total is {subs:g}, miner-sim sent {sent}")
        if conns < self.a.miners:
            raise Failure(f"sum of stratum_connections_total is {conns:g}, want >= {self.a.miners}")
        if active != 0:
            raise Failure(f"stratum_active_connections is {active:g} after every miner left, want 0")
        if accepted is not None and acc != accepted:
            raise Failure(f"sum of stratum_accepted_shares_total is {acc:g}, miner-sim saw {accepted} accepted")
        say(f"metrics agree: submits {subs:g} = {sent}, connections {conns:g} >= {self.a.miners}"
            + (f", accepted {acc:g} = {accepted}" if accepted is not None else ""))

    def journal_entries(self, prio):
        out = ctl(self.a.ctl_port, f"journal {prio}")
        entries = []
        for line in out.splitlines():
            line = line.strip()
            if not line or line.startswith("-- "):  # "-- No entries --"
                continue
            try:
                e = json.loads(line)
            except ValueError:
                raise Failure(f"journalctl -p {prio} printed a non-JSON line: {line[:200]}")
            msg = e.get("MESSAGE")
            if isinstance(msg, list):  # journald gives non-UTF-8 messages as bytes
                msg = bytes(msg).decode("utf-8", "replace")
            entries.append((int(e.get("PRIORITY", 6)), msg or ""))
        return entries

    def journal(self):
        # Connection lines reach the journal a moment after the miners hang
        # up: poll, bounded.
        deadline = time.monotonic() + METRICS_SETTLE_TIMEOUT_SECONDS
        while True:
            info = self.journal_entries("info")
            conn = [(p, m) for p, m in info if CONN_RE.search(m)]
            if len(conn) >= 2 * self.a.miners or time.monotonic() > deadline:
                break
            time.sleep(1)
        say(f"journalctl -u stratum-proxy -p info: {len(info)} entries, "
            f"{len(conn)} connection lines:\n" + indent("\n".join(
                f"<{p}> {PRIORITY_NAMES[p]:<7} {m}" for p, m in conn[:6 * self.a.miners])))
        if not conn:
            raise Failure("no connection line (conn=<id>) at info in the unit's journal")
        if len(conn) < 2 * self.a.miners:
            raise Failure(f"{len(conn)} connection lines, want at least open+close for "
                          f"{self.a.miners} miners")
        bad = [p for p, _ in info if p > 6]
        if bad:
            raise Failure(f"journalctl -p info returned entries of priority {sorted(set(bad))}")
        prefixed = [m for _, m in info if re.match(r"<\d>", m)]
        if prefixed:
            raise Failure("journal messages still carry a <N> prefix (not parsed as priority): "
                          + prefixed[0][:120])
        self.conn_lines = conn

    def pool_down(self):
        """Stop the pool and connect a miner: the proxy must log the upstream
        failure at warning, so `-p warning` has something to let through and
        the info connection lines to hold back."""
        try:
            os.killpg(self.a.pool_pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.pool_port), timeout=2):
                    pass
            except OSError:
                break
            if time.monotonic() > deadline:
                raise Failure("pool-sim still accepts connections after SIGTERM")
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", self.a.proxy_port), timeout=30) as s:
            s.sendall(b'{"id":1,"method":"mining.subscribe","params":["boot-test/1.0"]}\n')
            s.settimeout(60)
            try:
                while s.recv(4096):
                    pass  # the proxy closes the miner once the pool is unreachable
            except socket.timeout:
                raise Failure("the proxy kept a miner open for 60 s with its pool down")
            except ConnectionResetError:
                pass
        deadline = time.monotonic() + METRICS_SETTLE_TIMEOUT_SECONDS
        while True:
            warn = self.journal_entries("warning")
            if any(p <= 4 for p, _ in warn) or time.monotonic() > deadline:
                break
            time.sleep(1)
        say(f"journalctl -u stratum-proxy -p warning: {len(warn)} entries:\n" +
            indent("\n".join(f"<{p}> {PRIORITY_NAMES[p]:<7} {m}" for p, m in warn[:20])))
        if not warn:
            raise Failure("no warning in the journal after a miner connected with the pool down")
        if any(p > 4 for p, _ in warn):
            raise Failure("journalctl -p warning shows entries less severe than warning")
        info_msgs = {m for _, m in self.conn_lines}
        if any(m in info_msgs for _, m in warn):
            raise Failure("journalctl -p warning shows the info connection lines")
        say("journal priorities agree: connection lines at info (6), the pool failure at "
            f"warning ({warn[0][0]}); -p warning shows {len(warn)} entries and no info line")

    def watchdog(self):
        """The daemon's WATCHDOG=1 pings reach systemd: the unit's watchdog
        timestamp moves on (systemd resets it on each ping) and the unit is
        still the same process, never restarted."""
        wd = timespan_seconds(self.props.get("WatchdogUSec", "0"))
        first = self.props.get("WatchdogTimestampMonotonic", "0")
        if wd > 0:
            # The daemon pings every WatchdogSec/2; allow a whole period more.
            deadline = time.monotonic() + min(1.5 * wd, WATCHDOG_WAIT_MAX_SECONDS)
            while True:
                out, props = self.unit_props()
                if props.get("WatchdogTimestampMonotonic", "0") != first:
                    break
                if time.monotonic() > deadline:
                    raise Failure(f"no WATCHDOG=1 ping reached systemd within {1.5 * wd:g} s "
                                  f"(WatchdogSec={wd:g}):\n" + indent(out))
                time.sleep(1)
        out, props = self.unit_props()
        if (props.get("ActiveState"), props.get("SubState")) != ("active", "running"):
            raise Failure("stratum-proxy.service is no longer active (running):\n" + indent(out))
        if props.get("NRestarts") != "0" or props.get("MainPID") != self.props.get("MainPID"):
            raise Failure("stratum-proxy.service restarted during the test:\n" + indent(out))
        say(f"unit still active (running), MainPID {props.get('MainPID')}, NRestarts 0, "
            + (f"WATCHDOG=1 received (WatchdogSec={wd:g})" if wd > 0 else "no WatchdogSec set"))

    def shutdown(self):
        out = ctl(self.a.ctl_port, "poweroff", timeout=30)
        say("poweroff: " + out.strip())
        deadline = time.monotonic() + SHUTDOWN_TIMEOUT_SECONDS
        while qemu_alive(self.a.qemu_pid):
            if time.monotonic() > deadline:
                raise Failure(f"guest did not power off within {SHUTDOWN_TIMEOUT_SECONDS} s")
            time.sleep(0.5)
        say("guest powered off")
        with open(os.path.join(self.a.run, "serial.log"), errors="replace") as f:
            lines = [re.sub(r"\x1b\[[0-9;]*m", "", l).rstrip() for l in f if "stratum-proxy" in l]
        stop = [l for l in lines if re.search(r"Stopp|stop|Deactivated|timed out|Killing", l)]
        say("shutdown, from the serial console:\n" + indent("\n".join(stop[-6:]) or "(nothing)"))
        if any(re.search(r"timed out|Killing|Failed", l) for l in stop):
            raise Failure("stratum-proxy did not stop cleanly on poweroff")

    def diagnose(self):
        """The guest's own view, best effort, after a failure."""
        if not qemu_alive(self.a.qemu_pid):
            return
        for cmd in ("status", "failed", "journal-text debug"):
            try:
                out = ctl(self.a.ctl_port, cmd, timeout=60)
                say(f"guest '{cmd}':\n" + indent(out[-6000:]))
            except OSError as e:
                say(f"guest '{cmd}': no answer ({e})")
                return

    def main(self):
        try:
            self.timed("boot to healthz", self.wait_healthz)
            self.timed("unit state", self.check_unit)
            self.timed("traffic+metrics", self.traffic)
            self.timed("journal", self.journal)
            self.timed("pool down+priorities", self.pool_down)
            self.timed("watchdog", self.watchdog)
            self.timed("shutdown", self.shutdown)
        except (Failure, OSError, urllib.error.URLError) as e:
            say(f"FAILED: {e}")
            self.diagnose()
            return 1
        finally:
            try:
                os.killpg(self.a.pool_pid, signal.SIGTERM)
            except (ProcessLookupError, PermissionError):
                pass
        return 0


def timespan_seconds(text):
    """systemd's timespan as `systemctl show` prints it ("30s", "1min 30s",
    "500ms", plain microseconds, "infinity") in seconds; 0 when unset."""
    text = text.strip()
    if text in ("", "0", "infinity"):
        return 0.0
    if text.isdigit():
        return int(text) / 1e6
    units = {"us": 1e-6, "ms": 1e-3, "s": 1, "min": 60, "h": 3600}
    return sum(float(n) * units[u] for n, u in re.findall(r"(\d+(?:\.\d+)?)(us|ms|min|s|h)", text))


def indent(text):
    return "\n".join("    " + l for l in text.rstrip("\n").splitlines())


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start-pool")
    p.add_argument("--pool-sim", required=True)
    p.add_argument("--run", required=True)
    r = sub.add_parser("run")
    r.add_argument("--run", required=True)
    r.add_argument("--qemu-pid", type=int, required=True)
    r.add_argument("--pool-pid", type=int, required=True)
    r.add_argument("--proxy-port", type=int, required=True)
    r.add_argument("--metrics-port", type=int, required=True)
    r.add_argument("--ctl-port", type=int, required=True)
    r.add_argument("--miner-sim", required=True)
    r.add_argument("--boot-timeout", type=float, default=600)
    r.add_argument("--miners", type=int, default=3)
    r.add_argument("--shares", type=int, default=20)
    args = ap.parse_args()
    if args.cmd == "start-pool":
        return start_pool(args)
    return Run(args).main()


if __name__ == "__main__":
    sys.exit(main())
