"""The watchdog report of one check: a subject line, plain text and HTML.

The input is plain data, the dictionary of ``CheckResult.to_dict()``
(docs/internals.md, "Watchdog check result"), so a check stored in the
history renders as well as a fresh one::

    >>> rendered = render(result.to_dict())
    >>> rendered.subject
    '[drover] CRITICAL: crawler.3 dead on crawl[01-03] (3)'
    >>> rendered.text.splitlines()[0]
    'DROVER CRITICAL - 3 dead'

What the report says, and in which order, is decided here by
``report_context``; how it looks is up to the templates, and a user may
replace any of them with a file of the same name in the directory of
``[report] templates``. The templates see these names:

    result        the check as given (plain data)
    alert         why it is sent: {"reason": "change" | "recovery" |
                  "reminder" | "heartbeat" | "report", "since": epoch}
    verdict, status, summary, headline, checked
    changes       [{"kind", "text"}], hosts folded
    problems      [{"outcome", "state", "items": [{"text", ...}]}]
    failures      [{"title", "state", "facts", "command",
                  "stderr_tail"}], at most MAX_FAILURES; more_failures
    host_table, instance_table
                  {"headers": [...], "state_column": N,
                  "rows": [{"cells": [...], "state"}]}

The HTML template is always autoescaped and the subject and text ones
never are, whatever a file is called: each has its own environment.
"""

import functools
import logging
import signal
import time
import unicodedata
from collections import namedtuple
from pathlib import Path

from drover.errors import ConfigError
from drover.units import format_bytes, format_duration

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).resolve().parent
SUBJECT = "subject.txt.j2"
TEXT = "report.txt.j2"
HTML = "report.html.j2"

Rendered = namedtuple("Rendered", "subject text html")

# The monitoring-plugin statuses (docs/internals.md).
VERDICTS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")

# Most urgent first: an unreachable host hides everything on it, and a
# quarantined instance waits for a person.
OUTCOME_ORDER = ("unreachable", "quarantined", "dead", "failed", "lost",
                 "not started", "unknown", "low disk", "low memory")
INSTANCE_PROBLEMS = ("quarantined", "dead", "failed", "lost",
                     "not started", "unknown")
HOST_PROBLEMS = ("unreachable", "low disk", "low memory")

CHANGE_ORDER = ("died", "quarantined", "unreachable", "rebooted",
                "respawned", "recovered", "reachable", "released")

# A mail about 300 dead instances should still open: past this many,
# the dead are only in the full table.
MAX_FAILURES = 25

SUBJECT_LIMIT = 200


def render(result, templates_dir=None, alert=None):
    """The report on `result` (a CheckResult as plain data): Rendered.

    Raises ConfigError, naming the file and line, when a template of
    `templates_dir` is broken.
    """
    context = report_context(result, alert)
    plain, marked = _environments(
        None if templates_dir is None else str(templates_dir))

    subject = _render(plain, SUBJECT, context)
    text = _render(plain, TEXT, context)
    html = _render(marked, HTML, context)
    return Rendered(_one_line(subject), text, html)


def report_context(result, alert=None):
    """The names the templates see, in the order the report tells them."""
    hosts = sorted(result.get("hosts") or [], key=_host_order)
    instances = sorted(result.get("instances") or [], key=_instance_order)
    status = result.get("status")
    if status not in range(len(VERDICTS)):
        status = 3
    problems = problem_groups(hosts, instances)
    changes = change_lines(result.get("changes") or [])
    failures = failure_details(instances)

    alert = {"reason": None, "since": None, **(alert or {})}
    alert["since_text"] = _when(alert["since"])

    return {
        "result": result,
        "alert": alert,
        "status": status,
        "verdict": result.get("verdict") or VERDICTS[status],
        "summary": _clean(result.get("summary") or VERDICTS[status]),
        "headline": _headline(result, problems, changes, instances),
        "checked": _checked_line(result, hosts, instances),
        "changes": changes,
        "problems": problems,
        "failures": failures[:MAX_FAILURES],
        "more_failures": max(0, len(failures) - MAX_FAILURES),
        "host_table": host_table(hosts),
        "instance_table": instance_table(instances),
    }


# -- what the report says ----------------------------------------------------

def problem_groups(hosts, instances):
    """Problems by outcome, most urgent first, hosts folded into ranges.

    Within an outcome, an instance that is down on many hosts is one
    line (``crawler.3 on crawl[01-40] (40)``), and instance numbers that
    share the same hosts fold too (``crawler.[0-7] on ...``).
    """
    unreachable = {host["name"] for host in hosts
                   if host.get("state") == "unreachable"}
    lines = {}

    # Hosts first: one line per outcome and cause.
    for host in hosts:
        state = host.get("state")
        if state not in HOST_PROBLEMS:
            continue
        if state == "unreachable":
            outcome = _unreachable_label(host)
            cause = "their instances are unknown"
        else:
            outcome = state
            cause = "; ".join(_clean(note) for note in host.get("notes")
                              or [])
        lines.setdefault((state, outcome, None, cause), set()).add(
            _clean(host["name"]))

    # Instances: on an unreachable host they are unknown, said above.
    for instance in instances:
        state = instance.get("state")
        if state not in INSTANCE_PROBLEMS:
            continue
        if instance.get("host") in unreachable:
            continue
        outcome = state
        if instance.get("reason"):
            outcome = f"{state} ({_clean(instance['reason'])})"
        lines.setdefault((state, outcome, _name(instance), None), set()).add(
            _clean(instance.get("host")))

    return _fold_groups(lines)


def _fold_groups(lines):
    """`lines` {(state, outcome, name, cause): hosts} as sorted groups."""
    from drover.hostlist import fold

    # Instance names that share outcome and hosts become one line.
    shared = {}
    for (state, outcome, name, cause), hosts in lines.items():
        key = (state, outcome, tuple(sorted(hosts)), cause)
        shared.setdefault(key, []).append(name)

    groups = {}
    for (state, outcome, hosts, cause), names in shared.items():
        where = _hosts_text(hosts)
        if names == [None]:
            what = None
            text = f"{where}: {cause}" if cause else where
        else:
            what = fold(names)
            text = f"{what} on {where}"
        item = {"what": what, "hosts": where, "count": len(hosts),
                "text": text}
        groups.setdefault((state, outcome), []).append(item)

    ordered = sorted(groups.items(), key=lambda group: (
        OUTCOME_ORDER.index(group[0][0]), group[0][1]))
    return [{"state": state, "outcome": outcome,
             "items": sorted(items, key=lambda item: (-item["count"],
                                                      item["text"]))}
            for (state, outcome), items in ordered]


def change_lines(changes):
    """What changed since the last check, equal changes folded by host."""
    grouped = {}
    for change in changes:
        key = (change.get("kind") or "changed", change.get("instance"),
               change.get("detail"))
        grouped.setdefault(key, set()).add(_clean(change.get("host")))

    def order(item):
        (kind, instance, detail), hosts = item
        rank = CHANGE_ORDER.index(kind) if kind in CHANGE_ORDER \
            else len(CHANGE_ORDER)
        return (rank, kind, instance or "", -len(hosts))

    result = []
    for (kind, instance, detail), hosts in sorted(grouped.items(),
                                                   key=order):
        where = _hosts_text(hosts)
        text = f"{kind}: {_clean(instance)} on {where}" if instance \
            else f"{kind}: {where}"
        if detail:
            text += f": {_clean(detail)}"
        result.append({"kind": kind, "instance": instance, "hosts": where,
                       "text": text})
    return result


def failure_details(instances):
    """The dead, and the respawned, with exit information and stderr.

    The same failure on many hosts (same instance, exit and stderr
    tail) is one entry with the hosts folded.
    """
    entries = {}
    for instance in instances:
        state = instance.get("state")
        if state not in ("dead", "failed", "lost", "quarantined") \
                and not instance.get("respawned"):
            continue
        facts = tuple(_failure_facts(instance))
        command = _command(instance)
        tail = tuple(_clean(line, keep_spaces=True)
                     for line in instance.get("stderr_tail") or [])
        key = (_name(instance), state, facts, command, tail)
        entries.setdefault(key, []).append(instance)

    failures = []
    for (name, state, facts, command, tail), same in entries.items():
        hosts = [_clean(instance.get("host")) for instance in same]
        started = same[0].get("started_at")
        if len(same) == 1 and started:
            facts += (f"started {_when(started)}",)
        failures.append({"title": f"{name} on {_hosts_text(hosts)}",
                         "state": state, "facts": list(facts),
                         "command": command, "stderr_tail": list(tail)})
    return failures


def _failure_facts(instance):
    state = instance.get("state")
    if state == "running":
        # Died since the last check and started again by the watchdog.
        yield "died, respawned"
    elif instance.get("reason"):
        yield f"{state} ({_clean(instance['reason'])})"
    else:
        yield state
    yield from _exit_facts(instance)
    if instance.get("restarts"):
        yield f"restarted {instance['restarts']} times lately"
    if instance.get("respawn_error"):
        yield f"respawn failed: {_clean(instance['respawn_error'])}"
    elif instance.get("respawned") and state != "running":
        yield "respawned"


def host_table(hosts):
    """Per host: boot time, uptime, load, free memory and disk."""
    rows = []
    for host in hosts:
        state = host.get("state") or "-"
        note = "; ".join(_clean(note) for note in host.get("notes") or [])
        if state == "unreachable":
            note = _clean(host.get("error")) or _unreachable_label(host)
        load = host.get("load")
        rows.append({"state": state, "cells": [
            _clean(host.get("name")), state,
            _when(host.get("boot_time")),
            format_duration(host.get("uptime")),
            " ".join(f"{value:.2f}" for value in load) if load else "-",
            _free(host.get("mem_available"), host.get("mem_total")),
            "; ".join(f"{_clean(disk.get('path'))} "
                      f"{_free(disk.get('free'), disk.get('total'))}"
                      for disk in host.get("disks") or []) or "-",
            note]})
    return {"headers": ["host", "state", "booted", "up", "load",
                        "memory free", "disk free", "note"],
            "state_column": 1, "rows": rows}


def instance_table(instances):
    """Every instance, host by host: the full table."""
    rows = []
    for instance in instances:
        state = instance.get("state") or "-"
        notes = []
        if instance.get("reason"):
            notes.append(_clean(instance["reason"]))
        notes.extend(_exit_facts(instance))
        if instance.get("respawn_error"):
            notes.append(
                f"respawn failed: {_clean(instance['respawn_error'])}")
        elif instance.get("respawned"):
            notes.append("respawned")
        pid = instance.get("pid")
        rows.append({"state": state, "cells": [
            _clean(instance.get("host")), _name(instance), state,
            "-" if pid is None else str(pid),
            _when(instance.get("started_at")),
            str(instance.get("restarts") or 0),
            "; ".join(notes)]})
    return {"headers": ["host", "instance", "state", "pid", "started",
                        "restarts", "note"],
            "state_column": 2, "rows": rows}


def _headline(result, problems, changes, instances):
    """The subject's few words: the first problem, or what recovered."""
    items = [(group, item) for group in problems for item in group["items"]]
    if items:
        group, item = items[0]
        if item["what"] is None:
            text = f"{item['hosts']} {group['outcome']}"
        else:
            text = f"{item['what']} {group['outcome']} on {item['hosts']}"
        if len(items) > 1:
            text += f" and {len(items) - 1} more"
        return text

    recovered = [change["text"] for change in changes
                 if change["kind"] in ("recovered", "reachable",
                                       "released")]
    if recovered:
        more = f" and {len(recovered) - 1} more" if len(recovered) > 1 \
            else ""
        return recovered[0] + more

    running = sum(1 for instance in instances
                  if instance.get("state") == "running")
    if running and running == len(instances):
        return f"all {_count(running, 'instance')} running"
    summary = _clean(result.get("summary"))
    return summary.split(" - ", 1)[-1] if summary else "no instances"


def _checked_line(result, hosts, instances):
    running = sum(1 for instance in instances
                  if instance.get("state") == "running")
    duration = result.get("duration")
    took = f" in {duration:.1f}s" if duration is not None else ""
    return (f"checked {_when(result.get('started_at'), zone=True)}{took}: "
            f"{_count(len(hosts), 'host')}, {running} of "
            f"{_count(len(instances), 'instance')} running")


def _exit_facts(instance):
    facts = []
    if instance.get("exit_status") is not None:
        facts.append(f"exit status {instance['exit_status']}")
    number = instance.get("signal")
    if number is not None:
        facts.append(f"killed by signal {_signal_name(number)}")
    return facts


def _signal_name(number):
    try:
        return f"{int(number)} ({signal.Signals(int(number)).name})"
    except ValueError:
        return _clean(str(number))


def _unreachable_label(host):
    outcome = host.get("outcome")
    if outcome and outcome not in ("ok", "unreachable"):
        return f"unreachable ({_clean(outcome)})"
    return "unreachable"


def _command(instance):
    argv = instance.get("argv") or instance.get("command")
    if not argv:
        return None
    if isinstance(argv, str):
        return _clean(argv, keep_spaces=True)
    import shlex
    return _clean(shlex.join(str(arg) for arg in argv), keep_spaces=True)


def _name(instance):
    name = instance.get("name")
    if not name:
        name = f"{instance.get('program')}.{instance.get('number')}"
    return _clean(name)


def _hosts_text(names):
    """``crawl01``, or ``crawl[01-03] (3)`` when there are several."""
    from drover.hostlist import fold, fold_count

    names = [name for name in names if name]
    return fold(names) if len(set(names)) < 2 else fold_count(names)


def _host_order(host):
    from drover.hostlist import sort_key
    return sort_key(str(host.get("name") or ""))


def _instance_order(instance):
    from drover.hostlist import sort_key
    return (sort_key(str(instance.get("host") or "")),
            str(instance.get("program") or ""),
            instance.get("number") or 0)


# -- formatting --------------------------------------------------------------

def _clean(value, keep_spaces=False):
    """Text fit for a mail, markup and all: escaping is the HTML
    template's job. Whitespace runs become one space unless
    `keep_spaces`; other control characters (ANSI colours, NUL) show
    as U+FFFD."""
    if value is None:
        return ""
    text = str(value)
    if not keep_spaces:
        text = " ".join(text.split())
    return "".join(
        "\ufffd" if char != "\t" and unicodedata.category(char) == "Cc"
        else char for char in text)


def _count(number, noun):
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _one_line(subject):
    subject = " ".join(subject.split())
    if len(subject) > SUBJECT_LIMIT:
        subject = subject[:SUBJECT_LIMIT - 1] + "\u2026"
    return subject


def _when(epoch, zone=False):
    if not epoch:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M" + (" %Z" if zone else ""),
                         time.localtime(epoch))


def _free(free, total):
    """``1.2G of 3.8G (31%)``: what is left, of how much."""
    if free is None:
        return "-"
    if not total:
        return format_bytes(free)
    share = 100 * free / total
    return f"{format_bytes(free)} of {format_bytes(total)} ({share:.0f}%)"


def aligned(table):
    """The text lines of `table`: columns padded, the last one free."""
    rows = [table["headers"]] + [row["cells"] for row in table["rows"]]
    widths = [max(len(row[column]) for row in rows)
              for column in range(len(rows[0]) - 1)]
    return ["  ".join(cell.ljust(width)
                      for cell, width in zip(row, widths + [0])).rstrip()
            for row in rows]


# -- templates ---------------------------------------------------------------

@functools.lru_cache(maxsize=8)
def _environments(templates_dir):
    """(plain, autoescaped) Jinja2 environments over the same templates.

    The user's directory comes first, so a file there replaces the
    shipped one of the same name and every other is still found.
    """
    import jinja2

    loaders = [jinja2.FileSystemLoader(str(SHIPPED))]
    if templates_dir is not None:
        loaders.insert(0, jinja2.FileSystemLoader(templates_dir))
    settings = {
        "loader": jinja2.ChoiceLoader(loaders),
        # A typo in a user's template should fail loudly, not print "".
        "undefined": jinja2.StrictUndefined,
        "trim_blocks": True,
        "lstrip_blocks": True,
        "keep_trailing_newline": True,
    }
    plain = jinja2.Environment(autoescape=False, **settings)
    marked = jinja2.Environment(autoescape=True, **settings)
    for environment in (plain, marked):
        environment.filters["aligned"] = aligned
    return plain, marked


def _render(environment, name, context):
    import jinja2

    try:
        template = environment.get_template(name)
    except jinja2.TemplateSyntaxError as error:
        raise ConfigError(f"template does not parse: {error.message}",
                          path=error.filename or name,
                          line=error.lineno) from None
    except jinja2.TemplateNotFound as error:
        raise ConfigError(f"template not found: {error}",
                          path=name) from None

    # A user's template may fail in any way Python can (a filter given
    # a None, a division): say which file, whatever the error.
    try:
        return template.render(context)
    except Exception as error:
        raise ConfigError(
            f"template failed: {type(error).__name__}: {error}",
            path=template.filename or name) from None
