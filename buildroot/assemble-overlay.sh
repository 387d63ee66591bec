#!/usr/bin/env bash
# Assembles the stratum-proxy rootfs overlay for a gateway image:
#
#   DIR/usr/bin/stratum-proxy                          the static binary
#   DIR/usr/lib/systemd/system/stratum-proxy.service   the hardened unit
#   DIR/usr/lib/sysusers.d/stratum-proxy.conf          its system user
#   DIR/usr/lib/tmpfiles.d/stratum-proxy.conf          config.json root:stratum-proxy 0640
#   DIR/etc/stratum-proxy/config.json                  default config (edit: pool), 0640
#   DIR/etc/systemd/system/multi-user.target.wants/stratum-proxy.service
#                                                       enables the unit
#   DIR/usr/share/doc/stratum-proxy/monitoring/        Prometheus rules and the
#                                                       Grafana dashboard (a copy
#                                                       to take to the server)
#
# and DIR.tar.gz with the same tree (owned by root), plus
# DIR-monitoring.tar.gz with only the monitoring kit: the rules run on the
# Prometheus server and the dashboard in Grafana, not on the gateway. Point buildroot's
# BR2_ROOTFS_OVERLAY at DIR, or unpack the tarball at / on a running gateway
# (then: systemd-sysusers; systemctl daemon-reload; systemctl start stratum-proxy).
#
# Usage: buildroot/assemble-overlay.sh --binary PATH --out DIR [--config FILE]
set -euo pipefail

usage() {
    echo "usage: $0 --binary PATH --out DIR [--config FILE]" >&2
    exit 2
}

here=$(cd "$(dirname "$0")" && pwd)
systemd_dir="$here/../systemd"
monitoring_dir="$here/../monitoring"
binary="" out="" config="$systemd_dir/config.json"
while [ $# -gt 0 ]; do
    case "$1" in
        --binary) [ $# -ge 2 ] || usage; binary=$2; shift 2 ;;
        --out) [ $# -ge 2 ] || usage; out=$2; shift 2 ;;
        --config) [ $# -ge 2 ] || usage; config=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "unknown argument: $1" >&2; usage ;;
    esac
done
if [ -z "$binary" ] || [ -z "$out" ]; then usage; fi
[ -f "$binary" ] || { echo "no such binary: $binary" >&2; exit 1; }
[ -f "$config" ] || { echo "no such config: $config" >&2; exit 1; }
out=${out%/}
if [ -z "$out" ] || [ "$(realpath -m "$out")" = / ]; then
    echo "refusing to use / as --out" >&2; exit 1
fi

# The gateway has no dynamic loader for us: refuse anything but a static ELF.
if command -v file >/dev/null; then
    desc=$(file -bL "$binary")
    case "$desc" in
        ELF*executable*static*) ;;
        *) echo "not a static ELF executable: $binary ($desc)" >&2; exit 1 ;;
    esac
fi

# Files are (re)installed over an existing DIR; nothing else in it is touched.
install -D -m 0755 "$binary" "$out/usr/bin/stratum-proxy"
install -D -m 0644 "$systemd_dir/stratum-proxy.service" "$out/usr/lib/systemd/system/stratum-proxy.service"
install -D -m 0644 "$systemd_dir/stratum-proxy.sysusers" "$out/usr/lib/sysusers.d/stratum-proxy.conf"
install -D -m 0644 "$systemd_dir/stratum-proxy.tmpfiles" "$out/usr/lib/tmpfiles.d/stratum-proxy.conf"
# 0640: it may hold pool credentials or the metrics token. The tarball is
# root:root; tmpfiles.d gives the group stratum-proxy at boot.
install -D -m 0640 "$config" "$out/etc/stratum-proxy/config.json"
# Enable it the way `systemctl enable` does (an overlay is copied after
# buildroot's preset-all and may be unpacked onto a system that never runs
# presets again, so a preset file would not be enough).
mkdir -p "$out/etc/systemd/system/multi-user.target.wants"
ln -sfn /usr/lib/systemd/system/stratum-proxy.service \
    "$out/etc/systemd/system/multi-user.target.wants/stratum-proxy.service"

doc="$out/usr/share/doc/stratum-proxy/monitoring"
install -D -m 0644 -t "$doc/prometheus" \
    "$monitoring_dir/prometheus/recording_rules.yml" "$monitoring_dir/prometheus/alert_rules.yml"
install -D -m 0644 -t "$doc/grafana" "$monitoring_dir/grafana/stratum-proxy.json"

tar --owner=0 --group=0 --numeric-owner --sort=name -C "$out" -czf "$out.tar.gz" .
tar --owner=0 --group=0 --numeric-owner --sort=name -C "$doc/.." -czf "$out-monitoring.tar.gz" monitoring
echo "overlay: $out"
echo "tarball: $out.tar.gz ($(stat -c %s "$out.tar.gz") bytes)"
echo "monitoring kit: $out-monitoring.tar.gz"
