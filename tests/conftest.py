"""Shared fixtures: the fake cluster and a private control-side home."""

import functools
import sys
from pathlib import Path

import pytest

# `python3 -m pytest` puts the project root on sys.path and plain `pytest`
# does not; `tests.cluster` and the `drover` source tree need it.
ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from tests.cluster import FakeCluster, unavailable_reason  # noqa: E402


@functools.lru_cache(maxsize=None)
def _cluster_unavailable():
    return unavailable_reason()


def _skip_without_cluster():
    reason = _cluster_unavailable()
    if reason is not None:
        pytest.skip("fake cluster unavailable: %s" % reason)


def pytest_report_header(config):
    reason = _cluster_unavailable()
    if reason is None:
        return "fake cluster: available (sshd in PID and mount namespaces)"
    return "fake cluster: UNAVAILABLE, cluster tests skip: %s" % reason


def pytest_runtest_setup(item):
    if item.get_closest_marker("cluster") is not None:
        _skip_without_cluster()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Three fake hosts (host01..host03), shared by the tests of a module."""
    _skip_without_cluster()
    with FakeCluster(tmp_path_factory.mktemp("cluster"), size=3) as fake:
        yield fake


@pytest.fixture
def make_cluster(tmp_path_factory):
    """A factory: make_cluster(size, prefix="host") -> a started cluster.

    Every cluster it made is closed when the test ends.
    """
    _skip_without_cluster()
    made = []

    def make(size=3, **options):
        fake = FakeCluster(tmp_path_factory.mktemp("cluster"), size=size,
                           **options)
        made.append(fake)
        return fake.start()

    yield make
    for fake in made:
        fake.close()


@pytest.fixture
def control_home(tmp_path, monkeypatch):
    """A fresh HOME and XDG directories for the control side of a test.

    Nothing the test runs can read or write the real ~/.ssh, configuration
    or state; the caller's ssh-agent and DROVER_CONFIG are hidden too.
    """
    home = tmp_path / "control-home"
    state = home / ".local" / "state"
    config = home / ".config"
    for directory in (state, config):
        directory.mkdir(parents=True)
    home.chmod(0o700)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config))
    monkeypatch.delenv("DROVER_CONFIG", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    return home


# Real servers on loopback for the notification tests.
from tests.smtp import smtp_server  # noqa: E402,F401
from tests.webhook import http_server  # noqa: E402,F401
