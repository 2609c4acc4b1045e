"""Every host gets an outcome: keys, refusals, silence, jumps."""

import subprocess
import time

import pytest

from drover import outcomes, transport
from drover.config import load_text

pytestmark = pytest.mark.cluster


def _settings(cluster, tmp_path, known_hosts, ssh_config=None, **extra):
    """ssh settings with our own known_hosts and an ssh config that names
    no known_hosts file of its own (unlike the cluster's)."""
    if ssh_config is None:
        ssh_config = tmp_path / "ssh_config"
        ssh_config.write_text("".join(
            f"Host {host.name}\n  HostName 127.0.0.1\n  Port {host.port}\n"
            for host in cluster.hosts))
    overrides = dict(config=str(ssh_config), known_hosts=str(known_hosts))
    overrides.update(extra)
    text = cluster.toml_ssh_section(**overrides)
    return load_text(text, str(tmp_path / "drover.toml")).ssh


def _boot_id(session):
    return session.run(["cat", "/proc/sys/kernel/random/boot_id"]
                       ).stdout.decode().strip()


def test_unknown_host_key_is_refused_unless_accepted(cluster, tmp_path):
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text("")
    refusing = _settings(cluster, tmp_path, known_hosts)

    result = transport.fan_out(["host01"], _boot_id, refusing)["host01"]
    assert result.outcome == outcomes.HOSTKEY_UNKNOWN
    assert "accept_new_host_keys" in result.error
    assert known_hosts.read_text() == ""

    accepting = _settings(cluster, tmp_path, known_hosts,
                          accept_new_host_keys=True)
    result = transport.fan_out(["host01"], _boot_id, accepting)["host01"]
    assert result.ok and result.value == cluster["host01"].boot_id
    assert f"[127.0.0.1]:{cluster['host01'].port} " in \
        known_hosts.read_text()

    # What was accepted once is known from then on.
    result = transport.fan_out(["host01"], _boot_id, refusing)["host01"]
    assert result.ok


def test_changed_host_key_is_refused_even_when_accepting_new(cluster,
                                                            tmp_path):
    other_key = cluster["host02"].host_public_key.split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(
        f"[127.0.0.1]:{cluster['host01'].port} {' '.join(other_key)}\n")
    settings = _settings(cluster, tmp_path, known_hosts,
                         accept_new_host_keys=True)

    result = transport.fan_out(["host01"], _boot_id, settings)["host01"]

    assert result.outcome == outcomes.HOSTKEY_CHANGED
    assert "CHANGED" in result.error


def test_refused_key_is_auth_failed_naming_the_key(cluster, tmp_path):
    stranger = tmp_path / "stranger_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f",
                    str(stranger)], check=True)
    settings = _settings(cluster, tmp_path, cluster.known_hosts,
                         identity_file=str(stranger))

    result = transport.fan_out(["host01"], _boot_id, settings)["host01"]

    assert result.outcome == outcomes.AUTH_FAILED
    assert str(stranger) in result.error


def test_missing_identity_file_is_named(cluster, tmp_path):
    from drover.errors import ConfigError
    with pytest.raises(ConfigError, match="no-such-key"):
        _settings(cluster, tmp_path, cluster.known_hosts,
                  identity_file=str(tmp_path / "no-such-key"))


def test_refused_and_silent_hosts_are_told_apart_in_time(cluster,
                                                         tmp_path):
    closed = cluster.closed_port_host()
    silent = cluster.add_silent_host()
    settings = _settings(cluster, tmp_path, cluster.known_hosts,
                         ssh_config=cluster.ssh_config, connect_timeout=2)

    began = time.monotonic()
    results = transport.fan_out(["host01", closed.name, silent.name],
                                _boot_id, settings)
    elapsed = time.monotonic() - began

    assert results["host01"].ok
    assert results[closed.name].outcome == outcomes.REFUSED
    assert results[silent.name].outcome == outcomes.CONNECT_TIMEOUT
    assert elapsed < 4


def test_proxy_jump_reaches_a_host_through_another(cluster, tmp_path):
    jump, target = cluster["host01"], cluster["host02"]
    ssh_config = tmp_path / "ssh_config"
    ssh_config.write_text(
        f"Host gateway\n  HostName 127.0.0.1\n  Port {jump.port}\n\n"
        f"Host inner\n  HostName 127.0.0.1\n  Port {target.port}\n"
        "  ProxyJump gateway\n")
    settings = _settings(cluster, tmp_path, cluster.known_hosts,
                         ssh_config=ssh_config)

    result = transport.fan_out(["inner"], _boot_id, settings)["inner"]

    assert result.ok, result.error
    assert result.value == target.boot_id


def test_a_run_deadline_bounds_hung_work(cluster, tmp_path):
    settings = _settings(cluster, tmp_path, cluster.known_hosts,
                         ssh_config=cluster.ssh_config)

    def hang(session):
        return session.run("sleep 60")

    began = time.monotonic()
    results = transport.fan_out(["host01", "host02"], hang, settings,
                                deadline=2)
    assert time.monotonic() - began < 4
    assert {result.outcome for result in results.values()} == \
        {outcomes.TIMED_OUT}
