"""The fake cluster itself, checked with the real ssh client and /proc."""

import os
import socket
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.cluster import BOOT_ID, FakeCluster

REAL_BOOT_ID = Path(BOOT_ID).read_text().strip()


def start_sleeper(cluster, name):
    """Start `sleep 1000` as a detached daemon over ssh; its host pid."""
    result = cluster.ssh(
        name, "nohup setsid sleep 1000 </dev/null >/dev/null 2>&1 & echo $!",
        timeout=5)
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def alive(pid, start_ticks):
    """True if `pid` still names the process that had `start_ticks`."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return False
    return int(stat.rsplit(")", 1)[1].split()[19]) == start_ticks


def start_ticks(pid):
    stat = Path("/proc/%d/stat" % pid).read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def commands(pids):
    found = []
    for pid in pids:
        try:
            found.append(Path("/proc/%d/comm" % pid).read_text())
        except OSError:
            pass
    return found


def refuses(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except ConnectionRefusedError:
        return True
    return False


@pytest.mark.cluster
def test_each_host_answers_with_its_own_boot_id(cluster):
    seen = []
    for host in cluster.hosts:
        result = cluster.ssh(host.name, "cat " + BOOT_ID,
                             "-o", "StrictHostKeyChecking=yes")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == host.boot_id
        seen.append(host.boot_id)

    assert cluster.names == ["host01", "host02", "host03"]
    assert len(set(seen)) == 3
    assert REAL_BOOT_ID not in seen


@pytest.mark.cluster
def test_sshd_is_pid_1_of_its_own_pid_namespace(cluster):
    for host in cluster.hosts:
        over_ssh = cluster.ssh(host.name, "cat /proc/1/comm")
        inside = host.run(["cat", "/proc/1/comm"])
        assert over_ssh.stdout == inside.stdout == "sshd\n"

    assert Path("/proc/%d/comm" % cluster.hosts[0].init_pid).read_text() \
        == "sshd\n"
    assert len({host.init_pid for host in cluster.hosts}) == 3


@pytest.mark.cluster
def test_known_hosts_is_written_hashed_by_openssh(cluster):
    lines = cluster.known_hosts.read_text().splitlines()
    assert len(lines) == 3
    assert all(line.startswith("|1|") for line in lines)

    for host in cluster.hosts:
        found = subprocess.run(
            ["ssh-keygen", "-F", "[127.0.0.1]:%d" % host.port,
             "-f", str(cluster.known_hosts)],
            capture_output=True, text=True)
        assert found.returncode == 0
        assert host.host_public_key in found.stdout


@pytest.mark.cluster
def test_home_belongs_to_one_host_and_never_to_the_real_root(cluster):
    result = cluster.ssh("host01", "echo été > ~/marker; pwd")
    assert result.stdout == "/root\n", result.stderr

    assert (cluster["host01"].home / "marker").read_text() == "été\n"
    assert not (cluster["host02"].home / "marker").exists()
    assert not Path("/root/marker").exists()
    mount_points = [line.split()[4] for line in
                    Path("/proc/self/mountinfo").read_text().splitlines()]
    assert "/root" not in mount_points
    assert BOOT_ID not in mount_points


@pytest.mark.cluster
def test_run_sees_the_pids_that_ssh_sessions_see(cluster):
    host = cluster["host03"]
    pid = start_sleeper(cluster, host.name)

    assert host.run("cat /proc/%d/comm" % pid).stdout == "sleep\n"
    outside = host.outside_pid(pid)
    assert outside != pid
    assert Path("/proc/%d/comm" % outside).read_text() == "sleep\n"
    assert outside in host.outside_pids()

    host.run(["kill", str(pid)], check=True)


@pytest.mark.cluster
def test_reboot_changes_the_boot_id_and_ends_every_process(cluster):
    host = cluster["host02"]
    old_boot_id = host.boot_id
    cluster.ssh(host.name, "echo kept > ~/survives-reboot")
    sleeper = host.outside_pid(start_sleeper(cluster, host.name))
    old_init = host.init_pid
    identities = [(sleeper, start_ticks(sleeper)),
                  (old_init, start_ticks(old_init))]

    host.reboot()

    assert host.boot_id != old_boot_id
    result = cluster.ssh(host.name, "cat %s ~/survives-reboot" % BOOT_ID,
                         "-o", "StrictHostKeyChecking=yes")
    assert result.stdout.split() == [host.boot_id, "kept"], result.stderr
    for pid, ticks in identities:
        assert not alive(pid, ticks)
    assert host.init_pid != old_init


@pytest.mark.cluster
def test_stop_closes_the_port_and_start_boots_again(make_cluster):
    host = make_cluster(1).hosts[0]
    cluster = host.cluster
    old_boot_id = host.boot_id

    host.stop()
    assert refuses(host.port)
    assert cluster.ssh(host.name, "true").returncode == 255

    host.start()
    result = cluster.ssh(host.name, "cat " + BOOT_ID)
    assert result.stdout.strip() == host.boot_id != old_boot_id


@pytest.mark.cluster
def test_alias_hosts_reach_the_same_sshd(cluster):
    target = cluster["host02"]
    names = cluster.alias_hosts(3, target)

    assert names == ["many01", "many02", "many03"]
    for name in names:
        result = cluster.ssh(name, "cat " + BOOT_ID,
                             "-o", "StrictHostKeyChecking=yes")
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == target.boot_id
    assert cluster.port_of("many03") == target.port


@pytest.mark.cluster
def test_silent_host_times_out_waiting_for_the_banner(cluster):
    silent = cluster.add_silent_host()

    began = time.monotonic()
    result = cluster.ssh(silent.name, "true", "-o", "ConnectTimeout=2")
    elapsed = time.monotonic() - began

    assert result.returncode == 255
    assert "timed out" in result.stderr
    assert 1.5 < elapsed < 3.5


@pytest.mark.cluster
def test_closed_port_host_is_refused_at_once(cluster):
    closed = cluster.closed_port_host()

    began = time.monotonic()
    result = cluster.ssh(closed.name, "true", "-o", "ConnectTimeout=2")

    assert time.monotonic() - began < 1
    assert result.returncode == 255
    assert "Connection refused" in result.stderr


@pytest.mark.cluster
def test_sshd_accepts_lang_and_lc_variables_only(cluster):
    result = cluster.ssh(
        "host01", 'echo "$LANG|${LC_DROVER-unset}|${DROVER_X-unset}"',
        "-o", "SendEnv=LANG LC_DROVER DROVER_X",
        env={"LANG": "C.UTF-8", "LC_DROVER": "a b", "DROVER_X": "x"})

    assert result.stdout == "C.UTF-8|a b|unset\n", result.stderr


@pytest.mark.cluster
def test_close_leaves_no_process_of_the_cluster_running(tmp_path):
    cluster = FakeCluster(tmp_path, size=2).start()
    start_sleeper(cluster, "host01")
    # A live session adds sshd's per-connection processes.
    session = subprocess.Popen(
        ["ssh", "-F", str(cluster.ssh_config), "host02", "sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 5
    while "sleep\n" not in commands(cluster["host02"].outside_pids()):
        assert time.monotonic() < deadline, "no session on host02"
        time.sleep(0.05)
    identities = [(pid, start_ticks(pid)) for host in cluster.hosts
                  for pid in host.outside_pids()]
    ports = [host.port for host in cluster.hosts]
    ports.append(cluster.add_silent_host().port)
    directory = cluster.dir

    cluster.close()

    assert len(identities) >= 5
    assert [pid for pid, ticks in identities if alive(pid, ticks)] == []
    assert all(refuses(port) for port in ports)
    assert not directory.exists()
    assert session.wait(5) == 255


@pytest.mark.cluster
def test_ten_hosts_start_in_parallel_quickly(make_cluster):
    cluster = make_cluster(10)

    # The aim is under 2 s; the bound leaves room for a loaded machine.
    assert cluster.startup_seconds < 5
    assert cluster.names[-1] == "host10"
    result = cluster.ssh("host10", "cat " + BOOT_ID)
    assert result.stdout.strip() == cluster["host10"].boot_id


@pytest.mark.cluster
def test_toml_ssh_section_points_at_the_cluster_files(cluster):
    text = cluster.toml_ssh_section(connect_timeout=3, parallel=None,
                                    note='say "hi" \\ é')

    table = tomllib.loads(text)["ssh"]
    assert table == {
        "config": str(cluster.ssh_config),
        "known_hosts": str(cluster.known_hosts),
        "identity_file": str(cluster.identity_file),
        "user": "root",
        "connect_timeout": 3,
        "note": 'say "hi" \\ é',
    }


def test_control_home_replaces_home_and_xdg_directories(control_home):
    assert Path.home() == control_home
    assert os.environ["XDG_STATE_HOME"] == str(control_home / ".local/state")
    assert os.environ["XDG_CONFIG_HOME"] == str(control_home / ".config")
    assert "DROVER_CONFIG" not in os.environ
