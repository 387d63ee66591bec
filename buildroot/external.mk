include $(sort $(wildcard $(BR2_EXTERNAL_STRATUM_PROXY_PATH)/package/*/*.mk))
