"""The agent, run as the control host runs it, on real processes.

Every call is a real subprocess fed the bootstrap, the compressed source
and a JSON request (drover.payload), exactly as ssh or the localhost
session feeds it. Daemons are real; /proc is the real one.
"""

import ctypes
import hashlib
import importlib.util
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid

import pytest

from drover import payload
from drover.errors import AgentError

HOST = "test-host"
PYTHON36 = "/root/.pyenv/versions/3.6.15/bin/python3.6"
PR_SET_CHILD_SUBREAPER = 36         # prctl(2)

# Characters that break naive quoting, in argv, paths and environment.
AWKWARD = "w\u00f6rk d\u00efr $HOME;'\"`x` \u65e5"


@pytest.fixture(scope="module", autouse=True)
def reaper():
    """Adopt the daemons that outlive their agent, so they can be reaped.

    A container's init often reaps no orphans; every killed daemon would
    stay a zombie. As a child subreaper (prctl(2)) this process adopts them
    instead, and the cleanup below reaps them.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(1)) != 0:
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) is not available")
    yield
    libc.prctl(PR_SET_CHILD_SUBREAPER, ctypes.c_ulong(0))


class Agent:
    """Calls the agent for one host name and remembers what it started."""

    def __init__(self, root):
        self.root = root
        self.state_dir = root / "state"
        self.sessions = set()
        self.others = []
        self.watched = []

    def call(self, action, python=sys.executable, env=None, **fields):
        """The decoded answer; AgentError when the agent refuses."""
        pass_fds = fields.pop("_pass_fds", ())
        request = {"action": action, "host": HOST,
                   "state_dir": str(self.state_dir)}
        request.update(fields)
        process = subprocess.Popen(
            payload.bootstrap_argv(python), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
            pass_fds=pass_fds)
        stdout, stderr = process.communicate(payload.request_bytes(request),
                                             timeout=60)
        self.last_agent_pid = process.pid

        for item in json.loads(stdout or b"{}").get("instances", []):
            if item.get("result") in ("started", "running"):
                self.sessions.add(item["pid"])
        assert stdout.isascii(), stdout
        assert process.returncode == 0, stderr
        return payload.decode_answer(stdout, stderr, process.returncode)

    def start(self, *specs, settle=0.3, **fields):
        answer = self.call("start", instances=list(specs), settle=settle,
                           **fields)
        return {item["program"] + "." + str(item["instance"]): item
                for item in answer["instances"]}

    def status(self, **fields):
        answer = self.call("status", **fields)
        return {item["program"] + "." + str(item["instance"]): item
                for item in answer["instances"]}

    def record_path(self, program, instance):
        return (self.state_dir / "instances" / HOST
                / f"{program}.{instance}.json")

    def record(self, program, instance):
        return json.loads(self.record_path(program, instance).read_text())

    def rewrite_record(self, program, instance, **changes):
        record = self.record(program, instance)
        record.update(changes)
        self.record_path(program, instance).write_text(json.dumps(record))

    def spawn(self, argv):
        """An unrelated process, in a session of its own like a daemon."""
        process = subprocess.Popen(argv, start_new_session=True)
        self.others.append(process)
        return process

    def unique_sleeper(self):
        """A sleep whose argv no other process has, cleaned up even if a
        broken agent started it without answering its pid."""
        argv = ["sleep", f"300.{uuid.uuid4().int % 10**12:012d}"]
        self.watched.append(argv)
        return argv

    def running(self, argv):
        """Live pids whose argv is exactly argv."""
        wanted = "".join(arg + "\0" for arg in argv).encode()
        found = []
        for name in os.listdir("/proc"):
            try:
                with open(f"/proc/{name}/cmdline", "rb") as file:
                    if file.read() == wanted and alive(int(name)):
                        found.append(int(name))
            except (FileNotFoundError, ProcessLookupError,
                    NotADirectoryError):
                pass
        return found

    def leftovers(self):
        """{pid: state} of every process in a session this test started."""
        for argv in self.watched:
            self.sessions.update(self.running(argv))
        found = {}
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = proc_stat(int(name))
                if stat and (stat["session"] in self.sessions
                             or int(name) in self.sessions):
                    found[int(name)] = stat["state"]
        return found

    def clean_up(self):
        """Kill, by pid, whatever the test started; reap; check it is gone."""
        for process in self.others:
            process.kill()
            process.wait()

        deadline = time.monotonic() + 10
        while True:
            left = self.leftovers()
            if not left:
                return
            for pid, state in left.items():
                if state != "Z":
                    os.kill(pid, signal.SIGKILL)
                reap(pid)
            assert time.monotonic() < deadline, f"left behind: {left}"
            time.sleep(0.05)


@pytest.fixture
def agent(tmp_path):
    helper = Agent(tmp_path)
    yield helper
    helper.clean_up()
    assert not helper.leftovers()


def proc_stat(pid):
    """state, ppid, pgrp, session, tty_nr, starttime of a pid, or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            raw = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(b")") + 2:].split()
    return {"state": fields[0].decode(), "ppid": int(fields[1]),
            "pgrp": int(fields[2]), "session": int(fields[3]),
            "tty_nr": int(fields[4]), "start_ticks": int(fields[19])}


def reap(pid):
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def alive(pid):
    stat = proc_stat(pid)
    return stat is not None and stat["state"] not in "ZX"


def group_members(pgid):
    return [int(name) for name in os.listdir("/proc") if name.isdigit()
            and (proc_stat(int(name)) or {}).get("pgrp") == pgid
            and alive(int(name))]


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def spec(program, argv, instance=0, **fields):
    item = {"program": program, "instance": instance, "argv": argv}
    item.update(fields)
    return item


SLEEPER = ["sleep", "300"]


# --- start ---------------------------------------------------------------

def test_start_returns_at_once_with_descriptors_detached(agent, tmp_path):
    # A pipe handed to the agent stands in for the ssh channel: if any
    # daemon kept it, the reading end would never see EOF.
    channel_read, channel_write = os.pipe()
    began = time.monotonic()
    started = agent.start(
        *[spec("sleeper", SLEEPER, n, stdout=f"out-{n}", stderr=f"err-{n}",
               workdir=str(tmp_path)) for n in range(3)],
        _pass_fds=(channel_write,))
    elapsed = time.monotonic() - began
    os.close(channel_write)

    assert elapsed < 5
    assert [item["result"] for item in started.values()] == ["started"] * 3
    assert select.select([channel_read], [], [], 2)[0]
    assert os.read(channel_read, 1) == b""
    os.close(channel_read)
    for n in range(3):
        pid = started[f"sleeper.{n}"]["pid"]
        fds = sorted(int(fd) for fd in os.listdir(f"/proc/{pid}/fd"))
        assert fds == [0, 1, 2]
        assert os.readlink(f"/proc/{pid}/fd/0") == "/dev/null"
        assert os.readlink(f"/proc/{pid}/fd/1") == str(tmp_path / f"out-{n}")
        assert os.readlink(f"/proc/{pid}/fd/2") == str(tmp_path / f"err-{n}")
        assert agent.record("sleeper", n)["pid"] == pid


def test_daemon_leads_its_own_session_without_a_terminal(agent):
    pid = agent.start(spec("sleeper", SLEEPER))["sleeper.0"]["pid"]

    stat = proc_stat(pid)
    assert stat["session"] == pid and stat["pgrp"] == pid
    assert stat["tty_nr"] == 0
    assert stat["ppid"] != agent.last_agent_pid
    assert not alive(agent.last_agent_pid)


def test_daemon_gets_default_signals_and_an_empty_mask(agent):
    def hostile_parent():
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])

    # The agent itself ignores SIGPIPE (Python does); its parent, here,
    # ignores SIGHUP and blocks SIGUSR1, as a careless shell might.
    request = {"action": "start", "host": HOST,
               "state_dir": str(agent.state_dir), "settle": 0.2,
               "instances": [spec("sleeper", SLEEPER)]}
    process = subprocess.run(payload.bootstrap_argv(sys.executable),
                             input=payload.request_bytes(request),
                             capture_output=True, timeout=30,
                             preexec_fn=hostile_parent)
    answer = payload.decode_answer(process.stdout, process.stderr,
                                   process.returncode)
    pid = answer["instances"][0]["pid"]
    agent.sessions.add(pid)

    with open(f"/proc/{pid}/status") as file:
        fields = dict(line.split(":\t") for line in file.read().splitlines()
                      if ":\t" in line)
    assert int(fields["SigIgn"], 16) == 0
    assert int(fields["SigBlk"], 16) == 0


def test_workdir_tilde_umask_and_default_log_paths(agent, tmp_path):
    home = tmp_path / "home"
    (home / "w ork").mkdir(parents=True)
    env = dict(os.environ, HOME=str(home))
    argv = ["/bin/sh", "-c", "touch made; echo hello; exec sleep 300"]

    answer = agent.call("start", env=env, settle=0.3, instances=[
        spec("tilde", argv, workdir="~/w ork", umask="077")])
    pid = answer["instances"][0]["pid"]

    assert os.readlink(f"/proc/{pid}/cwd") == str(home / "w ork")
    wait_for(lambda: (home / "w ork" / "made").exists())
    assert (home / "w ork" / "made").stat().st_mode & 0o777 == 0o600
    out = agent.state_dir / "logs" / HOST / "tilde-0.out"
    wait_for(lambda: out.exists() and out.read_text() == "hello\n")
    record = agent.record("tilde", 0)
    assert record["stderr"] == str(agent.state_dir / "logs" / HOST
                                   / "tilde-0.err")


def test_exec_failure_reports_command_not_found(agent):
    started = agent.start(spec("ghost", ["no-such-binary", "--serve"]))

    item = started["ghost.0"]
    assert item["result"] == "failed"
    assert item["error"] == "command not found: no-such-binary"
    assert agent.status()["ghost.0"]["state"] == "failed"
    assert agent.record("ghost", 0)["failure"]["error"] == item["error"]


def test_failed_chdir_names_the_directory(agent, tmp_path):
    missing = str(tmp_path / "nowhere")
    item = agent.start(spec("lost", SLEEPER, workdir=missing))["lost.0"]

    assert item["result"] == "failed"
    assert item["error"] == f"chdir {missing}: No such file or directory"


def test_early_exit_reports_status_and_stderr_tail(agent):
    began = time.monotonic()
    started = agent.start(
        spec("boom", ["/bin/sh", "-c", "echo boom >&2; exit 3"]),
        spec("segv", ["/bin/sh", "-c", "echo bye >&2; kill -SEGV $$"]),
        spec("zero", ["/bin/sh", "-c", "exit 0"]),
        *[spec("steady", SLEEPER, n) for n in range(3)],
        settle=1.0)
    elapsed = time.monotonic() - began

    assert started["boom.0"]["result"] == "failed"
    assert started["boom.0"]["error"] == "exited with status 3"
    assert started["boom.0"]["exit_status"] == 3
    assert started["boom.0"]["stderr_tail"] == ["boom"]
    assert started["segv.0"]["signal"] == signal.SIGSEGV
    assert started["segv.0"]["error"] == "killed by signal SEGV"
    assert started["segv.0"]["stderr_tail"] == ["bye"]
    assert started["zero.0"]["error"] == "exited with status 0"
    assert started["steady.2"]["result"] == "started"
    # One settle time for the whole batch, not one per instance.
    assert 1.0 <= elapsed < 2.5

    states = agent.status()
    assert states["boom.0"]["state"] == "failed"
    assert states["boom.0"]["stderr_tail"] == ["boom"]
    assert states["steady.0"]["state"] == "running"


def test_start_twice_starts_nothing_the_second_time(agent):
    specs = [spec("pair", SLEEPER, n) for n in range(2)]
    first = agent.start(*specs)
    ticks = agent.record("pair", 0)["start_ticks"]

    second = agent.start(*specs)

    for key in ("pair.0", "pair.1"):
        assert first[key]["result"] == "started"
        assert second[key]["result"] == "running"
        assert second[key]["pid"] == first[key]["pid"]
    assert agent.record("pair", 0)["start_ticks"] == ticks
    assert len(agent.leftovers()) == 2


def test_a_new_start_kills_what_the_dead_leader_left_running(agent):
    # A wrapper shell whose child outlives it, as a JVM under a script.
    child_argv = agent.unique_sleeper()
    wrapper = ["/bin/sh", "-c", " ".join(child_argv) + " & wait"]
    first = agent.start(spec("wrap", wrapper))["wrap.0"]
    wait_for(lambda: agent.running(child_argv))
    child = agent.running(child_argv)[0]
    os.kill(first["pid"], signal.SIGKILL)
    reap(first["pid"])

    second = agent.start(spec("wrap", wrapper))["wrap.0"]

    assert second["result"] == "started"
    assert second["leftovers"] == [child]
    wait_for(lambda: agent.running(child_argv)
             and child not in agent.running(child_argv))
    assert len(agent.running(child_argv)) == 1   # the new run's child


def test_env_path_finds_program_only_in_that_path(agent, tmp_path):
    bin_dir = tmp_path / "opt fx" / "bin"
    bin_dir.mkdir(parents=True)
    worker = bin_dir / "fxworker"
    worker.write_text("#!/bin/sh\nexec sleep 300\n")
    worker.chmod(0o755)
    env = {"FOO": "bar baz", "PATH": f"{bin_dir}:/usr/bin:/bin"}

    started = agent.start(spec("fx", ["fxworker"], 0, env=env),
                          spec("fx", ["fxworker"], 1, env={"FOO": "x"}))

    assert started["fx.0"]["result"] == "started"
    pid = started["fx.0"]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as file:
        environ = file.read().split(b"\0")
    assert b"FOO=bar baz" in environ
    assert started["fx.1"]["error"] == "command not found: fxworker"


def test_awkward_characters_survive_in_argv_paths_and_env(agent, tmp_path):
    workdir = tmp_path / AWKWARD
    workdir.mkdir()
    script = 'printf "%s\\n" "$1" "$FOO"; pwd; exec sleep 300'
    argv = ["/bin/sh", "-c", script, "sh", AWKWARD]

    started = agent.start(spec("odd", argv, workdir=str(workdir),
                               stdout=f"out {AWKWARD}.log",
                               env={"FOO": AWKWARD}))

    pid = started["odd.0"]["pid"]
    with open(f"/proc/{pid}/environ", "rb") as file:
        assert ("FOO=" + AWKWARD).encode() in file.read().split(b"\0")
    log = workdir / f"out {AWKWARD}.log"
    wait_for(lambda: log.exists() and log.read_text().count("\n") == 3)
    assert log.read_text().splitlines() == [AWKWARD, AWKWARD, str(workdir)]
    lines = agent.call("logs", instances=[{"program": "odd", "instance": 0}],
                       lines=2)["instances"][0]["lines"]
    assert lines == [AWKWARD, str(workdir)]
    assert agent.status()["odd.0"]["argv"] == argv


# --- records that cannot be written --------------------------------------
#
# The tests run as root, which ignores permission bits: only what fails
# for root too is used here, a path under a regular file (ENOTDIR) and
# the immutable attribute (EPERM, even for root).

@pytest.fixture
def immutable():
    """chattr +i a path, undone at teardown; skip where chattr fails."""
    marked = []

    def make(path):
        if not shutil.which("chattr"):
            pytest.skip("no chattr")
        result = subprocess.run(["chattr", "+i", str(path)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            pytest.skip(f"chattr +i fails here: {result.stderr.strip()}")
        marked.append(path)

    yield make
    for path in reversed(marked):
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_unwritable_state_dir_fails_the_start_with_nothing_started(
        agent, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("")
    agent.state_dir = blocker / "state"
    argv = agent.unique_sleeper()

    with pytest.raises(AgentError) as caught:
        agent.start(spec("orphan", argv, 0), spec("orphan", argv, 1))

    assert str(caught.value) == (f"cannot write records in {blocker}/state"
                                 f"/instances/{HOST}: Not a directory")
    assert agent.running(argv) == []


def test_immutable_records_dir_fails_the_start_with_nothing_started(
        agent, immutable):
    records = agent.state_dir / "instances" / HOST
    records.mkdir(parents=True)
    immutable(records)
    argv = agent.unique_sleeper()

    with pytest.raises(AgentError) as caught:
        agent.start(spec("orphan", argv))

    assert str(caught.value) == (f"cannot write records in {records}: "
                                 f"Operation not permitted")
    assert agent.running(argv) == []
    assert os.listdir(records) == []
    assert agent.status() == {}


def test_record_that_cannot_be_written_after_fork_starts_nothing(
        agent, immutable):
    # The directory passes the check; only this one record refuses to be
    # replaced: the write fails after the fork.
    agent.start(spec("held", SLEEPER))
    agent.call("stop", instances=[{"program": "held", "instance": 0}])
    immutable(agent.record_path("held", 0))
    held, free = agent.unique_sleeper(), agent.unique_sleeper()

    started = agent.start(spec("held", held), spec("free", free))

    item = started["held.0"]
    assert (item["result"], item["pid"]) == ("failed", None)
    assert item["error"] == (
        f"not started: cannot record it ({agent.record_path('held', 0)}: "
        f"Operation not permitted)")
    assert agent.running(held) == []
    # The other instance of the request still starts, recorded.
    assert started["free.0"]["result"] == "started"
    assert agent.running(free) == [started["free.0"]["pid"]]
    assert agent.record("free", 0)["pid"] == started["free.0"]["pid"]
    assert agent.record("held", 0)["stopped"] is True
    assert sorted(os.listdir(agent.record_path("held", 0).parent)) == [
        "free.0.json", "held.0.json"]
    assert agent.status()["held.0"]["state"] == "stopped"


def test_stop_that_cannot_be_recorded_signals_nothing(agent, immutable):
    pid = agent.start(spec("pinned", SLEEPER))["pinned.0"]["pid"]
    path = agent.record_path("pinned", 0)
    immutable(path)

    answer = agent.call("stop", instances=[
        {"program": "pinned", "instance": 0, "timeout": 1}])

    [item] = answer["instances"]
    assert item["result"] == "failed"
    assert item["error"] == (f"not stopped: cannot record it ({path}: "
                             f"Operation not permitted)")
    assert alive(pid)
    assert agent.record("pinned", 0)["stopped"] is False
    assert agent.status()["pinned.0"]["state"] == "running"


def test_start_that_cannot_clear_the_stopped_mark_says_so(agent,
                                                          immutable):
    pid = agent.start(spec("marked", SLEEPER))["marked.0"]["pid"]
    agent.rewrite_record("marked", 0, stopped=True)
    path = agent.record_path("marked", 0)
    immutable(path)

    item = agent.start(spec("marked", SLEEPER))["marked.0"]

    assert (item["result"], item["pid"]) == ("running", pid)
    assert item["error"] == (f"cannot clear its stopped mark ({path}: "
                             f"Operation not permitted)")
    assert len(agent.leftovers()) == 1


# --- identity ------------------------------------------------------------

def test_zombie_is_reported_dead(agent):
    pid = agent.start(spec("undead", SLEEPER))["undead.0"]["pid"]

    # Killed but not reaped: this process is its parent now (reaper).
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: proc_stat(pid)["state"] == "Z")

    item = agent.status()["undead.0"]
    assert item["state"] == "zombie"
    assert item["rss"] is None
    stopped = agent.call("stop", instances=[
        {"program": "undead", "instance": 0, "timeout": 1}])
    assert stopped["instances"][0]["result"] == "not running"


def test_reused_pid_is_never_signalled(agent):
    pid = agent.start(spec("victim", SLEEPER))["victim.0"]["pid"]
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)

    # An unrelated process takes the recorded pid's place (and is, like
    # the daemon was, a group and session leader).
    other = agent.spawn(["sleep", "1000"])
    agent.rewrite_record("victim", 0, pid=other.pid, pgid=other.pid)

    item = agent.status()["victim.0"]
    assert (item["state"], item["reason"]) == ("dead", "pid reused")
    stopped = agent.call("stop", instances=[
        {"program": "victim", "instance": 0, "signal": "KILL",
         "timeout": 0.5}], kill_timeout=0.5)
    assert stopped["instances"][0]["result"] == "not running"
    time.sleep(0.2)
    assert alive(other.pid)
    assert other.poll() is None


def test_record_from_before_a_reboot_is_lost_and_not_signalled(agent):
    pid = agent.start(spec("old", SLEEPER))["old.0"]["pid"]
    agent.rewrite_record("old", 0, boot_id="another-boot")

    item = agent.status()["old.0"]
    assert (item["state"], item["reason"]) == ("lost", "host rebooted")
    stopped = agent.call("stop", instances=[
        {"program": "old", "instance": 0, "timeout": 0.5}], kill_timeout=0.5)
    assert stopped["instances"][0]["result"] == "not running"
    assert alive(pid)


# --- stop ----------------------------------------------------------------

def test_stop_kills_whole_tree_including_term_ignoring_child(agent,
                                                             tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "serve").write_text("#!/bin/sh\nwhile :; do echo tick; "
                                "sleep 1; done\n")
    (data / "serve").chmod(0o755)
    stubborn = "trap '' TERM; while :; do sleep 1; done"
    started = agent.start(
        spec("pipeline", ["/bin/sh", "-c",
                          "cd data && ./serve | tee -a serve.log"],
             workdir=str(tmp_path)),
        spec("forker", ["/bin/sh", "-c",
                        "sleep 300 & sleep 300 & sleep 300 & wait"]),
        *[spec("stubborn", ["/bin/sh", "-c", f"sh -c \"{stubborn}\" & wait"],
               n) for n in range(2)])
    groups = {name: item["pid"] for name, item in started.items()}
    wait_for(lambda: len(group_members(groups["forker.0"])) == 4)
    wait_for(lambda: len(group_members(groups["pipeline.0"])) >= 3)
    everyone = [pid for group in groups.values()
                for pid in group_members(group)]

    began = time.monotonic()
    answer = agent.call("stop", kill_timeout=3, instances=[
        {"program": name, "instance": n, "signal": "TERM", "timeout": 1.5}
        for name, n in [("pipeline", 0), ("forker", 0), ("stubborn", 0),
                        ("stubborn", 1)]])
    elapsed = time.monotonic() - began

    results = [item["result"] for item in answer["instances"]]
    assert results == ["stopped", "stopped", "killed", "killed"]
    assert not [pid for pid in everyone if alive(pid)]
    # All groups waited for together: one grace period, not one each.
    assert 1.5 <= elapsed < 2.7
    assert agent.status()["stubborn.0"]["state"] == "stopped"


@pytest.mark.parametrize("leader", ["reaped", "zombie"])
def test_stop_takes_the_group_of_a_leader_that_already_exited(agent,
                                                              leader):
    argv = ["/bin/sh", "-c", "sleep 300 & sleep 0.5; exit 0"]
    pid = agent.start(spec("orphans", argv), settle=0.1)["orphans.0"]["pid"]
    if leader == "reaped":
        os.waitpid(pid, 0)
    else:
        wait_for(lambda: proc_stat(pid)["state"] == "Z")
    members = group_members(pid)
    assert len(members) == 1

    expected = "dead" if leader == "reaped" else "zombie"
    assert agent.status()["orphans.0"]["state"] == expected
    answer = agent.call("stop", instances=[
        {"program": "orphans", "instance": 0, "timeout": 2}])

    assert answer["instances"][0]["result"] == "stopped"
    assert not alive(members[0])


def test_stopped_instance_is_reported_stopped_until_started(agent):
    first = agent.start(spec("nap", SLEEPER))["nap.0"]["pid"]
    answer = agent.call("stop", instances=[{"program": "nap",
                                            "instance": 0}])
    assert answer["instances"][0]["result"] == "stopped"
    assert agent.record("nap", 0)["stopped"] is True
    assert agent.status()["nap.0"]["state"] == "stopped"

    item = agent.start(spec("nap", SLEEPER))["nap.0"]

    assert item["result"] == "started" and item["pid"] != first
    assert agent.record("nap", 0)["stopped"] is False
    assert agent.status()["nap.0"]["state"] == "running"


def test_stop_of_unknown_instance_is_not_running(agent):
    answer = agent.call("stop", instances=[{"program": "never",
                                            "instance": 4}])
    assert answer["instances"][0]["result"] == "not running"
    assert answer["instances"][0]["error"] == "no record"


# --- status, logs, hash --------------------------------------------------

def test_status_reports_host_facts_and_filters_programs(agent, tmp_path):
    running = agent.start(spec("keep", SLEEPER),
                          spec("other", SLEEPER))["keep.0"]["pid"]
    not_yet = str(tmp_path / "not yet" / "deeper")

    answer = agent.call("status", programs=["keep"], paths=[not_yet])

    host = answer["host"]
    with open("/proc/sys/kernel/random/boot_id") as file:
        assert host["boot_id"] == file.read().strip()
    assert host["uptime"] > 0 and len(host["load"]) == 3
    assert abs(host["boot_time"] + host["uptime"] - time.time()) < 5
    assert host["mem_total"] >= host["mem_available"] > 0
    assert host["hostname"] == os.uname().nodename
    assert abs(host["clock"] - time.time()) < 5
    disk = host["disks"][0]
    assert disk["path"] == not_yet and disk["total"] >= disk["free"] > 0
    [item] = answer["instances"]
    assert (item["program"], item["state"], item["pid"]) == (
        "keep", "running", running)
    assert item["rss"] > 0 and item["cpu"] >= 0 and item["reason"] is None


def test_records_are_kept_per_host_name(agent):
    agent.start(spec("mine", SLEEPER))

    alias = agent.call("status", host="alias-of-test-host")

    assert alias["instances"] == []
    assert list(agent.status()) == ["mine.0"]


def test_records_are_private_and_complete(agent):
    pid = agent.start(spec("rec", SLEEPER, 7))["rec.7"]["pid"]

    path = agent.record_path("rec", 7)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o777 == 0o700
    assert os.listdir(path.parent) == ["rec.7.json"]
    record = agent.record("rec", 7)
    assert record["start_ticks"] == proc_stat(pid)["start_ticks"]
    assert (record["pid"], record["pgid"], record["host"]) == (pid, pid, HOST)
    assert record["argv"] == SLEEPER and record["failure"] is None


def test_logs_tail_of_huge_file_is_bounded(agent, tmp_path):
    log = tmp_path / "big.log"
    agent.start(spec("big", SLEEPER, stdout=str(log)))

    # 4 GiB of hole, then 2.4 MB of numbered lines: reading the whole file
    # would take far longer than the bound below.
    with open(log, "r+b") as file:
        file.truncate(4 << 30)
        file.seek(0, os.SEEK_END)
        file.write(b"\n" + b"".join(b"%07d\n" % n for n in range(300000)))
    select_big = [{"program": "big", "instance": 0}]

    began = time.monotonic()
    last = agent.call("logs", instances=select_big, lines=3)
    most = agent.call("logs", instances=select_big, lines=10**6)
    assert time.monotonic() - began < 5

    assert last["instances"][0]["lines"] == ["0299997", "0299998", "0299999"]
    lines = most["instances"][0]["lines"]
    assert sum(len(line) + 1 for line in lines) <= 1 << 20
    assert len(lines) > 100000
    assert lines == ["%07d" % n for n in range(300000 - len(lines), 300000)]


def test_logs_of_missing_file_and_unknown_instance(agent, tmp_path):
    agent.start(spec("quiet", SLEEPER, stdout=str(tmp_path / "q.out")))
    (tmp_path / "q.out").unlink()

    answer = agent.call("logs", stream="stdout", instances=[
        {"program": "quiet", "instance": 0},
        {"program": "quiet", "instance": 1}])

    missing, unknown = answer["instances"]
    assert missing["lines"] == [] and "No such file" in missing["error"]
    assert unknown["error"] == "no record"


def test_hash_reports_size_digest_mode_or_null(agent, tmp_path):
    target = tmp_path / f"rules {AWKWARD}.js"
    target.write_bytes(b"rule();\n")
    target.chmod(0o640)

    files = agent.call("hash", paths=[str(target),
                                      str(tmp_path / "gone")])["files"]

    assert files[str(target)] == {
        "size": 8, "sha256": hashlib.sha256(b"rule();\n").hexdigest(),
        "mode": 0o640}
    assert files[str(tmp_path / "gone")] is None


# --- refusals ------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../evil", "a/b", "nul\0", "..", ""])
def test_unsafe_names_are_refused_before_anything_starts(agent, bad):
    with pytest.raises(AgentError, match="invalid program name"):
        agent.start(spec("fine", SLEEPER), spec(bad, SLEEPER))
    assert not agent.leftovers()
    assert not (agent.state_dir / "instances").exists()

    request = {"action": "status", "host": bad,
               "state_dir": str(agent.state_dir)}
    process = subprocess.run(payload.bootstrap_argv(sys.executable),
                             input=payload.request_bytes(request),
                             capture_output=True, timeout=30)
    with pytest.raises(AgentError, match="invalid host name"):
        payload.decode_answer(process.stdout, process.stderr,
                              process.returncode)


def test_unknown_action_is_a_one_line_error(agent):
    with pytest.raises(AgentError) as caught:
        agent.call("dance")
    assert str(caught.value) == "unknown action: 'dance'"


# --- portability ---------------------------------------------------------

def test_agent_source_needs_nothing_newer_than_python_3_6():
    # vermin has no __main__ module; its console script calls main().
    if importlib.util.find_spec("vermin"):
        vermin = [sys.executable, "-c",
                  "import sys, vermin; sys.exit(vermin.main())"]
    elif shutil.which("vermin"):
        vermin = [shutil.which("vermin")]
    else:
        pytest.skip("vermin is not installed")

    result = subprocess.run(
        vermin + ["-t=3.6-", "--violations", "--no-tips",
                  payload.AGENT_PATH],
        capture_output=True, text=True, timeout=120)

    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not os.path.exists(PYTHON36),
                    reason=f"no Python 3.6 at {PYTHON36}")
def test_agent_runs_under_python_3_6_in_the_c_locale(agent, tmp_path):
    agent.state_dir = tmp_path / f"st\u00e4te {AWKWARD}"
    workdir = tmp_path / AWKWARD
    workdir.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C",
           "HOME": str(tmp_path)}
    argv = ["/bin/sh", "-c", 'echo "$1/$FOO"; exec sleep 300', "sh",
            AWKWARD]

    answer = agent.call("start", python=PYTHON36, env=env, settle=0.3,
                        instances=[spec("old", argv, workdir=str(workdir),
                                        env={"FOO": AWKWARD})])
    assert answer["instances"][0]["result"] == "started"
    status = agent.call("status", python=PYTHON36, env=env,
                        paths=[str(workdir / "sub")])
    assert status["host"]["python"] == "3.6.15"
    assert status["instances"][0]["state"] == "running"
    out = agent.state_dir / "logs" / HOST / "old-0.out"
    wait_for(lambda: out.exists() and out.read_text() != "")
    logs = agent.call("logs", python=PYTHON36, env=env,
                      instances=[{"program": "old", "instance": 0}])
    assert logs["instances"][0]["lines"] == [f"{AWKWARD}/{AWKWARD}"]
    files = agent.call("hash", python=PYTHON36, env=env,
                       paths=[str(out)])["files"]
    assert files[str(out)]["size"] == out.stat().st_size
    stop = agent.call("stop", python=PYTHON36, env=env,
                      instances=[{"program": "old", "instance": 0}])
    assert stop["instances"][0]["result"] == "stopped"
