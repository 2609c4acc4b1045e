"""``launcher``: start, stop, restart and look at daemons on many hosts."""

import argparse
import json
import sys
import time

from drover import console
from drover.console import (EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE,
                            EXIT_USAGE)
from drover.errors import ConfigError
from drover.units import format_bytes, format_duration

PROG = "launcher"

EPILOG = f"""\
exit status:
  {EXIT_OK}   everything asked for holds on every host
  {EXIT_FAILED}   an instance failed to start or stop, or (status) is down
  {EXIT_USAGE}   bad command line or configuration; no host was contacted
  {EXIT_UNREACHABLE}   some hosts could not be asked; all others are fine
  70  internal error (a bug: run again with --debug and report it)

The configuration is read from -c FILE, else $DROVER_CONFIG, else
./drover.toml, else ~/.config/drover/drover.toml.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog=PROG, parents=[console.common_options()],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Start, stop and watch long-running daemons on many "
                    "hosts over ssh. Nothing is installed on the hosts.",
        epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    def command(name, help_text):
        return commands.add_parser(
            name, parents=[console.common_options(suppress=True)],
            help=help_text, description=help_text,
            formatter_class=argparse.RawDescriptionHelpFormatter,
            epilog=EPILOG)

    start = command("start", "start the instances that are not running "
                             "(running ones are left alone)")
    console.add_selection(start)
    start.add_argument("-n", "--count", type=console.whole_number,
                       help="instances per host (program.NAME.count)")
    start.add_argument("--dry-run", action="store_true",
                       help="say what would start; start nothing")

    stop = command("stop", "stop instances: stop_signal to the whole "
                           "process group, SIGKILL after stop_timeout")
    console.add_selection(stop)
    stop.add_argument("--dry-run", action="store_true",
                      help="say what would stop; stop nothing")

    restart = command("restart", "stop, then start, host by host")
    console.add_selection(restart)
    restart.add_argument("-n", "--count", type=console.whole_number,
                         help="instances per host (program.NAME.count)")

    status = command("status", "what runs where, problems first")
    console.add_selection(status)
    status.add_argument("--json", action="store_true",
                        help="one JSON document, for scripts")

    from drover.launcher import files
    files.add_commands(command)
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    return console.run_main(PROG, _run, argv)


def _run(argv):
    arguments = build_parser().parse_args(argv)
    console.setup_logging(PROG, arguments.verbose, arguments.debug)

    from drover import config as config_module
    path = config_module.find_config(arguments.config)
    config = config_module.load(path)
    hosts = console.host_patterns(arguments)
    if not config.hosts and arguments.command != "exec":
        raise ConfigError("no host to act on: [hosts] names none",
                          config.path)
    return HANDLERS[arguments.command](config, arguments, hosts)


# -- start, stop, restart ---------------------------------------------------

def _plan(verb):
    """The handler of ``start``, ``stop`` or ``restart``: run the plan of
    the same name (drover.launcher.plans), print what it did."""

    def handler(config, arguments, hosts):
        from drover.launcher import plans
        programs = arguments.programs or None
        config.expected(programs, hosts)  # unknown names: before any host

        options = {"progress": console.Progress(
            len(config.hosts_for(programs, hosts)))}
        if verb != "restart":
            options["dry_run"] = arguments.dry_run
        if verb != "stop":
            options["count"] = arguments.count
        outcome = getattr(plans, verb)(config, programs, hosts, **options)
        options["progress"].finish()

        _print_outcome(outcome, verb)
        return _exit_status(outcome)

    return handler


def _print_outcome(outcome, verb):
    from drover.hostlist import fold

    out = sys.stdout
    for item in outcome.instances:
        if item.failed or item.error or item.result == "killed":
            print(_describe_result(item), file=out)
            for line in item.stderr_tail[-5:]:
                print(f"    | {line}", file=out)

    counts = {}
    for item in outcome.instances:
        counts.setdefault(item.result, set()).add(item.host)
    for result, hosts in sorted(counts.items()):
        number = outcome.count(result)
        print(f"{result}: {number} on {fold(hosts)}", file=out)
    if not outcome.instances and not outcome.unreached:
        print(f"{verb}: nothing to do", file=out)
    console.print_failed_hosts("launcher", outcome.hosts)


def _describe_result(item):
    text = f"{item.host} {item.name}: {item.result}"
    details = []
    if item.error:
        details.append(item.error)
    if item.exit_status is not None and \
            f"status {item.exit_status}" not in (item.error or ""):
        details.append(f"exit status {item.exit_status}")
    if item.signal:
        details.append(f"signal {item.signal}")
    if item.survivors:
        details.append("survivors: " +
                       " ".join(str(pid) for pid in item.survivors))
    if item.result == "killed":
        details.append("needed SIGKILL after stop_timeout")
    return f"{text} ({'; '.join(details)})" if details else text


def _exit_status(outcome):
    if outcome.failed:
        return EXIT_FAILED
    if outcome.unreached:
        return EXIT_UNREACHABLE
    return EXIT_OK


# -- status -------------------------------------------------------------------

def _status(config, arguments, hosts):
    from drover import inventory
    programs = arguments.programs or None
    config.expected(programs, hosts)
    progress = console.Progress(len(config.hosts_for(programs, hosts)))
    survey = inventory.survey(config, programs, hosts, progress=progress)
    progress.finish()

    now = time.time()
    if arguments.json:
        json.dump(status_document(survey, now), sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        for line in status_lines(survey, now):
            print(line)

    if survey.down:
        return EXIT_FAILED
    if survey.unreached:
        return EXIT_UNREACHABLE
    return EXIT_OK


def status_document(survey, now):
    """The status as plain data: what ``--json`` prints."""
    hosts = {}
    for host, result in survey.hosts.items():
        entry = {"outcome": result.outcome, "error": result.error}
        facts = survey.facts(host) or {}
        for key in ("boot_id", "uptime", "boot_time", "load",
                    "mem_available", "mem_total", "disks"):
            entry[key] = facts.get(key)
        hosts[host] = entry

    instances = []
    for item in survey.instances:
        instances.append({
            "host": item.host, "program": item.program,
            "instance": item.number, "state": item.state,
            "reason": item.reason, "pid": item.pid,
            "started_at": item.started_at,
            "uptime": (now - item.started_at
                       if item.state == "running" and item.started_at
                       else None),
            "rss": item.rss, "cpu": item.cpu, "expected": item.expected,
            "failure": item.failure, "stderr_tail": item.stderr_tail})
    return {"hosts": hosts, "instances": instances}


def status_lines(survey, now):
    """The status as text: summary, hosts folded by outcome, problems,
    then the table of every instance."""
    from drover.hostlist import fold

    lines = []
    by_program = {}
    for item in survey.instances:
        counts = by_program.setdefault(item.program, {})
        state = item.state if item.expected else _extra_label(item)
        counts[state] = counts.get(state, 0) + 1
    for program, counts in by_program.items():
        expected = sum(number for state, number in counts.items()
                       if state not in EXTRA_LABELS)
        others = ", ".join(f"{number} {state}"
                           for state, number in sorted(counts.items())
                           if state != "running")
        line = f"{program}: {counts.get('running', 0)}/{expected} running"
        lines.append(f"{line}; {others}" if others else line)
    lines += [f"hosts {line}" for line in
              console.fold_outcomes(survey.hosts)]

    problems = [item for item in survey.instances if item.down]
    if problems:
        lines.append("")
        lines.append("PROBLEMS")
        for item in problems:
            reason = f" ({item.reason})" if item.reason else ""
            failure = item.failure or {}
            if failure.get("error") and failure["error"] != item.reason:
                reason += f": {failure['error']}"
            lines.append(f"{item.host} {item.name}: {item.state}{reason}")
            for tail in item.stderr_tail[-3:]:
                lines.append(f"    | {tail}")

    unknown = [item for item in survey.instances if item.state == "unknown"]
    if unknown:
        hosts = sorted({item.host for item in unknown})
        lines.append(f"{len(unknown)} instances unknown on {fold(hosts)} "
                     "(host not reached)")

    rows = [("HOST", "INSTANCE", "STATE", "PID", "STARTED", "UPTIME",
             "RSS", "CPU")]
    for item in survey.instances:
        if item.state == "unknown":
            continue
        running = item.state == "running"
        rows.append((
            item.host, item.name, item.state + (
                "" if item.expected else f" ({_extra_label(item)})"),
            str(item.pid or "-"),
            _clock(item.started_at),
            format_duration(now - item.started_at)
            if running and item.started_at else "-",
            format_bytes(item.rss) if running else "-",
            f"{item.cpu:.1f}s" if running and item.cpu is not None
            else "-"))
    if len(rows) > 1:
        lines.append("")
        lines += _table(rows)

    host_rows = [("HOST", "OUTCOME", "BOOT ID", "UP", "LOAD", "MEM FREE")]
    for host, result in survey.hosts.items():
        facts = survey.facts(host) or {}
        load = facts.get("load") or []
        host_rows.append((
            host, result.outcome, (facts.get("boot_id") or "-")[:8],
            format_duration(facts.get("uptime")),
            f"{load[0]:.2f}" if load else "-",
            format_bytes(facts.get("mem_available"))))
    lines.append("")
    lines += _table(host_rows)
    return lines


# Why an instance is shown that the configuration does not ask for.
EXTRA_LABELS = ("not configured", "beyond count")


def _extra_label(item):
    from drover import inventory
    if item.reason == inventory.NOT_CONFIGURED:
        return "not configured"
    return "beyond count"


def _clock(moment):
    if not moment:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _table(rows):
    widths = [max(len(row[column]) for row in rows)
              for column in range(len(rows[0]))]
    return ["  ".join(cell.ljust(width)
                      for cell, width in zip(row, widths)).rstrip()
            for row in rows]


HANDLERS = {
    "start": _plan("start"),
    "stop": _plan("stop"),
    "restart": _plan("restart"),
    "status": _status,
}


def register(name, handler):
    """Add a handler for a subcommand defined outside this module."""
    HANDLERS[name] = handler
