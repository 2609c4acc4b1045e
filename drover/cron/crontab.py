"""drover's lines in the user's crontab: built, found, put in, taken out.

Each configuration has at most one entry: the line whose end is the
marker comment with the configuration's id (``drover.paths.config_id``,
also the name of its state directory)::

    */5 * * * * /usr/local/bin/watchdog check -c /etc/drover/drover.toml
    --respawn # drover:watchdog:drover-1a2b3c4d           (one line in cron)

A line with the bare marker ``# drover:watchdog`` (drover before per-
configuration state) belongs to the configuration its ``-c`` names, and
is updated or removed as that configuration's entry.

The crontab is edited here as text, line by line, and written back with
``crontab -``. python-crontab (3.4) re-renders every line it parses: it
squeezes spacing and tabs, rewrites disabled entries and silently drops a
variable line written ``MAILTO = "x"``. Other people's lines must come
back byte for byte, so python-crontab only checks schedules here.

Cron is a hostile place for a command (crontab(5)): the environment is
bare (PATH=/usr/bin:/bin, HOME from the password file, no ssh-agent),
the working directory is the home, and an unescaped ``%`` ends the
command. So the line holds absolute paths only, pins HOME and
XDG_STATE_HOME when the user's differ from what cron gives, and escapes
every ``%``.

Example::

    change = install(schedule_every(300), "/etc/drover/drover.toml",
                     ["--respawn"])
    change.entry.line   # what the crontab now holds
    remove(paths.config_id("/etc/drover/drover.toml"))
"""

import logging
import os
import pwd
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from drover import paths
from drover.errors import CronError

log = logging.getLogger(__name__)

MARKER = "drover:watchdog"

# "Every configuration's", where a configuration id may be asked for.
ANY = object()
CRONTAB = "crontab"

# The environment cron gives a job (Debian cron, do_command.c and
# crontab(5)): these, plus the variable lines of the crontab itself.
CRON_PATH = "/usr/bin:/bin"
CRON_SHELL = "/bin/sh"

# What a console script of drover's `watchdog` holds (pip writes
# "from drover.watchdog.cli import main"); /usr/sbin/watchdog of the
# Debian package "watchdog" is another program entirely.
_SCRIPT_SIGN = b"drover.watchdog"

_ENTRY = re.compile(
    r"^(?P<disabled>[ \t]*#[ \t]*)?[ \t]*"
    r"(?P<schedule>@[A-Za-z]+|(?:[0-9*]\S*[ \t]+){2}(?:\S+[ \t]+){2}\S+)"
    r"[ \t]+(?P<command>.*?)[ \t]+#[ \t]*" + re.escape(MARKER) +
    r"(?::(?P<id>[A-Za-z0-9_.-]+))?[ \t]*$")
_VARIABLE = re.compile(r"^[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*=[ \t]*(.*?)"
                       r"[ \t]*$")
_ASSIGNMENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*=")

# Periods cron can keep evenly: those that divide an hour or a day.
_SPECIAL_PERIODS = {"@hourly": 3600, "@daily": 86400, "@midnight": 86400,
                    "@weekly": 7 * 86400, "@monthly": 28 * 86400,
                    "@yearly": 365 * 86400, "@annually": 365 * 86400,
                    "@reboot": None}


# -- the entry ----------------------------------------------------------------

@dataclass(frozen=True)
class Entry:
    """A crontab entry of drover's: a schedule, a shell command, and the
    id of its configuration (None on a line of an older drover).

    ``command`` is the text /bin/sh receives; ``line`` is that text as the
    crontab must hold it (``%`` escaped, marker appended).
    """

    schedule: str
    command: str
    enabled: bool = True
    id: Optional[str] = None

    @property
    def marker(self):
        return f"{MARKER}:{self.id}" if self.id else MARKER

    @property
    def line(self):
        text = f"{self.schedule} {cron_escape(self.command)} # {self.marker}"
        return text if self.enabled else "#" + text

    @classmethod
    def parse(cls, line):
        """The Entry of a crontab line, or None if it is not drover's."""
        match = _ENTRY.match(line)
        if match is None:
            return None
        return cls(schedule=match.group("schedule"),
                   command=cron_unescape(match.group("command")),
                   enabled=match.group("disabled") is None,
                   id=match.group("id"))

    @property
    def owner(self):
        """The id of the configuration this entry checks: its marker's,
        else (an older line) the one of the file its ``-c`` names."""
        if self.id:
            return self.id
        path = self.config_path
        return paths.config_id(path) if path else None

    @property
    def config_path(self):
        """The file the command's ``-c`` (``--config``) names, or None."""
        argv = self.argv
        for index, word in enumerate(argv):
            if word in ("-c", "--config") and index + 1 < len(argv):
                return argv[index + 1]
            if word.startswith("--config="):
                return word.partition("=")[2]
        return None

    @property
    def period(self):
        """Shortest seconds between two runs; None for @reboot."""
        return schedule_period(self.schedule)

    @property
    def environment(self):
        """The ``NAME=value`` assignments that lead the command."""
        assigned = {}
        for word in _words(self.command):
            if not _ASSIGNMENT.match(word):
                break
            name, _, value = word.partition("=")
            assigned[name] = value
        return assigned

    @property
    def argv(self):
        """The command's words after its assignments."""
        words = _words(self.command)
        while words and _ASSIGNMENT.match(words[0]):
            words.pop(0)
        return words


def _words(command):
    try:
        return shlex.split(command, comments=True)
    except ValueError:
        # Edited by hand into something the shell would reject as well.
        return []


def cron_escape(command):
    """``command`` as a crontab line must hold it.

    Cron turns the first unescaped ``%`` into the end of the command and
    the rest into the job's stdin; ``\\%`` gives a ``%`` (crontab(5)). A
    backslash the command itself has right before a ``%`` would eat that
    escape, so the quoted word is cut there: ``'a\\%b'`` becomes
    ``'a\\''\\%b'``. Every backslash of a command built here stands inside
    single quotes (shlex.quote), where the cut is valid.
    """
    if "\n" in command or "\r" in command:
        raise CronError("a crontab line cannot hold a line break "
                        f"(in {command!r})")
    return command.replace("\\%", "\\''%").replace("%", "\\%")


def cron_unescape(text):
    """What cron hands to /bin/sh for a crontab command ``text``.

    It follows Debian cron's do_command.c: ``\\%`` gives ``%``, any other
    backslash stays, and an unescaped ``%`` ends the command.
    """
    command = []
    escaped = False
    for character in text:
        if escaped:
            if character == "%":
                command[-1] = "%"
            else:
                command.append(character)
            escaped = False
            continue
        if character == "%":
            break
        command.append(character)
        escaped = character == "\\"
    return "".join(command)


# -- the schedule -------------------------------------------------------------

def schedule_every(seconds):
    """The cron schedule that runs every ``seconds``: ``*/5 * * * *``.

    Cron counts whole minutes from the top of the hour, so only periods
    that divide an hour or a day come round evenly.
    """
    minutes, rest = divmod(round(seconds), 60)
    if 1 <= minutes < 60 and not rest and 60 % minutes == 0:
        return "* * * * *" if minutes == 1 else f"*/{minutes} * * * *"

    hours, rest = divmod(minutes, 60)
    if hours >= 1 and not rest and 24 % hours == 0:
        if hours == 24:
            return "0 0 * * *"
        return "0 * * * *" if hours == 1 else f"0 */{hours} * * *"
    raise CronError(
        f"cron cannot run every {human_period(seconds)} evenly: take a "
        "period that divides an hour (1m 2m 3m 4m 5m 6m 10m 12m 15m 20m "
        "30m) or a day (1h 2h 3h 4h 6h 8h 12h 24h)")


def schedule_period(schedule):
    """Shortest seconds between two runs of a cron schedule.

    Minutes and hours decide it; day, month and weekday fields only
    lengthen some gaps. None for ``@reboot``.
    """
    from crontab import CronSlices

    if schedule.startswith("@"):
        if schedule not in _SPECIAL_PERIODS:
            raise CronError(f"unknown cron schedule {schedule!r}")
        return _SPECIAL_PERIODS[schedule]
    if not CronSlices.is_valid(schedule):
        raise CronError(f"not a valid cron schedule: {schedule!r}")

    fields = schedule.split()
    minutes = _field_values(fields[0], 0, 59)
    hours = _field_values(fields[1], 0, 23)
    moments = sorted(hour * 60 + minute
                     for hour in hours for minute in minutes)
    gaps = [later - earlier for earlier, later in zip(moments, moments[1:])]
    gaps.append(moments[0] + 24 * 60 - moments[-1])
    return min(gaps) * 60


def _field_values(text, low, high):
    """The numbers a minute or hour field names (already validated)."""
    values = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (int(bound) for bound in span.split("-"))
        else:
            first = int(span)
            last = high if step else first
        values.update(range(first, last + 1, int(step or 1)))
    return values


def human_period(seconds):
    """``5m``, ``2h``, ``90s``: a period as --every takes it."""
    seconds = round(seconds)
    if seconds % 3600 == 0 and seconds:
        return f"{seconds // 3600}h"
    if seconds % 60 == 0 and seconds:
        return f"{seconds // 60}m"
    return f"{seconds}s"


# -- the command --------------------------------------------------------------

def watchdog_command(config_path, options=(), environ=os.environ,
                     crontab_text=None, program=None):
    """The shell command of the entry: ``watchdog check -c FILE ...``.

    ``options`` follow ``check`` verbatim. ``program`` is the argv that
    runs the watchdog (default: ``watchdog_program()``). HOME and
    XDG_STATE_HOME are set on the line when ``environ`` has them other
    than cron would (``cron_environment`` of ``crontab_text`` for this
    configuration's entry), so that the cron runs and the user's share
    one state directory.
    """
    cron_environ = cron_environment(crontab_text,
                                    owner=paths.config_id(config_path))
    pinned = pinned_environment(environ, cron_environ)
    if program is None:
        program, extra = watchdog_program(dict(cron_environ, **pinned))
        pinned.update(extra)

    # -c after `check`: argparse lets a subcommand's own default replace
    # a -c given before the subcommand.
    config_path = os.path.abspath(os.fspath(config_path))
    argv = list(program) + ["check", "-c", config_path] + list(options)
    words = [f"{name}={shlex.quote(value)}"
             for name, value in pinned.items()]
    words += [shlex.quote(word) for word in argv]
    return " ".join(words)


def cron_environment(crontab_text=None, user=None, owner=ANY):
    """The environment cron gives the entry of the configuration id
    ``owner`` (default: drover's first entry) in this crontab; ``user``
    is a password entry (default: this process's user).

    Variable lines of the crontab (``NAME = value``) override the
    defaults, as crontab(5) says; the last one of a name wins.
    """
    account = pwd.getpwuid(os.getuid()) if user is None else user
    environ = {"HOME": account.pw_dir, "LOGNAME": account.pw_name,
               "SHELL": CRON_SHELL, "PATH": CRON_PATH}

    # Only the lines above the entry apply to it (or all, when it is
    # still to be appended).
    lines = (crontab_text or "").split("\n")
    found = find_entries(crontab_text, owner)
    if found:
        lines = lines[:found[0][0]]
    for line in lines:
        match = _VARIABLE.match(line)
        if match:
            environ[match.group(1)] = _unquote(match.group(2))
    return environ


def _unquote(value):
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


def pinned_environment(environ, cron_environ):
    """The variables the line must set for the user's home and state."""
    pinned = {}
    home = environ.get("HOME")
    if home and home != cron_environ.get("HOME"):
        pinned["HOME"] = home

    # Compare where the state lands, not the variables: an unset
    # XDG_STATE_HOME and one that names the default are the same place.
    wanted = paths.state_dir(environ)
    under_cron = paths.state_dir(dict(cron_environ, **pinned))
    if wanted != under_cron:
        pinned["XDG_STATE_HOME"] = str(wanted.parent)
    return pinned


def watchdog_program(cron_environ=None, argv0=None):
    """``(argv, environment)`` that run this drover's watchdog under cron.

    In order: the script running now (``sys.argv[0]``), drover's
    ``watchdog`` on PATH, else this interpreter with ``-m drover.watchdog``
    (and PYTHONPATH when cron's interpreter would not find this drover).
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if argv0 and _is_watchdog_script(argv0):
        # abspath, not realpath: a stable link such as
        # /usr/local/bin/watchdog outlives the versioned file it names.
        return [os.path.abspath(argv0)], {}

    # Every `watchdog` on PATH, not only the first: a pyenv shim or the
    # hardware watchdog daemon may come before drover's.
    for folder in os.get_exec_path():
        found = os.path.join(folder, "watchdog")
        if _is_watchdog_script(found):
            return [os.path.abspath(found)], {}

    # sys.executable as it is: a venv's python must stay the link inside
    # the venv, or the venv's packages are not seen.
    extra = {}
    source = str(Path(__file__).resolve().parent.parent.parent)
    if not _finds_this_drover(sys.executable, source, cron_environ):
        extra["PYTHONPATH"] = source
    return [sys.executable, "-m", "drover.watchdog"], extra


def _is_watchdog_script(path):
    if path.endswith(".py") or not os.path.isfile(path) or \
            not os.access(path, os.X_OK):
        return False
    try:
        with open(path, "rb") as file:
            head = file.read(4096)
    except OSError:
        return False
    return head.startswith(b"#!") and _SCRIPT_SIGN in head


def _finds_this_drover(python, source, cron_environ):
    """Whether ``python`` run as cron would import drover from source."""
    environ = cron_environ or cron_environment()
    probe = "import drover, os; print(os.path.dirname(drover.__path__[0]))"
    try:
        found = subprocess.run(
            [python, "-c", probe], cwd="/", env=environ, timeout=60,
            stdin=subprocess.DEVNULL, capture_output=True, text=True)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return found.returncode == 0 and \
        os.path.realpath(found.stdout.strip()) == os.path.realpath(source)


# -- the crontab as text ------------------------------------------------------

def find_entries(text, owner=ANY):
    """``[(line index, Entry)]`` of drover's lines in a crontab text;
    only those of the configuration id ``owner`` when it is given."""
    found = []
    for index, line in enumerate((text or "").split("\n")):
        entry = Entry.parse(line)
        if entry is not None and (owner is ANY or entry.owner == owner):
            found.append((index, entry))
    return found


def with_entry(text, entry):
    """``text`` with ``entry`` put in: the first line of its
    configuration replaced in place, any other one of it dropped, else
    the line appended. Other lines, drover's included, stay."""
    lines = (text or "").split("\n")
    found = [index for index, _ in find_entries(text, entry.owner)]
    if not found:
        # A crontab ends with a newline (crontab refuses it otherwise), so
        # the split leaves an empty last item to put the line before.
        if lines[-1] == "":
            lines.pop()
        return "\n".join(lines + [entry.line, ""])

    if len(found) > 1:
        log.warning("crontab held %d drover entries for %s; kept one",
                    len(found), entry.owner)
    lines[found[0]] = entry.line
    for index in reversed(found[1:]):
        del lines[index]
    return "\n".join(lines)


def without_entry(text, owner):
    """``text`` without the lines of the configuration id ``owner``;
    every other byte as it was."""
    lines = (text or "").split("\n")
    for index, _ in reversed(find_entries(text, owner)):
        del lines[index]
    return "\n".join(lines)


# -- the user's crontab -------------------------------------------------------

@dataclass(frozen=True)
class Change:
    """What ``install`` or ``remove`` did to the crontab."""

    entry: Optional[Entry]        # the configuration's entry now (None:
                                  # removed)
    previous: Optional[Entry]     # its entry before
    written: bool                 # the crontab was rewritten


def read_crontab():
    """The user's crontab (``crontab -l``), or None when there is none."""
    result = _run_crontab(["-l"])
    if result.returncode == 0:
        return _text(result.stdout)
    error = _text(result.stderr).strip()
    if result.returncode == 1 and error.startswith("no crontab for"):
        return None
    raise CronError(f"crontab -l failed: {error or result.returncode}")


def write_crontab(text):
    """Replace the user's crontab with ``text``; empty text removes it."""
    if not text:
        result = _run_crontab(["-r"])
        error = _text(result.stderr).strip()
        if result.returncode != 0 and not error.startswith("no crontab"):
            raise CronError(f"crontab -r failed: {error}")
        return

    result = _run_crontab(["-"], text.encode("utf-8", "surrogateescape"))
    if result.returncode != 0:
        # crontab names the problem ("command too long", a bad minute).
        error = " ".join(_text(result.stderr).split())
        raise CronError(f"crontab refused the new table: {error}")


def installed(owner=ANY):
    """The entry of the configuration id ``owner`` in the user's crontab
    (without one: drover's first entry), or None."""
    found = find_entries(read_crontab(), owner)
    return found[0][1] if found else None


def install(schedule, config_path, options=(), environ=os.environ,
            program=None):
    """Put the entry of the configuration ``config_path`` in the user's
    crontab, or update it in place; other entries stay.

    Idempotent: the crontab is written only when the line changes.
    """
    text = read_crontab()
    command = watchdog_command(config_path, options, environ, text,
                               program)
    entry = Entry(schedule, command, id=paths.config_id(config_path))
    found = find_entries(text, entry.owner)
    previous = found[0][1] if found else None

    new_text = with_entry(text, entry)
    written = new_text != text
    if written:
        write_crontab(new_text)
        log.info("%s crontab entry: %s",
                 "updated" if previous else "added", entry.line)
    return Change(entry, previous, written)


def remove(owner):
    """Take the entry of the configuration id ``owner`` out of the
    user's crontab; every other line stays."""
    text = read_crontab()
    found = find_entries(text, owner)
    if not found:
        return Change(None, None, False)

    write_crontab(without_entry(text, owner))
    log.info("removed crontab entry: %s", found[0][1].line)
    return Change(None, found[0][1], True)


def _run_crontab(arguments, data=None):
    # The C locale keeps crontab's messages in the words matched above.
    environ = dict(os.environ, LC_ALL="C")
    try:
        return subprocess.run([CRONTAB] + arguments, input=data,
                              capture_output=True, env=environ,
                              timeout=60)
    except FileNotFoundError:
        raise CronError(f"no {CRONTAB} command: is cron installed? "
                        "(Debian: apt-get install cron)") from None
    except subprocess.TimeoutExpired:
        raise CronError(f"{CRONTAB} {' '.join(arguments)} did not answer "
                        "within 60s") from None


def _text(data):
    # surrogateescape: bytes that are not UTF-8 come back as they were.
    return data.decode("utf-8", "surrogateescape")
