"""The watchdog against real sshd fake hosts, real daemons, real reboots.

Every test stops what it started through the launcher and then checks on
the host, pid by pid, that nothing of it is left.
"""

import json
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from drover import paths
from drover.cron.lock import RunLock
from tests.helpers import (host_pids, launcher, proc_stat, run_cli,
                           wait_until, write_config)

pytestmark = pytest.mark.cluster

STATE_DIR = "/root/.local/state/drover"

RUN_WATCHDOG = ("import sys\n"
                "from drover.watchdog.cli import main\n"
                "sys.exit(main(sys.argv[1:]))\n")


def watchdog(*argv):
    from drover.watchdog.cli import main
    return run_cli(main, *argv)


def check_json(config, *options):
    """``watchdog check --json``: (exit status, result as plain data)."""
    run = watchdog("-c", config, "check", "--json", *options)
    assert run.stdout, run.stderr
    return run.status, run.json()


def by_name(result):
    return {(item["host"], item["name"]): item
            for item in result["instances"]}


def records(config):
    """What `launcher status --json` says of every instance."""
    return launcher("-c", config, "status", "--json").json()["instances"]


def record_of(config, host, program, number):
    return next(item for item in records(config)
                if (item["host"], item["program"], item["instance"])
                == (host, program, number))


def gone(host, pid):
    """True once ``pid`` runs no more on ``host`` (a zombie is gone)."""
    stat = proc_stat(host, pid)
    return stat is None or stat[3] == "Z"


@pytest.fixture
def herd(control_home, tmp_path):
    """``herd(cluster, body, **ssh)`` writes a drover.toml; at the end each
    config's instances are stopped and verified gone by pid."""
    made = []

    def configure(cluster, body, **ssh):
        path = tmp_path / f"drover-{len(made)}.toml"
        write_config(path, cluster, textwrap.dedent(body), **ssh)
        made.append((cluster, path))
        return path

    yield configure

    for cluster, path in made:
        _stop_and_verify(cluster, path)


def _stop_and_verify(cluster, path):
    running = []
    status = launcher("-c", path, "status", "--json")
    if status.stdout:
        running = [(item["host"], item["pid"])
                   for item in status.json()["instances"]
                   if item["state"] == "running"]
    launcher("-c", path, "stop")

    hosts = [host for host in cluster.hosts if host.is_up]
    for name, pid in running:
        host = cluster[name]
        assert wait_until(lambda: gone(host, pid), timeout=15), \
            f"pid {pid} still runs on {name}"
    for host in hosts:
        host.run(f"rm -rf {STATE_DIR} /root/logs /root/lifetime")


# -- the "done when" ------------------------------------------------

def test_kill_two_and_reboot_one_then_respawn_brings_all_24_back(
        herd, cluster):
    config = herd(cluster, """
        [hosts]
        all = ["host[01-03]"]

        [program.alpha]
        command = ["sleep", "1001"]
        count = 4
        start_seconds = 0.5

        [program.beta]
        command = "while :; do sleep 5; done"
        count = 4
        start_seconds = 0.5
        """)
    assert launcher("-c", config, "start").status == 0
    quiet = watchdog("-c", config, "check")
    assert (quiet.status, quiet.stdout) == (0, ""), quiet.stderr

    killed = [("host01", "alpha", 1), ("host02", "beta", 2)]
    for host, program, number in killed:
        pid = record_of(config, host, program, number)["pid"]
        cluster[host].run(["kill", "-KILL", str(pid)])
    cluster["host03"].reboot()

    first = watchdog("-c", config, "check")
    assert first.status == 2, first.stdout + first.stderr
    lines = first.stdout.splitlines()
    assert lines[0].startswith("DROVER CRITICAL - 2 dead, 8 lost, "
                               "1 host rebooted (14/24 running) | ")
    dead = [line for line in lines if line.startswith("  dead: ")]
    assert [line.split(" (")[0] for line in dead] == [
        "  dead: host01 alpha.1", "  dead: host02 beta.2"]
    assert "  lost: host03: alpha.[0-3],beta.[0-3]" in lines
    assert any(line.startswith("  host03: rebooted (boot id ")
               for line in lines)

    # Said once: the next check still finds them down, but no reboot.
    status, again = check_json(config)
    assert status == 2
    assert [host["state"] for host in again["hosts"]] == ["ok"] * 3
    down = sorted(name for name, item in by_name(again).items()
                  if item["state"] != "running")
    assert down == [("host01", "alpha.1"), ("host02", "beta.2")] + [
        ("host03", f"{program}.{number}")
        for program in ("alpha", "beta") for number in range(4)]

    status, respawned = check_json(config, "--respawn")
    assert status == 1
    assert respawned["summary"].startswith(
        "DROVER WARNING - 10 respawned (24/24 running)")
    assert sum(item["respawned"] for item in respawned["instances"]) == 10
    assert {item["state"] for item in respawned["instances"]} == \
        {"running"}

    last = watchdog("-c", config, "check")
    assert (last.status, last.stdout, last.stderr) == (0, "", "")


# -- cases --------------------------------------------------------------

def test_a_zombie_with_a_matching_identity_is_dead(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host02"]

        [program.short]
        command = ["sleep", "302"]
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    host = cluster["host02"]
    real = record_of(config, "host02", "short", 0)["pid"]

    # A parent that never reaps: its child exits and stays a zombie. The
    # record is pointed at it with its own start time: the identity
    # matches and only the Z state tells it is dead (CASES C06).
    host.run("setsid python3 -c 'import os,time\nif os.fork()==0: "
             "os._exit(0)\ntime.sleep(60)' >/dev/null 2>&1 &")
    zombie = wait_until(lambda: host.run(
        "awk '$3==\"Z\" {print $1}' /proc/[0-9]*/stat").stdout.split())
    zombie = int(zombie[0])
    ticks = int(proc_stat(host, zombie)[22])
    _rewrite_record(host, "short", 0, pid=zombie, start_ticks=ticks)
    try:
        status, result = check_json(config)
        item = by_name(result)[("host02", "short.0")]
        assert (status, item["state"], item["reason"]) == \
            (2, "dead", "zombie")
    finally:
        host.run(["kill", str(real)])
        for pid in host_pids(host, "time.sleep.60"):
            host.run(["kill", str(pid)])


def test_a_reused_pid_is_dead_respawned_and_never_signalled(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host01"]

        [program.victim]
        command = ["sleep", "303"]
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    host = cluster["host01"]
    original = record_of(config, "host01", "victim", 0)["pid"]
    host.run(["kill", "-KILL", str(original)])

    # A stranger that notes every signal it gets, standing in for the
    # process that was given the recorded pid (CASES C07).
    host.run("setsid python3 -c 'import signal,time\n"
             "def note(number, frame):\n"
             "    open(\"/root/signals\", \"a\").write(str(number))\n"
             "for number in (1, 2, 3, 10, 12, 13, 14, 15):\n"
             "    signal.signal(number, note)\n"
             "time.sleep(1000)' >/dev/null 2>&1 &")
    stranger = int(wait_until(lambda: host.run(
        ["pgrep", "-f", "time.sleep.1000"]).stdout.split())[0])
    _rewrite_record(host, "victim", 0, pid=stranger)
    try:
        status, result = check_json(config, "--respawn")
        item = by_name(result)[("host01", "victim.0")]
        assert status == 1
        assert (item["state"], item["respawned"]) == ("running", True)
        assert item["pid"] not in (original, stranger)
        died = [change for change in result["changes"]
                if change["kind"] == "died"]
        assert died[0]["detail"] == "dead: pid reused"

        assert launcher("-c", config, "stop").status == 0
        assert proc_stat(host, stranger)[3] in "SR"
        assert host.run("cat /root/signals").returncode != 0
    finally:
        host.run(["kill", "-KILL", str(stranger)])
        host.run("rm -f /root/signals")


def test_bad_hosts_do_not_stall_the_good_one(herd, make_cluster):
    cluster = make_cluster(1)
    silent = [cluster.add_silent_host().name for _ in range(3)]
    closed = cluster.closed_port_host().name
    names = ["host01"] + silent + [closed]
    config = herd(cluster, f"""
        [hosts]
        all = {json.dumps(names)}

        [program.worker]
        command = ["sleep", "304"]
        count = 2
        start_seconds = 0.2
        """, connect_timeout=3)
    assert launcher("-c", config, "start", "-H", "host01").status == 0

    began = time.monotonic()
    status, result = check_json(config, "--respawn")
    elapsed = time.monotonic() - began

    assert elapsed < 6
    assert status == 3
    outcomes = {host["name"]: host["outcome"] for host in result["hosts"]}
    assert outcomes == {"host01": "ok", "silent01": "connect timeout",
                        "silent02": "connect timeout",
                        "silent03": "connect timeout",
                        "closed01": "refused"}
    states = {(item["host"], item["state"], item["respawned"])
              for item in result["instances"]}
    assert states == {("host01", "running", False)} | {
        (name, "unknown", False) for name in silent + [closed]}
    assert result["summary"].startswith(
        "DROVER UNKNOWN - 4 hosts unreachable (2/10 running)")


def test_hosts_still_pending_at_the_run_deadline_are_unknown(
        herd, make_cluster):
    cluster = make_cluster(1)
    slow = cluster.add_silent_host().name
    config = herd(cluster, f"""
        [hosts]
        all = ["host01", "{slow}"]

        [program.worker]
        command = ["sleep", "308"]
        start_seconds = 0.2

        [watchdog]
        deadline = 2
        """, connect_timeout=60)
    assert launcher("-c", config, "start", "-H", "host01").status == 0

    began = time.monotonic()
    status, result = check_json(config, "--respawn")
    assert time.monotonic() - began < 4
    assert status == 3
    late = result["hosts"][1]
    assert (late["state"], late["outcome"]) == ("unreachable", "timed out")
    assert "deadline" in late["error"]
    assert [item["state"] for item in result["instances"]] == \
        ["running", "unknown"]


def test_a_stopped_host_is_unreachable_and_nothing_is_respawned(
        herd, make_cluster):
    cluster = make_cluster(2)
    config = herd(cluster, """
        [hosts]
        all = ["host01", "host02"]

        [program.worker]
        command = ["sleep", "305"]
        count = 2
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    assert watchdog("-c", config, "check").status == 0
    host = cluster["host02"]
    host.stop()

    status, result = check_json(config, "--respawn")
    assert status == 3
    unreachable = result["hosts"][1]
    assert (unreachable["state"], unreachable["outcome"]) == \
        ("unreachable", "refused")
    assert [item["state"] for item in result["instances"]] == \
        ["running", "running", "unknown", "unknown"]
    assert not any(item["respawned"] for item in result["instances"])
    assert [change["kind"] for change in result["changes"]] == \
        ["unreachable"]

    # Back with a new boot id: the history still knows the old one.
    host.start()
    status, result = check_json(config)
    kinds = [(change["kind"], change["host"])
             for change in result["changes"]]
    assert ("reachable", "host02") in kinds
    assert ("rebooted", "host02") in kinds
    assert [item["state"] for item in result["instances"][2:]] == \
        ["lost", "lost"]


def test_one_watchdog_at_a_time_per_configuration_and_no_stale_lock(
        herd, make_cluster):
    cluster = make_cluster(1)
    silent = cluster.add_silent_host()
    slow = herd(cluster, f"""
        [hosts]
        slow = ["{silent.name}"]

        [program.worker]
        command = ["sleep", "306"]
        """, connect_timeout=60)
    fast = herd(cluster, """
        [hosts]
        one = ["host01"]

        [program.worker]
        command = ["sleep", "306"]
        start_seconds = 0.2
        """)
    assert launcher("-c", fast, "start").status == 0
    lock_file = paths.config_state_dir(slow) / "watchdog.lock"

    holder = subprocess.Popen(
        [sys.executable, "-c", RUN_WATCHDOG, "-c", str(slow), "check"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert wait_until(lambda: _lock_holder(lock_file) == holder.pid)
        assert wait_until(lambda: len(silent._connections) == 1)

        began = time.monotonic()
        busy = watchdog("-c", slow, "check")
        elapsed = time.monotonic() - began
        assert busy.status == 4
        assert elapsed < 1
        assert f"(pid {holder.pid}, " in busy.stderr
        assert " check, running " in busy.stderr
        assert busy.stdout == ""
        assert len(silent._connections) == 1   # no host touched

        # Another configuration's run does not wait for this one.
        other = watchdog("-c", fast, "check")
        assert (other.status, other.stdout) == (0, ""), other.stderr

        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
    finally:
        holder.kill()
        holder.wait()

    assert lock_file.exists()
    with RunLock(config_path=slow) as lock:
        assert lock.held


def _lock_holder(path):
    try:
        with open(path) as lock:
            return int(lock.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def test_a_crash_loop_is_given_up_after_max_restarts(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host03"]

        [program.crash]
        command = "sleep 1; exit 1"
        start_seconds = 10

        [watchdog]
        max_restarts = 3
        restart_window = "1h"
        """)
    assert launcher("-c", config, "start").status != 0

    runs = [check_json(config, "--respawn") for _ in range(5)]
    items = [by_name(result)[("host03", "crash.0")] for _, result in runs]
    assert [item["respawned"] for item in items] == \
        [True, True, True, False, False]
    assert [item["state"] for item in items] == \
        ["failed"] * 3 + ["quarantined"] * 2
    assert [status for status, _ in runs] == [2] * 5
    notices = [change for _, result in runs for change in result["changes"]
               if change["kind"] == "quarantined"]
    assert len(notices) == 1
    assert notices[0]["detail"].startswith("giving up")
    # Not started again after giving up: the record stays the same.
    assert items[3]["started_at"] == items[4]["started_at"]

    # `launcher start` is a person acting: the quarantine ends.
    launcher("-c", config, "start")
    status, result = check_json(config)
    item = by_name(result)[("host03", "crash.0")]
    assert item["state"] == "failed"
    assert [(change["kind"], change["detail"])
            for change in result["changes"]] == \
        [("released", "started by hand")]


def test_watchdog_release_ends_a_quarantine(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host02"]

        [program.crash]
        command = "exit 1"
        start_seconds = 0.5

        [watchdog]
        max_restarts = 1
        """)
    launcher("-c", config, "start")
    check_json(config, "--respawn")
    status, result = check_json(config, "--respawn")
    assert by_name(result)[("host02", "crash.0")]["state"] == "quarantined"

    released = watchdog("-c", config, "release", "crash", "-H", "host02",
                        "-i", "0")
    assert released.status == 0
    assert "released: crash.0 on host02" in released.stdout

    status, result = check_json(config, "--respawn")
    item = by_name(result)[("host02", "crash.0")]
    assert (item["respawned"], item["restarts"]) == (True, 1)


def test_an_instance_that_stayed_up_starts_its_count_again(herd,
                                                           cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host01"]

        [program.flaky]
        command = 'sleep "$(cat /root/lifetime)"; exit 1'
        start_seconds = 1

        [watchdog]
        max_restarts = 2
        """)
    host = cluster["host01"]
    host.run("echo 0.1 > /root/lifetime")
    launcher("-c", config, "start")
    _, first = check_json(config, "--respawn")          # fails: 1 respawn

    host.run("echo 4 > /root/lifetime")
    _, second = check_json(config, "--respawn")         # 2 respawns
    item = by_name(second)[("host01", "flaky.0")]
    assert (item["state"], item["restarts"]) == ("running", 2)

    # A later check sees it up longer than start_seconds: it held.
    time.sleep(1.5)
    _, seen = check_json(config)
    assert by_name(seen)[("host01", "flaky.0")]["state"] == "running"
    assert wait_until(lambda: record_of(config, "host01", "flaky", 0)
                      ["state"] == "dead", timeout=10)

    # Two respawns within the window would be the limit; but this one
    # had stayed up start_seconds, so its death is not a failed start.
    _, third = check_json(config, "--respawn")
    item = by_name(third)[("host01", "flaky.0")]
    assert (item["respawned"], item["restarts"]) == (True, 1)


def test_respawn_appends_to_the_logs(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host02"]

        [program.echo]
        command = 'echo boot-$$; echo err-line >&2; exit 1'
        workdir = "/root"
        stdout = "logs/echo.out"
        stderr = "logs/echo.err"
        start_seconds = 1
        """)
    launcher("-c", config, "start")
    pids = [record_of(config, "host02", "echo", 0)["pid"]]
    for _ in range(2):
        _, result = check_json(config, "--respawn")
        item = by_name(result)[("host02", "echo.0")]
        assert item["respawned"]
        pids.append(item["pid"])

    host = cluster["host02"]
    out = host.run("cat /root/logs/echo.out").stdout.splitlines()
    err = host.run("cat /root/logs/echo.err").stdout.splitlines()
    assert out == [f"boot-{pid}" for pid in pids]
    assert err == ["err-line"] * 3


def test_history_tells_what_changed_between_runs(herd, cluster):
    config = herd(cluster, """
        [hosts]
        one = ["host01"]

        [program.steady]
        command = ["sleep", "307"]
        count = 2
        start_seconds = 0.2
        """)
    assert launcher("-c", config, "start").status == 0
    assert check_json(config)[1]["changes"] == []

    pid = record_of(config, "host01", "steady", 1)["pid"]
    cluster["host01"].run(["kill", str(pid)])
    status, died = check_json(config)
    status_again, still = check_json(config)
    launcher("-c", config, "start")
    status_back, back = check_json(config)

    assert (status, status_again, status_back) == (2, 2, 0)
    assert [(c["kind"], c["instance"]) for c in died["changes"]] == \
        [("died", "steady.1")]
    assert still["changes"] == []
    assert [(c["kind"], c["instance"]) for c in back["changes"]] == \
        [("recovered", "steady.1")]

    from drover.watchdog.history import History
    with History.open(config_path=config) as history:
        summaries = [row.summary for row in history.checks()]
    assert summaries[0] == "DROVER OK - 2 running on 1 host"
    assert summaries[1].startswith("DROVER CRITICAL - 1 dead")


def _rewrite_record(host, program, number, **fields):
    """Change fields of an instance's record on the host, as pid reuse
    or a zombie would make it read."""
    path = f"{STATE_DIR}/instances/{host.name}/{program}.{number}.json"
    script = ("import json,sys\n"
              f"path = {path!r}\n"
              "record = json.load(open(path))\n"
              f"record.update({fields!r})\n"
              "record['pgid'] = record['pid']\n"
              "json.dump(record, open(path, 'w'))\n")
    result = host.run(["python3", "-c", script])
    assert result.returncode == 0, result.stderr

