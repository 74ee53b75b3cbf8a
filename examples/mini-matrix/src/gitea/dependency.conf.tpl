busybox:{{BUSYBOX_VERSION}}
