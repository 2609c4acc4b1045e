"""The watchdog's own log file: each run's story, in the state directory.

Under cron, what the watchdog prints becomes a mail, so it prints little;
the whole story of every run goes here instead, for the operator who asks
afterwards what happened at 03:05: the command line (URLs masked), every
host's outcome, every change, respawn, quarantine and delivery, the
summary line, and how the run ended and how long it took. Each
configuration has its own file, in its own state directory
(``drover.paths.config_state_dir``). The file is bounded by size: at
``MAX_BYTES`` it moves to ``watchdog.log.1`` (and so on, ``BACKUPS``
deep), so it never fills the disk it reports on.

drover's records reach the file from INFO (from DEBUG with ``--debug``),
whatever stderr shows: ``attach`` lowers the ``drover`` logger to INFO
and gives each console handler the level the console had, so stderr
stays as quiet, or as verbose (``-v``), as it was.

Example (the watchdog CLI, after ``console.setup_logging``)::

    with RunLog(paths.ensure_config_state_dir(config.path), argv) as run:
        ...
        run.finished(status)
"""

import logging
import logging.handlers
import os
import re
import shlex
import time
from pathlib import Path

from drover.errors import DroverError, StateError

log = logging.getLogger(__name__)

LOG_NAME = "watchdog.log"
MAX_BYTES = 1024 * 1024
BACKUPS = 4

FORMAT = "%(asctime)s [%(process)d] %(levelname)s %(name)s: %(message)s"

# The least level of drover's own records in the file.
FILE_LEVEL = logging.INFO

# From a scheme:// to the end of the word: an apprise or mailto URL may
# carry a password or a token, and a password may hold a space.
_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://.*", re.DOTALL)

# Each attached handler: the level the "drover" logger had before.
_saved_levels = {}


class _PrivateFileHandler(logging.handlers.RotatingFileHandler):
    """A rotating log whose files are 0600: log lines name hosts, paths
    and errors that are nobody else's business."""

    def doRollover(self):
        super().doRollover()
        if self.stream is not None:
            os.chmod(self.baseFilename, 0o600)


class _DroverDetail(logging.Filter):
    """drover's own records at the level of the ``drover`` logger, other
    libraries' from INFO: their debug lines are noise, and may show a URL
    with its secret."""

    def filter(self, record):
        return record.levelno >= logging.INFO or \
            record.name == "drover" or record.name.startswith("drover.")


def log_path(state_dir):
    """Where the log of the state directory ``state_dir`` is."""
    return Path(state_dir) / LOG_NAME


def attach(state_dir, max_bytes=MAX_BYTES, backups=BACKUPS):
    """Send drover's log records of this process to ``watchdog.log`` too.

    Records from INFO reach the file, and the console keeps its level:
    a console handler without a level of its own gets the one the root
    logger gives it now, and the ``drover`` logger is lowered to INFO
    (``detach`` puts it back). Attaching twice returns the handler
    already attached. Raises StateError when the file cannot be opened.
    """
    path = log_path(state_dir)
    root = logging.getLogger()
    for handler in root.handlers:
        if isinstance(handler, _PrivateFileHandler) and \
                handler.baseFilename == os.path.abspath(path):
            return handler

    handler = _open(path, max_bytes, backups)
    _pin_console_levels(root)
    drover = logging.getLogger("drover")
    _saved_levels[handler] = drover.level
    if drover.getEffectiveLevel() > FILE_LEVEL:
        drover.setLevel(FILE_LEVEL)
    root.addHandler(handler)
    log.debug("logging to %s", path)
    return handler


def _open(path, max_bytes, backups):
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
    handler.setLevel(logging.DEBUG)   # the loggers' levels decide
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.addFilter(_DroverDetail())
    return handler


def _pin_console_levels(root):
    """A handler's level is checked for every record that reaches it,
    whatever logger it came from; a logger's level only where the record
    is made. So, before drover's INFO records are made, every handler
    already there gets the level it showed until now."""
    for console in root.handlers:
        if console.level == logging.NOTSET:
            console.setLevel(root.getEffectiveLevel())


def detach(handler):
    """Stop writing to the log file of ``attach`` and close it."""
    logging.getLogger().removeHandler(handler)
    handler.close()
    if handler in _saved_levels:
        logging.getLogger("drover").setLevel(_saved_levels.pop(handler))


def command_line(argv):
    """``argv`` as one shell-quoted line, every URL in it masked as
    ``drover.notify.mask_url`` masks it."""
    from drover.notify import mask_url
    return shlex.join(_URL.sub(lambda found: mask_url(found.group(0)),
                               str(word)) for word in argv)


class RunLog:
    """One run in the log: attached on entry, the command line first; on
    exit the end (``finished(status)``, or the error that ended it) and
    the duration, then detached. An error is written to the file only:
    the CLI prints it on stderr itself."""

    def __init__(self, state_dir, argv):
        self.state_dir = state_dir
        self.argv = list(argv)
        self.status = None
        self.handler = None
        self.started = None

    def __enter__(self):
        self.handler = attach(self.state_dir)
        self.started = time.monotonic()
        log.info("run: %s", command_line(self.argv))
        return self

    def finished(self, status):
        """The exit status the run is about to end with."""
        self.status = status

    def __exit__(self, kind, error, traceback):
        took = time.monotonic() - self.started
        try:
            if error is None:
                log.info("done: exit status %s in %.2fs", self.status, took)
            else:
                self._to_file(logging.ERROR, f"failed after {took:.2f}s: "
                                             f"{_describe(error)}")
        finally:
            detach(self.handler)
        return False

    def _to_file(self, level, message):
        record = log.makeRecord(log.name, level, __file__, 0, message, (),
                                None)
        self.handler.handle(record)


def _describe(error):
    if isinstance(error, DroverError):
        return f"{error.category}: {error}"
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return f"{type(error).__name__}: {error}"
