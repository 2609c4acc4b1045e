"""The watchdog: expected against live, reboots, respawn, alerts."""
