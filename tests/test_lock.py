"""The run lock: one watchdog at a time, and no stale lock ever."""

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from drover import paths
from drover.cron.lock import RunLock
from drover.errors import LockBusy

HOLD_LOCK = """
import sys, time
from drover.cron.lock import RunLock
with RunLock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(60)
"""


@pytest.fixture
def lock_path(tmp_path):
    return str(tmp_path / "watchdog.lock")


def hold_in_child(lock_path):
    """A child process that holds the lock until killed."""
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, lock_path],
                             stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    return child


def test_a_second_lock_is_refused_at_once(lock_path):
    with RunLock(lock_path):
        began = time.monotonic()
        with pytest.raises(LockBusy) as caught:
            RunLock(lock_path).acquire()
        assert time.monotonic() - began < 0.5
    assert lock_path in str(caught.value)
    assert f"pid {os.getpid()}" in str(caught.value)


def test_the_lock_is_free_again_after_release(lock_path):
    with RunLock(lock_path):
        pass
    with RunLock(lock_path) as lock:
        assert lock.held


def test_a_busy_lock_names_the_run_in_the_way(lock_path):
    child = hold_in_child(lock_path)
    try:
        with pytest.raises(LockBusy) as caught:
            RunLock(lock_path).acquire()
    finally:
        child.kill()
        child.wait(10)

    message = str(caught.value)
    assert f"pid {child.pid}, -c " in message   # its command line
    assert "running 0s" in message or "running 1s" in message


def test_a_killed_holder_leaves_no_stale_lock(lock_path):
    child = hold_in_child(lock_path)
    with pytest.raises(LockBusy):
        RunLock(lock_path).acquire()

    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    assert os.path.exists(lock_path)     # the file stays; it holds nothing
    with RunLock(lock_path) as lock:
        assert lock.held


def test_children_of_the_holder_do_not_inherit_the_lock(lock_path):
    with RunLock(lock_path):
        # As a daemon started on localhost would be: no close_fds.
        child = subprocess.Popen(["sleep", "30"], close_fds=False)
    try:
        with RunLock(lock_path) as lock:
            assert lock.held
    finally:
        child.kill()
        child.wait()


def test_the_default_lock_lives_in_the_configurations_state_directory(
        control_home, tmp_path):
    config = tmp_path / "drover.toml"
    with RunLock(config_path=config) as lock:
        expected = (control_home / ".local/state/drover" /
                    paths.config_id(config) / "watchdog.lock")
        assert lock.path == str(expected)
        assert stat.S_IMODE(os.stat(expected).st_mode) == 0o600


def test_two_configurations_lock_apart(control_home, tmp_path):
    first, second = tmp_path / "a.toml", tmp_path / "b" / "a.toml"
    child = hold_in_child(str(paths.ensure_config_state_dir(first) /
                              "watchdog.lock"))
    try:
        with pytest.raises(LockBusy):
            RunLock(config_path=first).acquire()
        with RunLock(config_path=second) as lock:
            assert lock.held
    finally:
        child.kill()
        child.wait()
