"""One watchdog check: expected against live, what changed, what was done.

A check asks every host once (``inventory.survey``), decides per instance
what to do with the history's memory of earlier checks, respawns on the
same connection where it may, and returns a ``CheckResult``: the single
input of the CLI output, the JSON, the reports, the alerts and the history
(docs/internals.md, "Watchdog check result")::

    with History.open(config_path=config.path) as history:
        result = run_check(config, history, respawn=True)
    print(result.status_line)
    # DROVER WARNING - 8 respawned, 1 host rebooted (24/24 running) | ...

The life of an instance across checks, as the watchdog sees it:

- ``running``: its record's process is alive (pid, start time, boot id).
- ``dead``: it was started and is gone (a zombie too: ``reason`` zombie).
- ``lost``: its record is from before the host's last reboot.
- ``failed``: its last start did not hold (exit information kept).
- ``not started``: the configuration expects it; the host has no record.
- ``quarantined``: it needed more than ``watchdog.max_restarts`` respawns
  within ``watchdog.restart_window``; left down until a person starts it
  (``launcher start``) or releases it (``watchdog release``).
- ``unknown``: its host could not be asked; never taken for dead.
- ``stopped``: a person stopped it; not expected to run.

With respawn on, dead, lost, failed and never-started instances are
started again through the launcher's own start path
(``plans.start_on``). Each respawn counts against the restart limit,
unless the incarnation that died had stayed up ``start_seconds`` as a
later check saw it (surviving the settle time of its own respawn is not
enough): such a death is not a failed start, and the count starts
again.

A quarantine ends when a person acts: ``watchdog release`` marks it
released, or the host answers with a record started after the one the
watchdog gave up on (``launcher start`` wrote it), or the instance was
stopped by hand. The next check reports "released" once and counts
respawns from zero again.
"""

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Optional

from drover import inventory, outcomes
from drover.errors import DroverError
from drover.launcher import plans
from drover.watchdog.history import (HostMemory, InstanceMemory, Quarantine,
                                     Respawn, Updates)

log = logging.getLogger(__name__)

# Check statuses: the monitoring-plugin convention (Nagios, Icinga).
OK = 0          # every expected instance runs, every host answered
WARNING = 1     # all runs now, but something happened: respawn, reboot,
                # low disk or memory
CRITICAL = 2    # instances are down after this run (dead, lost, failed,
                # never started, quarantined)
UNKNOWN = 3     # hosts could not be asked, and nothing else is wrong
VERDICTS = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL",
            UNKNOWN: "UNKNOWN"}

# Instance states of a check.
RUNNING = inventory.RUNNING
DEAD = inventory.DEAD
LOST = inventory.LOST
FAILED = inventory.FAILED
NOT_STARTED = inventory.NOT_STARTED
QUARANTINED = "quarantined"
UNKNOWN_STATE = inventory.UNKNOWN
STOPPED = inventory.STOPPED

# Instance states that mean "should run and does not", after the run.
DOWN = frozenset({DEAD, LOST, FAILED, NOT_STARTED, QUARANTINED})

# What the survey reports that respawn may start again.
RESPAWNABLE = frozenset({inventory.DEAD, inventory.ZOMBIE, inventory.LOST,
                         inventory.FAILED, inventory.NOT_STARTED})

# Host states, worst first.
HOST_UNREACHABLE = "unreachable"
HOST_REBOOTED = "rebooted"
HOST_LOW_DISK = "low disk"
HOST_LOW_MEMORY = "low memory"
HOST_OK = "ok"

# How the summary line says them.
HOST_PHRASES = ((HOST_REBOOTED, "rebooted"),
                (HOST_UNREACHABLE, "unreachable"),
                (HOST_LOW_DISK, "low on disk"),
                (HOST_LOW_MEMORY, "low on memory"))

# Kinds of change since the previous check.
DIED = "died"
RECOVERED = "recovered"
RESPAWNED = "respawned"
GAVE_UP = "quarantined"
RELEASED = "released"
REBOOTED = "rebooted"
BECAME_UNREACHABLE = "unreachable"
BECAME_REACHABLE = "reachable"

# What a check decides for one instance.
KEEP = "keep"          # report it as it is
RESPAWN = "respawn"    # start it again
GIVE_UP = "give up"    # quarantine it now; one "quarantined" change
HOLD = "hold"          # quarantined earlier, still is

RESULT_VERSION = 1


# -- the result -------------------------------------------------------------

@dataclass
class HostReport:
    """One host as this check found it."""

    name: str
    outcome: str
    state: str
    error: Optional[str] = None
    notes: list = field(default_factory=list)
    boot_id: Optional[str] = None
    previous_boot_id: Optional[str] = None
    boot_time: Optional[float] = None
    uptime: Optional[float] = None
    load: Optional[list] = None
    mem_available: Optional[int] = None
    mem_total: Optional[int] = None
    disks: list = field(default_factory=list)


@dataclass
class InstanceReport:
    """One expected instance after this check (and its respawn)."""

    host: str
    program: str
    number: int
    state: str
    reason: Optional[str] = None
    pid: Optional[int] = None
    started_at: Optional[float] = None
    exit_status: Optional[int] = None
    signal: Optional[int] = None
    stderr_tail: list = field(default_factory=list)
    respawned: bool = False
    respawn_error: Optional[str] = None
    restarts: int = 0
    name: str = ""

    def __post_init__(self):
        self.name = f"{self.program}.{self.number}"

    @property
    def key(self):
        return (self.host, self.program, self.number)

    @property
    def down(self):
        return self.state in DOWN


@dataclass
class Change:
    """Something that differs from the previous check."""

    kind: str
    host: str
    instance: Optional[str] = None
    detail: Optional[str] = None


@dataclass
class CheckResult:
    """Everything one check found and did; see the module docstring."""

    started_at: float
    duration: float
    status: int
    verdict: str
    summary: str
    perfdata: str
    hosts: list = field(default_factory=list)
    instances: list = field(default_factory=list)
    changes: list = field(default_factory=list)

    @property
    def ok(self):
        return self.status == OK

    @property
    def status_line(self):
        """The plugin line: ``DROVER CRITICAL - 2 dead | running=...``."""
        return f"{self.summary} | {self.perfdata}"

    @property
    def down(self):
        return [item for item in self.instances if item.down]

    @property
    def unreachable(self):
        return [host for host in self.hosts
                if host.state == HOST_UNREACHABLE]

    def to_dict(self):
        data = dataclasses.asdict(self)
        data["version"] = RESULT_VERSION
        return data

    @classmethod
    def from_dict(cls, data):
        """The result of ``to_dict()``; keys it does not know (from a
        newer drover) are left out."""
        result = _known_fields(cls, data)
        for key, kind in (("hosts", HostReport),
                          ("instances", InstanceReport),
                          ("changes", Change)):
            result[key] = [kind(**_known_fields(kind, item))
                           for item in data.get(key, [])]
        return cls(**result)


def _known_fields(kind, data):
    names = {item.name for item in dataclasses.fields(kind)}
    return {key: value for key, value in data.items() if key in names}


# -- what a check may do ------------------------------------------------------

@dataclass
class Rules:
    """The limits of a check: the [watchdog] settings, each program's
    start_seconds, and whether to respawn at all."""

    respawn: bool = False
    max_restarts: int = 3
    restart_window: float = 3600.0
    min_free_disk: Optional[int] = None
    min_free_memory: Optional[int] = None
    start_seconds: dict = field(default_factory=dict)

    @classmethod
    def from_config(cls, config, respawn=None):
        settings = config.watchdog
        return cls(
            respawn=settings.respawn if respawn is None else respawn,
            max_restarts=settings.max_restarts,
            restart_window=settings.restart_window,
            min_free_disk=settings.min_free_disk,
            min_free_memory=settings.min_free_memory,
            start_seconds={name: program.start_seconds
                           for name, program in config.programs.items()})


@dataclass
class Decision:
    """What a check does with one instance, and why."""

    action: str
    restarts: int = 0                  # within the window, before this run
    reset: bool = False                # forget the respawns counted so far
    released_by: Optional[str] = None  # a quarantine ended


@dataclass
class HostActions:
    """What the follow-up did on one host: decisions and start answers."""

    decisions: dict
    started: dict = field(default_factory=dict)  # key -> agent answer
    error: Optional[str] = None                  # the start call failed


def decide(state, past, rules, now):
    """The Decision for one expected instance of a host that answered."""
    key = state.key
    quarantine = past.quarantine.get(key)
    released_by = None
    if quarantine is not None:
        released_by = _release_cause(state, quarantine)
        if released_by is None:
            return Decision(HOLD, quarantine.restarts)

    reset = released_by is not None or \
        _held_before_death(state, past.instances.get(key))
    restarts = 0 if reset else past.restarts_since(
        key, now - rules.restart_window)

    if not rules.respawn or state.state not in RESPAWNABLE:
        return Decision(KEEP, restarts, reset, released_by)
    # More than max_restarts respawns within the window is a crash loop:
    # the next one is refused (CASES C13).
    if restarts >= rules.max_restarts:
        return Decision(GIVE_UP, restarts, reset, released_by)
    return Decision(RESPAWN, restarts, reset, released_by)


def _release_cause(state, quarantine):
    """Why a quarantine ends now, or None while it holds."""
    if quarantine.released_at is not None:
        return quarantine.released_by or "watchdog release"
    if state.state == STOPPED:
        return "stopped by hand"
    # The watchdog never starts a quarantined instance, so a record other
    # than the one it gave up on was written by a person's start.
    if state.state != NOT_STARTED and \
            state.started_at != quarantine.started_at:
        return "started by hand"
    return None


def _held_before_death(state, memory):
    """True if the incarnation that is down now had stayed up its
    start_seconds: its death is not a failed start."""
    return (memory is not None and memory.held_pid is not None
            and state.state in RESPAWNABLE
            and state.pid == memory.held_pid)


def decide_host(states, past, rules, now):
    """``{key: Decision}`` for the expected instances of one host."""
    return {state.key: decide(state, past, rules, now)
            for state in states if state.expected}


def act_on_host(session, states, past, rules, specs, now):
    """Decide for one host, then respawn over its open session.

    ``specs`` maps ``(program, number)`` to the launcher's start spec.
    Runs in the survey's thread for that host; reads ``past`` only.
    """
    actions = HostActions(decide_host(states, past, rules, now))
    wanted = [key for key, decision in actions.decisions.items()
              if decision.action == RESPAWN]
    if not wanted:
        return actions

    batch = [specs[(program, number)] for _, program, number in wanted]
    settle = max(rules.start_seconds.get(program, 0)
                 for _, program, _ in wanted)
    try:
        answers = plans.start_on(session, batch, settle)
    except DroverError as error:
        # The host answered its status; only the start failed. The
        # instances stay as they were, and the attempt counts.
        actions.error = str(error)
        return actions
    for answer in answers:
        key = (session.host, answer["program"], answer["instance"])
        actions.started[key] = answer
    return actions


# -- the check ----------------------------------------------------------------

def run_check(config, history, programs=None, hosts=None, respawn=None,
              progress=None, clock=time.time):
    """Check the selected instances, respawn if asked, record the check.

    ``respawn`` None takes ``watchdog.respawn``. The run's deadline is
    ``watchdog.deadline``: hosts still pending then are unknown.
    """
    started = clock()
    rules = Rules.from_config(config, respawn)
    past = history.snapshot(started, rules.restart_window)
    specs = _start_specs(config, programs, hosts) if rules.respawn else {}

    def follow_up(session, states):
        return act_on_host(session, states, past, rules,
                           specs.get(session.host, {}), started)

    settings = None
    if rules.respawn:
        # Room for the settle time of the respawns in each host's deadline.
        settings = plans.ssh_settings_for(
            config, plans.settle_seconds(config, programs))
    survey = inventory.survey(config, programs, hosts,
                              deadline=config.watchdog.deadline,
                              progress=progress, follow_up=follow_up,
                              settings=settings)

    result, updates = evaluate(survey, past, rules, started, clock())
    history.record_check(result, updates)
    log_result(result)
    return result


def log_result(result):
    """Every change (deaths, respawns, quarantines, reboots, ...), then
    the summary line with its perfdata, at INFO."""
    for change in result.changes:
        log.info("%s", change_line(change))
    log.info("%s", result.status_line)


def change_line(change):
    """``died: host02 crawler.1 (dead: zombie)``, ``respawned: host02
    crawler.1 (pid 4242; was dead)``."""
    text = f"{change.kind}: {change.host}"
    if change.instance:
        text += f" {change.instance}"
    return f"{text} ({change.detail})" if change.detail else text


def _start_specs(config, programs, hosts):
    """``{host: {(program, number): spec}}``, the launcher's own specs."""
    specs = {}
    for host, items in plans.start_specs(config, programs, hosts).items():
        specs[host] = {(spec["program"], spec["instance"]): spec
                       for spec in items}
    return specs


def evaluate(survey, past, rules, started, finished):
    """The CheckResult of a survey, and what the history should learn.

    Pure: the survey (with the follow-up of each host, if any), the past
    and the rules in; no host, clock or database is touched.
    """
    assessment = _Assessment(past, rules, started)
    states = {}
    for state in survey.instances:
        if state.expected:
            states.setdefault(state.host, []).append(state)

    for host, result in survey.hosts.items():
        assessment.add_host(host, result, states.get(host, []))

    # Then every expected instance, in configuration order.
    for state in survey.instances:
        if state.expected:
            assessment.add_instance(state)

    return assessment.result(finished), assessment.updates


class _Assessment:
    """Builds one CheckResult and its Updates, host by host, instance by
    instance."""

    def __init__(self, past, rules, now):
        self.past = past
        self.rules = rules
        self.now = now
        self.hosts = []
        self.instances = []
        self.changes = []
        self.updates = Updates()
        self.actions = {}    # host -> HostActions
        self.clocks = {}     # host -> the host's clock, for uptimes

    # -- hosts --------------------------------------------------------------

    def add_host(self, host, result, states):
        memory = self.past.hosts.get(host)
        if result is None or not result.ok:
            self._add_unreachable(host, result, memory)
            return

        answer = result.value
        facts = answer.get("host") or {}
        self.clocks[host] = facts.get("clock") or self.now
        self.actions[host] = answer.get("follow_up") or HostActions(
            decide_host(states, self.past,
                        dataclasses.replace(self.rules, respawn=False),
                        self.now))

        report = HostReport(
            name=host, outcome=result.outcome, state=HOST_OK,
            boot_id=facts.get("boot_id"), boot_time=facts.get("boot_time"),
            uptime=facts.get("uptime"), load=facts.get("load"),
            mem_available=facts.get("mem_available"),
            mem_total=facts.get("mem_total"),
            disks=list(facts.get("disks") or []))
        self._note_reboot(report, memory, states)
        self._note_resources(report)
        self.hosts.append(report)

        if memory is not None and memory.state == HOST_UNREACHABLE:
            self.changes.append(Change(BECAME_REACHABLE, host))
        self.updates.hosts[host] = HostMemory(
            result.outcome, report.state, report.boot_id, self.now)

    def _add_unreachable(self, host, result, memory):
        outcome = result.outcome if result else outcomes.TIMED_OUT
        error = result.message if result else "no result"
        self.hosts.append(HostReport(
            name=host, outcome=outcome, state=HOST_UNREACHABLE, error=error,
            notes=[f"{outcome}: {error}"],
            previous_boot_id=memory.boot_id if memory else None))
        # Said once: when it was reachable (or never seen) before.
        if memory is None or memory.state != HOST_UNREACHABLE:
            self.changes.append(Change(BECAME_UNREACHABLE, host,
                                       detail=f"{outcome}: {error}"))
        self.updates.hosts[host] = HostMemory(
            outcome, HOST_UNREACHABLE, None, self.now, error)

    def _note_reboot(self, report, memory, states):
        """A reboot is said once: against the boot id the history last
        saw; without one, by records from an earlier boot."""
        previous = memory.boot_id if memory else None
        report.previous_boot_id = previous
        if previous is not None:
            rebooted = report.boot_id is not None and \
                previous != report.boot_id
        else:
            rebooted = any(state.state == LOST for state in states)
        if not rebooted:
            return

        report.state = HOST_REBOOTED
        was = f", was {_short(previous)}" if previous else \
            "; records are from an earlier boot"
        detail = f"boot id {_short(report.boot_id)}{was}"
        report.notes.append(f"rebooted ({detail})")
        self.changes.append(Change(REBOOTED, report.name, detail=detail))

    def _note_resources(self, report):
        low_disk = self.rules.min_free_disk
        for disk in report.disks:
            if disk.get("error"):
                report.notes.append(
                    f"cannot see the disk of {disk['path']} "
                    f"({disk['error']})")
            elif low_disk is not None and disk.get("free") is not None \
                    and disk["free"] < low_disk:
                report.notes.append(
                    f"low disk: {_bytes(disk['free'])} free for "
                    f"{disk['path']} (watchdog.min_free_disk = "
                    f"{_bytes(low_disk)})")
                if report.state == HOST_OK:
                    report.state = HOST_LOW_DISK

        low_memory = self.rules.min_free_memory
        if low_memory is not None and report.mem_available is not None \
                and report.mem_available < low_memory:
            report.notes.append(
                f"low memory: {_bytes(report.mem_available)} available "
                f"(watchdog.min_free_memory = {_bytes(low_memory)})")
            if report.state == HOST_OK:
                report.state = HOST_LOW_MEMORY

    # -- instances ----------------------------------------------------------

    def add_instance(self, state):
        if state.state == UNKNOWN_STATE:
            # An unreachable host says nothing about its instances; their
            # memory stays as the last answer left it.
            memory = self.past.instances.get(state.key)
            self.instances.append(InstanceReport(
                state.host, state.program, state.number, UNKNOWN_STATE,
                reason=state.reason,
                pid=memory.pid if memory else None,
                restarts=self.past.restarts_since(
                    state.key, self.now - self.rules.restart_window)))
            return

        actions = self.actions[state.host]
        decision = actions.decisions[state.key]
        report = _report_of(state)
        report.restarts = decision.restarts
        self._note_death_or_recovery(state, report)

        if decision.released_by:
            self.updates.released.add(state.key)
            self.changes.append(Change(RELEASED, state.host, report.name,
                                       decision.released_by))
        if decision.reset:
            self.updates.reset.add(state.key)

        if decision.action == HOLD:
            self._hold(report)
        elif decision.action == GIVE_UP:
            self._give_up(state, report)
        elif decision.action == RESPAWN:
            self._respawned(state, report, actions)

        self.instances.append(report)
        self._remember(state, report, decision)

    def _note_death_or_recovery(self, state, report):
        memory = self.past.instances.get(state.key)
        before = memory.state if memory else None
        if report.down and before not in DOWN and \
                not (before is None and report.state == NOT_STARTED):
            reason = f": {report.reason}" if report.reason else ""
            self.changes.append(Change(DIED, state.host, report.name,
                                       f"{report.state}{reason}"))
        elif report.state == RUNNING and before in DOWN:
            self.changes.append(Change(RECOVERED, state.host, report.name,
                                       f"pid {report.pid}; was {before}"))

    def _hold(self, report):
        entry = self.past.quarantine[report.key]
        report.state = QUARANTINED
        report.restarts = entry.restarts
        report.reason = _quarantine_reason(entry.restarts, self.rules)

    def _give_up(self, state, report):
        was = report.state
        report.state = QUARANTINED
        report.reason = _quarantine_reason(report.restarts, self.rules)
        self.updates.quarantined[state.key] = Quarantine(
            since=self.now, restarts=report.restarts, pid=state.pid,
            started_at=state.started_at)
        self.changes.append(Change(
            GAVE_UP, state.host, report.name,
            f"giving up: {was} after {report.restarts} respawns within "
            f"{_duration(self.rules.restart_window)}"))

    def _respawned(self, state, report, actions):
        was = report.state
        answer = actions.started.get(state.key)
        report.respawned = True
        report.restarts += 1
        if answer is None:
            report.respawn_error = actions.error or "no answer from the agent"
            detail = f"failed: {report.respawn_error}"
        elif answer["result"] in ("started", "running"):
            report.state = RUNNING
            report.reason = None
            report.pid = answer.get("pid")
            report.started_at = None
            report.exit_status = report.signal = None
            report.stderr_tail = []
            detail = f"pid {report.pid}; was {was}"
        else:
            report.state = FAILED
            report.reason = answer.get("error")
            report.respawn_error = answer.get("error") or "start failed"
            report.pid = answer.get("pid")
            report.exit_status = answer.get("exit_status")
            report.signal = answer.get("signal")
            report.stderr_tail = answer.get("stderr_tail") or []
            detail = f"failed: {report.respawn_error}"

        self.updates.respawns.append(Respawn(
            state.key, self.now, answer["result"] if answer else "error",
            report.pid))
        self.changes.append(Change(RESPAWNED, state.host, report.name,
                                   detail))

    def _remember(self, state, report, decision):
        """The instance's memory for the next check."""
        memory = self.past.instances.get(state.key)
        held = memory.held_pid if memory else None
        if decision.reset:
            held = None
        # Held: a later check found it running, up its start_seconds. A
        # respawn that merely survived the settle time does not count:
        # a worker that dies a minute after each start would otherwise be
        # respawned forever (surviving settle is no proof of health).
        if report.respawned:
            pass
        elif report.state == RUNNING and report.started_at is not None:
            needed = self.rules.start_seconds.get(state.program, 0)
            if self.clocks[state.host] - report.started_at >= needed:
                held = report.pid
        self.updates.instances[state.key] = InstanceMemory(
            report.state, report.reason, report.pid, report.started_at,
            held, self.now)

    # -- the verdict ----------------------------------------------------------

    def result(self, finished):
        status = self._status()
        summary = f"DROVER {VERDICTS[status]} - {self._summary()}"
        return CheckResult(
            started_at=self.now, duration=max(0.0, finished - self.now),
            status=status, verdict=VERDICTS[status], summary=summary,
            perfdata=self._perfdata(finished), hosts=self.hosts,
            instances=self.instances, changes=self.changes)

    def _status(self):
        if any(item.down for item in self.instances):
            return CRITICAL
        if any(item.respawned for item in self.instances) or any(
                host.state not in (HOST_OK, HOST_UNREACHABLE)
                for host in self.hosts):
            return WARNING
        if any(host.state == HOST_UNREACHABLE for host in self.hosts):
            return UNKNOWN
        return OK

    def _counts(self):
        counts = {}
        for item in self.instances:
            counts[item.state] = counts.get(item.state, 0) + 1
        return counts

    def _summary(self):
        counts = self._counts()
        parts = [f"{counts[state]} {state}"
                 for state in (QUARANTINED, DEAD, FAILED, LOST, NOT_STARTED)
                 if counts.get(state)]
        respawned = sum(1 for item in self.instances
                        if item.respawned and item.state == RUNNING)
        if respawned:
            parts.append(f"{respawned} respawned")

        for state, said in HOST_PHRASES:
            number = sum(1 for host in self.hosts if host.state == state)
            if number:
                noun = "host" if number == 1 else "hosts"
                parts.append(f"{number} {noun} {said}")

        running = counts.get(RUNNING, 0)
        expected = sum(number for state, number in counts.items()
                       if state != STOPPED)
        if not parts:
            hosts = len(self.hosts)
            return f"{running} running on {hosts} " \
                   f"{'host' if hosts == 1 else 'hosts'}"
        return f"{', '.join(parts)} ({running}/{expected} running)"

    def _perfdata(self, finished):
        counts = self._counts()
        expected = sum(number for state, number in counts.items()
                       if state != STOPPED)
        values = [(state.replace(" ", "_"), counts.get(state, 0), expected)
                  for state in (RUNNING, DEAD, LOST, FAILED, NOT_STARTED,
                                QUARANTINED, UNKNOWN_STATE)]
        values.append(("respawned", sum(1 for item in self.instances
                                        if item.respawned), expected))
        values.append(("hosts_unreachable", sum(
            1 for host in self.hosts if host.state == HOST_UNREACHABLE),
            len(self.hosts)))
        # label=value;warn;crit;min;max (Nagios plugin guidelines).
        text = " ".join(f"{label}={value};;;0;{maximum}"
                        for label, value, maximum in values)
        return f"{text} duration={max(0.0, finished - self.now):.2f}s;;;0"


def _report_of(state):
    """An InstanceReport of what the host answered, before any action."""
    failure = state.failure or {}
    name, reason = state.state, state.reason
    if name == inventory.ZOMBIE:
        name, reason = DEAD, "zombie"
    return InstanceReport(
        state.host, state.program, state.number, name, reason=reason,
        pid=state.pid, started_at=state.started_at,
        exit_status=failure.get("exit_status"), signal=failure.get("signal"),
        stderr_tail=list(state.stderr_tail or failure.get("stderr_tail")
                         or []))


def _quarantine_reason(restarts, rules):
    return (f"gave up after {restarts} respawns within "
            f"{_duration(rules.restart_window)} (watchdog.max_restarts = "
            f"{rules.max_restarts}); `launcher start` or `watchdog "
            "release` lets it run again")


def _short(boot_id):
    return (boot_id or "?")[:8]


def _bytes(count):
    for unit in ("B", "K", "M", "G", "T"):
        if count < 1024 or unit == "T":
            return f"{count:.0f}{unit}" if unit == "B" \
                else f"{count:.1f}{unit}"
        count /= 1024


def _duration(seconds):
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:g}s"
