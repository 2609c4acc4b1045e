"""The watchdog's own log file: full detail, in the state directory.

Under cron, what the watchdog prints becomes a mail, so it prints little;
the whole story of every run goes here instead, for the operator who asks
afterwards what happened at 03:05. The file is bounded by size: at
``MAX_BYTES`` it moves to ``watchdog.log.1`` (and so on, ``BACKUPS``
deep), so it never fills the disk it reports on.

Example (the watchdog CLI, after ``console.setup_logging``)::

    handler = runlog.attach(paths.ensure_state_dir())
    ...
    runlog.detach(handler)      # only tests and in-process runs need it
"""

import logging
import logging.handlers
import os
from pathlib import Path

from drover.errors import StateError

log = logging.getLogger(__name__)

LOG_NAME = "watchdog.log"
MAX_BYTES = 1024 * 1024
BACKUPS = 4

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"


class _PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are 0600: log lines name hosts, paths
    and errors that are nobody else's business."""

    def doRollover(self):
        super().doRollover()
        if self.stream is not None:
            os.chmod(self.baseFilename, 0o600)


class _DroverDetail(logging.Filter):
    """drover's own records at every level, other libraries' from INFO:
    their debug lines are noise, and may show a URL with its secret."""

    def filter(self, record):
        return record.levelno >= logging.INFO or \
            record.name == "drover" or record.name.startswith("drover.")


def log_path(state_dir):
    """Where the log of the state directory ``state_dir`` is."""
    return Path(state_dir) / LOG_NAME


def attach(state_dir, max_bytes=MAX_BYTES, backups=BACKUPS):
    """Send the log records of this process to ``watchdog.log`` too.

    The console keeps its level: a stderr handler without a level of its
    own gets the root logger's current one, and the root logger is
    lowered to DEBUG for the file. Attaching twice returns the handler
    already attached. Raises StateError when the file cannot be opened.
    """
    path = log_path(state_dir)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _PrivateFileHandler) and \
                handler.baseFilename == os.path.abspath(path):
            return handler

    # Create it 0600 before the handler opens it with the umask's mode.
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         0o600))
        handler = _PrivateFileHandler(
            path, maxBytes=max_bytes, backupCount=backups,
            encoding="utf-8", errors="backslashreplace")
    except OSError as error:
        raise StateError(f"cannot open the watchdog log {path}: "
                         f"{error.strerror}") from None
    handler.setLevel(logging.DEBUG)
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_DroverDetail())

    for console in root.handlers:
        if console.level == logging.NOTSET:
            console.setLevel(root.level)
    root.setLevel(logging.DEBUG)
    root.addHandler(handler)
    log.debug("logging to %s", path)
    return handler


def detach(handler):
    """Stop writing to the log file of ``attach`` and close it."""
    logging.getLogger().removeHandler(handler)
    handler.close()
