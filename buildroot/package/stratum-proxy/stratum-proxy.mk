################################################################################
#
# stratum-proxy
#
################################################################################

# The binary is cross-built with cargo outside buildroot (static musl, see
# .ci/firmware.sh); this package only installs it with its unit, user and
# default configuration, taken from the repository's systemd/ directory.
STRATUM_PROXY_VERSION = local
STRATUM_PROXY_SITE = $(BR2_EXTERNAL_STRATUM_PROXY_PATH)/../systemd
STRATUM_PROXY_SITE_METHOD = local
STRATUM_PROXY_LICENSE = MIT or Apache-2.0
STRATUM_PROXY_BINARY = $(call qstrip,$(BR2_PACKAGE_STRATUM_PROXY_BINARY))
# Nothing is compiled here: no need to build buildroot's toolchain for it.
STRATUM_PROXY_ADD_TOOLCHAIN_DEPENDENCY = NO

define STRATUM_PROXY_BUILD_CMDS
	@test -f "$(STRATUM_PROXY_BINARY)" || { \
		echo "stratum-proxy: no binary at $(STRATUM_PROXY_BINARY):" \
			"build it first (.ci/firmware.sh) or set" \
			"BR2_PACKAGE_STRATUM_PROXY_BINARY"; \
		exit 1; }
endef

define STRATUM_PROXY_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(STRATUM_PROXY_BINARY) \
		$(TARGET_DIR)/usr/bin/stratum-proxy
	$(INSTALL) -D -m 0644 $(@D)/stratum-proxy.sysusers \
		$(TARGET_DIR)/usr/lib/sysusers.d/stratum-proxy.conf
	$(INSTALL) -D -m 0644 $(@D)/stratum-proxy.tmpfiles \
		$(TARGET_DIR)/usr/lib/tmpfiles.d/stratum-proxy.conf
	$(INSTALL) -D -m 0640 $(@D)/config.json \
		$(TARGET_DIR)/etc/stratum-proxy/config.json
endef

# It may hold pool credentials or the metrics token: root and the service
# user's group only (tmpfiles.d repeats this at boot).
define STRATUM_PROXY_PERMISSIONS
	/etc/stratum-proxy/config.json f 640 root stratum-proxy - - - - -
endef

define STRATUM_PROXY_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/stratum-proxy.service \
		$(TARGET_DIR)/usr/lib/systemd/system/stratum-proxy.service
endef

# Created at build time too, so a read-only rootfs has the user before
# systemd-sysusers could run.
define STRATUM_PROXY_USERS
	stratum-proxy -1 stratum-proxy -1 * - - - Stratum relay
endef

$(eval $(generic-package))
