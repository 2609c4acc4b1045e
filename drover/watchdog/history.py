"""What the watchdog remembers between runs, in SQLite on the control host.

The hosts are the truth about what runs now; this database is the memory
that a single look cannot give: the boot id each host had last time, each
instance's last known state, the respawns within the restart window, the
quarantined instances, every check's verdict, and the alerts' own state
(``get_meta``/``set_meta``).

Per check it keeps one row (time, duration, verdict) and, to stay small on
thousands of hosts every five minutes, only the *changes* of host outcomes
and instance states: the state of anything at check N is its last event at
or before N. The full result of the last few checks is kept for
``watchdog report --from-last``.

Each configuration has its own history, in its own state directory
(``drover.paths.config_state_dir``)::

    with History.open(config_path=config.path) as history:
        previous = history.snapshot(now)
        ...
        history.record_check(result, updates)
"""

import contextlib
import functools
import json
import logging
import os
import sqlite3
import time
import zlib
from dataclasses import dataclass, field
from typing import Optional

from drover.errors import StateError

log = logging.getLogger(__name__)

HISTORY_NAME = "history.sqlite3"

# Seconds a writer waits for another (a report reading, a release) before
# giving up; runs themselves never overlap (drover.cron.lock).
BUSY_TIMEOUT = 10.0

# Full results kept for reports; check rows, events and respawns kept for
# this long.
RESULTS_KEPT = 20
RETENTION = 90 * 86400

# The schema grows by appending a step; a database at version N runs the
# steps after N, in one transaction. Never edit a step once released.
MIGRATIONS = [
    # 1: checks, host and instance memory, respawns, quarantine.
    """
    CREATE TABLE checks (
        id INTEGER PRIMARY KEY,
        started_at REAL NOT NULL,
        duration REAL NOT NULL,
        status INTEGER NOT NULL,
        summary TEXT NOT NULL,
        result BLOB              -- zlib'd JSON, only for the latest checks
    );
    CREATE INDEX checks_by_time ON checks (started_at);

    CREATE TABLE hosts (
        host TEXT PRIMARY KEY,
        outcome TEXT NOT NULL,
        state TEXT NOT NULL,
        boot_id TEXT,            -- last one seen; kept while unreachable
        checked_at REAL NOT NULL
    );
    CREATE TABLE host_events (
        check_id INTEGER NOT NULL,
        host TEXT NOT NULL,
        outcome TEXT NOT NULL,
        state TEXT NOT NULL,
        boot_id TEXT,
        error TEXT
    );
    CREATE INDEX host_events_by_check ON host_events (check_id);

    CREATE TABLE instances (
        host TEXT NOT NULL,
        program TEXT NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,     -- last known; "unknown" never overwrites
        reason TEXT,
        pid INTEGER,
        started_at REAL,
        held_pid INTEGER,        -- an incarnation that stayed up long enough
        checked_at REAL NOT NULL,
        PRIMARY KEY (host, program, number)
    ) WITHOUT ROWID;
    CREATE TABLE instance_events (
        check_id INTEGER NOT NULL,
        host TEXT NOT NULL,
        program TEXT NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        reason TEXT,
        pid INTEGER
    );
    CREATE INDEX instance_events_by_check ON instance_events (check_id);

    CREATE TABLE restarts (
        host TEXT NOT NULL,
        program TEXT NOT NULL,
        number INTEGER NOT NULL,
        at REAL NOT NULL,
        result TEXT,
        pid INTEGER
    );
    CREATE INDEX restarts_by_instance ON restarts (host, program, number);

    CREATE TABLE quarantine (
        host TEXT NOT NULL,
        program TEXT NOT NULL,
        number INTEGER NOT NULL,
        since REAL NOT NULL,
        restarts INTEGER NOT NULL,
        pid INTEGER,             -- the record it gave up on, to tell a
        started_at REAL,         -- later start by a person from it
        released_at REAL,
        released_by TEXT,
        PRIMARY KEY (host, program, number)
    ) WITHOUT ROWID;
    """,
    # 2: the alerts' key-value state (drover.watchdog.alerts).
    """
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL      -- JSON
    ) WITHOUT ROWID;
    """,
]
SCHEMA_VERSION = len(MIGRATIONS)


@dataclass
class HostMemory:
    """A host as the last check that asked it left it."""

    outcome: str
    state: str
    boot_id: Optional[str] = None
    checked_at: Optional[float] = None
    error: Optional[str] = None


@dataclass
class InstanceMemory:
    """An instance's last known state (never "unknown")."""

    state: str
    reason: Optional[str] = None
    pid: Optional[int] = None
    started_at: Optional[float] = None
    # The pid of an incarnation known to have stayed up start_seconds:
    # if that one dies, its death does not count as a failed start.
    held_pid: Optional[int] = None
    checked_at: Optional[float] = None


@dataclass
class Quarantine:
    """An instance the watchdog gave up on, until a person acts."""

    since: float
    restarts: int
    pid: Optional[int] = None
    started_at: Optional[float] = None
    released_at: Optional[float] = None
    released_by: Optional[str] = None


@dataclass
class Respawn:
    """One respawn attempt, as the restart limit counts them."""

    key: tuple
    at: float
    result: Optional[str] = None
    pid: Optional[int] = None


@dataclass
class Snapshot:
    """Everything a check needs from the past, read once before it runs.

    Keys of instances are ``(host, program, number)``.
    """

    hosts: dict = field(default_factory=dict)
    instances: dict = field(default_factory=dict)
    quarantine: dict = field(default_factory=dict)
    restarts: dict = field(default_factory=dict)   # key -> [moment, ...]
    last_check: Optional[float] = None

    def restarts_since(self, key, moment):
        return sum(1 for at in self.restarts.get(key, ()) if at >= moment)


@dataclass
class Updates:
    """What one check teaches the history, written in one transaction."""

    hosts: dict = field(default_factory=dict)        # host -> HostMemory
    instances: dict = field(default_factory=dict)    # key -> InstanceMemory
    respawns: list = field(default_factory=list)     # [Respawn]
    reset: set = field(default_factory=set)          # keys: forget respawns
    quarantined: dict = field(default_factory=dict)  # key -> Quarantine
    released: set = field(default_factory=set)       # keys


@dataclass
class CheckRow:
    """One past check, without its full result."""

    id: int
    started_at: float
    duration: float
    status: int
    summary: str


def _guarded(method):
    """SQLite's errors about the file as StateError naming it: never a
    traceback, never silent loss. A broken constraint is drover's own bug
    and stays an internal error."""
    @functools.wraps(method)
    def guarded(self, *args, **kwargs):
        try:
            return method(self, *args, **kwargs)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError):
            raise
        except sqlite3.DatabaseError as error:
            raise self._state_error(error) from None
    return guarded


class History:
    """The watchdog's database; open with ``History.open(...)``."""

    def __init__(self, path, connection):
        self.path = path
        self._db = connection

    @classmethod
    def open(cls, path=None, *, config_path=None):
        """Open (creating, or upgrading the schema of) the history file.

        ``path`` names the file; without it, ``history.sqlite3`` in the
        state directory of the configuration file ``config_path``.
        """
        if path is None:
            path = _default_path(config_path)
        path = os.fspath(path)
        _create_private(path)

        # Autocommit mode: transactions are opened explicitly below.
        connection = sqlite3.connect(path, timeout=BUSY_TIMEOUT,
                                     isolation_level=None)
        history = cls(path, connection)
        try:
            history._prepare()
        except BaseException:
            connection.close()
            raise
        return history

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def close(self):
        if self._db is not None:
            self._db.close()
            self._db = None

    # -- opening --------------------------------------------------------

    @_guarded
    def _prepare(self):
        # WAL lets a report read while a check writes (sqlite.org/wal.html).
        self._db.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT * 1000)}")
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")

        version = self.schema_version()
        if version > SCHEMA_VERSION:
            raise StateError(
                f"{self.path} was written by a newer drover (schema "
                f"{version}; this one knows up to {SCHEMA_VERSION}): upgrade "
                "drover, or move the file aside to start a new history")
        if version < SCHEMA_VERSION:
            self._migrate(version)

    def schema_version(self):
        return self._db.execute("PRAGMA user_version").fetchone()[0]

    def _migrate(self, version):
        with self._transaction():
            # Re-read inside the write lock: another process may have
            # upgraded the file since.
            version = self.schema_version()
            for number in range(version, SCHEMA_VERSION):
                for statement in _statements(MIGRATIONS[number]):
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        if version:
            log.info("upgraded %s from schema %d to %d", self.path, version,
                     SCHEMA_VERSION)

    @contextlib.contextmanager
    def _transaction(self):
        # IMMEDIATE takes the write lock up front: two writers never both
        # read, then deadlock upgrading to write.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _state_error(self, error):
        text = str(error)
        if isinstance(error, sqlite3.OperationalError) and \
                "locked" in text:
            return StateError(f"{self.path} stayed locked by another "
                              f"process for {BUSY_TIMEOUT:g}s ({text})")
        return StateError(
            f"{self.path} is damaged or not a drover history ({text}); "
            "move it aside to start a new history (the hosts keep their "
            "records; only past checks and restart counts are lost)")

    # -- reading --------------------------------------------------------

    @_guarded
    def snapshot(self, now=None, window=None):
        """What a check needs from the past; respawns within ``window``
        seconds before ``now`` (all of them when no window)."""
        now = time.time() if now is None else now
        past = Snapshot()
        for row in self._db.execute(
                "SELECT host, outcome, state, boot_id, checked_at "
                "FROM hosts"):
            past.hosts[row[0]] = HostMemory(row[1], row[2], row[3], row[4])

        for row in self._db.execute(
                "SELECT host, program, number, state, reason, pid, "
                "started_at, held_pid, checked_at FROM instances"):
            past.instances[tuple(row[:3])] = InstanceMemory(*row[3:])

        for row in self._db.execute(
                "SELECT host, program, number, since, restarts, pid, "
                "started_at, released_at, released_by FROM quarantine"):
            past.quarantine[tuple(row[:3])] = Quarantine(*row[3:])

        since = now - window if window is not None else 0
        for row in self._db.execute(
                "SELECT host, program, number, at FROM restarts "
                "WHERE at >= ? ORDER BY at", (since,)):
            past.restarts.setdefault(tuple(row[:3]), []).append(row[3])

        row = self._db.execute("SELECT max(started_at) FROM checks")
        past.last_check = row.fetchone()[0]
        return past

    @_guarded
    def checks(self, limit=10):
        """The latest checks, newest first."""
        rows = self._db.execute(
            "SELECT id, started_at, duration, status, summary FROM checks "
            "ORDER BY started_at DESC, id DESC LIMIT ?", (limit,))
        return [CheckRow(*row) for row in rows]

    @_guarded
    def last_result(self):
        """The full result (``CheckResult.to_dict()``) of the last check
        that kept one, or None."""
        row = self._db.execute(
            "SELECT result FROM checks WHERE result IS NOT NULL "
            "ORDER BY started_at DESC, id DESC LIMIT 1").fetchone()
        if row is None:
            return None
        return json.loads(zlib.decompress(row[0]).decode("utf-8"))

    @_guarded
    def quarantined(self):
        """``{key: Quarantine}`` of the instances still quarantined."""
        rows = self._db.execute(
            "SELECT host, program, number, since, restarts, pid, "
            "started_at, released_at, released_by FROM quarantine "
            "WHERE released_at IS NULL ORDER BY host, program, number")
        return {tuple(row[:3]): Quarantine(*row[3:]) for row in rows}

    @_guarded
    def get_meta(self, key, default=None):
        """A JSON value stored under ``key``, or ``default``."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?",
                               (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    # -- writing --------------------------------------------------------

    @_guarded
    def set_meta(self, key, value):
        """Store a JSON-able value under ``key``, replacing the old one."""
        text = json.dumps(value, sort_keys=True)
        with self._transaction():
            self._db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, text))

    @_guarded
    def release(self, select, by="watchdog release", now=None):
        """Mark quarantined instances released; the next check clears them.

        ``select(key) -> bool`` picks among the quarantined keys. Returns
        the keys released, sorted.
        """
        now = time.time() if now is None else now
        with self._transaction():
            keys = [tuple(row) for row in self._db.execute(
                "SELECT host, program, number FROM quarantine "
                "WHERE released_at IS NULL")]
            chosen = sorted(key for key in keys if select(key))
            self._db.executemany(
                "UPDATE quarantine SET released_at = ?, released_by = ? "
                "WHERE host = ? AND program = ? AND number = ?",
                [(now, by) + key for key in chosen])
        return chosen

    @_guarded
    def record_check(self, result, updates):
        """Store one check: its row, its changes, and what it learned.

        ``result`` needs ``started_at``, ``duration``, ``status``,
        ``summary`` and ``to_dict()`` (a CheckResult). Returns the check id.
        """
        blob = zlib.compress(json.dumps(result.to_dict()).encode("utf-8"))
        with self._transaction():
            check_id = self._db.execute(
                "INSERT INTO checks (started_at, duration, status, summary,"
                " result) VALUES (?, ?, ?, ?, ?)",
                (result.started_at, result.duration, result.status,
                 result.summary, blob)).lastrowid
            self._write_hosts(check_id, updates.hosts)
            self._write_instances(check_id, updates.instances)
            self._write_restarts(updates)
            self._write_quarantine(updates)
            self._prune(check_id, result.started_at)
        return check_id

    def _write_hosts(self, check_id, hosts):
        known = {row[0]: tuple(row[1:]) for row in self._db.execute(
            "SELECT host, outcome, state, boot_id FROM hosts")}
        for host, memory in hosts.items():
            # An unreachable host keeps the boot id it was last seen with:
            # the next answer tells whether it rebooted meanwhile.
            boot_id = memory.boot_id
            if boot_id is None and host in known:
                boot_id = known[host][2]
            current = (memory.outcome, memory.state, boot_id)
            if known.get(host) != current:
                self._db.execute(
                    "INSERT INTO host_events VALUES (?, ?, ?, ?, ?, ?)",
                    (check_id, host) + current + (memory.error,))
            self._db.execute(
                "INSERT INTO hosts (host, outcome, state, boot_id, "
                "checked_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT (host) DO "
                "UPDATE SET outcome = excluded.outcome, state = "
                "excluded.state, boot_id = excluded.boot_id, checked_at = "
                "excluded.checked_at",
                (host,) + current + (memory.checked_at,))

    def _write_instances(self, check_id, instances):
        known = {tuple(row[:3]): row[3] for row in self._db.execute(
            "SELECT host, program, number, state FROM instances")}
        events = []
        rows = []
        for key, memory in instances.items():
            if known.get(key) != memory.state:
                events.append((check_id,) + key +
                              (memory.state, memory.reason, memory.pid))
            rows.append(key + (memory.state, memory.reason, memory.pid,
                               memory.started_at, memory.held_pid,
                               memory.checked_at))
        self._db.executemany(
            "INSERT INTO instance_events VALUES (?, ?, ?, ?, ?, ?, ?)",
            events)
        self._db.executemany(
            "INSERT OR REPLACE INTO instances VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)

    def _write_restarts(self, updates):
        self._db.executemany(
            "DELETE FROM restarts WHERE host = ? AND program = ? AND "
            "number = ?", sorted(updates.reset | updates.released))
        self._db.executemany(
            "INSERT INTO restarts VALUES (?, ?, ?, ?, ?, ?)",
            [respawn.key + (respawn.at, respawn.result, respawn.pid)
             for respawn in updates.respawns])

    def _write_quarantine(self, updates):
        self._db.executemany(
            "DELETE FROM quarantine WHERE host = ? AND program = ? AND "
            "number = ?", sorted(updates.released))
        self._db.executemany(
            "INSERT OR REPLACE INTO quarantine VALUES "
            "(?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [key + (entry.since, entry.restarts, entry.pid,
                    entry.started_at, entry.released_at, entry.released_by)
             for key, entry in updates.quarantined.items()])

    def _prune(self, check_id, now):
        # Events of pruned checks go with them; the current state of
        # everything stays in hosts and instances.
        oldest = now - RETENTION
        row = self._db.execute(
            "SELECT min(id) FROM checks WHERE started_at >= ?",
            (oldest,)).fetchone()
        first_kept = row[0] if row[0] is not None else check_id
        for table in ("host_events", "instance_events"):
            self._db.execute(f"DELETE FROM {table} WHERE check_id < ?",
                             (first_kept,))
        self._db.execute("DELETE FROM checks WHERE id < ?", (first_kept,))
        self._db.execute("DELETE FROM restarts WHERE at < ?", (oldest,))
        self._db.execute(
            "UPDATE checks SET result = NULL WHERE result IS NOT NULL AND "
            "id <= ?", (check_id - RESULTS_KEPT,))

    @_guarded
    def events(self, check_id):
        """``(host events, instance events)`` recorded by one check."""
        hosts = self._db.execute(
            "SELECT host, outcome, state, boot_id, error FROM host_events "
            "WHERE check_id = ? ORDER BY host", (check_id,)).fetchall()
        instances = self._db.execute(
            "SELECT host, program, number, state, reason, pid FROM "
            "instance_events WHERE check_id = ? ORDER BY host, program, "
            "number", (check_id,)).fetchall()
        return hosts, instances


def _default_path(config_path):
    if config_path is None:
        raise TypeError("History.open needs a path or a config_path: "
                        "every configuration has its own history")
    from drover import paths
    return paths.ensure_config_state_dir(config_path) / HISTORY_NAME


def _create_private(path):
    """Create the file 0600 before SQLite does (it would use the umask);
    its -wal and -shm files take the same mode."""
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as error:
        raise StateError(f"cannot open the history {path}: "
                         f"{error.strerror}") from None
    os.close(descriptor)


def _statements(script):
    """The statements of a migration step, for one transaction.

    ``executescript`` would commit first; executing each statement keeps a
    failed upgrade from leaving half a schema.
    """
    statements = []
    pending = ""
    for line in script.splitlines(keepends=True):
        pending += line
        if sqlite3.complete_statement(pending):
            statements.append(pending.strip())
            pending = ""
    return statements

