"""Small helpers the test modules share: configs and in-process CLIs."""

import contextlib
import io
import json
import time
from dataclasses import dataclass


@dataclass
class CliRun:
    """What one in-process run of a CLI left."""

    status: int
    stdout: str
    stderr: str

    def json(self):
        return json.loads(self.stdout)


def run_cli(main, *argv):
    """Run ``main(argv)`` in this process, capturing both streams."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), \
            contextlib.redirect_stderr(stderr):
        status = main([str(arg) for arg in argv])
    return CliRun(status, stdout.getvalue(), stderr.getvalue())


def launcher(*argv):
    from drover.launcher.cli import main
    return run_cli(main, *argv)


def write_config(path, cluster, body, **ssh_overrides):
    """A drover.toml for ``cluster`` with ``body`` after its [ssh] table."""
    text = cluster.toml_ssh_section(**ssh_overrides) + "\n" + body
    path.write_text(text, encoding="utf-8")
    return path


def host_pids(host, pattern):
    """Pids (as the host sees them) of processes whose argv matches."""
    found = host.run(["pgrep", "-f", pattern])
    return sorted(int(pid) for pid in found.stdout.split())


def wait_until(predicate, timeout=10.0, interval=0.1):
    """Poll ``predicate`` until it is true; its last value either way."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def proc_stat(host, pid):
    """Fields of /proc/PID/stat on ``host``, numbered as in proc(5)."""
    text = host.run(["cat", f"/proc/{pid}/stat"]).stdout
    if not text:
        return None
    head, _, tail = text.rpartition(")")
    fields = [None, head.split(" (", 1)[0], head.split(" (", 1)[1]]
    return fields + tail.split()
