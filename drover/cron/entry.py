"""``watchdog cron install|show|remove``: a configuration's crontab line.

Each configuration file has its own entry, marked with its id
(``drover.paths.config_id``); the file is the one the usual lookup
finds (-c, $DROVER_CONFIG, ./drover.toml, ~/.config/drover/drover.toml).
``install``, ``show`` and ``remove`` touch that entry only; ``show``
also lists the other configurations' entries in a line each.

The handler is registered on the watchdog CLI as
``run(config, arguments, history)`` asking for neither the configuration
nor the history: ``remove`` and ``show`` must work while the
configuration file is broken or gone (a file named by -c or
$DROVER_CONFIG is identified by its path alone), and ``show`` reads the
history of the state directory the cron line uses, which may not be
this shell's.
"""

import argparse
import os
import pwd
import sys
import time

from drover import console, paths
from drover.cron import crontab, runlog
from drover.cron.crontab import human_period
from drover.errors import ConfigError, CronError
from drover.units import format_duration

# Exit statuses of `cron show` (install and remove: 0, or an error).
SHOW_OK = 0         # the entry is there, enabled, and its runs keep up
SHOW_WARNING = 1    # no entry, a disabled one, runs slower than the
                    # period, or no check for two periods

RECENT_RUNS = 10

EPILOG = f"""\
cron show exit status:
  {SHOW_OK}   the entry is installed and enabled, and the last checks were
      quicker than the period and recent
  {SHOW_WARNING}   no entry, a disabled entry, checks slower than the period,
      or no check for two periods

Each configuration file (-c FILE, else $DROVER_CONFIG, else
./drover.toml, else ~/.config/drover/drover.toml) has its own entry. It
runs `watchdog check -c FILE` with absolute paths and the same state
directory as this shell, and ends with the comment by which drover finds
it again, "# {crontab.MARKER}:ID" (ID as the configuration's state
directory is named: FILE's stem and a hash of its path). Other lines of
the crontab, other configurations' entries included, stay as they are,
byte for byte.
"""


def add_commands(command):
    """Register ``cron`` on the watchdog parser (see watchdog/cli.py)."""
    cron = command("cron", "install, show or remove the crontab entry that "
                           "runs `watchdog check` every few minutes")
    cron.epilog = EPILOG
    actions = cron.add_subparsers(dest="cron_action", metavar="ACTION")
    actions.required = True

    def action(name, help_text):
        common = console.common_options(suppress=True,
                                        verbose_help="log what is done")
        return actions.add_parser(
            name, parents=[common], help=help_text,
            description=help_text, epilog=EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter)

    install = action("install", "add the configuration's entry to your "
                                "crontab, or update it in place")
    install.add_argument("--every", type=_period, default="5m",
                         metavar="PERIOD",
                         help="how often: a period that divides an hour or "
                              "a day, such as 1m, 5m, 15m, 1h (default: 5m)")
    install.add_argument("--respawn", action=argparse.BooleanOptionalAction,
                         help="pass --respawn (or --no-respawn) to check; "
                              "without either, watchdog.respawn decides")
    alerts = install.add_mutually_exclusive_group()
    alerts.add_argument("--email", action="store_true",
                        help="pass --email to check: mail a report when "
                             "something changed (notify.email)")
    alerts.add_argument("--notify", action="store_true",
                        help="pass --notify to check (notify.urls, "
                             "notify.config)")

    action("show", "print the configuration's entry, when the watchdog "
                   "last checked and how long its last checks took; list "
                   "the other drover entries")
    action("remove", "take the configuration's entry out of your crontab; "
                     "the rest stays as it is")

    from drover.watchdog import cli
    cli.register("cron", run, config=False, history=False)


def _period(text):
    from drover.config import parse_duration
    try:
        seconds = parse_duration(text)
        crontab.schedule_every(seconds)
    except (ValueError, CronError) as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return seconds


def run(config, arguments, history):
    """The ``cron`` handler: ``config`` and ``history`` are unused (None);
    returns the exit status."""
    return ACTIONS[arguments.cron_action](arguments)


# -- install ------------------------------------------------------------------

def install(arguments):
    from drover import config as config_module

    # Checked now, once, rather than mailed by cron every period.
    path = config_module.find_config(arguments.config)
    config = config_module.load(path)
    options = _check_options(arguments)
    if arguments.email or arguments.notify:
        _validate_targets(config, arguments)

    seconds = arguments.every
    change = crontab.install(crontab.schedule_every(seconds), config.path,
                             options)

    if not change.written:
        verb = "unchanged in"
    else:
        verb = "updated in" if change.previous else "added to"
    print(f"{verb} the crontab of {_user()}:")
    print(f"  {change.entry.line}")
    if change.previous and change.written:
        print(f"  (was: {change.previous.line})")
    print(f"every {human_period(seconds)}; "
          f"{_where(paths.config_state_dir(config.path))}")

    for warning in install_warnings(config, seconds):
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def _check_options(arguments):
    options = []
    if arguments.respawn is not None:
        options.append("--respawn" if arguments.respawn else "--no-respawn")
    if arguments.email:
        options.append("--email")
    if arguments.notify:
        options.append("--notify")
    return options


def _validate_targets(config, arguments):
    # The alerts say whether the targets can work (CASES C14); until they
    # can tell, the first cron run will.
    from drover.watchdog import alerts
    validate = getattr(alerts, "validate_targets", None)
    if validate is not None:
        validate(config, arguments.email, arguments.notify)


def install_warnings(config, seconds, environ=os.environ):
    """What will go wrong under cron that works in this shell."""
    warnings = []
    deadline = config.watchdog.deadline
    if deadline >= seconds:
        warnings.append(
            f"watchdog.deadline ({human_period(deadline)}) is not shorter "
            f"than the period ({human_period(seconds)}): a slow check makes "
            "the next ones find the lock taken")
    if environ.get("SSH_AUTH_SOCK") and config.ssh.identity_file is None:
        warnings.append(
            "ssh.identity_file is not set, and cron has no ssh-agent: the "
            "cron runs can use key files only (ssh.identity_file, "
            "IdentityFile in the ssh config, ~/.ssh/id_*), and no key "
            "that needs a passphrase")
    return warnings


# -- show ---------------------------------------------------------------------

def show(arguments):
    text = crontab.read_crontab()
    path = config_path(arguments)
    owner = paths.config_id(path)
    found = [item for _, item in crontab.find_entries(text, owner)]
    if found:
        status = show_entry(found[0], text)
    else:
        print(f"no drover entry for {path} in the crontab of {_user()} "
              f"(add one with `watchdog cron install -c {path}`)")
        status = SHOW_WARNING
    others = [item for _, item in crontab.find_entries(text)
              if item.owner != owner]
    for line in other_lines(others):
        print(line)
    return status


def show_entry(entry, text):
    """The entry, its state directory, its recent runs; the exit status."""
    print(entry.line)
    warnings = []
    if not entry.enabled:
        warnings.append("the entry is commented out: cron does not run "
                        "it (`watchdog cron install` enables it again)")
    period = entry.period
    environ = dict(crontab.cron_environment(text, owner=entry.owner),
                   **entry.environment)
    state = paths.state_dir(environ) / entry.owner
    print(f"every {human_period(period) if period else 'boot'}; "
          f"{_where(state)}")

    runs = recent_checks(state)
    for line in run_lines(runs, time.time()):
        print(line)
    warnings += run_warnings(runs, period, time.time())
    for warning in warnings:
        print(f"warning: {warning}")
    return SHOW_WARNING if warnings else SHOW_OK


def other_lines(entries):
    """``other drover entries:`` and one line for each."""
    if not entries:
        return []
    lines = ["other drover entries:"]
    for item in entries:
        disabled = " (commented out)" if not item.enabled else ""
        lines.append(f"  {item.owner or '?'}: {item.schedule} -c "
                     f"{item.config_path or '?'}{disabled}")
    return lines


def recent_checks(state_dir, limit=RECENT_RUNS):
    """The latest checks of the history in ``state_dir``, newest first;
    none when there is no history yet (it is not created)."""
    from drover.watchdog.history import HISTORY_NAME, History

    path = state_dir / HISTORY_NAME
    if not path.is_file():
        return []
    with History.open(path) as history:
        return history.checks(limit)


def run_lines(runs, now):
    """``last check: ...`` and the spread of the recent durations."""
    if not runs:
        return ["no check recorded yet"]
    last = runs[0]
    lines = [f"last check: {_clock(last.started_at)} "
             f"({format_duration(now - last.started_at)} ago), took "
             f"{last.duration:.1f}s: {last.summary}"]
    if len(runs) > 1:
        durations = [run.duration for run in runs]
        lines.append(f"last {len(runs)} checks took {min(durations):.1f}s "
                     f"to {max(durations):.1f}s")
    return lines


def run_warnings(runs, period, now):
    """Checks slower than the period, or none for two periods."""
    if not runs or not period:
        return []
    warnings = []
    slow = [run for run in runs if run.duration > period]
    if slow:
        longest = max(slow, key=lambda run: run.duration)
        warnings.append(
            f"{len(slow)} of the last {len(runs)} checks took longer than "
            f"the period ({human_period(period)}; longest "
            f"{longest.duration:.0f}s at {_clock(longest.started_at)}): the "
            "next runs found the "
            "lock taken; lower watchdog.deadline or install with a longer "
            "--every")
    since = now - runs[0].started_at
    if since > 2 * period + 60:
        warnings.append(
            f"no check for {format_duration(since)}, though the "
            f"entry runs every {human_period(period)}: is the cron daemon "
            "running?")
    return warnings


# -- remove -------------------------------------------------------------------

def remove(arguments):
    path = config_path(arguments)
    change = crontab.remove(paths.config_id(path))
    if change.previous is None:
        print(f"no drover entry for {path} in the crontab of {_user()}; "
              "nothing removed")
    else:
        print(f"removed from the crontab of {_user()}:")
        print(f"  {change.previous.line}")
    return 0


def config_path(arguments, environ=os.environ):
    """The configuration file the usual lookup finds. A file named by -c
    or $DROVER_CONFIG counts even when it is gone: its entry is found by
    its path alone."""
    from drover import config as config_module
    try:
        return config_module.find_config(arguments.config, environ)
    except ConfigError:
        named = arguments.config or environ.get("DROVER_CONFIG")
        if not named or not str(named).strip():
            raise
        return os.path.abspath(os.path.expanduser(str(named)))


ACTIONS = {"install": install, "show": show, "remove": remove}


def _where(state):
    return f"history in {state}, log in {runlog.log_path(state)}"


def _user():
    return pwd.getpwuid(os.getuid()).pw_name


def _clock(moment):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))

