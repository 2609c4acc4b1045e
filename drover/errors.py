"""The exceptions drover raises; each carries what explains it.

The CLI turns any of these into one line on stderr,
``PROG: CATEGORY: detail``; ``category`` below names the kind.
"""


class DroverError(Exception):
    """Base of every error drover reports to its user."""

    category = "error"


class ConfigError(DroverError):
    """The configuration file is missing, unreadable or wrong."""

    category = "config"

    def __init__(self, message, path=None, key=None, line=None):
        self.path = path
        self.key = key
        self.line = line
        where = []
        if path:
            where.append(str(path) if line is None else f"{path}:{line}")
        if key:
            where.append(key)
        prefix = ": ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class HostPatternError(DroverError):
    """A host pattern such as ``crawl[01-40]`` does not parse."""

    category = "hosts"


class TransportError(DroverError):
    """A host could not be reached, authenticated or talked to."""

    category = "ssh"

    # One of the outcome names of drover.transport (e.g. "refused").
    outcome = "error"

    def __init__(self, message, outcome=None):
        super().__init__(message)
        if outcome:
            self.outcome = outcome


class CommandTimeout(TransportError):
    """A remote command ran past its deadline and was abandoned."""

    outcome = "timed out"


class AgentError(DroverError):
    """The agent on a host failed or answered something unreadable."""

    category = "agent"

    def __init__(self, message, status=None, stderr_tail=()):
        super().__init__(message)
        self.status = status
        self.stderr_tail = list(stderr_tail)


class StateError(DroverError):
    """Control-host state (history database, spool) is damaged."""

    category = "state"


class LockBusy(DroverError):
    """Another watchdog run holds the lock."""

    category = "lock"


class NotifyError(DroverError):
    """A notification could not be delivered."""

    category = "notify"


class CronError(DroverError):
    """The crontab could not be read or written, or cannot hold a line."""

    category = "cron"
