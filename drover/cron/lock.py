"""One watchdog run at a time per configuration: a kernel lock on a file
in the configuration's state directory.

The lock is ``flock(2)`` on an open descriptor, so the kernel drops it
when its holder exits, however it exits (``kill -9`` included): a lock
file left behind never blocks the next run, whatever it holds.

Example::

    with RunLock(config_path=config.path):
        result = check.run_check(config, history)
"""

import errno
import fcntl
import logging
import os
import time

from drover.errors import LockBusy, StateError

log = logging.getLogger(__name__)

LOCK_NAME = "watchdog.lock"


class RunLock:
    """An exclusive lock, taken at once or not at all (LockBusy).

    ``path`` names the lock file; without it, ``watchdog.lock`` in the
    state directory of the configuration file ``config_path``: runs of
    two configurations never wait for each other. The file holds the
    holder's pid and start moment, for the message a second run prints;
    the lock itself is the kernel's.
    """

    def __init__(self, path=None, *, config_path=None):
        if path is None and config_path is None:
            raise TypeError("RunLock needs a path or a config_path: every "
                            "configuration has its own lock")
        self.path = None if path is None else os.fspath(path)
        self.config_path = config_path
        self._descriptor = None

    def __enter__(self):
        self.acquire()
        return self

    def __exit__(self, *exc_info):
        self.release()

    @property
    def held(self):
        return self._descriptor is not None

    def acquire(self):
        if self.held:
            raise StateError(f"{self.path}: lock already held by this run")
        if self.path is None:
            from drover import paths
            self.path = os.path.join(
                paths.ensure_config_state_dir(self.config_path), LOCK_NAME)

        # os.open makes the descriptor close-on-exec (PEP 446): a daemon
        # started on localhost must not inherit it, or the lock would live
        # as long as that daemon.
        try:
            descriptor = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise StateError(f"cannot open the lock file {self.path}: "
                             f"{error.strerror}") from None
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            holder = _read_holder(descriptor)
            os.close(descriptor)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise LockBusy(f"another watchdog run holds {self.path}"
                               f"{holder}; this one did nothing") from None
            raise StateError(f"cannot lock {self.path}: "
                             f"{error.strerror}") from None

        self._descriptor = descriptor
        _write_holder(descriptor)
        log.debug("locked %s", self.path)

    def release(self):
        """Drop the lock; the file stays (see below)."""
        if not self.held:
            return
        # The file is not unlinked: a run that opened it a moment ago
        # would lock the old inode while a third run creates a new file,
        # and both would hold "the" lock.
        os.close(self._descriptor)
        self._descriptor = None
        log.debug("unlocked %s", self.path)


def _write_holder(descriptor):
    text = f"{os.getpid()} {time.time():.0f}\n".encode("ascii")
    try:
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, text, 0)
    except OSError:
        # Only the message of a second run needs this; the lock holds.
        log.debug("cannot write the lock holder", exc_info=True)


def _read_holder(descriptor):
    """`` (pid 123, watchdog check --respawn, running 4m12s)`` from the
    lock file and the holder's process, or ``""``."""
    try:
        pid, since = os.pread(descriptor, 64, 0).decode("ascii").split()
        pid, since = int(pid), float(since)
    except (OSError, ValueError):
        return ""
    return f" ({_describe_process(pid, since)})"


def _describe_process(pid, since):
    """What a person wants to know of the run in the way: which command,
    how long it has run. psutil answers process questions on the control
    host (DESIGN.md); it is imported only when a run is in the way."""
    import psutil

    from drover.units import format_duration

    try:
        process = psutil.Process(pid)
        command = " ".join(process.cmdline()[1:]) or process.name()
        running = format_duration(time.time() - process.create_time())
        return f"pid {pid}, {command}, running {running}"
    except (psutil.Error, OSError):
        moment = time.strftime("%H:%M:%S", time.localtime(since))
        return f"pid {pid}, since {moment}"
