#!/usr/bin/env bash
# Firmware build check (run .ci/install-firmware-deps.sh first):
#   1. release static musl binary for aarch64 (must): `file` check, size
#      against the 1.5 MiB budget, what dominates the size, a smoke run
#      under qemu-user;
#   2. the same for armv7 (nightly -Z build-std); FIRMWARE_ARMV7=0 skips it;
#   3. `cargo test --locked --target aarch64-unknown-linux-musl`: the whole
#      test suite under qemu-aarch64 (.cargo/config.toml sets the runner).
# Binaries are copied to ${FIRMWARE_OUT:-target/firmware}/stratum-proxy-{aarch64,armv7}
# for .ci/systemd.sh and the boot test. FIRMWARE_TEST=0 skips step 3,
# FIRMWARE_SIZE_REPORT=0 the size breakdown (an extra unstripped build).
set -euo pipefail
cd "$(dirname "$0")/.."

BUDGET_BYTES=$((3 * 1024 * 1024 / 2))   # 1.5 MiB for the aarch64 binary
A64=aarch64-unknown-linux-musl
ARMV7=armv7-unknown-linux-musleabihf
target_dir=${CARGO_TARGET_DIR:-target}
out=${FIRMWARE_OUT:-target/firmware}
mkdir -p "$out"
fail=0 passed=0

step() { printf '\n== %s\n' "$*"; step_start=$SECONDS; }
took() { echo "-- took $((SECONDS - step_start)) s"; }
ok() { echo "ok: $*"; passed=$((passed + 1)); }
bad() { echo "FAIL: $*"; fail=$((fail + 1)); }

# check_binary PATH 'file pattern' label
check_binary() {
    local bin=$1 pattern=$2 label=$3 desc
    desc=$(file -b "$bin")
    echo "file: $desc"
    # shellcheck disable=SC2254
    case "$desc" in
        $pattern) ok "$label is a static ARM executable" ;;
        *) bad "$label is not a static ARM executable" ;;
    esac
    printf 'size: %s bytes (%s KiB)\n' "$(stat -c %s "$bin")" "$(( ($(stat -c %s "$bin") + 1023) / 1024 ))"
}

# Where the bytes go, from an unstripped build of the same code: section sizes
# and the symbol sizes added up per crate (first path segment of the
# demangled name; closures and trait impls are attributed to the crate named
# first).
size_report() {
    local bin=$1
    echo "-- sections (bytes):"
    size -A "$bin" | awk '$1 ~ /^\.(text|rodata|data|data\.rel\.ro|bss|eh_frame|gcc_except_table|init_array|tbss|tdata)$/ { printf "   %-18s %9d\n", $1, $2 }'
    echo "-- symbol bytes per crate (top 15):"
    nm -S --size-sort -t d -C "$bin" 2>/dev/null | awk '
        { size = $2 + 0; $1 = $2 = $3 = ""; name = substr($0, 4)
          sub(/^(bool|void|int|unsigned|long|char) /, "", name)    # C++ return types (libunwind)
          sub(/^(<|_<)/, "", name); sub(/^&(mut )?/, "", name); sub(/^dyn /, "", name)
          crate = name; sub(/::.*/, "", crate); sub(/[ <>(].*/, "", crate)
          if (crate ~ /^(\[|\*|str$|char$|bool$|[iuf](8|16|32|64|128|size)$)/) crate = "core"  # impls on primitives
          if (crate == "" || name !~ /::/) crate = "[C/other: " (name ~ /^_?_?[a-z]/ ? "libc,compiler-rt" : "?") "]"
          total[crate] += size; all += size }
        END { for (c in total) printf "   %9d  %5.1f%%  %s\n", total[c], 100 * total[c] / all, c }' \
        | sort -rn | head -n 15
    echo "-- largest symbols:"
    nm -S --size-sort -t d -C "$bin" 2>/dev/null | tail -n 8 | awk '{ printf "   %9d  ", $2; $1 = $2 = $3 = ""; print substr($0, 4) }' | cut -c1-140
}

step "aarch64 release build ($A64)"
cargo build --locked --release --target "$A64" --bin stratum-proxy
bin=$target_dir/$A64/release/stratum-proxy
cp "$bin" "$out/stratum-proxy-aarch64"
check_binary "$bin" 'ELF 64-bit LSB*executable, ARM aarch64,*static*' aarch64
size=$(stat -c %s "$bin")
if [ "$size" -le "$BUDGET_BYTES" ]; then
    ok "aarch64 size $size <= budget $BUDGET_BYTES bytes (1.5 MiB)"
else
    bad "aarch64 size $size > budget $BUDGET_BYTES bytes (1.5 MiB)"
fi
if qemu-aarch64-static "$bin" --help >/dev/null; then ok "aarch64 binary runs under qemu (--help)"; else bad "aarch64 binary does not run under qemu"; fi
# The gateway's default config (installed as /etc/stratum-proxy/config.json)
# must be accepted by the binary it ships with.
if qemu-aarch64-static "$bin" check-config --config systemd/config.json >/dev/null; then
    ok "systemd/config.json accepted by check-config"
else
    bad "systemd/config.json refused by check-config"
fi
took

if [ "${FIRMWARE_SIZE_REPORT:-1}" = 1 ]; then
    step "aarch64 size breakdown (same build, not stripped)"
    # Only the final link differs (strip is a linker flag): dependencies are reused.
    CARGO_PROFILE_RELEASE_STRIP=false cargo build --locked --release --target "$A64" \
        --bin stratum-proxy --target-dir "$target_dir/size-report"
    size_report "$target_dir/size-report/$A64/release/stratum-proxy"
    took
fi

if [ "${FIRMWARE_ARMV7:-1}" = 1 ]; then
    step "armv7 release build ($ARMV7, nightly -Z build-std)"
    if cargo +nightly build-armv7 --locked --bin stratum-proxy; then   # alias in .cargo/config.toml
        bin7=$target_dir/$ARMV7/release/stratum-proxy
        cp "$bin7" "$out/stratum-proxy-armv7"
        check_binary "$bin7" 'ELF 32-bit LSB*executable, ARM, EABI5*static*' armv7
        if qemu-arm-static "$bin7" --help >/dev/null; then ok "armv7 binary runs under qemu (--help)"; else bad "armv7 binary does not run under qemu"; fi
    else
        bad "armv7 build"
    fi
    took
fi

if [ "${FIRMWARE_TEST:-1}" = 1 ]; then
    step "cargo test --locked --target $A64 (under qemu-aarch64)"
    # FIRMWARE_TEST_ARGS: extra libtest arguments (e.g. "--skip NAME"), word-split.
    # The runner in the environment form as well as in .cargo/config.toml:
    # tests that spawn our binaries read it there (tests/runner), so they
    # need no binfmt_misc entry either.
    # shellcheck disable=SC2086
    if CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER:-qemu-aarch64-static} \
        cargo test --locked --target "$A64" -- ${FIRMWARE_TEST_ARGS:-}; then ok "test suite under qemu-aarch64"; else bad "test suite under qemu-aarch64"; fi
    took
fi

echo
ls -l "$out"
echo "firmware: $passed passed, $fail failed"
[ "$fail" = 0 ]
