#!/bin/sh
# Buildroot post-build script for the stratum gateway: $1 is TARGET_DIR.
# Runs after the rootfs overlays are copied, before the images are made.
set -eu

TARGET_DIR=$1

# Persistent journal (bounded by journald.conf.d/10-stratum-gateway.conf).
mkdir -p "$TARGET_DIR/var/log/journal"

# The image is useless without the relay: fail the build if a piece is missing
# (it comes from the stratum-proxy package or from an overlay made by
# buildroot/assemble-overlay.sh).
for f in usr/bin/stratum-proxy \
	usr/lib/systemd/system/stratum-proxy.service \
	usr/lib/sysusers.d/stratum-proxy.conf \
	etc/stratum-proxy/config.json; do
	if [ ! -e "$TARGET_DIR/$f" ]; then
		echo "post-build: missing /$f (enable BR2_PACKAGE_STRATUM_PROXY" \
			"or add the stratum-proxy overlay)" >&2
		exit 1
	fi
done

if grep -q 'stratum.example.net' "$TARGET_DIR/etc/stratum-proxy/config.json"; then
	echo "post-build: note: /etc/stratum-proxy/config.json still points at" \
		"the placeholder pool; set \"pool\" before or after flashing" >&2
fi
