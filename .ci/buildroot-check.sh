#!/usr/bin/env bash
# Checks the BR2_EXTERNAL tree (buildroot/) against a buildroot checkout,
# offline (nothing is downloaded or built):
#   1. `make BR2_EXTERNAL=buildroot stratum_gateway_aarch64_defconfig` in a
#      scratch output dir, then every line of the defconfig must be in .config
#      (kconfig silently drops options whose dependencies are not met);
#   2. the package's make variables evaluate (printvars), with the unit
#      installed by the INIT_SYSTEMD hook and the user in the users table;
#   3. utils/check-package --br2-external passes on our files.
# Usage: .ci/buildroot-check.sh BUILDROOT_DIR   (or BUILDROOT_DIR=... in the env)
# Without a checkout it says so and exits 0: CI has no buildroot (it cannot be
# fetched there and is not vendored into this repository).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
ext=$repo/buildroot
br=${1:-${BUILDROOT_DIR:-}}
if [ -z "$br" ]; then
    echo "buildroot-check: skipped (no buildroot checkout given: .ci/buildroot-check.sh BUILDROOT_DIR)"
    exit 0
fi
br=$(cd "$br" && pwd)
if [ ! -f "$br/Makefile" ] || [ ! -x "$br/utils/check-package" ]; then
    echo "not a buildroot checkout: $br" >&2; exit 1
fi

# check-package needs python magic and flake8, and shellcheck for scripts.
python3 -c 'import magic, flake8' 2>/dev/null || pip install -q python-magic flake8
command -v shellcheck >/dev/null || apt-get install -y -q -o DPkg::Lock::Timeout=600 --no-install-recommends shellcheck

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
fail=0 passed=0
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

for defconfig in "$ext"/configs/*_defconfig; do
    name=$(basename "$defconfig")
    echo "== make BR2_EXTERNAL=buildroot $name"
    rm -rf "${out:?}"/*
    if make -s -C "$br" O="$out" BR2_EXTERNAL="$ext" "$name" >"$out.log" 2>&1; then
        missing=$(grep -v '^#' "$defconfig" | grep . | while read -r line; do
            grep -qxF "$line" "$out/.config" || echo "   not applied: $line"; done)
        if [ -z "$missing" ]; then ok "$name configures, every option applied"; else echo "$missing"; bad "$name"; fi
    else
        cat "$out.log"; bad "$name does not configure"
    fi
    rm -f "$out.log"
done

echo "== package variables (printvars)"
vars=$(make -s -C "$br" O="$out" VARS='STRATUM_PROXY_INSTALL_INIT_SYSTEMD STRATUM_PROXY_USERS PACKAGES' printvars 2>&1)
if grep -q 'stratum-proxy.service' <<<"$vars" && grep -q 'stratum-proxy -1' <<<"$vars" \
    && grep -qw 'stratum-proxy' <<<"$(grep '^PACKAGES=' <<<"$vars")"; then
    ok "stratum-proxy package is selected, installs its unit and declares its user"
else
    echo "$vars"; bad "stratum-proxy package variables"
fi

echo "== utils/check-package --br2-external"
if (cd "$ext" && "$br/utils/check-package" --br2-external \
        Config.in external.mk external.desc configs/* \
        package/*/* board/*/post-build.sh); then
    ok "check-package"
else
    bad "check-package"
fi

echo "buildroot: $passed passed, $fail failed"
[ "$fail" = 0 ]
