#!/usr/bin/env bash
# Monitoring kit CI: promtool check + unit tests of the Prometheus rules, the
# Grafana dashboard's structural check, and the live test (real Prometheus
# scraping a real proxy fed by the simulators). Called by .ci/run; runs alone
# too: `bash .ci/monitoring.sh` from the repository root, as root on Debian 12.
#
# Environment:
#   MONITORING_SKIP_LIVE=1   only the static checks (no cargo build, no live test)
#   MONITORING_LIVE_QUICK=1  live test without the 5 m wait (checks a 1 m window)
#   MONITORING_BIN_DIR=DIR   use these stratum-proxy/pool-sim/miner-sim binaries
#                            instead of building them
#   CARGO_TARGET_DIR         honoured when building
set -euo pipefail

cd "$(dirname "$0")/.."
root=$PWD
passed=0
failed=0
step() { echo "== monitoring: $*"; }
ok() { passed=$((passed + 1)); echo "   ok: $*"; }
ko() { failed=$((failed + 1)); echo "   FAILED: $*"; }

# --- tools (idempotent; Debian's packages only) ------------------------------
need=()
command -v promtool >/dev/null && command -v prometheus >/dev/null || need+=(prometheus)
command -v python3 >/dev/null || need+=(python3)
if ((${#need[@]})); then
    step "installing ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # The package's postinst would start a prometheus service: forbid that for
    # the install (no init system here anyway), unless a policy already does.
    made_policy=
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod +x /usr/sbin/policy-rc.d
        made_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    # A stale index of some other architecture or suite must not stop us:
    # the install below fails loudly if what we need is really missing.
    apt-get update -qq || echo "   (apt-get update reported errors; trying the install anyway)"
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    if [[ -n $made_policy ]]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi
promtool --version 2>&1 | head -1

# --- static checks -------------------------------------------------------------
cd "$root/monitoring/prometheus"
step "promtool check rules"
if promtool check rules recording_rules.yml alert_rules.yml; then ok "promtool check rules"; else ko "promtool check rules"; fi

step "promtool test rules"
for t in tests/*.yml; do
    if promtool test rules "$t"; then ok "promtool test rules $t"; else ko "promtool test rules $t"; fi
done

cd "$root"
step "dashboard structure"
if python3 monitoring/tools/dashboard_check.py; then ok "dashboard_check"; else ko "dashboard_check"; fi

# --- live test -------------------------------------------------------------------
if [[ ${MONITORING_SKIP_LIVE:-0} == 1 ]]; then
    step "live test skipped (MONITORING_SKIP_LIVE=1)"
else
    bin_dir=${MONITORING_BIN_DIR:-}
    if [[ -z $bin_dir ]]; then
        step "building stratum-proxy, pool-sim, miner-sim (release)"
        cargo build --release --locked --bin stratum-proxy --bin pool-sim --bin miner-sim
        bin_dir=${CARGO_TARGET_DIR:-$root/target}/release
    fi
    step "live test (real Prometheus, proxy, simulators)"
    live_args=(--bin-dir "$bin_dir" --prometheus "$(command -v prometheus)")
    if [[ ${MONITORING_LIVE_QUICK:-0} == 1 ]]; then live_args+=(--quick); fi
    # The test stops every process it started, and has its own deadline;
    # timeout(1) is the backstop.
    if timeout --kill-after=30 1200 python3 monitoring/tools/live_test.py "${live_args[@]}"; then
        ok "live test"
    else
        ko "live test"
    fi
fi

echo "monitoring: $passed passed, $failed failed"
[[ $failed == 0 ]]
