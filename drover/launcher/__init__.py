"""The launcher: start, stop, restart, status, publish, logs, exec."""
