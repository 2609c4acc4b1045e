"""Time one whole process: wall clock, CPU and peak memory, from the kernel.

CPU time comes from ``wait4(2)``: user and system time of the process and
of every descendant it waited for (the ssh clients pdsh, clush and taktuk
spawn and reap). Peak memory is the largest resident set among them, as
GNU time reports it (``%M``): the kernel keeps a process's high-water
mark across ``exec``, so a child forked straight from this Python process
would start at this process's size; forked from ``time`` it starts at a
megabyte or two. Nothing is sampled, so measuring costs the measured
program nothing.

Each child leads its own process group. Until the benchmark reaps the
leader, the group's id cannot name anyone else's processes, so a timeout,
a Ctrl-C or the end of a run can kill what is left of it by that id.
"""

import os
import shutil
import signal
import statistics
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field

GNU_TIME = "/usr/bin/time"

# Enough of a failed command's stderr to say why it failed.
STDERR_TAIL = 400

# Leaders started and not yet reaped: what an interrupted run must kill.
_unreaped = set()


@dataclass
class Sample:
    """What one run of a command cost, and what it said."""

    wall: float          # seconds, fork to exit
    cpu: float           # seconds, user + system, with reaped children
    rss: int             # bytes, the largest resident set among them
    status: int          # exit status; negative: killed by that signal
    stdout: bytes
    stderr: bytes
    timed_out: bool = False

    def stderr_tail(self):
        text = self.stderr.decode("utf-8", "replace").strip()
        return text[-STDERR_TAIL:].replace("\n", " | ")


@dataclass
class Series:
    """The samples of one command, with their failures kept apart."""

    name: str
    samples: dict = field(default_factory=dict)    # round -> Sample
    failures: list = field(default_factory=list)   # one line each

    def values(self, attribute):
        return [getattr(sample, attribute)
                for sample in self.samples.values()]

    def median(self, attribute):
        values = self.values(attribute)
        return statistics.median(values) if values else None

    def low(self, attribute):
        return min(self.values(attribute), default=None)

    def high(self, attribute):
        return max(self.values(attribute), default=None)


def run_timed(argv, env, timeout, cwd=None):
    """Run ``argv`` to its end and return its Sample.

    Output goes to temporary files rather than pipes: nothing has to read
    them while the command runs, so no thread of ours competes with it
    for the two cores.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as peak:
        wrapped = [GNU_TIME, "-f", "%M", "-o", peak.name, "--"] + list(argv)
        started = time.monotonic()
        child = subprocess.Popen(
            wrapped, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
            env=env, cwd=cwd, start_new_session=True)
        _unreaped.add(child.pid)
        timer = _Killer(child.pid, timeout)
        try:
            # Wait for the exit without reaping: the leader's zombie keeps
            # the group id ours while stragglers are killed.
            os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
            wall = time.monotonic() - started
        finally:
            timer.cancel()
            _kill_group(child.pid)
            _, status, usage = os.wait4(child.pid, 0)
            _unreaped.discard(child.pid)
            # Popen must not wait for a child reaped here.
            child.returncode = os.waitstatus_to_exitcode(status)

        out.seek(0)
        err.seek(0)
        return Sample(
            wall=wall, cpu=usage.ru_utime + usage.ru_stime,
            rss=_peak_kilobytes(peak.read()) * 1024,
            status=child.returncode, stdout=out.read(), stderr=err.read(),
            timed_out=timer.fired)


def available():
    """None, or why nothing can be measured here."""
    if shutil.which(GNU_TIME) is None:
        return f"{GNU_TIME} not found (Debian package: time)"
    return None


def _peak_kilobytes(text):
    # The format's line comes last: a failed command's "Command exited
    # with non-zero status" line precedes it.
    words = text.split()
    return int(words[-1]) if words and words[-1].isdigit() else 0


def kill_unreaped():
    """Kill and reap every child still running: Ctrl-C, error, exit."""
    for pid in list(_unreaped):
        _kill_group(pid)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
        _unreaped.discard(pid)


class _Killer:
    """Kills a child's group once its time is up, unless cancelled first."""

    def __init__(self, pid, timeout):
        self.pid = pid
        self.fired = False
        self._lock = threading.Lock()
        self._done = False
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self):
        with self._lock:
            if not self._done:
                self.fired = True
                _kill_group(self.pid)

    def cancel(self):
        # Under the lock: once this returns, the timer cannot signal a
        # group id that the coming reap would give back to the kernel.
        with self._lock:
            self._done = True
        self._timer.cancel()


def _kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
