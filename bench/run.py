"""drover's fan-out against pdsh, clush and taktuk on one fake cluster.

    python3 bench/run.py                          # N = 10, 50, 100; 5 runs
    python3 bench/run.py --hosts 10 --runs 3      # a quick look

For each N it brings up N fake hosts (tests/cluster.py: one real sshd per
host, each in its own PID and mount namespace, all on 127.0.0.1), starts
8 instances of ``sleep`` on each with ``launcher start``, and then times,
as whole processes, round after round (one warm-up round first, not
counted):

- ``watchdog check`` (nothing to report), ``launcher status``, and
  ``launcher start`` of 8 instances per host from none running (a
  ``launcher stop``, not timed, comes before each);
- the same question of every host -- its boot id and its drover state
  files -- asked by ``pdsh -R ssh``, ``clush`` (each with OpenSSH's
  default key exchange and with curve25519-sha256) and ``taktuk``.

Once, on the first cluster: ``watchdog --help``, ``watchdog check`` and
one ``ssh`` on a single host, ``launcher start`` of 200 instances on one
host. The table goes to stdout and, as Markdown, to bench/RESULTS.md.

Needs root (the fake cluster), openssh-server, pdsh, clustershell and
taktuk. Every process it starts is killed by pid when it ends, also on
Ctrl-C or an error.
"""

import argparse
import os
import pwd
import random
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
sys.path[:0] = [str(ROOT), str(BENCH_DIR)]

import measure  # noqa: E402
import report  # noqa: E402
from drover import console  # noqa: E402
from drover.config import SshSettings  # noqa: E402
from tests.cluster import (ClusterError, FakeCluster,  # noqa: E402
                           unavailable_reason)

INSTANCES = 8             # per host, as the issue asks
MANY_INSTANCES = 200      # on one host, for `launcher start`

# What every peer asks of every host: what drover's status reads too.
REMOTE_QUESTION = ("cat /proc/sys/kernel/random/boot_id "
                   "~/.local/state/drover/instances/*/*.json")
CURVE25519 = "-oKexAlgorithms=curve25519-sha256"

# No run of any command here takes a minute, unless it hangs.
COMMAND_TIMEOUT = 300

# One line of every state file; counting them proves that a peer read
# all the files of all the hosts.
RECORD_MARK = b'"program": "bench"'

# A settle time well under drover's default of 2 s, which alone would
# exceed the 2 s target for starting 200 instances.
PROGRAM = """
[hosts]
all = [{hosts}]

[program.bench]
command = ["sleep", "86400"]
count = {count}
start_seconds = 0.5
"""

MANY = """
[hosts]
one = ["{host}"]

[program.many]
command = ["sleep", "86400"]
count = {count}
start_seconds = 0.5
"""


class BenchError(Exception):
    """The benchmark cannot go on: setup failed or a command is broken."""


@dataclass
class Contender:
    """One command to time, how to tell that it worked, what precedes it."""

    name: str
    argv: list
    env: dict
    # The problem with a sample in one line, or None when it did its job.
    problem: Callable[[measure.Sample], Optional[str]]
    # Work done, untimed, before each run (the stop before a start).
    before: Optional[Callable[[], None]] = None
    # It changes the herd: it runs last in a round, after the questions.
    changes_state: bool = False


# -- the whole run ------------------------------------------------------------

def main(argv=None):
    options = parse_arguments(argv)
    reason = measure.available() or unavailable_reason()
    if reason:
        print(f"bench: cannot run here: {reason}", file=sys.stderr)
        return 2

    # SIGTERM and SIGHUP end the run as Ctrl-C does, through the finally
    # blocks that close the clusters and kill what is left.
    for number in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, _interrupt)
    workspace = Path(tempfile.mkdtemp(prefix="drover-bench-",
                                      dir=options.base_dir))
    try:
        results = run_benchmark(options, workspace)
    except KeyboardInterrupt:
        print("bench: interrupted; hosts closed, processes killed",
              file=sys.stderr)
        return 130
    except (BenchError, ClusterError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    finally:
        measure.kill_unreaped()
        shutil.rmtree(workspace, ignore_errors=True)

    text = report.markdown(results)
    print(text)
    if options.output != "-":
        Path(options.output).write_text(text, encoding="utf-8")
        print(f"bench: written to {options.output}", file=sys.stderr)
    return 0


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="bench/run.py",
        description="Time drover's watchdog and launcher against pdsh, "
                    "clush and taktuk on a fake cluster.")
    parser.add_argument("--hosts", type=_sizes, default=[10, 50, 100],
                        metavar="N,N,...",
                        help="cluster sizes (default: 10,50,100)")
    parser.add_argument("--runs", type=console.positive_number, default=5,
                        help="timed runs of each command (default: 5)")
    parser.add_argument("--warmup", type=console.whole_number, default=1,
                        help="untimed rounds first (default: 1)")
    parser.add_argument("--parallel", type=console.positive_number,
                        help="drover's ssh.parallel (default: drover's "
                             "own default)")
    parser.add_argument("--output", default=str(BENCH_DIR / "RESULTS.md"),
                        help="the Markdown report; - for none "
                             "(default: bench/RESULTS.md)")
    parser.add_argument("--base-dir",
                        help="where the temporary hosts and homes go "
                             "(default: the system's temporary directory)")
    options = parser.parse_args(argv)
    options.command_line = " ".join(["python3", "bench/run.py"] +
                                    (argv if argv is not None
                                     else sys.argv[1:]))
    return options


def run_benchmark(options, workspace):
    results = report.Results(
        command_line=options.command_line, runs=options.runs,
        warmup=options.warmup, facts=report.machine_facts())
    environment = Environment(workspace)
    for index, size in enumerate(options.hosts):
        began = time.monotonic()
        with FakeCluster(workspace / "hosts", size=size) as cluster:
            _say(f"N={size}: {size} hosts up in "
                 f"{cluster.startup_seconds:.1f}s")
            herd = Herd(cluster, workspace / f"n{size}", environment,
                        options.parallel)
            herd.start_all()
            results.clusters[size] = measure_rounds(
                herd.contenders(), options, f"N={size}")
            if index == 0:
                results.single = measure_rounds(
                    herd.single_host_contenders(), options, "1 host")
        _say(f"N={size}: done in {time.monotonic() - began:.0f}s")
    results.facts["load after"] = report.load_average()
    results.facts["drover ssh.parallel"] = str(
        options.parallel or f"{SshSettings().parallel} (its default)")
    return results


def measure_rounds(contenders, options, label):
    """Every contender once per round; the questions in a new order each
    round, so that a slow spell of the machine falls on all of them."""
    series = {contender.name: measure.Series(contender.name)
              for contender in contenders}
    broken = set()
    shuffle = random.Random(len(contenders))
    for number in range(options.warmup + options.runs):
        warmup = number < options.warmup
        questions = [item for item in contenders if not item.changes_state]
        shuffle.shuffle(questions)
        for contender in questions + [item for item in contenders
                                      if item.changes_state]:
            if contender.name in broken:
                continue
            if contender.before:
                contender.before()
            sample = measure.run_timed(contender.argv, contender.env,
                                       timeout=COMMAND_TIMEOUT)
            problem = contender.problem(sample)
            kind = ("warm-up" if warmup
                    else f"run {number - options.warmup + 1}")
            _say(f"{label} {kind}: {contender.name}: {sample.wall:.2f}s"
                 + (f"  FAILED: {problem}" if problem else ""))
            if problem:
                series[contender.name].failures.append(problem)
                # A command broken from the start stays broken: no time is
                # spent on it, and the report says why.
                if warmup:
                    broken.add(contender.name)
            elif not warmup:
                series[contender.name].samples[number] = sample
    return series



# -- the processes and their environment --------------------------------------

class Environment:
    """Private homes for the control side, and where drover is installed.

    Bytecode is cached in the workspace (PYTHONPYCACHEPREFIX): the warm-up
    compiles it once, as a package install would have, and the source
    tree stays untouched even when PYTHONDONTWRITEBYTECODE is set here.
    """

    def __init__(self, workspace):
        self.workspace = workspace
        self.base = {name: value for name, value in os.environ.items()
                     if name not in ("SSH_AUTH_SOCK", "DROVER_CONFIG",
                                     "PYTHONDONTWRITEBYTECODE")}
        self.base["PYTHONPYCACHEPREFIX"] = str(workspace / "pycache")
        # This tree's drover, even where another copy is installed.
        self.base["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT)] + ([os.environ["PYTHONPATH"]]
                           if os.environ.get("PYTHONPATH") else []))
        # As a login session and cron set them. Without both, paramiko's
        # ssh config lookup asks the password database once per Host
        # block per host (getpass.getuser in SSHConfig._does_match).
        user = pwd.getpwuid(os.getuid()).pw_name
        self.base.setdefault("USER", user)
        self.base.setdefault("LOGNAME", user)

    def for_home(self, name):
        """A fresh HOME with its own XDG state and config directories."""
        home = self.workspace / "homes" / name
        for directory in (home / ".local" / "state", home / ".config"):
            directory.mkdir(parents=True, exist_ok=True)
        return dict(self.base, HOME=str(home),
                    XDG_STATE_HOME=str(home / ".local" / "state"),
                    XDG_CONFIG_HOME=str(home / ".config"))

    def drover(self, program):
        """The console script beside this interpreter, as pip made it; a
        shim (pyenv's is a shell script) would be timed along with it."""
        script = Path(sys.executable).parent / program
        if script.exists():
            return [str(script)]
        return [sys.executable, "-c",
                f"import sys; from drover.{program}.cli import main; "
                "sys.exit(main())"]


class Herd:
    """One fake cluster, its drover configurations, and what to time."""

    def __init__(self, cluster, directory, environment, parallel):
        self.cluster = cluster
        self.size = len(cluster.names)
        self.environment = environment
        self.directory = directory
        directory.mkdir(parents=True)

        # ssh.parallel and connect_timeout as drover ships them, unless
        # --parallel says otherwise.
        ssh = cluster.toml_ssh_section(parallel=parallel,
                                       connect_timeout=None)
        self.config = self._write("drover.toml", ssh + PROGRAM.format(
            hosts=", ".join(f'"{name}"' for name in cluster.names),
            count=INSTANCES))
        first = cluster.names[0]
        self.one_host = self._write("one-host.toml", ssh + PROGRAM.format(
            hosts=f'"{first}"', count=INSTANCES))
        self.many = self._write("many.toml", ssh + MANY.format(
            host=first, count=MANY_INSTANCES))

        self.launcher_env = environment.for_home(f"launcher-{self.size}")
        self.watchdog_env = environment.for_home(f"watchdog-{self.size}")
        self.single_env = environment.for_home(f"single-{self.size}")
        self.peer_env = environment.for_home(f"peers-{self.size}")

    def _write(self, name, text):
        path = self.directory / name
        path.write_text(text, encoding="utf-8")
        return path

    def start_all(self):
        """The 8 instances per host that every question is about."""
        self._launcher(self.config, "start", expect=f"started: "
                       f"{self.size * INSTANCES} on")

    def contenders(self):
        config = str(self.config)
        total = self.size * INSTANCES
        launcher = self.environment.drover("launcher")
        watchdog = self.environment.drover("watchdog")
        return [
            Contender("watchdog check", watchdog + ["-c", config, "check"],
                      self.watchdog_env, _quiet_ok),
            Contender("launcher status",
                      launcher + ["-c", config, "status"],
                      self.launcher_env,
                      _says(f"bench: {total}/{total} running")),
            *self.peers(self.cluster.names, total),
            Contender("launcher start", launcher + ["-c", config, "start"],
                      self.launcher_env, _says(f"started: {total} on"),
                      before=lambda: self._launcher(self.config, "stop"),
                      changes_state=True),
        ]

    def peers(self, hosts, records):
        """pdsh, clush and taktuk asking every host the same question."""
        ssh_config = str(self.cluster.ssh_config)
        listed = ",".join(hosts)
        reads_all = _counts(RECORD_MARK, records)
        found = []
        for label, extra in (("", ""), (", curve25519", " " + CURVE25519)):
            # pdsh's ssh module appends these to its ssh command line.
            found.append(Contender(
                "pdsh" + label,
                ["pdsh", "-R", "ssh", "-w", listed, REMOTE_QUESTION],
                dict(self.peer_env,
                     PDSH_SSH_ARGS_APPEND=f"-F {ssh_config}{extra}"),
                reads_all))
            found.append(Contender(
                "clush" + label,
                ["clush", "-w", listed, "-b", "-o",
                 f"-F {ssh_config}{extra}", REMOTE_QUESTION],
                self.peer_env, reads_all))
        machines = [word for host in hosts for word in ("-m", host)]
        found.append(Contender(
            "taktuk",
            ["taktuk", "-c", f"ssh -F {ssh_config}", *machines,
             "broadcast", "exec", "[", REMOTE_QUESTION, "]"],
            self.peer_env, reads_all))
        return found

    def single_host_contenders(self):
        """The CLI alone, one host asked, many instances started."""
        first = self.cluster.names[0]
        ssh_config = str(self.cluster.ssh_config)
        launcher = self.environment.drover("launcher")
        watchdog = self.environment.drover("watchdog")
        return [
            Contender("watchdog --help", watchdog + ["--help"],
                      self.single_env, _says("usage: watchdog")),
            Contender("watchdog check, 1 host",
                      watchdog + ["-c", str(self.one_host), "check"],
                      self.single_env, _quiet_ok),
            Contender("ssh, 1 host",
                      ["ssh", "-F", ssh_config, first, REMOTE_QUESTION],
                      self.peer_env, _counts(RECORD_MARK, INSTANCES)),
            Contender("ssh curve25519, 1 host",
                      ["ssh", "-F", ssh_config, CURVE25519, first,
                       REMOTE_QUESTION],
                      self.peer_env, _counts(RECORD_MARK, INSTANCES)),
            Contender(f"launcher start, {MANY_INSTANCES} on 1 host",
                      launcher + ["-c", str(self.many), "start"],
                      self.launcher_env,
                      _says(f"started: {MANY_INSTANCES} on"),
                      before=lambda: self._launcher(self.many, "stop"),
                      changes_state=True),
        ]

    def _launcher(self, config, command, expect=None):
        """An untimed launcher command that must succeed."""
        argv = self.environment.drover("launcher") + ["-c", str(config),
                                                      command]
        sample = measure.run_timed(argv, self.launcher_env,
                                   timeout=COMMAND_TIMEOUT)
        problem = _says(expect)(sample) if expect else _status_ok(sample)
        if problem:
            raise BenchError(f"launcher {command} on {self.size} hosts: "
                             f"{problem}")


# -- telling success ----------------------------------------------------------

def _status_ok(sample):
    if sample.timed_out:
        return f"killed after {COMMAND_TIMEOUT}s"
    if sample.status != 0:
        return f"exit status {sample.status}: {sample.stderr_tail()}"
    return None


def _quiet_ok(sample):
    """A check with nothing to report: status 0 and, with no terminal,
    not a word (as under cron)."""
    problem = _status_ok(sample)
    if problem is None and sample.stdout.strip():
        problem = "printed: " + sample.stdout.decode(errors="replace")[:200]
    return problem


def _says(text):
    def problem(sample):
        found = _status_ok(sample)
        if found is None and text.encode() not in sample.stdout:
            found = f"no {text!r} in its output"
        return found
    return problem


def _counts(mark, expected):
    def problem(sample):
        found = _status_ok(sample)
        seen = sample.stdout.count(mark)
        if found is None and seen != expected:
            found = f"{seen} state files read, {expected} expected"
        return found
    return problem


# -- small things -------------------------------------------------------------

def _interrupt(number, frame):
    raise KeyboardInterrupt(signal.Signals(number).name)


def _say(line):
    print(f"bench: {line}", file=sys.stderr, flush=True)


def _sizes(text):
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        sizes = []
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(
            f"expected host counts such as 10,50,100, got {text!r}")
    return sizes




if __name__ == "__main__":
    sys.exit(main())
