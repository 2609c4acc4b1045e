"""Where drover keeps its own files on the control host.

Each configuration file has its own state directory below the state
directory (``config_state_dir``): its history, run lock, spool and run
log. Two configurations never share a history, a lock or a crontab
entry; their id (``config_id``) names both the directory and the entry.

Cron may start the watchdog with a bare environment (``env -i``, or no
HOME at all), so the home directory falls back to the password database
rather than to a guess. Every function takes the environment as an
argument, so tests hand in their own.
"""

import hashlib
import os
import pwd
import re
from pathlib import Path

from drover.errors import StateError

APP_NAME = "drover"

# What a configuration's file stem keeps in its id; the rest becomes "_".
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_STEM_LENGTH = 48


def home_dir(environ=os.environ):
    """$HOME, or the home directory of the user's password entry."""
    home = environ.get("HOME")
    if home:
        return Path(home)
    try:
        return Path(pwd.getpwuid(os.getuid()).pw_dir)
    except KeyError:
        raise StateError(
            f"no home directory: HOME is unset and uid {os.getuid()} "
            "has no password entry") from None


def state_dir(environ=os.environ):
    """$XDG_STATE_HOME/drover, by default ~/.local/state/drover."""
    return _xdg_dir(environ, "XDG_STATE_HOME", ".local/state")


def config_dir(environ=os.environ):
    """$XDG_CONFIG_HOME/drover, by default ~/.config/drover."""
    return _xdg_dir(environ, "XDG_CONFIG_HOME", ".config")


def ensure_state_dir(environ=os.environ):
    """The state directory, created 0700 if it did not exist yet."""
    return _ensure_private(state_dir(environ))


def config_id(config_path):
    """``drover-1a2b3c4d``: the name of one configuration's state.

    The stem of the file (letters, digits, ``_ . -`` kept, any other
    character as ``_``) and the first 8 hex digits of the sha256 of its
    resolved absolute path: two ``drover.toml`` in two folders differ,
    a link and the file it names are one. The file need not exist.
    """
    resolved = _resolved(config_path)
    digest = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:8]
    stem = Path(resolved).stem
    stem = _UNSAFE.sub("_", stem).lstrip(".")[:_STEM_LENGTH] or APP_NAME
    return f"{stem}-{digest}"


def config_state_dir(config_path, environ=os.environ):
    """``STATE_DIR/<config_id>``: the control-host state of one
    configuration (history, run lock, spool, run log)."""
    return state_dir(environ) / config_id(config_path)


def ensure_config_state_dir(config_path, environ=os.environ):
    """``config_state_dir``, created 0700 (and its parent) if missing."""
    ensure_state_dir(environ)
    return _ensure_private(config_state_dir(config_path, environ))


def _resolved(config_path):
    path = os.path.abspath(os.fspath(config_path))
    try:
        return str(Path(path).resolve())
    except (OSError, RuntimeError):
        # A loop of links: the absolute path still names one file.
        return path


def _ensure_private(path):
    try:
        if not path.is_dir():
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            # mkdir's mode passes through the umask; set it outright.
            path.chmod(0o700)
    except OSError as error:
        raise StateError(
            f"cannot create the state directory {path}: "
            f"{error.strerror}") from None
    return path


def _xdg_dir(environ, variable, default):
    # The XDG Base Directory spec says to ignore a relative path in these
    # variables, and an empty one means unset.
    base = environ.get(variable, "")
    if not os.path.isabs(base):
        base = home_dir(environ) / default
    return Path(base) / APP_NAME
