"""The launcher against real sshd fake hosts: daemons that stay up."""

import json
import os
import shutil
import textwrap
import time

import pytest

from tests.helpers import (host_pids, launcher, proc_stat, wait_until,
                           write_config)

pytestmark = pytest.mark.cluster

# Argument and env values that break naive quoting, in ordinary test data.
HOSTILE = "a b 'q' \"d\" ;$HOME `x` é ✓"
HOSTILE_TOML = json.dumps(HOSTILE, ensure_ascii=False)

# A program that forks three children and waits for them (CASES C08).
FORKER = json.dumps(
    "import os, time\n"
    "for _ in range(3):\n"
    "    if os.fork() == 0:\n"
    "        time.sleep(600)\n"
    "        os._exit(0)\n"
    "os.wait(); os.wait(); os.wait()\n")


@pytest.fixture
def herd(cluster, control_home, tmp_path):
    """A config writer for the module's cluster; stops what it started."""
    paths = []

    def configure(body):
        path = write_config(tmp_path / "drover.toml", cluster,
                            textwrap.dedent(body))
        paths.append(path)
        return path

    yield configure

    for path in paths:
        launcher("-c", path, "stop")
    for host in cluster.hosts:
        host.run("rm -rf /root/.local/state/drover /root/work")


def _records(config_path):
    result = launcher("-c", config_path, "status", "--json")
    return result.json()["instances"]


def test_start_returns_at_once_with_only_its_own_descriptors(herd,
                                                             cluster):
    config = herd("""
        [hosts]
        one = ["host01"]

        [program.sleeper]
        command = ["sleep", "300"]
        count = 3
        workdir = "~"
        stdout = "work/sleeper-{instance}.out"
        stderr = "work/sleeper-{instance}.err"
        start_seconds = 0.5
        """)

    began = time.monotonic()
    result = launcher("-c", config, "start")
    elapsed = time.monotonic() - began

    assert result.status == 0, result.stdout + result.stderr
    assert elapsed < 5
    records = _records(config)
    assert [record["state"] for record in records] == ["running"] * 3
    host = cluster["host01"]
    for record in records:
        listing = host.run(
            f"for fd in /proc/{record['pid']}/fd/*; do "
            "echo ${fd##*/} $(readlink $fd); done").stdout.split("\n")
        descriptors = dict(line.split(" ", 1) for line in listing if line)
        number = record["instance"]
        assert descriptors == {
            "0": "/dev/null",
            "1": f"/root/work/sleeper-{number}.out",
            "2": f"/root/work/sleeper-{number}.err",
        }


def test_daemon_outlives_the_session_as_a_session_leader(herd, cluster):
    config = herd("""
        [hosts]
        one = ["host02"]

        [program.sleeper]
        command = ["sleep", "300"]
        count = 2
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    pids = [record["pid"] for record in _records(config)]

    # Every connection of the launcher is closed by now; give a lingering
    # SIGHUP time to arrive.
    time.sleep(10)

    host = cluster["host02"]
    for pid in pids:
        stat = proc_stat(host, pid)
        assert stat is not None, f"pid {pid} is gone"
        assert stat[3] in "SR"
        assert int(stat[6]) == pid          # session leader
        assert int(stat[7]) == 0            # no controlling tty
        # Re-parented to the host's init, not a process of the session.
        assert int(stat[4]) == 1


def test_remote_exec_reads_both_big_streams_at_once(cluster):
    from drover import transport
    from drover.errors import CommandTimeout
    from drover.config import load_text

    config = load_text(cluster.toml_ssh_section(), "drover.toml")
    command = ("head -c 3000000 /dev/zero | tr '\\0' o & "
               "head -c 3000000 /dev/zero | tr '\\0' e >&2; wait")

    def work(session):
        return session.run(command, timeout=20)

    began = time.monotonic()
    results = transport.fan_out(["host01"], work, config.ssh)
    result = results["host01"]
    assert result.ok, result.error
    assert (len(result.value.stdout), len(result.value.stderr)) == \
        (3_000_000, 3_000_000)
    assert result.value.status == 0
    assert time.monotonic() - began < 10

    def too_slow(session):
        with pytest.raises(CommandTimeout):
            session.run("sleep 30", timeout=1)
        return "raised"

    began = time.monotonic()
    results = transport.fan_out(["host01"], too_slow, config.ssh)
    assert results["host01"].value == "raised"
    assert time.monotonic() - began < 5


def test_environment_and_path_reach_the_daemon(herd, cluster):
    directory = "/opt/fx/bin"
    os.makedirs(directory, exist_ok=True)
    worker = os.path.join(directory, "fxworker")
    with open(worker, "w") as script:
        script.write("#!/bin/sh\nexec sleep 300\n")
    os.chmod(worker, 0o755)
    try:
        config = herd(f"""
            [hosts]
            one = ["host01"]

            [program.fx]
            command = "fxworker"
            count = 1
            start_seconds = 0.3

            [program.fx.env]
            FOO = "bar baz"
            PATH = "/opt/fx/bin:/usr/bin:/bin"
            ODD = {HOSTILE_TOML}
            """)
        result = launcher("-c", config, "start")
        assert result.status == 0, result.stdout
        pid = _records(config)[0]["pid"]
        environ = cluster["host01"].run(
            ["cat", f"/proc/{pid}/environ"]).stdout.split("\0")
        assert "FOO=bar baz" in environ
        assert f"ODD={HOSTILE}" in environ
    finally:
        shutil.rmtree("/opt/fx")


def test_a_daemon_that_dies_at_once_is_a_failure(herd, cluster):
    config = herd("""
        [hosts]
        one = ["host03"]

        [program.missing]
        command = ["no-such-binary", "--serve"]
        count = 1
        start_seconds = 2

        [program.boom]
        command = "echo boom >&2; exit 3"
        count = 1
        start_seconds = 2
        """)
    result = launcher("-c", config, "start")

    assert result.status == 1
    lines = result.stdout.splitlines()
    missing = [line for line in lines if "missing.0" in line][0]
    assert "not found" in missing
    boom = [line for line in lines if "boom.0" in line][0]
    assert "status 3" in boom
    assert "    | boom" in result.stdout
    states = {record["program"]: record["state"]
              for record in _records(config)}
    assert states == {"missing": "failed", "boom": "failed"}


def test_a_zombie_is_reported_dead(herd, cluster):
    config = herd("""
        [hosts]
        one = ["host02"]

        [program.short]
        command = ["sleep", "300"]
        count = 1
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    host = cluster["host02"]
    real = _records(config)[0]["pid"]

    # A parent that never reaps: its child exits and stays a zombie.
    host.run("setsid python3 -c 'import os,time\nif os.fork()==0: "
             "os._exit(0)\ntime.sleep(60)' >/dev/null 2>&1 &")
    zombie = wait_until(lambda: host.run(
        "awk '$3==\"Z\" {print $1}' /proc/[0-9]*/stat").stdout.split())
    assert zombie
    zombie = int(zombie[0])
    _point_record_at(host, "short", 0, zombie)
    try:
        records = _records(config)
        assert records[0]["state"] in ("dead", "zombie")
        assert launcher("-c", config, "status").status == 1
    finally:
        host.run(["kill", str(real)])
        for pid in host_pids(host, "time.sleep.60"):
            host.run(["kill", str(pid)])


def _point_record_at(host, program, number, pid):
    """Make a record name another pid, keeping its start time: pid reuse."""
    path = f"/root/.local/state/drover/instances/{host.name}/" \
           f"{program}.{number}.json"
    script = (
        "import json,sys\n"
        f"p={path!r}\n"
        "r=json.load(open(p))\n"
        f"r['pid']=r['pgid']={pid}\n"
        "json.dump(r,open(p,'w'))\n")
    result = host.run(["python3", "-c", script])
    assert result.returncode == 0, result.stderr


def test_stop_never_signals_a_reused_pid(herd, cluster):
    config = herd("""
        [hosts]
        one = ["host01"]

        [program.victim]
        command = ["sleep", "301"]
        count = 1
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    host = cluster["host01"]
    original = _records(config)[0]["pid"]
    host.run(["kill", "-KILL", str(original)])

    # An unrelated process in a session of its own, standing in for a
    # process that got the recorded pid.
    host.run("setsid sleep 1000 >/dev/null 2>&1 &")
    stranger = wait_until(lambda: host_pids(host, "sleep 1000"))[0]
    _point_record_at(host, "victim", 0, stranger)
    try:
        record = _records(config)[0]
        assert record["state"] == "dead"
        assert record["reason"] == "pid reused"

        assert launcher("-c", config, "stop").status == 0
        assert host_pids(host, "sleep 1000") == [stranger]
        assert proc_stat(host, stranger)[3] in "SR"
    finally:
        host.run(["kill", str(stranger)])


def test_stop_takes_the_whole_process_tree(herd, cluster):
    host = cluster["host03"]
    host.run("mkdir -p /root/tree/data && printf '#!/bin/sh\\nwhile :; do "
             "echo tick; sleep 1; done\\n' > /root/tree/data/serve && "
             "chmod +x /root/tree/data/serve")
    config = herd(f"""
        [hosts]
        one = ["host03"]

        [program.pipeline]
        command = "cd data && ./serve | tee -a serve.log"
        workdir = "/root/tree"
        count = 1
        start_seconds = 0.5
        stop_timeout = 3

        [program.forker]
        command = ["python3", "-c", {FORKER}]
        count = 1
        start_seconds = 0.5
        stop_timeout = 3

        [program.stubborn]
        command = "sh -c 'trap \\"\\" TERM; while :; do sleep 1; done' & wait"
        count = 1
        start_seconds = 0.5
        stop_timeout = 3
        """)
    assert launcher("-c", config, "start").status == 0
    groups = [record["pid"] for record in _records(config)]
    members = host.run("awk '{print $5}' /proc/[0-9]*/stat").stdout.split()
    assert sum(members.count(str(group)) for group in groups) >= 7

    began = time.monotonic()
    result = launcher("-c", config, "stop")
    elapsed = time.monotonic() - began

    assert result.status == 0, result.stdout
    assert "stubborn.0: killed" in result.stdout
    assert 3 <= elapsed < 12
    members = host.run("awk '$3 != \"Z\" {print $5}' "
                       "/proc/[0-9]*/stat").stdout.split()
    assert not [group for group in groups if str(group) in members]
    host.run("rm -rf /root/tree")


def test_many_host_entries_behind_one_sshd_all_start(make_cluster,
                                                     control_home,
                                                     tmp_path):
    cluster = make_cluster(1)
    names = cluster.alias_hosts(40, cluster.names[0])
    config = write_config(tmp_path / "drover.toml", cluster, f"""
[hosts]
many = {names!r}

[program.one]
command = ["sleep", "300"]
count = 1
start_seconds = 0.2
""".replace("'", '"'))

    started = launcher("-c", config, "start")
    status = launcher("-c", config, "status", "--json")
    stopped = launcher("-c", config, "stop")

    assert started.status == 0, started.stdout
    assert "started: 40" in started.stdout
    states = [item["state"] for item in status.json()["instances"]]
    assert states == ["running"] * 40
    outcomes = {host["outcome"] for host in status.json()["hosts"].values()}
    assert outcomes == {"ok"}
    assert stopped.status == 0


def test_a_herd_of_three_hosts_starts_once_and_stops_clean(herd, cluster):
    config = herd(f"""
        [hosts]
        all = ["host[01-03]"]

        [program.crawler]
        command = ["python3", "-c", "import time; time.sleep(400)",
                   {HOSTILE_TOML}]
        count = 4
        workdir = "~/work/crawl é"
        stdout = "logs/{{program}} {{instance}}.out"
        stderr = "logs/{{program}} {{instance}}.err"
        start_seconds = 0.5

        [program.parser]
        command = "exec sleep 401 # {{host}} ; $x"
        count = 4
        start_seconds = 0.5
        """)
    for host in cluster.hosts:
        host.run(["mkdir", "-p", "/root/work/crawl é"])

    first = launcher("-c", config, "start")
    assert first.status == 0, first.stdout
    records = launcher("-c", config, "status", "--json").json()["instances"]
    assert len(records) == 24
    assert {record["state"] for record in records} == {"running"}

    host = cluster["host02"]
    crawler = next(record for record in records
                   if record["host"] == "host02"
                   and record["program"] == "crawler")
    argv = host.run(["cat", f"/proc/{crawler['pid']}/cmdline"]).stdout
    assert argv.split("\0")[2:4] == ["import time; time.sleep(400)",
                                      HOSTILE]

    second = launcher("-c", config, "start")
    assert second.status == 0
    assert "started" not in second.stdout
    assert "running: 24" in second.stdout

    victim = next(record for record in records
                  if record["host"] == "host02")
    host.run(["kill", str(victim["pid"])])
    after = launcher("-c", config, "status", "--json")
    states = {(item["host"], item["program"], item["instance"]):
              item["state"] for item in after.json()["instances"]}
    assert states[(victim["host"], victim["program"],
                   victim["instance"])] == "dead"
    assert list(states.values()).count("running") == 23
    assert after.status == 1

    assert launcher("-c", config, "stop").status == 0
    for each in cluster.hosts:
        assert host_pids(each, "sleep(400)|sleep 401") == []
