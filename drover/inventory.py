"""What should run, against what runs: the survey of a herd.

The configuration says which instances are expected (host x program x
number); each host's agent says which records it holds and whether each
one's process is really alive. ``compare`` puts the two side by side so
that the launcher's status and the watchdog read the same truth.
"""

import posixpath
from dataclasses import dataclass, field
from typing import Optional

from drover import outcomes, transport

# Instance states. The agent decides the first six from /proc; the last two
# come from comparing with the configuration.
RUNNING = "running"
DEAD = "dead"              # gone, or its pid now names another process
ZOMBIE = "zombie"          # exited, not yet reaped: dead for every purpose
LOST = "lost"              # recorded before the host's last reboot
FAILED = "failed"          # the last start did not hold
STOPPED = "stopped"        # stopped by a person; not expected to run
NOT_STARTED = "not started"  # expected, but the host holds no record
UNKNOWN = "unknown"        # the host could not be asked

# The reason of a record whose program left the configuration.
NOT_CONFIGURED = "not in the configuration"

# States in which an instance that should run is down.
DOWN = frozenset({DEAD, ZOMBIE, LOST, FAILED, NOT_STARTED})


@dataclass
class InstanceState:
    """One instance as seen now: where, what, and whether it runs."""

    host: str
    program: str
    number: int
    state: str
    reason: Optional[str] = None
    pid: Optional[int] = None
    started_at: Optional[float] = None
    rss: Optional[int] = None
    cpu: Optional[float] = None
    failure: Optional[dict] = None
    stderr_tail: list = field(default_factory=list)
    expected: bool = True

    @property
    def name(self):
        return f"{self.program}.{self.number}"

    @property
    def key(self):
        return (self.host, self.program, self.number)

    @property
    def down(self):
        return self.expected and self.state in DOWN


@dataclass
class Survey(transport.HostOutcomes):
    """Every host's outcome and facts, and every instance's state."""

    hosts: dict
    instances: list

    def facts(self, host):
        result = self.hosts.get(host)
        if result is None or not result.ok:
            return None
        return result.value.get("host")

    @property
    def down(self):
        return [instance for instance in self.instances if instance.down]


def status_request(programs, every_record=False):
    """The agent's status request for these programs' records and the
    disks they write on.

    ``every_record``: all the host's records, those of programs no longer
    in the configuration included, so that nothing drover started runs
    out of sight.
    """
    paths = set()
    for program in programs:
        paths.add(program.workdir)
        for log_path in (program.stdout, program.stderr):
            if log_path:
                log_dir = posixpath.dirname(log_path)
                if "{" not in log_dir:
                    paths.add(_remote_join(program.workdir, log_dir))
    names = None if every_record else sorted(
        program.name for program in programs)
    return {"action": "status", "programs": names,
            "paths": sorted(paths), "tail_lines": 10}


def survey(config, programs=None, hosts=None, deadline=None,
           progress=None, follow_up=None, settings=None):
    """Ask every selected host once and compare with the configuration.

    ``follow_up(session, states)``, when given, runs right after a host's
    answer, on the same connection, with that host's InstanceStates (the
    watchdog respawns there); what it returns is kept in the answer under
    ``"follow_up"``. ``settings`` replaces ``config.ssh`` (a longer
    per-host deadline for such work).
    """
    expected = config.expected(programs, hosts)
    selected = [config.programs[name] for name in
                (programs or config.programs)]
    request = status_request(selected, every_record=programs is None)
    host_names = config.hosts_for(programs, hosts)
    by_host = {}
    for instance in expected:
        by_host.setdefault(instance.host, []).append(instance)

    def work(session):
        answer = session.call(request)
        if follow_up is not None:
            asked = transport.HostResult(session.host, outcomes.OK, answer)
            states = compare(by_host.get(session.host, []),
                             {session.host: asked})
            answer["follow_up"] = follow_up(session, states)
        return answer

    results = transport.fan_out(host_names, work, settings or config.ssh,
                                deadline=deadline, progress=progress)
    states = []
    for state in compare(expected, results):
        if not state.expected and state.state == STOPPED:
            continue  # the past of an instance nobody asks for any more
        if state.program not in config.programs:
            state.reason = NOT_CONFIGURED
        states.append(state)
    return Survey(results, states)


def compare(expected, host_results):
    """Expected instances beside the records each host answered with.

    Records of instances beyond the configured count (count lowered, or a
    program started with ``-n``) are kept, marked ``expected=False``.
    """
    live = {}
    for host, result in host_results.items():
        if result.ok:
            for record in result.value.get("instances", []):
                key = (host, record["program"], record["instance"])
                live[key] = record

    states = []
    for instance in expected:
        key = (instance.host, instance.program.name, instance.number)
        result = host_results.get(instance.host)
        if result is None or not result.ok:
            states.append(InstanceState(*key, UNKNOWN,
                                        reason=result and result.outcome))
        elif key in live:
            states.append(_from_record(key, live.pop(key)))
        else:
            states.append(InstanceState(*key, NOT_STARTED))

    for key, record in sorted(live.items()):
        state = _from_record(key, record)
        state.expected = False
        states.append(state)
    return states


def _from_record(key, record):
    return InstanceState(
        *key, record["state"], reason=record.get("reason"),
        pid=record.get("pid"), started_at=record.get("started_at"),
        rss=record.get("rss"), cpu=record.get("cpu"),
        failure=record.get("failure"),
        stderr_tail=record.get("stderr_tail") or [])


def _remote_join(directory, path):
    if not path:
        return directory
    if path.startswith(("/", "~")):
        return path
    return f"{directory.rstrip('/')}/{path}"
