"""``watchdog``: check the herd against the configuration, and respawn.

Subcommands are registered in ``COMMANDS`` with what they need (the
configuration, the history, the run lock); ``report`` and ``cron`` come
from their own modules through ``register``, so this file stays the
table of contents of the program.
"""

import argparse
import contextlib
import json
import sys
from dataclasses import dataclass
from typing import Callable

from drover import console
from drover.errors import ConfigError, DroverError, LockBusy, NotifyError
from drover.units import format_bytes, format_duration

PROG = "watchdog"

# Exit statuses. 0 to 3 follow the monitoring-plugin convention, so that
# `watchdog check` also serves as a Nagios or Icinga check.
EXIT_OK = 0             # every expected instance runs on every host
EXIT_WARNING = 1        # all runs now, but something happened: respawned,
                        # rebooted, low on disk or memory
EXIT_CRITICAL = 2       # instances down after this run, or quarantined
EXIT_UNKNOWN = 3        # hosts not reached and nothing else wrong; or the
                        # check could not run (configuration, history)
EXIT_LOCKED = 4         # another run holds the lock: no host was touched
EXIT_NOTIFY_FAILED = 5  # the check was done, a notification was not sent

EPILOG = f"""\
exit status:
  {EXIT_OK}   OK: every expected instance runs on every host
  {EXIT_WARNING}   WARNING: all runs now, but instances were respawned or a
      host rebooted or is low on disk or memory
  {EXIT_CRITICAL}   CRITICAL: instances are dead, lost, failed, not started
      or quarantined after this run
  {EXIT_UNKNOWN}   UNKNOWN: hosts could not be asked and nothing else is
      wrong; or the check could not run (bad command line or
      configuration, damaged history): the error is on stderr
  {EXIT_LOCKED}   another watchdog run holds the lock; this one touched no
      host
  {EXIT_NOTIFY_FAILED}   the check was done, but a notification could not be
      sent (it is retried by the next run)
  70  internal error (a bug: run again with --debug and report it)

The first line of `check` is a one-line summary with performance data, as
monitoring plugins print it. Without a terminal (under cron) an OK check
prints nothing unless --verbose is given.

The configuration is read from -c FILE, else $DROVER_CONFIG, else
./drover.toml, else ~/.config/drover/drover.toml.
"""


@dataclass
class Command:
    """A subcommand's handler and what it needs before it runs."""

    handler: Callable
    config: bool = True     # the configuration, loaded and checked
    history: bool = True    # the history database, opened
    lock: bool = False      # the run lock, held for the whole command


COMMANDS = {}


def register(name, handler, config=True, history=True, lock=False):
    """Run ``handler(config, arguments, history) -> exit status`` for the
    subcommand ``name``; what is not asked for is passed as None."""
    COMMANDS[name] = Command(handler, config, history, lock)


class _Parser(argparse.ArgumentParser):
    """A usage error is UNKNOWN (3), not argparse's 2, which would read
    as CRITICAL to a monitoring system."""

    def error(self, message):
        self.print_usage(sys.stderr)
        self.exit(EXIT_UNKNOWN, f"{self.prog}: error: {message}\n")


def common_options(suppress=False):
    return console.common_options(
        suppress, parser_class=_Parser,
        verbose_help="print an OK check under cron too; with check, the "
                     "per-host table; log what is done")


def build_parser():
    parser = _Parser(
        prog=PROG, parents=[common_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Check that the daemons of the configuration run on "
                    "every host; respawn them, within limits; report.",
        epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name, help_text):
        return commands.add_parser(
            name, parents=[common_options(suppress=True)], help=help_text,
            description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=EPILOG)

    check = command("check", "compare what runs with the configuration; "
                             "respawn with --respawn")
    console.add_selection(check)
    check.add_argument("--respawn", action=argparse.BooleanOptionalAction,
                       default=None,
                       help="start dead, lost and never-started instances "
                            "again (watchdog.respawn; limits: "
                            "watchdog.max_restarts, watchdog.restart_window)")
    check.add_argument("--json", action="store_true",
                       help="print the whole result as one JSON document")
    _alert_options(check)

    release = command("release", "end the quarantine of instances the "
                                 "watchdog gave up on; the next check with "
                                 "--respawn starts them again")
    console.add_selection(release)
    release.add_argument("-i", "--instance", action="append",
                         type=console.whole_number, metavar="NUMBER",
                         help="only these instance numbers; repeatable")

    from drover.watchdog import reporting
    reporting.add_commands(command)
    # A report runs a check: one at a time, like `check` itself.
    register("report", reporting.run_report, lock=True)

    from drover.cron import entry
    entry.add_commands(command)
    return parser


def _alert_options(parser):
    parser.add_argument("--email", action="store_true",
                        help="mail a report when something changed "
                             "(notify.email)")
    parser.add_argument("--notify", action="store_true",
                        help="notify when something changed (notify.urls, "
                             "notify.config)")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return console.run_main(PROG, _run, argv, error_status=_error_status)


def _error_status(error):
    if isinstance(error, LockBusy):
        return EXIT_LOCKED
    if isinstance(error, NotifyError):
        return EXIT_NOTIFY_FAILED
    return EXIT_UNKNOWN


def _run(argv):
    arguments = build_parser().parse_args(argv)
    console.setup_logging(PROG, arguments.verbose, arguments.debug)
    command = COMMANDS.get(arguments.command)
    if command is None:
        raise DroverError(f"{arguments.command}: not available in this "
                          "version of drover")

    config = _load_config(arguments) if command.config else None
    with contextlib.ExitStack() as stack:
        run, history = _prepare(stack, command, arguments, config, argv)
        status = command.handler(config, arguments, history)
        if run is not None:
            run.finished(status)
        return status


def _prepare(stack, command, arguments, config, argv):
    """The run lock, the run log and the history the command asks for,
    all in its configuration's state directory, entered on ``stack``;
    returns ``(RunLog or None, History or None)``."""
    if not (command.lock or command.history):
        return None, None
    state = _state_dir(arguments, config)
    run = history = None
    # The lock first: a run that finds it taken touches nothing.
    if command.lock:
        from drover.cron.lock import LOCK_NAME, RunLock
        from drover.cron.runlog import RunLog
        stack.enter_context(RunLock(state / LOCK_NAME))
        run = stack.enter_context(RunLog(state, [PROG] + argv))
    if command.history:
        from drover.watchdog.history import HISTORY_NAME, History
        history = stack.enter_context(History.open(state / HISTORY_NAME))
    return run, history


def _state_dir(arguments, config):
    """The control-host state of this run's configuration: its history,
    run lock, spool and run log (drover.paths.config_state_dir)."""
    from drover import paths
    if config is not None:
        return paths.ensure_config_state_dir(config.path)
    from drover import config as config_module
    return paths.ensure_config_state_dir(
        config_module.find_config(arguments.config))


def _load_config(arguments):
    from drover import config as config_module
    return config_module.load(config_module.find_config(arguments.config))


# -- check --------------------------------------------------------------------

def _check(config, arguments, history):
    from drover.watchdog import check

    programs = arguments.programs or None
    hosts = console.host_patterns(arguments)
    config.expected(programs, hosts)  # unknown names: before any host
    if not config.hosts:
        raise ConfigError("no host to check: [hosts] names none",
                          config.path)

    # A target that cannot work is a configuration error, said before any
    # host is contacted (CASES C14).
    alerting = arguments.email or arguments.notify
    if alerting:
        from drover.watchdog import alerts
        alerts.validate_targets(config, arguments.email, arguments.notify)

    progress = console.Progress(len(config.hosts_for(programs, hosts)))
    result = check.run_check(config, history, programs, hosts,
                             respawn=arguments.respawn, progress=progress)
    progress.finish()

    _print_check(result, arguments)
    if alerting:
        # A failed target is logged by drover.notify and its report
        # spooled for the next run; the exit status says it.
        delivery = alerts.after_check(config, result, history,
                                      email=arguments.email,
                                      notify=arguments.notify)
        if not delivery.ok:
            return EXIT_NOTIFY_FAILED
    return result.status


def _print_check(result, arguments):
    if arguments.json:
        json.dump(result.to_dict(), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return

    # Under cron every line printed becomes a mail: an OK run is silent.
    interactive = sys.stdout.isatty()
    if result.ok and not interactive and not arguments.verbose:
        return
    lines = check_lines(result, changes=interactive or arguments.verbose,
                        table=bool(arguments.verbose))
    sys.stdout.write("\n".join(lines) + "\n")


def check_lines(result, changes=True, table=False):
    """The check as text: summary line, then what changed, the problems
    (hosts sharing one fold into a range), and the per-host table."""
    lines = [result.status_line]
    if changes and result.changes:
        lines.append("changes since the last check:")
        lines += [f"  {line}" for line in change_lines(result)]
    problems = problem_lines(result)
    if problems:
        lines.append("problems:")
        lines += [f"  {line}" for line in problems]
    if table:
        lines.append("")
        lines += host_table(result)
    return lines


def change_lines(result):
    from drover.hostlist import fold

    lines = []
    by_host = {}
    for change in result.changes:
        if change.instance is None:
            by_host.setdefault((change.kind, change.detail), []).append(
                change.host)
    for (kind, detail), hosts in by_host.items():
        lines.append(f"{kind}: {fold(hosts)}" +
                     (f" ({detail})" if detail else ""))

    grouped = {}
    for change in result.changes:
        if change.instance is not None:
            program, _, number = change.instance.rpartition(".")
            names = grouped.setdefault(change.kind, {}).setdefault(
                change.host, [])
            names.append((program, int(number)))
    for kind, names in grouped.items():
        lines += [f"{kind}: {text}" for text in _folded_instances(names)]
    return lines


def problem_lines(result):
    """Hosts not ok, then instances down or respawned, worst first."""
    from drover.hostlist import fold

    unreachable = {}
    notes = []
    for host in result.hosts:
        if host.state == "unreachable":
            label = f"{host.outcome}: {host.error or ''}"
            unreachable.setdefault(label, []).append(host.name)
        else:
            notes += [f"{host.name}: {note}" for note in host.notes]
    lines = [f"unreachable: {fold(hosts)} ({len(hosts)}): {label}"
             for label, hosts in unreachable.items()] + notes

    # Dead and failed ones one by one, with what explains them.
    for item in result.instances:
        if item.state in ("dead", "failed"):
            lines.append(_instance_line(item))
            lines += [f"    | {tail}" for tail in item.stderr_tail[-3:]]

    # The others folded: hosts that share a list of names share a line.
    for state in ("quarantined", "lost", "not started", "unknown"):
        names = {}
        for item in result.instances:
            if item.state == state:
                names.setdefault(item.host, []).append(
                    (item.program, item.number))
        lines += [f"{state}: {text}" for text in _folded_instances(names)]
        if names and state == "quarantined":
            lines.append("    (left down after too many respawns; "
                         "`launcher start` or `watchdog release` ends it)")

    respawned = {}
    for item in result.instances:
        if item.respawned and item.state == "running":
            respawned.setdefault(item.host, []).append(
                (item.program, item.number))
    lines += [f"respawned: {text}"
              for text in _folded_instances(respawned)]
    return lines


def _instance_line(item):
    details = [item.reason] if item.reason else []
    if item.exit_status is not None and \
            f"status {item.exit_status}" not in (item.reason or ""):
        details.append(f"exit status {item.exit_status}")
    if item.signal:
        details.append(f"signal {item.signal}")
    if item.respawn_error and item.respawn_error != item.reason:
        details.append(f"respawn failed: {item.respawn_error}")
    if item.restarts:
        details.append(f"{item.restarts} respawn"
                       f"{'s' if item.restarts > 1 else ''} within "
                       "watchdog.restart_window")
    text = f"{item.state}: {item.host} {item.name}"
    return f"{text} ({'; '.join(details)})" if details else text


def _folded_instances(by_host):
    """``host[01-03] (3): crawler.[0-3],worker.1`` lines: hosts with the
    same instances fold together."""
    from drover.hostlist import fold

    hosts_of = {}
    for host, names in by_host.items():
        instances = fold(f"{program}.{number}" for program, number in names)
        hosts_of.setdefault(instances, []).append(host)
    lines = []
    for names, hosts in hosts_of.items():
        count = f" ({len(hosts)})" if len(hosts) > 1 else ""
        lines.append(f"{fold(hosts)}{count}: {names}")
    return lines


def host_table(result):
    """HOST STATE RUNNING UP LOAD MEM-FREE, one row per host."""
    running = {}
    for item in result.instances:
        counts = running.setdefault(item.host, [0, 0])
        counts[1] += item.state != "stopped"
        counts[0] += item.state == "running"

    rows = [("HOST", "STATE", "RUNNING", "UP", "LOAD", "MEM FREE")]
    for host in result.hosts:
        counts = running.get(host.name, [0, 0])
        rows.append((
            host.name, host.state, f"{counts[0]}/{counts[1]}",
            format_duration(host.uptime),
            f"{host.load[0]:.2f}" if host.load else "-",
            format_bytes(host.mem_available)))
    widths = [max(len(row[column]) for row in rows)
              for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width)
                      for cell, width in zip(row, widths)).rstrip()
            for row in rows]


# -- release ------------------------------------------------------------------

def _release(config, arguments, history):
    programs = arguments.programs or None
    hosts = set(config.hosts_for(programs, console.host_patterns(arguments)))
    names = set(programs) if programs else None
    numbers = set(arguments.instance) if arguments.instance else None

    def chosen(key):
        host, program, number = key
        return (host in hosts and (names is None or program in names)
                and (numbers is None or number in numbers))

    released = history.release(chosen)
    if not released:
        print("nothing to release: no quarantined instance matches")
        return EXIT_OK
    for host, program, number in released:
        print(f"released: {program}.{number} on {host}")
    print("the next `watchdog check --respawn` starts them again")
    return EXIT_OK


register("check", _check, lock=True)
register("release", _release)
