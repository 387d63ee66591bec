#!/usr/bin/env bash
# Side-by-side benchmark: HAProxy (mode tcp, nbthread 1), nginx stream (one
# worker), stratum-proxy (release, metrics on) and, where meaningful, miners
# straight to the pool ("direct"), in every scenario of stratum-bench, in one
# run. Prints one table with ratios against HAProxy, then one of the outage
# scenarios (failover: the primary pool dies; stall: it hangs), HAProxy as a
# failover relay beside stratum-proxy with two pools.
#
#   benches/compare.sh            full run (about 13 minutes)
#   benches/compare.sh --quick    smoke run: short windows, fewer miners (about 4.5 min)
#   benches/compare.sh --only=saturation,burst,burst9500   only these (reruns)
#   benches/compare.sh --unobserved   adds, in saturation, stratum-proxy built
#       with the bench-unobserved feature: the same relay observing no line,
#       the floor under the relay's own cost (one more build, about 1 min)
#
# Scenarios: steady scale burst burst9500 saturation idle failover stall.
# The bench (pool + miners in one process: the simulators, or the one-thread
# epoll generator in saturation and the bursts) runs on CPU 0, each target on
# CPU 1, except stratum-proxy --threads 2 in saturation, which is unpinned
# (2 cores only). The "gen CPU %" column is the bench's own CPU use over the
# window (100% = its whole core: then it, not the target, is the limit).
# Every process started here is ended on exit (trap). Needs root for apt only
# when haproxy or nginx's stream module is missing.
set -euo pipefail

QUICK=""
ONLY=""
UNOBSERVED=""
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK="--quick" ;;
        --only=*) ONLY=",${arg#--only=}," ;;
        --unobserved) UNOBSERVED=1 ;;
        -h | --help) sed -n '2,23p' "$0"; exit 0 ;;
        *) echo "compare.sh: unknown argument $arg (use --quick, --only=SCENARIO,..., --unobserved)" >&2; exit 2 ;;
    esac
done

# Whether scenario $1 is to run (all unless --only names some).
wanted() {
    [[ -z "$ONLY" || "$ONLY" == *",$1,"* ]]
}

ROOT=$(cd "$(dirname "$0")/.." && pwd)
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
STREAM_MODULE=/usr/lib/nginx/modules/ngx_stream_module.so
WORK=$(mktemp -d /tmp/stratum-compare.XXXXXX)
PIDS=()
POLICY_CREATED=""

cleanup() {
    local pid
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]:-}"; do
        [[ -n "$pid" ]] && wait "$pid" 2>/dev/null || true
    done
    [[ -n "$POLICY_CREATED" ]] && rm -f /usr/sbin/policy-rc.d
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

install_packages() {
    local missing=()
    command -v haproxy >/dev/null || missing+=(haproxy)
    command -v nginx >/dev/null || missing+=(nginx)
    [[ -f "$STREAM_MODULE" ]] || missing+=(libnginx-mod-stream)
    ((${#missing[@]} == 0)) && return 0
    echo "installing ${missing[*]}" >&2
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        # No service may start on install: the benchmark starts its own.
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        POLICY_CREATED=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq "${missing[@]}" >/dev/null
    if [[ -n "$POLICY_CREATED" ]]; then
        rm -f /usr/sbin/policy-rc.d
        POLICY_CREATED=""
    fi
}

install_packages
(cd "$ROOT" && cargo build --release --locked --bin stratum-proxy --bin stratum-bench >&2)
PROXY="$CARGO_TARGET_DIR/release/stratum-proxy"
UNOBSERVED_PROXY="$CARGO_TARGET_DIR/unobserved/release/stratum-proxy"
if [[ -n "$UNOBSERVED" ]]; then
    # Its own target directory: the shipped build above stays as it is.
    (cd "$ROOT" && CARGO_TARGET_DIR="$CARGO_TARGET_DIR/unobserved" cargo build --release \
        --locked --features bench-unobserved --bin stratum-proxy >&2)
fi
BENCH="$CARGO_TARGET_DIR/release/stratum-bench"

# Each process needs 2 fds per miner: take the hard limit.
ulimit -n "$(ulimit -Hn)"

# Below the ephemeral range (32768+), so no miner connection holds our ports.
PORT=21000
TARGET_PID=""
METRICS_PORT=""

# Waits (bounded) until something listens on 127.0.0.1:$1.
wait_listening() {
    local i
    for ((i = 0; i < 100; i++)); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        sleep 0.05
    done
    echo "compare.sh: nothing listens on port $1" >&2
    return 1
}

# start_target NAME LISTEN_PORT POOL_PORT [BACKUP_POOL_PORT]: sets TARGET_PID
# ("" for direct). With a backup pool, HAProxy is the failover relay the
# issue names (health checks inter 1s fall 1 rise 2, a backup server,
# redispatch, shutdown-sessions on marked down) and stratum-proxy gets two
# --pool flags.
start_target() {
    local name=$1 listen=$2 pool=$3 backup=${4:-}
    TARGET_PID=""
    case "$name" in
        direct) return 0 ;;
        haproxy)
            if [[ -n "$backup" ]]; then
                cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 9990
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
    retries 3
    option redispatch
frontend miners
    bind 127.0.0.1:$listen
    default_backend pools
backend pools
    default-server inter 1s fall 1 rise 2 on-marked-down shutdown-sessions
    server primary 127.0.0.1:$pool check
    server backup 127.0.0.1:$backup check backup
EOF
                taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
            else
            cat >"$WORK/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 9990
defaults
    mode tcp
    timeout connect 10s
    timeout client 1h
    timeout server 1h
frontend miners
    bind 127.0.0.1:$listen
    default_backend pool
backend pool
    server pool 127.0.0.1:$pool
EOF
            taskset -c 1 haproxy -db -f "$WORK/haproxy.cfg" >"$WORK/haproxy.log" 2>&1 &
            fi
            ;;
        nginx)
            # master_process off: the one worker is the process we measure.
            cat >"$WORK/nginx.conf" <<EOF
load_module $STREAM_MODULE;
daemon off;
master_process off;
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log warn;
events { worker_connections 20000; }
stream {
    server {
        listen 127.0.0.1:$listen;
        proxy_pass 127.0.0.1:$pool;
        proxy_timeout 1h;
    }
}
EOF
            taskset -c 1 nginx -e "$WORK/nginx-error.log" -p "$WORK" -c "$WORK/nginx.conf" >"$WORK/nginx.log" 2>&1 &
            ;;
        stratum-proxy | stratum-proxy-2t | stratum-proxy-unobserved)
            local pin=(taskset -c 1) threads=1 binary=$PROXY
            if [[ "$name" == stratum-proxy-2t ]]; then
                pin=()
                threads=2
            fi
            [[ "$name" == stratum-proxy-unobserved ]] && binary=$UNOBSERVED_PROXY
            METRICS_PORT=$((listen + 1))
            local pools=(--pool "127.0.0.1:$pool")
            [[ -n "$backup" ]] && pools+=(--pool "127.0.0.1:$backup")
            "${pin[@]}" "$binary" --listen "127.0.0.1:$listen" "${pools[@]}" \
                --metrics-listen "127.0.0.1:$METRICS_PORT" --log-level warn --log-format text \
                --threads "$threads" --max-connections 30000 --accept-burst 30000 \
                --accept-rate-per-second 100000 \
                --address-overrides 127.0.0.0/8=1000000/1000000 >"$WORK/$name.log" 2>&1 &
            ;;
        *) echo "compare.sh: unknown target $name" >&2; return 1 ;;
    esac
    TARGET_PID=$!
    PIDS+=("$TARGET_PID")
    if ! wait_listening "$listen"; then
        cat "$WORK"/*.log >&2 || true
        return 1
    fi
}

stop_target() {
    [[ -z "$TARGET_PID" ]] && return 0
    kill "$TARGET_PID" 2>/dev/null || true
    wait "$TARGET_PID" 2>/dev/null || true
    TARGET_PID=""
}

FAILED=0
# run_one SCENARIO TARGET: appends the bench's JSON line to $WORK/results.jsonl.
run_one() {
    local scenario=$1 name=$2 listen pool out
    PORT=$((PORT + 3))
    listen=$PORT
    pool=$((PORT + 2))
    start_target "$name" "$listen" "$pool"
    local args=(--scenario "$scenario" --pool-port "$pool" --name "$name" $QUICK)
    if [[ "$name" == direct ]]; then
        args+=(--target direct)
    else
        args+=(--target "127.0.0.1:$listen" --target-pid "$TARGET_PID")
    fi
    out="$WORK/$scenario-$name.out"
    if ! taskset -c 0 "$BENCH" "${args[@]}" >"$out" 2>"$WORK/$scenario-$name.err"; then
        echo "compare.sh: $scenario/$name FAILED (see below)" >&2
        cat "$WORK/$scenario-$name.err" >&2
        FAILED=1
    fi
    head -n 1 "$out" >&2
    local json
    json=$(grep '^{' "$out" | tail -n 1 || true)
    [[ -z "$json" ]] && json="{\"scenario\":\"$scenario\",\"target\":\"$name\",\"ok\":false}"
    if [[ "$name" == stratum-proxy || "$name" == stratum-proxy-2t ]]; then
        # Proof that it metered: its submit counter equals the submits sent.
        local metered
        metered=$(curl -sf "http://127.0.0.1:$METRICS_PORT/metrics" |
            awk '/^stratum_submits_total/ {s += $NF} END {printf "%d", s}') || metered=-1
        json=$(python3 -c 'import json,sys; d=json.loads(sys.argv[1]); d["metered_submits"]=int(sys.argv[2]); d["metered_ok"]=d["metered_submits"]==d.get("pool_submits_total"); print(json.dumps(d))' "$json" "$metered")
        if ! grep -q '"metered_ok": true' <<<"$json"; then
            echo "compare.sh: $scenario/$name: stratum_submits_total $metered != submits sent" >&2
            FAILED=1
        fi
    fi
    echo "$json" >>"$WORK/results.jsonl"
    stop_target
}

# run_outage SCENARIO TARGET: failover/stall with a backup pool; the
# bench's JSON line goes to $WORK/outages.jsonl. HAProxy not moving miners
# off a hung pool is a finding, not a failure of this script.
run_outage() {
    local scenario=$1 name=$2 listen pool backup out
    PORT=$((PORT + 4))
    listen=$PORT
    pool=$((PORT + 2))
    backup=$((PORT + 3))
    start_target "$name" "$listen" "$pool" "$backup"
    out="$WORK/$scenario-$name.out"
    if ! taskset -c 0 "$BENCH" --scenario "$scenario" --pool-port "$pool" \
        --backup-pool-port "$backup" --target "127.0.0.1:$listen" --name "$name" \
        $QUICK >"$out" 2>"$WORK/$scenario-$name.err"; then
        if [[ "$name" == stratum-proxy ]]; then
            echo "compare.sh: $scenario/$name FAILED (see below)" >&2
            cat "$WORK/$scenario-$name.err" >&2
            FAILED=1
        fi
    fi
    head -n 1 "$out" >&2
    grep '^{' "$out" | tail -n 1 >>"$WORK/outages.jsonl" || true
    stop_target
}

echo "# $(date -u +%FT%TZ) commit $(git -C "$ROOT" rev-parse --short HEAD) load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
if wanted steady; then for target in direct haproxy nginx stratum-proxy; do run_one steady "$target"; done; fi
if wanted scale; then for target in haproxy nginx stratum-proxy; do run_one scale "$target"; done; fi
if wanted burst; then for target in direct haproxy nginx stratum-proxy; do run_one burst "$target"; done; fi
if wanted burst9500; then for target in direct haproxy nginx stratum-proxy; do run_one burst9500 "$target"; done; fi
if wanted saturation; then
    targets=(direct haproxy nginx stratum-proxy stratum-proxy-2t)
    [[ -n "$UNOBSERVED" ]] && targets+=(stratum-proxy-unobserved)
    for target in "${targets[@]}"; do run_one saturation "$target"; done
fi
if wanted idle; then for target in haproxy nginx stratum-proxy; do run_one idle "$target"; done; fi
if wanted failover; then for target in haproxy stratum-proxy; do run_outage failover "$target"; done; fi
if wanted stall; then for target in haproxy stratum-proxy; do run_outage stall "$target"; done; fi
echo "# finished $(date -u +%FT%TZ) load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

python3 - "$WORK/results.jsonl" <<'EOF'
import json, os, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()] if os.path.exists(sys.argv[1]) else []
by = {(r["scenario"], r["target"]): r for r in rows}

def num(r, k):
    v = r.get(k)
    return v if isinstance(v, (int, float)) and not isinstance(v, bool) else None

def f(v, digits=3):
    return "-" if v is None else f"{v:.{digits}f}"

def ratio(r, k, base):
    a, b = num(r, k), (num(base, k) if base else None)
    return "-" if a is None or b is None or b == 0 else f"{a / b:.2f}x"

head = ["scenario", "target", "ok", "msgs/s", "CPU us/msg", "vs HAProxy",
        "RSS KiB/miner", "vs HAProxy", "RTT p50/p99/p999 ms", "added p50 ms",
        "vs HAProxy", "fan-out p50/p99/max ms", "vs HAProxy (p99)",
        "fan-out p99 from 1st send ms", "wakeups/s", "gen CPU %", "bytes match"]
print("| " + " | ".join(head) + " |")
print("|" + "---|" * len(head))
for r in rows:
    s = r["scenario"]
    base = by.get((s, "haproxy"))
    direct = by.get((s, "direct"))
    added = None
    if direct and num(r, "rtt_p50_ms") is not None and num(direct, "rtt_p50_ms") is not None \
            and r["target"] != "direct":
        added = r["rtt_p50_ms"] - direct["rtt_p50_ms"]
    r["added_p50_ms"] = added
    base_added = None
    if base and direct and num(base, "rtt_p50_ms") is not None and num(direct, "rtt_p50_ms") is not None:
        base_added = base["rtt_p50_ms"] - direct["rtt_p50_ms"]
    added_ratio = "-" if added is None or not base_added else f"{added / base_added:.2f}x"
    ok = "yes" if r.get("ok") else "NO"
    if "metered_ok" in r:
        ok += " (metered)" if r["metered_ok"] else " (METER MISMATCH)"
    rtt = "/".join(f(num(r, k)) for k in ("rtt_p50_ms", "rtt_p99_ms", "rtt_p999_ms"))
    fan = "/".join(f(num(r, k)) for k in ("fanout_p50_ms", "fanout_p99_ms", "fanout_max_ms"))
    print("| " + " | ".join([
        s, r["target"], ok, f(num(r, "messages_per_s"), 0),
        f(num(r, "cpu_us_per_msg")), ratio(r, "cpu_us_per_msg", base),
        f(num(r, "rss_per_miner_kib"), 2), ratio(r, "rss_per_miner_kib", base),
        rtt if num(r, "rtt_p50_ms") is not None else "-", f(added), added_ratio,
        fan if num(r, "fanout_p99_ms") is not None else "-",
        ratio(r, "fanout_p99_ms", base), f(num(r, "fanout_from_first_p99_ms")),
        f(num(r, "wakeups_per_s"), 1), f(num(r, "gen_cpu_pct"), 1),
        f"{r.get('bytes_match', 0)}/{r.get('miners', '?')}",
    ]) + " |")
EOF

python3 - "$WORK/outages.jsonl" <<'EOF'
import json, os, sys

path = sys.argv[1]
rows = [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []
print()
print("| outage | target | ok | miners | job from backup p50 / p99 / p100 ms | share accepted p50 / p99 / p100 ms | gen CPU % |")
print("|---|---|---|---|---|---|---|")
for r in rows:
    def q(key):
        d = r.get(key) or {}
        return " / ".join("never" if d.get(p) is None else str(d[p]) for p in ("p50_ms", "p99_ms", "p100_ms"))
    ok = "yes" if r.get("ok") else "no"
    gen = r.get("gen_cpu_pct")
    gen = "-" if gen is None else f"{gen:.1f}"
    print(f"| {r['scenario']} | {r['target']} | {ok} | {r.get('miners')} | {q('job_from_backup')} | {q('share_accepted_on_backup')} | {gen} |")
EOF
exit "$FAILED"
