"""The running process: DaemonService, instances, listeners, reload, systemd, logs, QuickPort and the reactor."""
