#!/usr/bin/env bash
# Checks the systemd unit as it lands on the gateway:
#   1. stages a rootfs: systemd's own units from this machine (what a systemd
#      gateway image has) + our overlay from buildroot/assemble-overlay.sh;
#   2. systemd-sysusers --root creates our user from the sysusers file;
#   3. systemd-analyze verify --root must print nothing (it exits 0 on mere
#      parse warnings, so any output fails the check);
#   4. systemd-analyze security --offline=true: prints the exposure score and
#      fails above 1.5;
#   5. systemd-tmpfiles --root makes config.json root:stratum-proxy 0640;
#   6. the unit's TimeoutStopSec is above the largest shutdown_grace_seconds
#      the config accepts (MAX_SHUTDOWN_GRACE in src/config/mod.rs), so
#      systemd never kills a drain still within its grace.
# Usage: .ci/systemd.sh [--binary PATH]   (default: target/firmware/stratum-proxy-aarch64,
#        which .ci/firmware.sh leaves behind)
set -euo pipefail
given=""
if [ "${1:-}" = --binary ]; then given=$(realpath -m "${2:?--binary needs a path}"); fi
cd "$(dirname "$0")/.."

MAX_EXPOSURE=1.5
binary=${given:-${FIRMWARE_OUT:-target/firmware}/stratum-proxy-aarch64}
if [ ! -f "$binary" ]; then
    echo "systemd.sh: no binary at $binary: run .ci/firmware.sh first or pass --binary PATH" >&2
    exit 1
fi
for tool in systemd-analyze systemd-sysusers; do
    command -v "$tool" >/dev/null || { echo "systemd.sh: $tool missing (apt-get install systemd)" >&2; exit 1; }
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
buildroot/assemble-overlay.sh --binary "$binary" --out "$work/overlay" >/dev/null
mkdir -p "$root/usr/lib/systemd" "$root/etc"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
cp -a "$work/overlay/." "$root/"
ln -s usr/bin "$root/bin" 2>/dev/null || true

fail=0
echo "== systemd-sysusers --root"
systemd-sysusers --root="$root"
if ! grep -q '^stratum-proxy:' "$root/etc/passwd"; then
    echo "FAIL: sysusers did not create user stratum-proxy"; fail=1
fi

echo "== systemd-analyze verify --root=<staged rootfs> stratum-proxy.service"
out=$(systemd-analyze verify --root="$root" stratum-proxy.service 2>&1) || { echo "$out"; echo "FAIL: verify exited non-zero"; fail=1; out=; }
if [ -n "$out" ]; then
    echo "$out"; echo "FAIL: verify is not clean"; fail=1
else
    echo "clean"
fi

echo "== systemd-analyze security --offline=true"
sec=$(systemd-analyze security --offline=true --root="$root" --no-pager stratum-proxy.service 2>&1) || true
printf '%s\n' "$sec" | grep '✗' || true
score=$(printf '%s\n' "$sec" | sed -n 's/.*Overall exposure level for stratum-proxy.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
    printf '%s\n' "$sec"; echo "FAIL: no exposure score"; fail=1
else
    echo "exposure score: $score (max $MAX_EXPOSURE)"
    if awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s > m) }'; then
        echo "FAIL: exposure $score > $MAX_EXPOSURE"; fail=1
    fi
fi

echo "== systemd-tmpfiles --root --create stratum-proxy.conf"
systemd-tmpfiles --root="$root" --create "$root/usr/lib/tmpfiles.d/stratum-proxy.conf" || true
gid=$(awk -F: '$1 == "stratum-proxy" { print $3 }' "$root/etc/group")
mode=$(stat -c '%a %u %g' "$root/etc/stratum-proxy/config.json")
if [ "$mode" = "640 0 $gid" ]; then
    echo "config.json: mode 640, root:stratum-proxy"
else
    echo "FAIL: config.json is '$mode' (mode uid gid), want '640 0 $gid'"; fail=1
fi

echo "== TimeoutStopSec > MAX_SHUTDOWN_GRACE"
stop=$(sed -n 's/^TimeoutStopSec=\([0-9]*\)s$/\1/p' systemd/stratum-proxy.service)
grace=$(sed -n 's/^pub const MAX_SHUTDOWN_GRACE: Duration = Duration::from_secs(\([0-9]*\));$/\1/p' src/config/mod.rs)
if [ -n "$stop" ] && [ -n "$grace" ] && [ "$stop" -gt "$grace" ]; then
    echo "TimeoutStopSec=${stop}s > max grace ${grace}s"
else
    echo "FAIL: TimeoutStopSec='${stop}' (seconds) must exceed MAX_SHUTDOWN_GRACE='${grace}'"; fail=1
fi

if [ "$fail" = 0 ]; then echo "systemd: 5 passed, 0 failed"; else echo "systemd: FAILED"; fi
exit "$fail"
