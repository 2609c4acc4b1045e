"""The configuration file: TOML in, a checked ``Config`` out.

Everything the user can get wrong is caught here, before any host is
contacted, and every error names the file, the line when it can be
found, the dotted key and what was expected::

    drover.toml:14: program.crawler.count: expected a whole number >= 0,
    got "eight"

Local paths (the ssh files, templates, the apprise file) are resolved
against the configuration file's folder at load time; remote paths
(working directories, logs, the hosts' state directory) stay as written.
"""

from __future__ import annotations

import datetime
import difflib
import json
import math
import os
import re
import signal
import string
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

from drover import hostlist, paths
from drover.errors import ConfigError, HostPatternError

FILE_NAME = "drover.toml"

# The names a command, working directory, log path or environment value
# may hold in braces; every other one is a typo caught at load time.
PLACEHOLDERS = ("instance", "host", "program")

# Group and program names become file names, and show in dotted keys.
_PROGRAM_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")
_PROGRAM_NAME_RULE = 'letters, digits, "_", "." and "-", not led by "."'
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


# -- the data model -----------------------------------------------------------

@dataclass(frozen=True)
class SshSettings:
    """How the hosts are reached: the [ssh] table."""

    config_file: Optional[Path] = None
    known_hosts: Path = field(
        default_factory=lambda: Path.home() / ".ssh" / "known_hosts")
    user: Optional[str] = None
    identity_file: Optional[Path] = None
    connect_timeout: float = 10.0
    deadline: float = 120.0
    parallel: int = 64
    accept_new_host_keys: bool = False
    python: str = "python3"
    state_dir: str = "~/.local/state/drover"


@dataclass(frozen=True)
class Program:
    """One [program.NAME] table: what to run, where, and how many."""

    name: str
    command: tuple[str, ...]
    # Both left out of the hash: a dict is unhashable, and a tuple of
    # thousands of hosts would be hashed anew for every Instance key.
    hosts: tuple[str, ...] = field(default=(), hash=False)
    count: int = 1
    workdir: str = "~"
    env: dict[str, str] = field(default_factory=dict, hash=False)
    stdout: Optional[str] = None
    stderr: Optional[str] = None
    stop_signal: str = "TERM"
    stop_timeout: float = 30.0
    start_seconds: float = 2.0
    umask: str = "022"

    def start_spec(self, host, number):
        """The agent's start spec of one instance (docs/internals.md)."""
        values = {"instance": number, "host": host, "program": self.name}

        def fill(template):
            return None if template is None else template.format_map(values)

        return {
            "program": self.name,
            "instance": number,
            "argv": [fill(item) for item in self.command],
            "workdir": fill(self.workdir),
            "env": {name: fill(value) for name, value in self.env.items()},
            "stdout": fill(self.stdout),
            "stderr": fill(self.stderr),
            "umask": self.umask,
        }


@dataclass(frozen=True)
class Instance:
    """One process the configuration expects: a program's number on a host."""

    host: str
    program: Program
    number: int

    @property
    def name(self):
        """``crawler.3``"""
        return f"{self.program.name}.{self.number}"

    def start_spec(self):
        """The agent's start spec of this instance."""
        return self.program.start_spec(self.host, self.number)

    def __str__(self):
        return f"{self.name} on {self.host}"


@dataclass(frozen=True)
class WatchdogSettings:
    """The [watchdog] table; sizes in bytes, durations in seconds."""

    respawn: bool = False
    max_restarts: int = 3
    restart_window: float = 3600.0
    deadline: float = 240.0
    min_free_disk: Optional[int] = None
    min_free_memory: Optional[int] = None
    remind_every: Optional[float] = None
    heartbeat: Optional[datetime.time] = None


@dataclass(frozen=True)
class ReportSettings:
    """The [report] table: a folder of templates overriding the shipped."""

    templates: Optional[Path] = None


@dataclass(frozen=True)
class EmailServer:
    """A mail server given as a table in ``notify.email``."""

    host: str
    to: tuple[str, ...]
    port: int = 587
    security: str = "starttls"
    user: Optional[str] = None
    password: Optional[str] = field(default=None, repr=False)
    password_file: Optional[Path] = None
    sender: Optional[str] = None


@dataclass(frozen=True)
class NotifySettings:
    """The [notify] table. URLs hold secrets: they stay out of repr()."""

    email: tuple[Union[str, EmailServer], ...] = field(
        default=(), repr=False)
    urls: tuple[str, ...] = field(default=(), repr=False)
    config: Optional[Path] = None


@dataclass(frozen=True)
class Config:
    """A checked configuration: hosts, programs, and the settings.

    ``expected()`` is what should run, host by program by number::

        >>> config = load_text('''
        ... [hosts]
        ... crawlers = ["crawl[01-02]"]
        ... [program.crawler]
        ... command = ["crawler", "--id", "{instance}"]
        ... count = 2
        ... ''', "/etc/drover/drover.toml")
        >>> config.hosts
        ('crawl01', 'crawl02')
        >>> for instance in config.expected():
        ...     print(instance, instance.start_spec()["argv"])
        crawler.0 on crawl01 ['crawler', '--id', '0']
        crawler.1 on crawl01 ['crawler', '--id', '1']
        crawler.0 on crawl02 ['crawler', '--id', '0']
        crawler.1 on crawl02 ['crawler', '--id', '1']
    """

    path: Path
    ssh: SshSettings = field(default_factory=SshSettings)
    groups: dict[str, tuple[str, ...]] = field(default_factory=dict)
    hosts: tuple[str, ...] = ()
    programs: dict[str, Program] = field(default_factory=dict)
    watchdog: WatchdogSettings = field(default_factory=WatchdogSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    notify: NotifySettings = field(default_factory=NotifySettings)

    def expected(self, programs=None, hosts=None):
        """Every instance that should run, in configuration order.

        `programs` is a list of program names and `hosts` a list of host
        patterns or group names; None selects all.
        """
        chosen = self._programs_named(programs)
        runs_on = {program.name: set(program.hosts) for program in chosen}
        return [Instance(host, program, number)
                for host in self.hosts_for(None, hosts)
                for program in chosen if host in runs_on[program.name]
                for number in range(program.count)]

    def hosts_for(self, programs=None, hosts=None):
        """The hosts that run any of `programs`, even with count 0.

        A program with count 0 still needs its hosts visited: whatever
        still runs there is to be stopped or reported.
        """
        selected = self.hosts if hosts is None else self.select_hosts(hosts)
        if programs is None:
            return selected
        wanted = set()
        for program in self._programs_named(programs):
            wanted.update(program.hosts)
        return tuple(host for host in selected if host in wanted)

    def select_hosts(self, patterns):
        """The configured hosts that patterns or group names name."""
        if isinstance(patterns, str):
            patterns = [patterns]
        try:
            return _select_hosts(patterns, self.groups, self.hosts)
        except _Invalid as invalid:
            raise ConfigError(str(invalid), self.path) from None

    def _programs_named(self, names):
        if names is None:
            return list(self.programs.values())
        if isinstance(names, str):
            names = [names]
        unknown = [name for name in names if name not in self.programs]
        if unknown:
            known = ", ".join(self.programs) or "none"
            raise ConfigError(
                f'no program named "{unknown[0]}" (programs: {known})',
                self.path)
        return [self.programs[name] for name in dict.fromkeys(names)]


# -- finding and loading ------------------------------------------------------

def find_config(explicit=None, environ=os.environ, cwd=None):
    """The configuration file to load.

    Looked up in order: `explicit` (--config), $DROVER_CONFIG,
    ./drover.toml, then drover.toml in the user's config directory.
    """
    cwd = Path.cwd() if cwd is None else Path(cwd)

    # A file named on purpose must exist: quietly taking another one
    # would act on the wrong cluster.
    named = ((explicit, "--config"),
             (environ.get("DROVER_CONFIG"), "$DROVER_CONFIG"))
    for given, origin in named:
        if given is not None and not str(given).strip() and \
                origin == "--config":
            raise ConfigError("--config names no file (empty)")
        if given:
            path = cwd / _expand_home(str(given), environ)
            if not _is_file(path, origin):
                problem = "is a directory" if path.is_dir() \
                    else "no such file"
                raise ConfigError(f"{problem} (named by {origin})", path)
            return path

    tried = [cwd / FILE_NAME, paths.config_dir(environ) / FILE_NAME]
    for path in tried:
        if _is_file(path, "the default places"):
            return path
    raise ConfigError(
        "no configuration file; tried --config (not given), "
        "$DROVER_CONFIG (not set), " + ", ".join(map(str, tried)))


def _is_file(path, origin):
    """Whether ``path`` is a file; a folder we may not search is an error
    of its own, not a file that is missing."""
    try:
        return path.is_file()
    except OSError as error:
        raise ConfigError(f"cannot look for the file ({error.strerror}; "
                          f"named by {origin})", path) from None


def load(path):
    """The checked configuration of the TOML file at `path`."""
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as error:
        raise ConfigError(f"cannot read: {error.strerror}", path) from None

    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise ConfigError("not UTF-8 text", path, line=line) from None
    return load_text(text, path)


def load_text(text, path):
    """The checked configuration of `text`, as if read from `path`."""
    source = _Source(path, text)
    top = _Table(source, (), _parse_toml(text, path))
    tables = top.read({name: _table for name in (
        "ssh", "hosts", "program", "watchdog", "report", "notify")})

    def table(name):
        return _Table(source, (name,), tables.get(name, {}))

    groups = _read_groups(table("hosts"))
    hosts = tuple(dict.fromkeys(
        host for members in groups.values() for host in members))
    return Config(
        path=Path(os.path.abspath(path)),
        ssh=_read_ssh(table("ssh")),
        groups=groups,
        hosts=hosts,
        programs=_read_programs(table("program"), groups, hosts),
        watchdog=_read_watchdog(table("watchdog")),
        report=_read_report(table("report")),
        notify=_read_notify(table("notify")),
    )


def _parse_toml(text, path):
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        # tomllib puts the place at the end of its message.
        message = str(error)
        place = re.search(r" \(at line (\d+), column (\d+)\)$", message)
        line = None
        if place:
            line = int(place.group(1))
            message = f"{message[:place.start()]} (column {place.group(2)})"
        elif message.endswith(" (at end of document)"):
            line = text.count("\n") + 1
            message = message[:-len(" (at end of document)")]
        raise ConfigError(f"not valid TOML: {message}", path,
                          line=line) from None


def _expand_home(text, environ):
    if text == "~" or text.startswith("~/"):
        return paths.home_dir(environ) / text[2:]
    return Path(text)


# -- the tables ---------------------------------------------------------------

def _read_ssh(table):
    local = _local_path(table.source.folder)
    existing = _local_path(table.source.folder, "file")
    values = table.read({
        "config": existing,
        "known_hosts": local,
        "user": _user_name,
        "identity_file": existing,
        "connect_timeout": _duration(positive=True),
        "deadline": _duration(positive=True),
        "parallel": _whole(1, 1024),
        "accept_new_host_keys": _boolean,
        "python": _command_word,
        "state_dir": _remote_dir,
    })

    # Only the default OpenSSH client config may be missing: a file the
    # user names is meant to be read.
    default = Path(os.path.expanduser("~/.ssh/config"))
    if "config" in values:
        values["config_file"] = values.pop("config")
    elif default.is_file():
        values["config_file"] = default
    return SshSettings(**values)


def _read_groups(table):
    """{group: hosts}, in file order; a group may name other groups."""
    for name in table.data:
        if not _PROGRAM_NAME.fullmatch(name):
            raise table.error(
                name, f'bad group name: expected {_PROGRAM_NAME_RULE}')
    members = table.read({name: _strings for name in table.data})
    groups = {}

    def resolve(name, trail):
        if name in groups:
            return groups[name]
        hosts = []
        for index, item in enumerate(members[name]):
            if item in trail:
                circle = " -> ".join(trail + (item,))
                raise table.error(name, f"groups name each other: {circle}",
                                  (index,))
            if item in members:
                hosts.extend(resolve(item, trail + (item,)))
                continue
            try:
                hosts.extend(hostlist.expand(item))
            except HostPatternError as error:
                raise table.error(name, str(error), (index,)) from None
        groups[name] = tuple(dict.fromkeys(hosts))
        return groups[name]

    return {name: resolve(name, (name,)) for name in members}


def _read_programs(table, groups, hosts):
    programs = {}
    tables = table.read({name: _table for name in table.data})
    for name, data in tables.items():
        if not _PROGRAM_NAME.fullmatch(name):
            raise table.error(
                name, f'bad program name: expected {_PROGRAM_NAME_RULE}')
        programs[name] = _read_program(
            _Table(table.source, table.key + (name,), data), groups, hosts)
    return programs


def _read_program(table, groups, hosts):
    values = table.read({
        "command": _command,
        "hosts": _strings,
        "count": _whole(0),
        "workdir": _path_template,
        "env": _environment,
        "stdout": _path_template,
        "stderr": _path_template,
        "stop_signal": _signal_name,
        "stop_timeout": _duration(),
        "start_seconds": _duration(),
        "umask": _umask,
    })
    if "command" not in values:
        raise table.error("command", "missing: expected an array of strings "
                                     "or a shell command string")

    # Without "hosts" a program runs on every host of [hosts].
    if "hosts" not in values:
        return Program(name=table.key[-1], hosts=hosts, **values)
    try:
        values["hosts"] = _select_hosts(values["hosts"], groups, hosts)
    except HostPatternError as error:
        raise table.error("hosts", str(error)) from None
    except _Invalid as invalid:
        raise table.error("hosts", str(invalid), invalid.where) from None
    return Program(name=table.key[-1], **values)


def _read_watchdog(table):
    values = table.read({
        "respawn": _boolean,
        "max_restarts": _whole(0),
        "restart_window": _duration(positive=True),
        "deadline": _duration(positive=True),
        "min_free_disk": parse_size,
        "min_free_memory": parse_size,
        "remind_every": _duration(),
        "heartbeat": _clock_time,
    })
    if values.get("remind_every") == 0:
        values["remind_every"] = None
    return WatchdogSettings(**values)


def _read_report(table):
    return ReportSettings(**table.read({
        "templates": _local_path(table.source.folder, "directory"),
    }))


def _read_notify(table):
    values = table.read({
        "email": _array,
        "urls": _urls,
        "config": _local_path(table.source.folder, "file"),
    })

    # An email target is a mailto:// URL or a table naming the server.
    email = []
    for index, target in enumerate(values.get("email", ())):
        if isinstance(target, dict):
            key = table.key + ("email", index)
            email.append(_read_email_server(_Table(table.source, key, target)))
        elif isinstance(target, str) and re.match("mailtos?://", target):
            email.append(target)
        else:
            raise table.error("email", "expected a mailto:// or mailtos:// "
                                       "URL or a table {host, to, ...}",
                              (index,))
    values["email"] = tuple(email)
    return NotifySettings(**values)


def _read_email_server(table):
    values = table.read({
        "host": _text,
        "port": _whole(1, 65535),
        "security": _choice("none", "starttls", "ssl"),
        "user": _text,
        "password": _secret,
        "password_file": _local_path(table.source.folder, "file"),
        "from": _text,
        "to": _strings,
    })
    for name in ("host", "to"):
        if name not in values:
            raise table.error(name, "missing: a mail server table needs "
                                    "host and to")
    if "password" in values and "password_file" in values:
        raise table.error("password_file", "give password or password_file, "
                                           "not both")

    # Each security mode has its well-known port (RFC 8314 for "ssl").
    security = values.setdefault("security", "starttls")
    default_port = {"none": 25, "starttls": 587, "ssl": 465}[security]
    values.setdefault("port", default_port)
    if "from" in values:
        values["sender"] = values.pop("from")
    return EmailServer(**values)


def _select_hosts(patterns, groups, inventory):
    """The hosts of `inventory` that `patterns` name, in inventory order.

    A pattern is a group name (first) or a host pattern; a name without
    a port also selects the entries of that host with one.
    """
    entries = {}
    for host in inventory:
        entries.setdefault(host, set()).add(host)
        entries.setdefault(host.partition(":")[0], set()).add(host)

    chosen = set()
    for index, pattern in enumerate(patterns):
        if pattern in groups:
            chosen.update(groups[pattern])
            continue
        names = hostlist.expand(pattern)
        for name in names:
            if name not in entries:
                raise _Invalid(_not_configured(name, pattern, groups),
                               (index,))
            chosen.update(entries[name])
    return tuple(host for host in inventory if host in chosen)


def _not_configured(name, pattern, groups):
    if name == pattern:
        known = ", ".join(groups) or "none"
        return (f'"{name}" is neither a group nor a host of [hosts] '
                f"(groups: {known})")
    return f'"{name}" (of "{pattern}") is not a host of [hosts]'


# -- reading a table key by key -----------------------------------------------

class _Invalid(ValueError):
    """A value its key does not take; `where` leads below the key."""

    def __init__(self, message, where=()):
        super().__init__(message)
        self.where = tuple(where)


class _Source:
    """The file being read: the name errors give, its text, its folder."""

    def __init__(self, path, text):
        self.path = path
        self.text = text
        self.folder = Path(os.path.abspath(path)).parent

    def error(self, key, message):
        return ConfigError(message, self.path, _dotted(key),
                           _line_of(self.text, key))


class _Table:
    """One table of the file; a key it does not know is a typo."""

    def __init__(self, source, key, data):
        self.source = source
        self.key = key
        self.data = data

    def read(self, schema):
        """{key: value} of the keys present, each through its parser."""
        values = {}
        for name, value in self.data.items():
            if name not in schema:
                raise self.error(name, _unknown_key(name, schema))
            try:
                values[name] = schema[name](value)
            except _Invalid as invalid:
                raise self.error(name, str(invalid), invalid.where) from None
        return values

    def error(self, name, message, where=()):
        return self.source.error(self.key + (name,) + tuple(where), message)


def _unknown_key(name, schema):
    close = difflib.get_close_matches(name, list(schema), n=1)
    if close:
        return f'unknown key (did you mean "{close[0]}"?)'
    return "unknown key (known: " + ", ".join(schema) + ")"


def _dotted(key):
    """``program.crawler.hosts[2]`` from its path."""
    text = ""
    for part in key:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else part
    return text or None


# -- where a key is written ---------------------------------------------------

_KEY_PART = re.compile(
    r"""\s*(?:([A-Za-z0-9_-]+)|"((?:[^"\\]|\\.)*)"|'([^']*)')\s*""")


def _line_of(text, key):
    """The line that sets `key`, or its nearest table; None if not seen.

    Best effort: a line scan of table headers and ``key =`` lines, which
    multi-line strings can fool. Arrays of tables count their items.
    """
    best, best_length = None, 0
    table = ()
    array_items = {}
    for number, line in enumerate(text.split("\n"), 1):
        line = line.lstrip()
        if line.startswith("["):
            double = line.startswith("[[")
            found, rest = _key_path(line[2 if double else 1:])
            if found is None or not rest.startswith("]"):
                continue
            if double:
                array_items[found] = array_items.get(found, -1) + 1
                found += (array_items[found],)
            table = found
        else:
            found, rest = _key_path(line)
            if found is None or not rest.startswith("="):
                continue
            found = table + found

        # A line counts by how much of the key it spells out; a table
        # header below the key ([program.x] for "program") spells it all.
        length = min(len(found), len(key))
        if found[:length] == key[:length] and length > best_length:
            best, best_length = number, length
    return best


def _key_path(text):
    """The dotted TOML key at the start of `text`, and what follows."""
    parts = []
    position = 0
    while True:
        match = _KEY_PART.match(text, position)
        if not match:
            return None, text
        bare, basic, literal = match.groups()
        if basic is not None:
            try:
                basic = json.loads(f'"{basic}"')
            except ValueError:
                pass
        parts.append(next(part for part in (bare, basic, literal)
                          if part is not None))
        position = match.end()
        if not text.startswith(".", position):
            return tuple(parts), text[position:]
        position += 1


# -- values -------------------------------------------------------------------

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?\s*[smhdw]\s*)+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])")
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_SIZE_POWER = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4}


def parse_duration(value):
    """Seconds from 90, 1.5, "90s", "5m", "1h30m", "2d"; ValueError else."""
    if _is_number(value) and math.isfinite(value) and value >= 0:
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            return float(text)
        if _DURATION.fullmatch(text):
            return float(sum(float(amount) * _UNIT_SECONDS[unit]
                             for amount, unit in _DURATION_PART.findall(text)))
    raise _wrong('a duration such as 30, "30s", "5m", "1h30m" or "2d"', value)


def parse_size(value):
    """Bytes from 4096, "512K", "500M", "2G", "1T" (powers of 1024)."""
    if _is_number(value) and isinstance(value, int) and value >= 0:
        return value
    if isinstance(value, str):
        match = _SIZE.fullmatch(value.strip())
        if match:
            amount, unit = match.groups()
            return int(float(amount) * 1024 ** _SIZE_POWER[unit.upper()])
    raise _wrong('a size in bytes, or such as "512K", "500M", "2G"', value)


def _wrong(expected, value):
    return _Invalid(f"expected {expected}, got {_show(value)}")


def _show(value):
    """A value as the user wrote it, near enough: ``"eight"``, ``true``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        shown = json.dumps(value, ensure_ascii=False)
        return shown if len(shown) <= 60 else shown[:55] + '[...]"'
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array" if value else "an empty array"
    return f"the {type(value).__name__} {value}"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _table(value):
    if not isinstance(value, dict):
        raise _wrong("a table", value)
    return value


def _array(value):
    if not isinstance(value, list):
        raise _wrong("an array", value)
    return value


def _boolean(value):
    if not isinstance(value, bool):
        raise _wrong("true or false", value)
    return value


def _text(value):
    if not isinstance(value, str) or not value.strip():
        raise _wrong("a non-empty string", value)
    return value


def _remote_dir(value):
    """A folder on the hosts, as written: no placeholders expand there."""
    text = _text(value)
    if "{" in text or "}" in text:
        raise _Invalid(f"expected a path without placeholders (records "
                       f"are kept per host already), got {_show(value)}")
    return text


def _secret(value):
    # Never echo it: error messages end up in logs and mails.
    if not isinstance(value, str) or not value:
        raise _Invalid("expected a non-empty string (value not shown)")
    return value


def _strings(value):
    """A tuple of non-empty strings; a lone string is a one-item array."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise _wrong("an array of strings", value)
    for index, item in enumerate(value):
        if not isinstance(item, str) or not item.strip():
            raise _Invalid(str(_wrong("a non-empty string", item)),
                           (index,))
    return tuple(value)


def _urls(value):
    items = _strings(value)
    for index, url in enumerate(items):
        # Not shown: an apprise URL usually carries a token or password.
        if not re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", url):
            raise _Invalid("expected an apprise URL such as "
                           '"slack://..." (value not shown)', (index,))
    return items


def _choice(*choices):
    expected = " or ".join(f'"{choice}"' for choice in choices)

    def parse(value):
        if value not in choices:
            raise _wrong(expected, value)
        return value

    return parse


def _whole(low, high=None):
    if high is None:
        expected = f"a whole number >= {low}"
    else:
        expected = f"a whole number from {low} to {high}"

    def parse(value):
        if not (_is_number(value) and isinstance(value, int)
                and value >= low and (high is None or value <= high)):
            raise _wrong(expected, value)
        return value

    return parse


def _duration(positive=False):
    def parse(value):
        seconds = parse_duration(value)
        if positive and seconds == 0:
            raise _wrong("a duration above 0", value)
        return seconds

    return parse


def _clock_time(value):
    """A time of day, "08:00"; TOML's own 08:00:00 is taken as well."""
    if isinstance(value, datetime.time):
        return value
    match = isinstance(value, str) and re.fullmatch(
        r"([01]?[0-9]|2[0-3]):([0-5][0-9])", value.strip())
    if not match:
        raise _wrong('a time of day "HH:MM"', value)
    return datetime.time(int(match.group(1)), int(match.group(2)))


def _signal_name(value):
    """"TERM" from "TERM", "sigterm", 15 or "15"."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if _is_number(value) and isinstance(value, int):
        try:
            return signal.Signals(value).name[3:]
        except ValueError:
            pass
    elif isinstance(value, str):
        name = value.strip().upper()
        name = name if name.startswith("SIG") else "SIG" + name
        if name in signal.Signals.__members__:
            return signal.Signals[name].name[3:]
    raise _wrong('a signal name or number such as "TERM" or 15', value)


def _umask(value):
    # A TOML number would be read in decimal (umask = 22 is 0o026), so
    # only the octal string is taken.
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{1,3}", value):
        return format(int(value, 8), "03o")
    raise _wrong('an octal string such as "022"', value)


def _user_name(value):
    if not isinstance(value, str) or not re.fullmatch(r"[^\s@-][^\s@]*",
                                                      value):
        raise _wrong("a user name", value)
    return value


def _command_word(value):
    # It goes on the remote command line: one word, no shell syntax.
    word = r"[A-Za-z0-9_./+][A-Za-z0-9_./+-]*"
    if not isinstance(value, str) or not re.fullmatch(word, value):
        raise _wrong('a program name or path such as "python3"', value)
    return value


def _local_path(folder, kind=None):
    """A parser of control-host paths; a "file" or "directory" must exist."""

    def parse(value):
        path = Path(os.path.expanduser(_text(value)))
        if not path.is_absolute():
            path = folder / path
        if kind == "file" and not path.is_file():
            raise _Invalid(f"no such file: {path}")
        if kind == "directory" and not path.is_dir():
            raise _Invalid(f"no such directory: {path}")
        return path

    return parse


def _command(value):
    """A tuple argv; a string is a shell command, run by /bin/sh -c."""
    if isinstance(value, str) and value.strip():
        return ("/bin/sh", "-c", _template(value))
    if not isinstance(value, list) or not value:
        raise _wrong("an array of strings or a shell command string", value)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise _Invalid(str(_wrong("a string", item)), (index,))
        try:
            _template(item)
        except _Invalid as invalid:
            raise _Invalid(str(invalid), (index,)) from None
    if not value[0].strip():
        raise _Invalid("expected a program to run, got an empty string",
                       (0,))
    return tuple(value)


def _environment(value):
    if not isinstance(value, dict):
        raise _wrong("a table of NAME = \"value\"", value)
    for name, item in value.items():
        if not _ENV_NAME.fullmatch(name):
            raise _Invalid("expected a variable name (letters, digits, "
                           "\"_\"; not starting with a digit)", (name,))
        if not isinstance(item, str):
            raise _Invalid(str(_wrong("a string", item)), (name,))
        try:
            _template(item)
        except _Invalid as invalid:
            raise _Invalid(str(invalid), (name,)) from None
    return dict(value)


def _path_template(value):
    return _template(_text(value))


def _template(value):
    """A string whose placeholders are all known; braces doubled."""
    if not isinstance(value, str):
        raise _wrong("a string", value)
    try:
        fields = list(string.Formatter().parse(value))
    except ValueError:
        raise _Invalid(f"unbalanced brace in {_show(value)}; write "
                       '"{{" or "}}" for a literal one') from None

    for _, name, _, _ in fields:
        if name is not None and name not in PLACEHOLDERS:
            known = ", ".join("{%s}" % known for known in PLACEHOLDERS)
            raise _Invalid(f'unknown placeholder "{{{name}}}" in '
                           f"{_show(value)} (known: {known}; write "
                           '"{{" or "}}" for a literal brace)')

    # A format spec is allowed ({instance:02d}); try it on sample values.
    try:
        value.format(instance=0, host="host", program="program")
    except (ValueError, TypeError, KeyError, IndexError) as error:
        raise _Invalid(f"bad placeholder in {_show(value)}: {error}") \
            from None
    return value
