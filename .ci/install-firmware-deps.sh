#!/usr/bin/env bash
# Installs what the firmware checks need on a fresh Debian 12 (bookworm) machine
# that already has rustup with the stable (1.95.0) and nightly toolchains:
#   - the toolchain rust-toolchain.toml pins (run this before any cargo command);
#   - qemu-user-static from bookworm-backports (bookworm's qemu 7.2 conflicts
#     with the qemu-utils 10 some images carry), the runner for aarch64 tests;
#   - armhf musl headers/libc and the armhf cross gcc, for the armv7 build
#     (its musl std is not downloadable, so nightly -Z build-std builds it);
#   - file (binary checks) and systemd (systemd-analyze);
#   - rustup targets and components.
# Idempotent: safe to run again; it only adds what is missing.
set -euo pipefail

log() { printf '[install-firmware-deps] %s\n' "$*"; }
# Other jobs may hold the dpkg lock; wait for it instead of failing.
APT=(apt-get -y -q -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3)
export DEBIAN_FRONTEND=noninteractive

need_update=0
if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    # The mirror the host already uses for bookworm main: its name stays in
    # the host's configuration, not in this repository.
    bookworm_main() {
        # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
        apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null |
            awk '$2 == "bookworm" && $3 == "main" { print $1; exit }'
    }
    uri=$(bookworm_main)
    # indextargets lists only fetched indexes: on a machine never updated, fetch first.
    if [ -z "$uri" ]; then "${APT[@]}" update -qq || true; uri=$(bookworm_main); fi
    [ -n "$uri" ] || { log "no apt source for bookworm main to derive bookworm-backports from"; exit 1; }
    log "adding bookworm-backports ($uri)"
    cat > /etc/apt/sources.list.d/bookworm-backports.sources <<SRC
Types: deb
URIs: $uri
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    need_update=1
fi
if ! dpkg --print-foreign-architectures | grep -qx armhf; then
    log "adding dpkg architecture armhf"
    dpkg --add-architecture armhf
    need_update=1
fi
if [ "$need_update" = 1 ] || ! ls /var/lib/apt/lists/*bookworm-backports*Packages* >/dev/null 2>&1 \
    || ! ls /var/lib/apt/lists/*binary-armhf_Packages* >/dev/null 2>&1; then
    log "apt-get update"
    # A mirror mid-sync can fail one index (seen: bookworm-security armhf);
    # retry, then go on with what was fetched: install below fails loudly if
    # something we need is really missing.
    for try in 1 2 3; do
        "${APT[@]}" update && break
        log "apt-get update failed (try $try)"; sleep 5
    done
fi

missing=()
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
for p in file systemd binutils gcc-arm-linux-gnueabihf libc6-dev-armhf-cross musl-dev:armhf; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    "${APT[@]}" install --no-install-recommends "${missing[@]}"
fi
if ! pkg_installed qemu-user-static; then
    log "installing qemu-user-static from bookworm-backports"
    "${APT[@]}" install --no-install-recommends -t bookworm-backports qemu-user-static
fi

# binfmt_misc entries let the ARM binaries run by name (by hand, or from a
# script). The tests do not need them: those that spawn our binaries run
# them through cargo's runner (tests/runner). qemu-user-binfmt ships the
# entries; register them now if no init system did.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null \
        || log "WARNING: cannot mount binfmt_misc: tests that spawn aarch64 binaries will fail"
fi
for arch in aarch64 arm; do
    if [ -e /proc/sys/fs/binfmt_misc/register ] && [ ! -e "/proc/sys/fs/binfmt_misc/qemu-$arch" ]; then
        log "registering binfmt qemu-$arch"
        /usr/lib/systemd/systemd-binfmt "/usr/lib/binfmt.d/qemu-$arch.conf" \
            || log "WARNING: binfmt registration of qemu-$arch failed"
    fi
done

# The pinned toolchain (rust-toolchain.toml) gets the aarch64 musl std; the armv7
# build uses nightly with rust-src (-Z build-std).
PIN=1.95.0
# RUSTUP_AUTO_INSTALL=0 may be set, so the pinned toolchain must exist before
# any cargo command in this tree. When `stable` already is $PIN, point the
# pinned name at it (no download); otherwise install it.
if ! rustup toolchain list | grep -q "^$PIN-"; then
    host=$(rustc +stable -vV 2>/dev/null | sed -n 's/^host: //p')
    if [ -n "$host" ] && rustc +stable --version | grep -q "^rustc $PIN "; then
        log "linking toolchain $PIN-$host to stable (same release)"
        rustup_home=${RUSTUP_HOME:-$HOME/.rustup}
        ln -sfn "$rustup_home/toolchains/stable-$host" "$rustup_home/toolchains/$PIN-$host"
    else
        rustup toolchain install --profile minimal --component clippy,rustfmt "$PIN"
    fi
fi
rustup target list --toolchain "$PIN" --installed | grep -qx aarch64-unknown-linux-musl \
    || rustup target add --toolchain "$PIN" aarch64-unknown-linux-musl
rustup component list --toolchain "$PIN" --installed | grep -q '^llvm-tools' \
    || rustup component add --toolchain "$PIN" llvm-tools || log "llvm-tools unavailable (optional)"
if rustup toolchain list | grep -q '^nightly'; then
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
        || rustup component add --toolchain nightly rust-src
else
    log "WARNING: no nightly toolchain: the armv7 build will be skipped"
fi

log "qemu: $(qemu-aarch64-static --version 2>/dev/null | head -n1 || echo missing)"
log "binfmt: $(cd /proc/sys/fs/binfmt_misc 2>/dev/null && echo qemu-aarch64* qemu-arm)"
log "done"
