"""Control-host directories: XDG first, then HOME, then the password file."""

import hashlib
import os
import pwd
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from drover import paths
from drover.errors import StateError

ROOT = Path(__file__).resolve().parent.parent
PASSWORD_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def test_state_dir_follows_xdg_state_home(tmp_path):
    environ = {"XDG_STATE_HOME": str(tmp_path), "HOME": "/nowhere"}

    assert paths.state_dir(environ) == tmp_path / "drover"


def test_state_dir_defaults_under_home():
    environ = {"HOME": "/home/ops"}

    assert paths.state_dir(environ) == Path("/home/ops/.local/state/drover")


@pytest.mark.parametrize("value", ["", "relative/state"])
def test_state_dir_ignores_an_empty_or_relative_xdg_value(value):
    environ = {"XDG_STATE_HOME": value, "HOME": "/home/ops"}

    assert paths.state_dir(environ) == Path("/home/ops/.local/state/drover")


def test_without_home_the_password_entry_gives_it():
    assert paths.home_dir({}) == PASSWORD_HOME
    assert paths.state_dir({}) == PASSWORD_HOME / ".local/state/drover"
    assert paths.config_dir({"HOME": ""}) == PASSWORD_HOME / ".config/drover"


def test_a_cron_like_empty_environment_still_finds_the_state_dir():
    # What `env -i` gives a cron job: no HOME, no XDG variables.
    script = "from drover import paths; print(paths.state_dir())"

    result = subprocess.run([sys.executable, "-c", script], env={},
                            cwd=ROOT, capture_output=True, text=True,
                            check=True)

    assert result.stdout.strip() == str(PASSWORD_HOME / ".local/state/drover")


def test_config_dir_follows_xdg_config_home(tmp_path):
    assert paths.config_dir({"XDG_CONFIG_HOME": str(tmp_path)}) == (
        tmp_path / "drover")
    assert paths.config_dir({"HOME": "/home/ops"}) == Path(
        "/home/ops/.config/drover")


def test_default_environment_is_the_process_one(control_home):
    assert paths.state_dir() == control_home / ".local/state/drover"
    assert paths.config_dir() == control_home / ".config/drover"


def test_ensure_state_dir_creates_it_private_whatever_the_umask(tmp_path):
    old_umask = os.umask(0o277)
    try:
        path = paths.ensure_state_dir({"XDG_STATE_HOME": str(tmp_path)})
    finally:
        os.umask(old_umask)

    assert path == tmp_path / "drover"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_ensure_state_dir_creates_missing_parents(tmp_path):
    environ = {"HOME": str(tmp_path)}

    path = paths.ensure_state_dir(environ)

    assert path == tmp_path / ".local" / "state" / "drover"
    assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_ensure_state_dir_leaves_an_existing_one_alone(tmp_path):
    existing = tmp_path / "drover"
    existing.mkdir(mode=0o750)
    existing.chmod(0o750)
    (existing / "history.sqlite").write_text("kept")

    path = paths.ensure_state_dir({"XDG_STATE_HOME": str(tmp_path)})

    assert stat.S_IMODE(path.stat().st_mode) == 0o750
    assert (path / "history.sqlite").read_text() == "kept"


def test_ensure_state_dir_reports_what_it_could_not_create(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")

    with pytest.raises(StateError) as raised:
        paths.ensure_state_dir({"XDG_STATE_HOME": str(blocker)})

    assert str(blocker / "drover") in str(raised.value)


# -- one configuration's state ------------------------------------------------

def test_a_configuration_is_named_by_its_stem_and_a_hash_of_its_path(
        tmp_path):
    config = tmp_path / "prod.toml"
    digest = hashlib.sha256(str(config).encode()).hexdigest()[:8]

    assert paths.config_id(config) == f"prod-{digest}"
    assert paths.config_state_dir(config, {"XDG_STATE_HOME": "/s"}) == \
        Path(f"/s/drover/prod-{digest}")


def test_same_names_in_two_folders_are_two_configurations(tmp_path):
    first = paths.config_id(tmp_path / "a" / "drover.toml")
    second = paths.config_id(tmp_path / "b" / "drover.toml")

    assert first != second
    assert first.startswith("drover-") and second.startswith("drover-")


def test_a_link_relative_path_and_target_are_one_configuration(
        tmp_path, monkeypatch):
    target = tmp_path / "real" / "drover.toml"
    target.parent.mkdir()
    target.write_text("")
    link = tmp_path / "link.toml"
    link.symlink_to(target)
    monkeypatch.chdir(target.parent)

    assert paths.config_id(link) == paths.config_id(target) == \
        paths.config_id("drover.toml")


@pytest.mark.parametrize("name, stem", [
    ("conf %40 ü.toml", "conf__40__"), (".hidden.toml", "hidden"),
    ("...toml", "drover"), ("x" * 100 + ".toml", "x" * 48)])
def test_the_stem_keeps_only_what_is_safe_in_a_name_and_a_crontab(
        tmp_path, name, stem):
    found = paths.config_id(tmp_path / name)

    assert found.rsplit("-", 1)[0] == stem
    assert re.fullmatch(r"[A-Za-z0-9_.-]+-[0-9a-f]{8}", found)


def test_a_configurations_state_dir_is_created_private(tmp_path):
    environ = {"XDG_STATE_HOME": str(tmp_path / "state")}
    old_umask = os.umask(0o022)
    try:
        path = paths.ensure_config_state_dir(tmp_path / "x.toml", environ)
    finally:
        os.umask(old_umask)

    assert path.parent == tmp_path / "state" / "drover"
    for folder in (path, path.parent):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
