"""Start, stop and restart across hosts: one agent round trip per host.

Each plan builds the agent requests from the configuration, fans them out
and returns an ``Outcome``: every host's result and every instance's
result, so that the CLI (or any other caller) decides what to print.
"""

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Optional

from drover import inventory, transport

log = logging.getLogger(__name__)

# Per-instance results of the agent (docs/internals.md).
STARTED = "started"
ALREADY_RUNNING = "running"
START_FAILED = "failed"
STOPPED = "stopped"
KILLED = "killed"          # needed SIGKILL after the stop timeout
NOT_RUNNING = "not running"
SURVIVED = "survived"      # still there after SIGKILL: an error
WOULD_START = "would start"
WOULD_STOP = "would stop"

FAILURES = frozenset({START_FAILED, SURVIVED})

# Extra seconds the agent may need beyond the stop timeouts: SIGKILL,
# then checking that nothing of the group remains.
KILL_TIMEOUT = 5.0

# The stop schedule of a record whose program left the configuration.
DEFAULT_STOP_TIMEOUT = 30.0


@dataclass
class InstanceResult:
    """What a plan did to one instance."""

    host: str
    program: str
    number: int
    result: str
    pid: Optional[int] = None
    error: Optional[str] = None
    exit_status: Optional[int] = None
    signal: Optional[int] = None
    stderr_tail: list = field(default_factory=list)
    survivors: list = field(default_factory=list)

    @property
    def name(self):
        return f"{self.program}.{self.number}"

    @property
    def failed(self):
        return self.result in FAILURES


@dataclass
class Outcome(transport.HostOutcomes):
    """Every host's result and every instance's, of one plan."""

    hosts: dict
    instances: list

    @property
    def failed(self):
        return [item for item in self.instances if item.failed]

    @property
    def ok(self):
        return not self.failed and not self.unreached

    def count(self, result):
        return sum(1 for item in self.instances if item.result == result)


def start_specs(config, programs=None, hosts=None, count=None):
    """``{host: [agent start spec, ...]}`` of the selected instances."""
    specs = {}
    for instance in config.expected(programs, hosts):
        if count is not None and instance.number >= count:
            continue
        specs.setdefault(instance.host, []).append(
            instance.program.start_spec(instance.host, instance.number))

    # -n may ask for more instances than the configuration holds.
    if count is not None:
        for host in config.hosts_for(programs, hosts):
            for name in programs or config.programs:
                program = config.programs[name]
                if host not in program.hosts:
                    continue
                for number in range(program.count, count):
                    specs.setdefault(host, []).append(
                        program.start_spec(host, number))
    return specs


def start(config, programs=None, hosts=None, count=None, dry_run=False,
          progress=None):
    """Start the missing instances; running ones are left alone."""
    specs = start_specs(config, programs, hosts, count)
    settle = settle_seconds(config, programs)
    host_names = config.hosts_for(programs, hosts)

    def work(session):
        host_specs = specs.get(session.host, [])
        if dry_run:
            return _would_start(session, host_specs, config)
        return start_on(session, host_specs, settle)

    results = transport.fan_out(host_names, work,
                                ssh_settings_for(config, settle),
                                progress=progress)
    return _outcome(results)


def stop(config, programs=None, hosts=None, dry_run=False, progress=None):
    """Stop every recorded instance of the programs: TERM, wait, KILL."""
    selected = _programs(config, programs)
    host_names = config.hosts_for(programs, hosts)
    timeouts = [program.stop_timeout for program in selected]
    if programs is None:
        timeouts.append(DEFAULT_STOP_TIMEOUT)
    longest = max(timeouts) + KILL_TIMEOUT

    def work(session):
        return _stop_on(session, selected, dry_run,
                        every_record=programs is None)

    results = transport.fan_out(host_names, work,
                                ssh_settings_for(config, longest),
                                progress=progress)
    return _outcome(results)


def restart(config, programs=None, hosts=None, count=None, progress=None):
    """Stop, then start, on each host over one connection."""
    work, settings = restart_work(config, programs, hosts, count)
    results = transport.fan_out(config.hosts_for(programs, hosts), work,
                                settings, progress=progress)
    return _outcome(results)


def restart_work(config, programs=None, hosts=None, count=None):
    """``(work, settings)`` of a restart, for callers with their own
    sessions: ``work(session)`` restarts the programs on that one host
    and returns the agent's answers; ``settings`` allow for its waits.
    """
    selected = _programs(config, programs)
    specs = start_specs(config, programs, hosts, count)
    settle = settle_seconds(config, programs)
    longest = max((program.stop_timeout for program in selected),
                  default=0) + KILL_TIMEOUT

    def work(session):
        stopped = _stop_on(session, selected, dry_run=False)
        if any(item.get("result") == SURVIVED for item in stopped):
            return stopped
        host_specs = specs.get(session.host, [])
        if not host_specs:
            return stopped
        return [item for item in stopped
                if item.get("result") not in (STOPPED, KILLED,
                                              NOT_RUNNING)] + \
            start_on(session, host_specs, settle)

    return work, ssh_settings_for(config, longest + settle)


def start_on(session, specs, settle):
    """Start these specs over an open session (the agent's ``start``).

    The one start path: the launcher and the watchdog's respawn both come
    here. Returns the agent's answer per instance.
    """
    if not specs:
        return []
    answer = session.call({"action": "start", "instances": specs,
                           "settle": settle})
    return answer["instances"]


def _stop_on(session, programs, dry_run, every_record=False):
    """Ask the host which records it holds, then stop those.

    ``every_record``: also the records of programs that are no longer in
    the configuration, with the default schedule (TERM, 30 s, KILL).
    """
    names = None if every_record else [program.name for program in programs]
    answer = session.call({"action": "status", "programs": names,
                           "paths": [], "tail_lines": 0})
    by_name = {program.name: program for program in programs}
    targets = []
    for record in answer["instances"]:
        program = by_name.get(record["program"])
        if program is None and record["state"] == inventory.STOPPED:
            continue
        targets.append({"program": record["program"],
                        "instance": record["instance"],
                        "signal": program.stop_signal if program else "TERM",
                        "timeout": program.stop_timeout if program
                        else DEFAULT_STOP_TIMEOUT,
                        "state": record["state"]})
    if dry_run:
        return [{"program": target["program"],
                 "instance": target["instance"],
                 "result": WOULD_STOP if target["state"] in (
                     inventory.RUNNING, inventory.ZOMBIE) else NOT_RUNNING}
                for target in targets]
    if not targets:
        return []
    answer = session.call({"action": "stop", "instances": targets,
                           "kill_timeout": KILL_TIMEOUT})
    return answer["instances"]


def _would_start(session, specs, config):
    names = sorted({spec["program"] for spec in specs})
    answer = session.call({"action": "status", "programs": names,
                           "paths": [], "tail_lines": 0})
    running = {(record["program"], record["instance"])
               for record in answer["instances"]
               if record["state"] == inventory.RUNNING}
    return [{"program": spec["program"], "instance": spec["instance"],
             "result": ALREADY_RUNNING if (spec["program"],
                                           spec["instance"]) in running
             else WOULD_START}
            for spec in specs]


def _outcome(results):
    instances = []
    for host, result in results.items():
        if result.ok:
            instances += instance_results(host, result.value)
    for item in instances:
        log.info("%s: %s on %s%s", item.result, item.name, item.host,
                 f" (pid {item.pid})" if item.pid else "")
    return Outcome(results, instances)


def instance_results(host, answers):
    """The agent's per-instance answers of one host as InstanceResults."""
    for item in answers:
        if item.get("leftovers"):
            log.warning("killed: what %s.%s on %s left of its last run "
                        "(pids %s; its leader had died)", item["program"],
                        item["instance"], host,
                        " ".join(map(str, item["leftovers"])))
    return [InstanceResult(
                host, item["program"], item["instance"], item["result"],
                pid=item.get("pid"), error=item.get("error"),
                exit_status=item.get("exit_status"),
                signal=item.get("signal"),
                stderr_tail=item.get("stderr_tail") or [],
                survivors=item.get("survivors") or [])
            for item in answers]


def _programs(config, names):
    config.expected(names)  # validates the names
    return [config.programs[name] for name in (names or config.programs)]


def settle_seconds(config, names):
    """The settle time of a start: the longest start_seconds of these."""
    return max((program.start_seconds
                for program in _programs(config, names)), default=0)


def ssh_settings_for(config, extra_seconds):
    """The ssh settings, with a per-host deadline long enough for waits
    the agent does on purpose (settle time, stop timeouts)."""
    needed = config.ssh.connect_timeout + extra_seconds + 30
    if needed <= config.ssh.deadline:
        return config.ssh
    return dataclasses.replace(config.ssh, deadline=needed)
