#!/usr/bin/env bash
# CI step: the real `cross test --target aarch64-unknown-linux-musl` as a user
# runs it (cross 0.2.5, podman), with the local image from .ci/cross-image.sh
# because no container registry is reachable here. Checks that it ran as
# many tests as `cargo test` on the host, then builds the armv7 release
# binary with cross from the same image (nightly -Z build-std, as
# .ci/firmware.sh does without a container).
#
# Runs as root on Debian 12 with rustup and the pinned toolchain
# (.ci/install-firmware-deps.sh, which .ci/run runs first). Installs what is
# missing: podman, runc, debootstrap (apt), cross (cargo install). Knobs:
#   CROSS_ARMV7=0         skip the armv7 build
#   CROSS_CONTAINER_OPTS  replaces the options computed below
#   CROSS_TARGET_DIR      where cross builds (default target/cross)
set -euo pipefail
cd "$(dirname "$0")/.."

A64=aarch64-unknown-linux-musl
ARMV7=armv7-unknown-linux-musleabihf
CROSS_VERSION=0.2.5
export CROSS_LOCAL_IMAGE=${CROSS_LOCAL_IMAGE:-localhost/stratum-proxy-cross:bookworm}
log() { printf '[cross] %s\n' "$*"; }
phase() { printf '\n[cross] == %s\n' "$*"; phase_start=$SECONDS; }
took() { log "-- took $((SECONDS - phase_start)) s"; }

phase "packages: podman, runc, debootstrap; cross $CROSS_VERSION"
export DEBIAN_FRONTEND=noninteractive
missing=()
pkg_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
# containernetworking-plugins: podman's default (bridge) network;
# catatonit: its init for --init. Recommends are not needed.
for p in podman runc crun containernetworking-plugins catatonit debootstrap file; do
    pkg_installed "$p" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
    log "apt-get install ${missing[*]}"
    apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 update -qq || true
    apt-get -o DPkg::Lock::Timeout=600 -y -q install --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! cross --version 2>/dev/null | grep -q "^cross $CROSS_VERSION\b"; then
    log "cargo install cross $CROSS_VERSION"
    cargo install cross --locked --version "$CROSS_VERSION" --quiet
fi
cross --version 2>/dev/null | head -n 1
took

phase "image $CROSS_LOCAL_IMAGE"
bash .ci/cross-image.sh
took

# How cross starts the container:
# - podman, not the docker client at /usr/local/bin/docker (no daemon);
# - the local image for both targets (Cross.toml pins the ghcr ones);
# - runc: crun 1.8 (bookworm) refuses cgroup v1/v2 hybrid hosts;
# - ulimits at or under what this host allows: without CAP_SYS_RESOURCE the
#   runtime cannot raise them to podman's defaults (nofile 1048576), and
#   podman starts it with at most 32768 processes (measured here: nproc
#   32769 fails).
export CROSS_CONTAINER_ENGINE=podman
export CROSS_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_IMAGE=$CROSS_LOCAL_IMAGE
export CROSS_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_IMAGE=$CROSS_LOCAL_IMAGE
if [ -z "${CROSS_CONTAINER_OPTS:-}" ]; then
    nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
    [ "$nofile" = unlimited ] && nofile=1048576
    { [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ]; } && nproc=32768
    CROSS_CONTAINER_OPTS="--runtime runc --ulimit nofile=$nofile:$nofile --ulimit nproc=$nproc:$nproc"
fi
export CROSS_CONTAINER_OPTS
log "CROSS_CONTAINER_OPTS=$CROSS_CONTAINER_OPTS"
# Inside the container the target directory is /target and the sources
# /project: a directory of its own keeps host builds and cross builds from
# invalidating each other's build-script outputs.
export CARGO_TARGET_DIR=${CROSS_TARGET_DIR:-target/cross}
# Crates are fetched on the host, into the cargo home cross mounts at /cargo,
# and cargo in the container runs offline: from inside the container,
# downloads failed TLS verification here (a self-signed certificate in the
# chain, which only the host trusts), and the step should not depend on the
# container's network anyway.
cargo fetch --locked --quiet
export CARGO_NET_OFFLINE=true
# Not needed by anything here; shown because the result must not depend on it.
binfmt=""
for entry in /proc/sys/fs/binfmt_misc/*; do
    case ${entry##*/} in register | status | '*') ;; *) binfmt+="${entry##*/} " ;; esac
done
log "binfmt_misc entries on this host: ${binfmt:-none}"

fail=0
phase "cross test --locked --target $A64"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
if cross test --locked --target "$A64" 2>&1 | tee "$out"; then
    log "ok: cross test"
else
    log "FAIL: cross test"; fail=1
fi
# The whole suite ran: as many tests as `cargo test --list` counts on the
# host (every test, ignored ones included; run, or reported ignored, once).
cross_count=$(awk '/^test result:/ { n += $4 + $8 } END { print n + 0 }' "$out")
# Doc-tests are left out: cargo does not run them for another target.
host_count=$(env -u CARGO_TARGET_DIR cargo test --locked --quiet --lib --bins --tests -- --list 2>/dev/null |
    grep -c ': test$' || true)
log "tests under cross: $cross_count (passed + ignored); on the host: $host_count (cargo test -- --list)"
if [ "$cross_count" -gt 0 ] && [ "$cross_count" = "$host_count" ]; then
    log "ok: same number of tests"
else
    log "FAIL: test counts differ"; fail=1
fi
took

if [ "${CROSS_ARMV7:-1}" = 1 ]; then
    phase "cross +nightly build --release --target $ARMV7 (-Z build-std)"
    # No prebuilt armv7 musl std can be downloaded here, so, as in
    # .ci/firmware.sh, nightly builds std (rust-src) and the image's armhf
    # musl links it through .cargo/armv7-musl-cc. CROSS_CUSTOM_TOOLCHAIN
    # stops cross from asking rustup for the target's std.
    rustup component list --toolchain nightly --installed | grep -q '^rust-src' \
        || rustup component add --toolchain nightly rust-src
    # std's own dependencies, for -Z build-std offline in the container.
    env -u CARGO_NET_OFFLINE cargo +nightly fetch --locked --quiet \
        --manifest-path "$(rustc +nightly --print sysroot)/lib/rustlib/src/rust/library/Cargo.toml"
    if CROSS_CUSTOM_TOOLCHAIN=1 cross +nightly build --locked --release --target "$ARMV7" \
        --bin stratum-proxy -Zbuild-std=std,panic_abort \
        --config "target.$ARMV7.rustflags=['-C', 'link-self-contained=no']"; then
        bin=$CARGO_TARGET_DIR/$ARMV7/release/stratum-proxy
        desc=$(file -b "$bin" 2>/dev/null || echo "?")
        log "file: $desc"
        case "$desc" in
            'ELF 32-bit LSB'*'ARM, EABI5'*'static'*) log "ok: armv7 static binary ($(stat -c %s "$bin") bytes)" ;;
            *) log "FAIL: armv7 binary is not a static ARM executable"; fail=1 ;;
        esac
        # It runs, under the image's qemu-arm (no binfmt entry needed).
        # shellcheck disable=SC2086  # the options are words
        if podman run --rm $CROSS_CONTAINER_OPTS -v "$(realpath "$bin"):/stratum-proxy:ro" \
            "$CROSS_LOCAL_IMAGE" qemu-arm-static /stratum-proxy --version; then
            log "ok: armv7 binary runs (--version)"
        else
            log "FAIL: armv7 binary does not run under qemu-arm"; fail=1
        fi
    else
        log "FAIL: cross build armv7"; fail=1
    fi
    took
fi

[ "$fail" = 0 ]
