#!/usr/bin/env bash
# Builds a local container image that cross 0.2.5 can use instead of the
# pinned ghcr.io/cross-rs images, for machines that cannot pull them (no
# container registry reachable). Needs root, podman and debootstrap
# (apt-get install podman debootstrap), and a Debian mirror.
#
#   bash .ci/cross-image.sh                  # builds $CROSS_LOCAL_IMAGE
#   CROSS_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_IMAGE=localhost/stratum-proxy-cross:bookworm \
#   CROSS_CONTAINER_ENGINE=podman cross test --target aarch64-unknown-linux-musl
#
# The image is an x86_64 Debian 12 (bookworm) userland, made with debootstrap
# and `podman import` (no Dockerfile, no base image to pull). cross mounts the
# host's Rust toolchain (/rust), cargo home (/cargo), the project (/project)
# and the target directory (/target) into it, so it holds only what cargo
# needs around rustc:
#   - gcc and libc6-dev: build scripts and proc macros are host (x86_64-gnu)
#     programs linked by `cc`;
#   - ca-certificates: cargo may fetch crates from inside the container;
#   - qemu-user-static from bookworm-backports (as .ci/install-firmware-deps.sh
#     does on the host): the test runner;
#   - for armv7: the armhf cross gcc and musl-dev:armhf, which
#     .cargo/armv7-musl-cc links with (nightly -Z build-std builds its std);
#   - the environment the cross-rs images set: the aarch64 linker (rustc's
#     bundled rust-lld links static musl binaries) and runners, as
#     CARGO_TARGET_<TRIPLE>_{LINKER,RUNNER}. The armv7 linker comes from
#     .cargo/config.toml (a path in the mounted project).
# Unlike the cross-rs images it does not set RUST_TEST_THREADS=1: the suite
# runs its tests in parallel under qemu-user 10 (Cross.toml passes a host
# RUST_TEST_THREADS through).
#
# Environment: CROSS_LOCAL_IMAGE (image name, default below), DEBIAN_MIRROR
# (default: the mirror the host's apt uses for bookworm main, else
# deb.debian.org), CROSS_IMAGE_FORCE=1 to rebuild an existing image.
# Took 67-91 s on a 2-core machine (mostly debootstrap and apt); the image is about 850 MB.
set -euo pipefail

IMAGE=${CROSS_LOCAL_IMAGE:-localhost/stratum-proxy-cross:bookworm}
SUITE=bookworm
log() { printf '[cross-image] %s\n' "$*"; }

[ "$(id -u)" = 0 ] || { log "run as root (debootstrap and chroot)"; exit 1; }
for tool in podman debootstrap; do
    command -v "$tool" >/dev/null || { log "missing $tool: apt-get install podman debootstrap"; exit 1; }
done

if [ "${CROSS_IMAGE_FORCE:-0}" != 1 ] && podman image exists "$IMAGE"; then
    log "$IMAGE exists (CROSS_IMAGE_FORCE=1 rebuilds it)"
    exit 0
fi

# The mirror the host already uses for bookworm main: its name stays in the
# host's configuration, not in this repository.
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ] && command -v apt-get >/dev/null; then
    # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
    mirror=$(apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null |
        awk '$2 == "bookworm" && $3 == "main" { print $1; exit }')
fi
mirror=${mirror:-http://deb.debian.org/debian/}
log "mirror $mirror"

work=$(mktemp -d "${TMPDIR:-/var/tmp}/cross-image.XXXXXX")
root=$work/root
cleanup() {
    # Nothing is mounted into the root, so removing it is safe.
    rm -rf "$work"
}
trap cleanup EXIT

log "debootstrap $SUITE (minbase) into $root"
debootstrap --variant=minbase --include=gcc,libc6-dev,ca-certificates \
    "$SUITE" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -n 30 "$work/debootstrap.log"; log "debootstrap failed"; exit 1; }

# Package scripts must not start services in the chroot, and /proc is not
# mounted there, so no binfmt_misc entry of the host is touched.
printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
chmod +x "$root/usr/sbin/policy-rc.d"
cat >"$root/etc/apt/sources.list" <<SRC
deb $mirror $SUITE main
deb $mirror $SUITE-backports main
SRC
chroot "$root" dpkg --add-architecture armhf
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C "$@"; }
APT=(apt-get -y -q -o Acquire::Retries=3 --no-install-recommends)
log "apt-get install qemu-user-static (backports), armhf cross gcc, musl-dev:armhf"
{
    in_root "${APT[@]}" update
    in_root "${APT[@]}" install -t "$SUITE-backports" qemu-user-static
    in_root "${APT[@]}" install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross musl-dev:armhf
    in_root apt-get clean
} >"$work/apt.log" 2>&1 || { tail -n 30 "$work/apt.log"; log "apt-get in the image failed"; exit 1; }
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root"/tmp/*

in_root qemu-aarch64-static --version | head -n 1 | sed 's/^/[cross-image] /'
[ -x "$root/usr/bin/qemu-arm-static" ] || { log "qemu-arm-static missing in the image"; exit 1; }

log "podman import -> $IMAGE"
tar -C "$root" --numeric-owner -cf - . | podman import \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=rust-lld' \
    --change 'ENV CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64-static' \
    --change 'ENV CARGO_TARGET_ARMV7_UNKNOWN_LINUX_MUSLEABIHF_RUNNER=qemu-arm-static' \
    --change 'CMD ["/bin/sh"]' \
    - "$IMAGE" >/dev/null
podman image ls "$IMAGE"
log "done"
