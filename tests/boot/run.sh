#!/usr/bin/env bash
# Boot test: the real check that the firmware overlay boots and works.
#
# Builds (or reuses from a cache outside the repo) an arm64 Debian systemd
# rootfs, a Debian arm64 kernel and a hand-built busybox initramfs; applies
# our overlay (buildroot/assemble-overlay.sh) with the aarch64 binary; boots
# it in qemu-system-aarch64 -M virt with user-mode networking; then, from the
# host, waits for /healthz, relays a miner-sim session through the gateway to
# a pool-sim on the host, checks /metrics, reads the unit's journal in the
# guest and powers it off. Prints how long each stage took.
#
# Usage: tests/boot/run.sh [--build] [--rebuild] [--keep]
#                          [--proxy-bin PATH] [--pool-sim PATH] [--miner-sim PATH]
#   --build     cargo build the three binaries first (release)
#   --rebuild   rebuild the cached rootfs, kernel and initramfs
#   --keep      keep the run directory (image, serial log) even on success
# Environment (all optional; the flags win):
#   PROXY_BIN   aarch64 static stratum-proxy
#               (default $CARGO_TARGET_DIR or target/, aarch64-unknown-linux-musl/release/stratum-proxy)
#   POOL_SIM, MINER_SIM  host simulators (default target/release/{pool,miner}-sim)
#   BOOT_CACHE  cache of rootfs, kernel, initramfs (default /var/cache/stratum-proxy-boot)
#   BOOT_WORK   where per-run files go (default /var/tmp)
#   BOOT_TIMEOUT_SECONDS  bound on boot to /healthz (default 600)
#   BOOT_SMP    guest vCPUs (default 2)
#   BOOT_MIRROR Debian mirror (default: the host's apt source for bookworm)
#   BOOT_SKIP_APT=1  do not install host packages (they must be there)
#   BOOT_MINERS, BOOT_SHARES  traffic size passed to check.py
# Exit status: 0 passed, 1 failed (the relevant log is printed).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

SUITE=bookworm
ARCH=arm64
# Lean on purpose: minbase plus systemd as PID 1. No udev (the initramfs
# loads the modules and configures eth0), no kernel modules in the rootfs.
ROOTFS_INCLUDE="systemd,systemd-sysv"
# Modules the Debian arm64 kernel does not have built in, for -M virt with
# virtio-pci disk, net and rng; their dependencies are added automatically.
KERNEL_MODULES="virtio_pci virtio_blk virtio_net virtio_rng ext4 crc32c_generic"

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$REPO/$TARGET_DIR" ;; esac
PROXY_BIN="${PROXY_BIN:-$TARGET_DIR/aarch64-unknown-linux-musl/release/stratum-proxy}"
POOL_SIM="${POOL_SIM:-$TARGET_DIR/release/pool-sim}"
MINER_SIM="${MINER_SIM:-$TARGET_DIR/release/miner-sim}"
BOOT_CACHE="${BOOT_CACHE:-/var/cache/stratum-proxy-boot}"
BOOT_WORK="${BOOT_WORK:-/var/tmp}"
BOOT_TIMEOUT_SECONDS="${BOOT_TIMEOUT_SECONDS:-600}"
BOOT_SMP="${BOOT_SMP:-2}"
REBUILD=0
KEEP=0
BUILD=0
while [ $# -gt 0 ]; do
    case "$1" in
        --build) BUILD=1 ;;
        --rebuild) REBUILD=1 ;;
        --keep) KEEP=1 ;;
        --proxy-bin) PROXY_BIN="${2:?--proxy-bin needs a path}"; shift ;;
        --pool-sim) POOL_SIM="${2:?--pool-sim needs a path}"; shift ;;
        --miner-sim) MINER_SIM="${2:?--miner-sim needs a path}"; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "boot: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

log() { printf 'boot: %s\n' "$*" >&2; }
die() { printf 'boot: FAILED: %s\n' "$*" >&2; exit 1; }

# ---- stage timing -----------------------------------------------------------
T_START=$(date +%s.%N)
declare -a TIMINGS=()
stage_begin() { STAGE_NAME="$1"; STAGE_T0=$(date +%s.%N); log "== $1"; }
stage_end() {
    local t1; t1=$(date +%s.%N)
    TIMINGS+=("$(printf '%-22s %7.1f s%s' "$STAGE_NAME" "$(echo "$t1 - $STAGE_T0" | bc)" "${1:+  ($1)}")")
}
print_timings() {
    local t1; t1=$(date +%s.%N)
    echo "boot: stage timings"
    local line
    for line in "${TIMINGS[@]}"; do echo "  $line"; done
    if [ -n "${RUN:-}" ] && [ -s "$RUN/check-timings.txt" ]; then
        sed 's/^/  /' "$RUN/check-timings.txt"
    fi
    printf '  %-22s %7.1f s\n' total "$(echo "$t1 - $T_START" | bc)"
}

# ---- host packages ----------------------------------------------------------
have_host_tools() {
    command -v debootstrap >/dev/null && command -v mkfs.ext4 >/dev/null &&
        command -v qemu-system-aarch64 >/dev/null && [ -e /usr/lib/binfmt.d/qemu-aarch64.conf ] &&
        command -v cpio >/dev/null && command -v bc >/dev/null && command -v python3 >/dev/null &&
        dpkg --print-foreign-architectures | grep -qx arm64
}

# The mirror the host already uses for bookworm main (its name stays in the
# host's configuration, not here).
host_mirror() {
    # shellcheck disable=SC2016  # apt's own $(FIELD) placeholders
    apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT)' 'Identifier: Packages' 2>/dev/null |
        awk -v s="$SUITE" '$2 == s && $3 == "main" { print $1; exit }'
}

apt_update() {
    # A stale index of another architecture or suite must not stop us: the
    # installs below fail loudly if what we need is really missing.
    apt-get -o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 update -qq || log "apt-get update reported errors (continuing)"
}

install_host_packages() {
    if [ "${BOOT_SKIP_APT:-0}" = 1 ] || have_host_tools; then
        have_host_tools || die "host tools missing and BOOT_SKIP_APT=1"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    local apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -y -q --no-install-recommends)
    # qemu from bookworm-backports: the image's qemu-utils 10 conflicts with
    # bookworm's qemu 7.2.
    if ! grep -rqs "${SUITE}-backports" /etc/apt/sources.list /etc/apt/sources.list.d/; then
        local uri; uri="$(host_mirror)"
        [ -n "$uri" ] || die "no apt source for $SUITE main to derive the backports source from"
        log "adding ${SUITE}-backports ($uri)"
        cat > /etc/apt/sources.list.d/${SUITE}-backports.sources <<EOF
Types: deb
URIs: $uri
Suites: ${SUITE}-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    # arm64 package lists, for the kernel and busybox-static .debs.
    dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    apt_update
    apt-get "${apt_opts[@]}" install debootstrap e2fsprogs cpio bc python3 xz-utils zstd >/dev/null ||
        die "apt-get install debootstrap e2fsprogs cpio bc python3 failed"
    apt-get "${apt_opts[@]}" install -t "${SUITE}-backports" qemu-user-static qemu-system-arm >/dev/null ||
        die "apt-get install -t ${SUITE}-backports qemu-user-static qemu-system-arm failed"
}

# Lets the host run arm64 binaries (debootstrap's second stage) through
# qemu-user. The F flag opens the interpreter now, so it works in the chroot.
register_binfmt() {
    [ -e /proc/sys/fs/binfmt_misc/status ] ||
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
        die "cannot mount binfmt_misc: debootstrap's second stage needs qemu-user via binfmt_misc"
    if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
        cat /usr/lib/binfmt.d/qemu-aarch64.conf > /proc/sys/fs/binfmt_misc/register ||
            [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "cannot register qemu-aarch64 with binfmt_misc"
    fi
    grep -qx enabled /proc/sys/fs/binfmt_misc/qemu-aarch64 || die "binfmt qemu-aarch64 is disabled"
    grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        log "warning: binfmt qemu-aarch64 lacks the F flag; the chroot may not find its interpreter"
}

# ---- cache keys ---------------------------------------------------------------
# A cache entry is rebuilt when what it is made from changes.
rootfs_key() { (echo "v1 $SUITE $ARCH minbase $ROOTFS_INCLUDE"; declare -f prepare_rootfs) | sha256sum | cut -c1-12; }
kernel_key() { (echo "v1 $SUITE $ARCH $KERNEL_MODULES"; cat "$HERE/initramfs-init") | sha256sum | cut -c1-12; }

# ---- rootfs -------------------------------------------------------------------
prepare_rootfs() {
    local root="$1"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* "$root"/debootstrap
    echo gateway > "$root/etc/hostname"
    printf '127.0.0.1 localhost\n127.0.1.1 gateway\n' > "$root/etc/hosts"
    # A fixed machine id: not a first boot, so systemd-firstboot never asks
    # questions on the console.
    echo 5eb0a7e57c0ffee0b007e57c0ffee000 > "$root/etc/machine-id"
    mkdir -p "$root/etc/systemd/journald.conf.d" "$root/etc/systemd/system"
    printf '[Journal]\nStorage=volatile\n' > "$root/etc/systemd/journald.conf.d/boot-test.conf"
    # Nothing on the console asks for a login, nothing goes to the network
    # on a timer (apt-daily would).
    local unit
    for unit in getty.target systemd-firstboot.service; do
        ln -sfn /dev/null "$root/etc/systemd/system/$unit"
    done
    rm -f "$root"/etc/systemd/system/timers.target.wants/* \
        "$root"/etc/systemd/system/multi-user.target.wants/e2scrub_reap.service
}

# Removes a directory tree that may hold a half-done debootstrap: first
# unmount whatever is mounted below it (its /proc, /sys, maybe a bind of
# /dev), and never cross into another file system.
remove_tree() {
    local dir="$1" m
    [ -e "$dir" ] || return 0
    dir="$(realpath "$dir")"
    for m in $(awk -v d="$dir/" 'index($2, d) == 1 { print $2 }' /proc/mounts | sort -r); do
        umount -l "$m" || die "cannot unmount $m"
    done
    rm -rf --one-file-system "$dir"
}

build_rootfs() {
    ROOTFS_KEY="$(rootfs_key)"
    local dest="$BOOT_CACHE/rootfs-$ROOTFS_KEY"
    if [ "$REBUILD" = 0 ] && [ -e "$dest/.boot-test-complete" ]; then
        log "rootfs: cached $dest"
        return 0
    fi
    register_binfmt
    local tmp="$dest.tmp"
    remove_tree "$tmp"; remove_tree "$dest"
    local mirror="${BOOT_MIRROR:-$(host_mirror)}"
    log "rootfs: debootstrap $SUITE $ARCH minbase + $ROOTFS_INCLUDE (a few minutes)"
    # A mirror mid-sync fails a download now and then: one more try.
    local try
    for try in 1 2; do
        if timeout 2400 debootstrap --arch="$ARCH" --variant=minbase --include="$ROOTFS_INCLUDE" \
            "$SUITE" "$tmp" ${mirror:+"$mirror"} > "$BOOT_CACHE/debootstrap.log" 2>&1; then
            break
        fi
        tail -30 "$BOOT_CACHE/debootstrap.log" >&2
        [ -f "$tmp/debootstrap/debootstrap.log" ] && tail -30 "$tmp/debootstrap/debootstrap.log" >&2
        remove_tree "$tmp"
        [ "$try" = 2 ] && die "debootstrap failed twice (log: $BOOT_CACHE/debootstrap.log)"
        log "debootstrap failed (try $try), trying again"
    done
    prepare_rootfs "$tmp"
    touch "$tmp/.boot-test-complete"
    mv "$tmp" "$dest"
    # Older entries are of no further use.
    local old
    for old in "$BOOT_CACHE"/rootfs-*; do
        [ "$old" = "$dest" ] || remove_tree "$old"
    done
}

# ---- kernel and initramfs ----------------------------------------------------
# Prints the module files (relative to the modules dir) for the wanted
# modules and their dependencies, dependencies first. Dependencies are read
# from each module's .modinfo "depends=" entry, so no depmod or modinfo for
# a foreign architecture is needed.
resolve_modules() {
    local moddir="$1"; shift
    declare -A path=() seen=()
    local f n
    while IFS= read -r f; do
        n="$(basename "$f" .ko)"; n="${n//-/_}"
        path[$n]="${f#"$moddir"/}"
    done < <(find "$moddir" -name '*.ko')
    visit() {
        local m="${1//-/_}" d deps
        [ -n "${seen[$m]:-}" ] && return 0
        [ -n "${path[$m]:-}" ] || die "kernel module $m not found in the kernel package"
        seen[$m]=1
        deps="$(tr '\0' '\n' < "$moddir/${path[$m]}" | sed -n 's/^depends=//p' | head -1)"
        for d in ${deps//,/ }; do visit "$d"; done
        echo "${path[$m]}"
    }
    for n in "$@"; do visit "$n"; done
}

build_kernel() {
    local key; key="$(kernel_key)"
    local dest="$BOOT_CACHE/kernel-$key"
    if [ "$REBUILD" = 0 ] && [ -e "$dest/.boot-test-complete" ]; then
        log "kernel: cached $dest"
        return 0
    fi
    local tmp="$dest.tmp"
    rm -rf "$tmp" "$dest"
    mkdir -p "$tmp/debs" "$tmp/x" "$tmp/initramfs"
    local kpkg
    kernel_package() { apt-cache depends "linux-image-$ARCH:$ARCH" 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^:]*\).*/\1/p' | head -1; }
    kpkg="$(kernel_package)"
    # arm64 added to dpkg but its package lists never fetched: fetch them.
    [ -n "$kpkg" ] || { apt_update; kpkg="$(kernel_package)"; }
    [ -n "$kpkg" ] || die "cannot resolve linux-image-$ARCH:$ARCH (is arm64 added to dpkg and apt-get update run?)"
    log "kernel: $kpkg, busybox-static:$ARCH"
    (cd "$tmp/debs" && timeout 900 apt-get download -q -o Acquire::Retries=3 "$kpkg:$ARCH" "busybox-static:$ARCH" > "$tmp/download.log" 2>&1) ||
        { cat "$tmp/download.log" >&2; die "apt-get download of the arm64 kernel and busybox failed"; }
    dpkg-deb -x "$tmp"/debs/linux-image-*.deb "$tmp/x"
    dpkg-deb -x "$tmp"/debs/busybox-static_*.deb "$tmp/x"
    local kver
    kver="$(basename "$(ls -d "$tmp"/x/lib/modules/*)")"
    cp "$tmp/x/boot/vmlinuz-$kver" "$tmp/vmlinuz"
    echo "$kpkg $kver" > "$tmp/kernel-version"

    local ird="$tmp/initramfs" m
    mkdir -p "$ird"/{bin,dev,proc,sys,newroot,lib/modules}
    cp "$tmp/x/bin/busybox" "$ird/bin/busybox"
    # shellcheck disable=SC2086
    resolve_modules "$tmp/x/lib/modules/$kver" $KERNEL_MODULES > "$ird/modules.list"
    while read -r m; do
        mkdir -p "$ird/lib/modules/$(dirname "$m")"
        cp "$tmp/x/lib/modules/$kver/$m" "$ird/lib/modules/$m"
    done < "$ird/modules.list"
    install -m 0755 "$HERE/initramfs-init" "$ird/init"
    (cd "$ird" && find . | cpio -o -H newc --quiet | gzip -1) > "$tmp/initrd.img"
    log "kernel: initramfs $(du -k "$tmp/initrd.img" | cut -f1) KiB with $(wc -l < "$ird/modules.list") modules"
    rm -rf "$tmp/x" "$tmp/debs" "$ird"
    touch "$tmp/.boot-test-complete"
    mv "$tmp" "$dest"
    find "$BOOT_CACHE" -maxdepth 1 -name 'kernel-*' ! -name "kernel-$key" -exec rm -rf {} +
}

# ---- per-run disk image ------------------------------------------------------
assemble_overlay() {
    local out="$1"
    local script="${ASSEMBLE_OVERLAY:-$REPO/buildroot/assemble-overlay.sh}"
    if [ -x "$script" ] || [ -f "$script" ]; then
        bash "$script" --binary "$PROXY_BIN" --out "$out" > "$RUN/assemble-overlay.log" 2>&1 ||
            { cat "$RUN/assemble-overlay.log" >&2; die "buildroot/assemble-overlay.sh failed"; }
    else
        die "buildroot/assemble-overlay.sh is missing: nothing to boot"
    fi
    local p
    for p in usr/bin/stratum-proxy usr/lib/systemd/system/stratum-proxy.service \
             usr/lib/sysusers.d/stratum-proxy.conf etc/stratum-proxy/config.json; do
        [ -e "$out/$p" ] || die "overlay lacks /$p"
    done
}

build_image() {
    local stage="$RUN/rootfs" overlay="$RUN/overlay"
    mkdir -p "$overlay"
    assemble_overlay "$overlay"
    cp -a --reflink=auto "$BOOT_CACHE/rootfs-$ROOTFS_KEY" "$stage"
    rm -f "$stage/.boot-test-complete"
    # tar keeps merged-/usr symlinks (/lib -> usr/lib) in place.
    tar -C "$overlay" -cf - . | tar -C "$stage" -xf - --keep-directory-symlink
    # The test's configuration: the pool is the host's pool-sim, which qemu's
    # user networking shows the guest as 10.0.2.2 (host loopback).
    cat > "$stage/etc/stratum-proxy/config.json" <<EOF
{"listen": "0.0.0.0:3333", "pool": "10.0.2.2:$POOL_PORT", "metrics_listen": "0.0.0.0:9100", "log_level": "info", "log_format": "auto"}
EOF
    # The test's command channel (not part of the product): a socket-activated
    # service on port 7000 that answers a few fixed commands.
    install -m 0755 "$HERE/guest/boot-test-ctl" "$stage/usr/local/sbin/boot-test-ctl"
    install -m 0644 "$HERE/guest/boot-test-ctl.socket" "$HERE/guest/boot-test-ctl@.service" \
        "$stage/etc/systemd/system/"
    mkdir -p "$stage/etc/systemd/system/sockets.target.wants"
    ln -sfn ../boot-test-ctl.socket "$stage/etc/systemd/system/sockets.target.wants/boot-test-ctl.socket"

    local size_mb
    size_mb=$(( $(du -sm "$stage" | cut -f1) + 256 ))
    truncate -s "${size_mb}M" "$RUN/root.img"
    mkfs.ext4 -q -F -L gateway -d "$stage" "$RUN/root.img" > "$RUN/mkfs.log" 2>&1 ||
        { cat "$RUN/mkfs.log" >&2; die "mkfs.ext4 -d failed"; }
    rm -rf "$stage"
}

# ---- boot --------------------------------------------------------------------
free_ports() {
    python3 - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

QEMU_PID=""
POOL_PID=""
# shellcheck disable=SC2317  # called by the EXIT trap
REPORTED=0
cleanup() {
    local rc=$?
    if [ "$rc" != 0 ] && [ "$REPORTED" = 0 ]; then
        print_timings
        echo "boot: 0 passed, 1 failed"
    fi
    if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill "$QEMU_PID" 2>/dev/null || true; fi
    if [ -n "$POOL_PID" ]; then kill -- "-$POOL_PID" 2>/dev/null || true; fi
    if [ -n "${RUN:-}" ] && [ -d "$RUN" ]; then
        if [ "$rc" = 0 ] && [ "$KEEP" = 0 ]; then
            rm -rf --one-file-system "$RUN"
        else
            # Logs stay for a look; the disk image only when asked (--keep).
            [ "$KEEP" = 1 ] || rm -rf --one-file-system "$RUN/root.img" "$RUN/rootfs"
            log "run files kept in $RUN"
        fi
    fi
}

boot_guest() {
    local kdir
    kdir="$BOOT_CACHE/kernel-$(kernel_key)"
    qemu-system-aarch64 -M virt -cpu cortex-a57 -smp "$BOOT_SMP" -m 512 \
        -nographic -monitor none -serial "file:$RUN/serial.log" -no-reboot \
        -kernel "$kdir/vmlinuz" -initrd "$kdir/initrd.img" \
        -append "console=ttyAMA0 root=/dev/vda rw panic=1 systemd.show_status=1 systemd.firstboot=no" \
        -drive "file=$RUN/root.img,format=raw,if=none,id=hd0,cache=unsafe" \
        -device virtio-blk-pci,drive=hd0 \
        -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$FWD_PROXY-:3333,hostfwd=tcp:127.0.0.1:$FWD_METRICS-:9100,hostfwd=tcp:127.0.0.1:$FWD_CTL-:7000" \
        -device virtio-net-pci,netdev=n0,romfile= \
        -device virtio-rng-pci \
        < /dev/null > "$RUN/qemu.log" 2>&1 &
    QEMU_PID=$!
}

# ---- main ----------------------------------------------------------------------
main() {
    trap cleanup EXIT
    trap 'exit 1' INT TERM
    [ "$(id -u)" = 0 ] || die "must run as root (debootstrap, binfmt_misc, mkfs -d ownership)"
    if [ "$BUILD" = 1 ]; then
        stage_begin "cargo build"
        (cd "$REPO" && cargo build --locked --release --target aarch64-unknown-linux-musl --bin stratum-proxy &&
            cargo build --locked --release --bin pool-sim --bin miner-sim) || die "cargo build failed"
        stage_end
    fi
    local hint="build it: cargo build --release --target aarch64-unknown-linux-musl --bin stratum-proxy; cargo build --release --bin pool-sim --bin miner-sim (or pass --build)"
    [ -f "$PROXY_BIN" ] || die "no aarch64 stratum-proxy at $PROXY_BIN (set PROXY_BIN or --proxy-bin; $hint)"
    [ -x "$POOL_SIM" ] || die "no pool-sim at $POOL_SIM (set POOL_SIM or --pool-sim; $hint)"
    [ -x "$MINER_SIM" ] || die "no miner-sim at $MINER_SIM (set MINER_SIM or --miner-sim; $hint)"
    mkdir -p "$BOOT_CACHE" "$BOOT_WORK"
    RUN="$(mktemp -d "$BOOT_WORK/stratum-proxy-boot.XXXXXX")"

    stage_begin "host packages"; install_host_packages; stage_end

    # One builder at a time per cache; runs that find it warm just read it.
    exec 9> "$BOOT_CACHE/.lock"
    flock -w 3600 9 || die "cache $BOOT_CACHE stayed locked for an hour"
    stage_begin "debootstrap"
    ROOTFS_KEY="$(rootfs_key)"
    local cold_rootfs=warm; [ -e "$BOOT_CACHE/rootfs-$ROOTFS_KEY/.boot-test-complete" ] && [ "$REBUILD" = 0 ] || cold_rootfs=cold
    build_rootfs; stage_end "$cold_rootfs"
    stage_begin "kernel+initramfs"
    local cold_kernel=warm; [ -e "$BOOT_CACHE/kernel-$(kernel_key)/.boot-test-complete" ] && [ "$REBUILD" = 0 ] || cold_kernel=cold
    build_kernel; stage_end "$cold_kernel"
    flock -s 9   # keep readers' view stable while we copy

    # The pool-sim must listen before the image is made: its port goes into
    # the guest's config.
    read -r FWD_PROXY FWD_METRICS FWD_CTL <<< "$(free_ports 3)"
    stage_begin "pool-sim"
    python3 "$HERE/check.py" start-pool --pool-sim "$POOL_SIM" --run "$RUN" ||
        die "pool-sim did not start"
    POOL_PORT="$(cat "$RUN/pool.port")"
    POOL_PID="$(cat "$RUN/pool.pid")"
    stage_end "127.0.0.1:$POOL_PORT"

    stage_begin "image"; build_image; stage_end "$(du -m --apparent-size "$RUN/root.img" | cut -f1) MiB"
    flock -u 9

    # The forwarded ports were free a moment ago; should another process take
    # one first, qemu refuses to start: pick again (bounded).
    local try
    for try in 1 2 3; do
        boot_guest
        local t=0
        while [ "$t" -lt 20 ] && kill -0 "$QEMU_PID" 2>/dev/null && ! grep -qs 'host forwarding' "$RUN/qemu.log"; do
            sleep 0.1; t=$((t + 1))
        done
        grep -qs 'host forwarding' "$RUN/qemu.log" || break
        wait "$QEMU_PID" 2>/dev/null || true
        log "qemu could not forward a port (try $try): $(cat "$RUN/qemu.log")"
        read -r FWD_PROXY FWD_METRICS FWD_CTL <<< "$(free_ports 3)"
    done
    log "qemu pid $QEMU_PID; serial log $RUN/serial.log; ports proxy=$FWD_PROXY metrics=$FWD_METRICS ctl=$FWD_CTL"
    local rc=0
    python3 "$HERE/check.py" run --run "$RUN" --qemu-pid "$QEMU_PID" \
        --proxy-port "$FWD_PROXY" --metrics-port "$FWD_METRICS" --ctl-port "$FWD_CTL" \
        --pool-pid "$POOL_PID" --miner-sim "$MINER_SIM" \
        --boot-timeout "$BOOT_TIMEOUT_SECONDS" \
        --miners "${BOOT_MINERS:-3}" --shares "${BOOT_SHARES:-20}" || rc=$?
    print_timings
    REPORTED=1
    if [ "$rc" != 0 ]; then
        if [ -s "$RUN/qemu.log" ]; then
            echo "boot: qemu's own output ($RUN/qemu.log):"
            sed 's/^/  | /' "$RUN/qemu.log"
        fi
        echo "boot: serial console (last 60 lines of $RUN/serial.log):"
        tail -60 "$RUN/serial.log" | sed 's/^/  | /'
        echo "boot: 0 passed, 1 failed"
        exit 1
    fi
    echo "boot: PASSED"
    echo "boot: 1 passed, 0 failed"
}

main; exit $?  # on one line: bash never reads past it, even if this file is edited while running
