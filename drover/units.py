"""Durations and byte counts written for people: ``3h05m``, ``1.5G``.

Reading them from the configuration is config.py's job
(``parse_duration``, ``parse_size``); this is the way back out, shared by
the CLIs and the report templates.
"""


def format_duration(seconds):
    """``3d04h``, ``2h05m``, ``4m09s``, ``12s``; ``-`` when unknown."""
    if seconds is None:
        return "-"
    seconds = int(seconds)
    days, seconds = divmod(seconds, 86400)
    hours, seconds = divmod(seconds, 3600)
    minutes, seconds = divmod(seconds, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{seconds:02d}s"
    return f"{seconds}s"


def format_bytes(count):
    """``512B``, ``1.5K``, ``23.0G`` (powers of 1024); ``-`` when unknown."""
    if count is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(count) < 1024 or unit == "T":
            return f"{count:.0f}{unit}" if unit == "B" \
                else f"{count:.1f}{unit}"
        count /= 1024
