"""Where drover keeps its own files on the control host.

Cron may start the watchdog with a bare environment (``env -i``, or no
HOME at all), so the home directory falls back to the password database
rather than to a guess. Every function takes the environment as an
argument, so tests hand in their own.
"""

import os
import pwd
from pathlib import Path

from drover.errors import StateError

APP_NAME = "drover"


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
    path = state_dir(environ)
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
