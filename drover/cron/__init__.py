"""Running the watchdog from cron: crontab entry, run lock, quiet output."""
