"""The watchdog under cron: its crontab entry, its log, its runs.

Pure tests first (escaping, schedules, editing the crontab text, the log
file); then the real ``crontab`` command on a crontab that holds other
people's lines; then the installed line run exactly as cron runs it,
against the fake cluster; last, the cron daemon itself runs it.
"""

import contextlib
import fcntl
import io
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from drover import paths
from drover.cron import crontab, entry, runlog
from drover.cron.crontab import Entry
from drover.errors import CronError
from drover.watchdog.history import CheckRow
from tests.helpers import launcher, run_cli, wait_until, write_config

ROOT = Path(__file__).resolve().parent.parent

# Lines of somebody else's crontab that a careless rewrite would change:
# spacing, tabs, a spaced variable, a disabled entry, an escaped %, a
# blank line of one tab, bytes that are not UTF-8.
OTHERS = (
    b"# m h  dom mon dow   command\n"
    b'MAILTO = "ops@example.org"\n'
    b"*/5  *  * * *   /bin/true --tag 'x  y'   # nightly-ish\n"
    b"@reboot\t/bin/true start-things\n"
    b'0 3 * * 1-5 echo "100\\%" > /dev/null 2>&1\n'
    b"#0 4 * * * disabled job\n"
    b"\t\n"
    b"# \xff\xfe not UTF-8\n"
    b"15 2 * * * echo caf\xc3\xa9 # drover is great\n"
)
OTHERS_TEXT = OTHERS.decode("utf-8", "surrogateescape")

# Taken by every test that rewrites the crontab (see crontab_turn).
CRONTAB_LOCK = "/tmp/drover-tests-crontab.lock"

# Under cron: the bare environment cron gives, from the root directory.
CRON_ENV = {"PATH": "/usr/bin:/bin", "SHELL": "/bin/sh"}

# Values that cron or the shell would mangle if the line were careless.
HOSTILE = ["/srv/conf %40 ü/drover.toml", "100%", "a\\%b", "a\\\\%b",
           "it's 50% off", "%", "$HOME `id` ;|&"]

SLEEPERS = """
    [hosts]
    all = ["host01", "host02"]

    [program.sleeper]
    command = ["sleep", "600"]
    count = 2
    start_seconds = 0.5
    stdout = "work/sleeper-{instance}.out"
    stderr = "work/sleeper-{instance}.err"

    [watchdog]
    deadline = "40s"
    """


def shell_sees(command):
    """What /bin/sh prints for ``printf '%s\\n' WORD`` lines of command."""
    done = subprocess.run(["/bin/sh", "-c", command], capture_output=True,
                          text=True, check=True)
    return done.stdout


# -- escaping -----------------------------------------------------------------

@pytest.mark.parametrize("value", HOSTILE)
def test_a_percent_sign_reaches_the_shell_as_written(value):
    line = Entry("* * * * *", f"printf '%s\\n' {shlex.quote(value)}").line

    command = crontab.cron_unescape(line.split(" ", 5)[5])

    assert "%" not in line.replace("\\%", "")
    assert shell_sees(command) == value + "\n"


def test_cron_ends_the_command_at_a_bare_percent():
    assert crontab.cron_unescape("echo a%b") == "echo a"
    assert crontab.cron_unescape("echo a\\%b") == "echo a%b"
    assert crontab.cron_unescape("echo a\\b") == "echo a\\b"
    assert crontab.cron_unescape("echo a\\\\%b") == "echo a\\\\"


def test_a_line_break_cannot_go_into_a_crontab():
    with pytest.raises(CronError, match="line break"):
        Entry("* * * * *", "echo 'a\nb'").line


# -- schedules ----------------------------------------------------------------

@pytest.mark.parametrize("seconds, schedule", [
    (60, "* * * * *"), (300, "*/5 * * * *"), (1800, "*/30 * * * *"),
    (3600, "0 * * * *"), (7200, "0 */2 * * *"), (86400, "0 0 * * *"),
])
def test_every_gives_an_even_schedule(seconds, schedule):
    assert crontab.schedule_every(seconds) == schedule
    assert crontab.schedule_period(schedule) == seconds


@pytest.mark.parametrize("seconds", [30, 90, 420, 5400, 2 * 86400])
def test_a_period_cron_cannot_keep_is_refused(seconds):
    with pytest.raises(CronError, match="divides an hour"):
        crontab.schedule_every(seconds)


@pytest.mark.parametrize("schedule, seconds", [
    ("0,30 9-17 * * 1-5", 1800), ("5-50/15 * * * *", 900),
    ("7 3 * * *", 86400), ("@hourly", 3600), ("@reboot", None),
    ("0 6,8 * * *", 7200),
])
def test_the_period_of_a_schedule_is_its_shortest_gap(schedule, seconds):
    assert crontab.schedule_period(schedule) == seconds


# -- the crontab as text ------------------------------------------------------

def drovers(command="/x/watchdog check -c /etc/drover.toml",
            id="drover-0000000a"):
    return Entry("*/5 * * * *", command, id=id)


def test_install_appends_one_line_and_keeps_every_other_byte():
    text = crontab.with_entry(OTHERS_TEXT, drovers())

    assert text == OTHERS_TEXT + drovers().line + "\n"
    assert drovers().line.endswith(" # drover:watchdog:drover-0000000a")
    assert crontab.with_entry(None, drovers()) == drovers().line + "\n"


def test_install_again_updates_in_place_and_drops_copies():
    lines = OTHERS_TEXT.split("\n")
    lines[2:2] = [drovers("old").line]
    lines[5:5] = ["#" + drovers("copy").line]

    text = crontab.with_entry("\n".join(lines), drovers("new"))

    expected = OTHERS_TEXT.split("\n")
    expected[2:2] = [drovers("new").line]
    assert text == "\n".join(expected)


def test_each_configuration_has_its_own_entry():
    first, second = drovers("first"), drovers("second", "other-0000000b")
    both = crontab.with_entry(crontab.with_entry(OTHERS_TEXT, first),
                              second)

    updated = crontab.with_entry(both, drovers("first again"))

    assert both == OTHERS_TEXT + first.line + "\n" + second.line + "\n"
    assert updated == both.replace(first.line, drovers("first again").line)
    assert crontab.without_entry(both, first.id) == \
        OTHERS_TEXT + second.line + "\n"
    assert [item.owner for _, item in crontab.find_entries(both)] == \
        [first.id, second.id]
    assert crontab.find_entries(both, second.id) == [(10, second)]


def test_a_line_of_an_older_drover_belongs_to_the_file_it_checks():
    config = "/etc/drover/prod.toml"
    old = f"*/5 * * * * /x/watchdog check -c {config} # drover:watchdog"
    text = OTHERS_TEXT + old + "\n"
    mine = drovers(f"/x/watchdog check -c {config}",
                   paths.config_id(config))

    (index, found), = crontab.find_entries(text)

    assert (found.id, found.owner) == (None, mine.id)
    assert crontab.with_entry(text, mine) == OTHERS_TEXT + mine.line + "\n"
    assert crontab.without_entry(text, paths.config_id("/x.toml")) == text
    assert crontab.without_entry(text, mine.id) == OTHERS_TEXT


def test_remove_gives_back_the_text_byte_for_byte():
    text = crontab.with_entry(OTHERS_TEXT, drovers())

    assert crontab.without_entry(text, drovers().id) == OTHERS_TEXT
    assert crontab.without_entry(drovers().line + "\n",
                                 drovers().id) == ""


def test_a_commented_out_entry_is_still_drovers():
    found = crontab.find_entries("# " + drovers().line + "\n")

    assert [(index, item.enabled) for index, item in found] == [(0, False)]
    assert found[0][1].command == drovers().command
    assert found[0][1].id == drovers().id


def test_lines_that_only_mention_the_marker_are_not_drovers():
    text = ("# see below # drover:watchdog\n"
            "0 1 * * * echo drover:watchdog\n"
            "0 1 * * * echo x #drover:watchdog-old\n"
            "0 1 * * * echo x # drover:watchdog:a b\n"
            "0 1 * * * echo x # drover:watchdog:\n"
            "NAME=x # drover:watchdog\n")

    assert crontab.find_entries(text) == []


def test_the_entry_names_its_environment_and_argv():
    item = Entry("* * * * *", "HOME=/h XDG_STATE_HOME='/s t' /x/watchdog "
                              "check -c '/c %40/d.toml'")

    assert item.environment == {"HOME": "/h", "XDG_STATE_HOME": "/s t"}
    assert item.argv == ["/x/watchdog", "check", "-c", "/c %40/d.toml"]


# -- the command --------------------------------------------------------------

def cron_of(home):
    return {"HOME": home, "PATH": crontab.CRON_PATH,
            "SHELL": crontab.CRON_SHELL}


def test_nothing_is_pinned_when_cron_gives_the_same_state():
    environ = {"HOME": "/home/ops", "XDG_STATE_HOME": "/home/ops/.local/"
               "state", "SSH_AUTH_SOCK": "/tmp/agent"}

    assert crontab.pinned_environment(environ, cron_of("/home/ops")) == {}


def test_home_and_state_are_pinned_when_cron_would_differ():
    environ = {"HOME": "/tmp/other", "XDG_STATE_HOME": "/srv/state"}

    pinned = crontab.pinned_environment(environ, cron_of("/home/ops"))

    assert pinned == {"HOME": "/tmp/other", "XDG_STATE_HOME": "/srv/state"}
    assert paths.state_dir(dict(cron_of("/home/ops"), **pinned)) == \
        paths.state_dir(environ)


def test_a_crontab_variable_counts_as_what_cron_gives():
    text = "XDG_STATE_HOME = \"/var/lib/elsewhere\"\n0 1 * * * x\n"
    cron = crontab.cron_environment(text)

    pinned = crontab.pinned_environment({"HOME": cron["HOME"]}, cron)

    assert cron["XDG_STATE_HOME"] == "/var/lib/elsewhere"
    assert pinned == {
        "XDG_STATE_HOME": str(Path(cron["HOME"]) / ".local/state")}


def write_script(path, body):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    path.chmod(0o755)
    return path


def watchdog_script(directory):
    """What pip writes for the console script, plus this source tree."""
    return write_script(directory / "watchdog", textwrap.dedent(f"""\
        #!{sys.executable}
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from drover.watchdog.cli import main
        sys.exit(main())
        """))


def test_the_watchdog_script_running_now_is_used(tmp_path):
    script = watchdog_script(tmp_path / "bin")

    program, extra = crontab.watchdog_program(argv0=str(script))

    assert (program, extra) == ([str(script)], {})


def test_another_programs_watchdog_is_passed_over(tmp_path, monkeypatch):
    # Debian's package "watchdog" installs /usr/sbin/watchdog, a daemon;
    # pyenv puts a shim of that name first on PATH.
    other = write_script(tmp_path / "other" / "watchdog",
                         "#!/bin/sh\necho hardware watchdog\n")
    ours = watchdog_script(tmp_path / "ours")
    monkeypatch.setenv("PATH", f"{other.parent}:{ours.parent}")

    program, extra = crontab.watchdog_program(argv0=str(other))

    assert (program, extra) == ([str(ours)], {})


def test_without_a_script_this_python_runs_this_drover(tmp_path,
                                                       monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))

    program, extra = crontab.watchdog_program(argv0="/nowhere/pytest")

    assert program == [sys.executable, "-m", "drover.watchdog"]
    probe = "import drover; print(drover.__path__[0])"
    found = subprocess.run(
        ["/usr/bin/env", "-i"] + [f"{name}={value}" for name, value in
                         dict(CRON_ENV, **extra).items()] +
        [sys.executable, "-c", probe], cwd="/", capture_output=True,
        text=True, check=True)
    assert found.stdout == f"{ROOT / 'drover'}\n"


def test_the_command_holds_absolute_paths_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    environ = {"HOME": crontab.cron_environment()["HOME"]}

    command = crontab.watchdog_command(
        "conf %40/drover.toml", ["--respawn"], environ,
        program=["/opt/drover/bin/watchdog"])

    assert shlex.split(command) == [
        "/opt/drover/bin/watchdog", "check", "-c",
        str(tmp_path / "conf %40/drover.toml"), "--respawn"]


# -- the log file -------------------------------------------------------------

@pytest.fixture
def attached(tmp_path):
    """The run log attached the way the CLI does it: after a console
    set up as console.setup_logging sets it (handler without a level,
    root logger at WARNING)."""
    root = logging.getLogger()
    saved = root.level, list(root.handlers)
    console = logging.StreamHandler(io.StringIO())
    root.handlers[:] = [console]
    root.setLevel(logging.WARNING)
    handler = runlog.attach(tmp_path)
    yield handler, console
    runlog.detach(handler)
    root.setLevel(saved[0])
    root.handlers[:] = saved[1]


def test_the_log_keeps_drovers_story_in_a_private_file(attached, tmp_path):
    logging.getLogger("drover.watchdog.check").info("host01: ok (0.21s)")
    logging.getLogger("drover.watchdog.check").debug("asked %s", "host01")
    logging.getLogger("apprise").debug("https://user:secret@example.org")
    logging.getLogger("apprise").warning("apprise is unhappy")

    path = runlog.log_path(tmp_path)
    text = path.read_text()
    assert " INFO drover.watchdog.check: host01: ok (0.21s)\n" in text
    assert "asked host01" not in text
    assert "secret" not in text
    assert "apprise is unhappy" in text
    assert path.stat().st_mode & 0o777 == 0o600


def test_the_console_keeps_its_level(attached):
    handler, console = attached

    logging.getLogger("drover.watchdog.check").info("host01: ok (0.21s)")
    logging.getLogger("drover.watchdog.check").warning("low disk")

    assert console.level == logging.WARNING
    assert console.stream.getvalue() == "low disk\n"
    assert runlog.attach(handler.baseFilename.rsplit("/", 1)[0]) is handler


def test_detach_puts_drovers_level_back(tmp_path):
    drover = logging.getLogger("drover")
    assert drover.level == logging.NOTSET

    handler = runlog.attach(tmp_path)
    lowered = drover.level
    runlog.detach(handler)

    assert (lowered, drover.level) == (logging.INFO, logging.NOTSET)


def test_the_command_line_is_logged_without_secrets():
    line = runlog.command_line([
        "watchdog", "-c", "/etc/conf %40/d.toml", "report",
        "--to=mailtos://ops:s3cret@smtp.example.org:587/?pass=s3cret",
        "slack://T000/B000/XXXXsecret", "-o", "-"])

    assert "secret" not in line
    assert shlex.split(line) == [
        "watchdog", "-c", "/etc/conf %40/d.toml", "report",
        "--to=mailtos://ops:****@smtp.example.org:587", "slack://****",
        "-o", "-"]


def test_the_log_stays_bounded(tmp_path):
    handler = runlog.attach(tmp_path, max_bytes=2000, backups=2)
    try:
        for number in range(200):
            logging.getLogger("drover.test").warning("line %d %s", number,
                                                     "x" * 50)
    finally:
        runlog.detach(handler)

    files = sorted(path.name for path in tmp_path.iterdir())
    assert files == ["watchdog.log", "watchdog.log.1", "watchdog.log.2"]
    for path in tmp_path.iterdir():
        assert path.stat().st_size <= 2000
        assert path.stat().st_mode & 0o777 == 0o600
    assert "line 199" in (tmp_path / "watchdog.log").read_text()


# -- show's judgement of the recent runs --------------------------------------

def runs(*durations, last=1000.0):
    return [CheckRow(index, last - index * 300, duration, 0, "DROVER OK")
            for index, duration in enumerate(durations)]


def test_show_warns_when_checks_take_longer_than_the_period():
    warnings = entry.run_warnings(runs(12.0, 340.0, 9.0), 300, 1010.0)

    assert len(warnings) == 1
    assert "1 of the last 3 checks took longer than the period (5m" \
        in warnings[0]


def test_show_warns_when_no_check_came_for_two_periods():
    assert entry.run_warnings(runs(5.0), 300, 1000.0 + 600) == []

    warnings = entry.run_warnings(runs(5.0), 300, 1000.0 + 700)

    assert warnings == ["no check for 11m40s, though the entry runs every "
                        "5m: is the cron daemon running?"]


# -- the real crontab command -------------------------------------------------

def crontab_bytes():
    done = subprocess.run(["crontab", "-l"], capture_output=True)
    if done.returncode != 0:
        assert b"no crontab for" in done.stderr, done.stderr
        return None
    return done.stdout


def set_crontab(data):
    if data is None:
        subprocess.run(["crontab", "-r"], capture_output=True)
    else:
        subprocess.run(["crontab", "-"], input=data, check=True)


@contextlib.contextmanager
def crontab_turn(timeout=600):
    """Hold the machine-wide lock of the tests that rewrite the crontab.

    The crontab is one per user and machine: two test runs at once (two
    engineers, or CI beside a person) would save and restore each other's
    state.
    """
    descriptor = os.open(CRONTAB_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{CRONTAB_LOCK} stayed locked {timeout}s")
                time.sleep(0.5)
        yield
    finally:
        os.close(descriptor)


@pytest.fixture
def user_crontab():
    """The machine's crontab, saved, then holding OTHERS; put back as it
    was after the test, whatever happens."""
    if shutil.which("crontab") is None:
        pytest.skip("no crontab command (Debian: apt-get install cron)")
    with crontab_turn():
        saved = crontab_bytes()
        try:
            set_crontab(OTHERS)
            yield
        finally:
            set_crontab(saved)
            assert crontab_bytes() == saved


@pytest.fixture
def installer(tmp_path, control_home, monkeypatch):
    """`watchdog cron ...` in-process, as if run by a watchdog script."""
    script = watchdog_script(tmp_path / "bin")
    monkeypatch.setattr(sys, "argv", [str(script)])
    return watchdog


def watchdog(*argv):
    from drover.watchdog.cli import main
    return run_cli(main, *argv)


def minimal_config(directory):
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "drover.toml"
    path.write_text('[hosts]\nall = ["host01"]\n\n'
                    '[program.sleeper]\ncommand = ["sleep", "600"]\n')
    return path


def test_install_show_remove_leave_other_lines_byte_for_byte(
        user_crontab, installer, tmp_path):
    config = minimal_config(tmp_path / "conf %40 ü")

    added = installer("cron", "install", "-c", config, "--respawn")
    again = installer("cron", "install", "-c", config, "--respawn")
    after_again = crontab_bytes()
    changed = installer("cron", "install", "-c", config, "--every", "15m")
    after_change = crontab_bytes()
    shown = installer("cron", "show", "-c", config)
    removed = installer("cron", "remove", "-c", config)

    assert (added.status, again.status, changed.status) == (0, 0, 0)
    assert added.stdout.startswith("added to the crontab of ")
    assert again.stdout.startswith("unchanged in the crontab of ")
    line = added.stdout.split("\n")[1].strip()
    assert after_again == OTHERS + line.encode() + b"\n"
    new_line = changed.stdout.split("\n")[1].strip()
    assert new_line.startswith("*/15 * * * * ")
    assert after_change == OTHERS + new_line.encode() + b"\n"

    assert new_line.endswith(f" # drover:watchdog:{paths.config_id(config)}")
    state = paths.config_state_dir(config)
    assert shown.status == entry.SHOW_OK, shown.stdout
    assert shown.stdout.split("\n") == [
        new_line,
        f"every 15m; history in {state}, log in {state / 'watchdog.log'}",
        "no check recorded yet", ""]
    assert removed.status == 0
    assert crontab_bytes() == OTHERS


def test_the_entry_is_the_one_command_cron_needs(user_crontab, installer,
                                                 tmp_path):
    config = minimal_config(tmp_path / "conf %40")
    with open(config, "a") as file:
        file.write('\n[notify]\nemail = ["mailto://localhost?to=a@b.c"]\n')

    installer("cron", "install", "-c", config, "--respawn", "--email")

    item = crontab.installed()
    assert item.schedule == "*/5 * * * *"
    # control_home's HOME is not root's; its state is the default below it.
    assert item.environment == {"HOME": os.environ["HOME"]}
    assert item.argv == [sys.argv[0], "check", "-c", str(config),
                         "--respawn", "--email"]


def test_email_without_a_target_is_refused_at_install(
        user_crontab, installer, tmp_path):
    config = minimal_config(tmp_path)

    result = installer("cron", "install", "-c", config, "--email")

    assert result.status == 3
    assert "notify.email" in result.stderr
    assert crontab_bytes() == OTHERS


def test_a_broken_config_is_refused_and_the_crontab_untouched(
        user_crontab, installer, tmp_path):
    config = tmp_path / "drover.toml"
    config.write_text("[program.x]\ncount = 'eight'\n")

    result = installer("cron", "install", "-c", config)

    assert result.status == 3
    assert "count" in result.stderr
    assert crontab_bytes() == OTHERS


def test_remove_without_an_entry_changes_nothing(user_crontab, installer,
                                                tmp_path):
    result = installer("cron", "remove", "-c", minimal_config(tmp_path))

    assert result.status == 0
    assert "nothing removed" in result.stdout
    assert crontab_bytes() == OTHERS


def test_each_configuration_has_its_own_entry_in_the_crontab(
        user_crontab, installer, tmp_path, monkeypatch):
    first = minimal_config(tmp_path / "first")
    second = minimal_config(tmp_path / "second")
    # Found as the usual lookup finds it: -c, $DROVER_CONFIG, ./drover.toml.
    installer("cron", "install", "-c", first)
    monkeypatch.setenv("DROVER_CONFIG", str(second))
    installer("cron", "install", "--every", "15m")
    both = crontab_bytes()
    monkeypatch.delenv("DROVER_CONFIG")
    monkeypatch.chdir(first.parent)
    again = installer("cron", "install", "--every", "10m")
    after = crontab_bytes()
    shown = installer("cron", "show")
    removed = installer("cron", "remove", "-c", second)

    first_line, second_line = both[len(OTHERS):].decode().splitlines()
    assert first_line.endswith(f"# drover:watchdog:{paths.config_id(first)}")
    assert second_line.startswith("*/15 * * * * ")
    assert second_line.endswith(
        f"# drover:watchdog:{paths.config_id(second)}")
    assert again.stdout.startswith("updated in the crontab of ")
    new_line = again.stdout.split("\n")[1].strip()
    assert new_line.startswith("*/10 * * * * ")
    assert after == OTHERS + f"{new_line}\n{second_line}\n".encode()

    assert shown.stdout.split("\n")[0] == new_line
    assert shown.stdout.split("\n")[-3:] == [
        "other drover entries:",
        f"  {paths.config_id(second)}: */15 * * * * -c {second}", ""]
    assert removed.status == 0
    assert crontab_bytes() == OTHERS + f"{new_line}\n".encode()


def test_an_older_drovers_entry_is_updated_in_place(user_crontab, installer,
                                                    tmp_path):
    config = minimal_config(tmp_path)
    older = (f"*/5 * * * * {sys.argv[0]} check -c {config} "
             "# drover:watchdog\n").encode()
    cut = OTHERS.index(b"*/5  *")   # after the MAILTO line
    set_crontab(OTHERS[:cut] + older + OTHERS[cut:])

    installed = installer("cron", "install", "-c", config)

    line = installed.stdout.split("\n")[1].strip()
    assert installed.stdout.startswith("updated in the crontab of ")
    assert line.endswith(f" # drover:watchdog:{paths.config_id(config)}")
    assert crontab_bytes() == OTHERS[:cut] + line.encode() + b"\n" + \
        OTHERS[cut:]


def test_the_entry_of_a_configuration_gone_can_be_shown_and_removed(
        user_crontab, installer, tmp_path):
    config = minimal_config(tmp_path / "gone")
    installer("cron", "install", "-c", config)
    line = crontab.installed(paths.config_id(config)).line
    config.unlink()

    shown = installer("cron", "show", "-c", config)
    removed = installer("cron", "remove", "-c", config)

    assert shown.stdout.split("\n")[0] == line
    assert removed.status == 0, removed.stderr
    assert crontab_bytes() == OTHERS


def run_as_cron(line, timeout=120):
    """A crontab line executed as cron executes it: its command after
    cron's % handling, by /bin/sh -c, in a bare environment, from /."""
    command = Entry.parse(line).command
    bare = [f"{name}={value}" for name, value in CRON_ENV.items()]
    return subprocess.run(["/usr/bin/env", "-i"] + bare +
                          ["/bin/sh", "-c", command], cwd="/",
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_under_cron_a_missing_key_file_is_named(user_crontab, installer,
                                               tmp_path):
    key = tmp_path / "keys %40" / "id_ed25519"
    key.parent.mkdir()
    key.write_text("not a key\n")
    config = minimal_config(tmp_path / "conf %40")
    config.write_text(f'[ssh]\nidentity_file = "{key}"\n\n' +
                      config.read_text())
    installer("cron", "install", "-c", config)
    key.unlink()

    result = run_as_cron(crontab.installed().line)

    assert result.returncode == 3, result.stderr
    assert result.stdout == ""
    assert str(key) in result.stderr


# -- against the fake cluster -------------------------------------------------

@pytest.fixture
def sleepers(cluster, control_home, tmp_path):
    """SLEEPERS started on the cluster; config in a folder with a %."""
    config = tmp_path / "conf %40 ü" / "drover.toml"
    config.parent.mkdir()
    write_config(config, cluster, textwrap.dedent(SLEEPERS))
    started = launcher("-c", config, "start")
    assert started.status == 0, started.stdout + started.stderr
    yield config
    launcher("-c", config, "stop")
    for host in cluster.hosts:
        host.run("rm -rf /root/.local/state/drover /root/work")


def kill_one(cluster, config, host="host02", name="sleeper.1"):
    status = launcher("-c", config, "status", "--json").json()
    pid = next(item["pid"] for item in status["instances"]
               if item["host"] == host and
               f"{item['program']}.{item['instance']}" == name)
    cluster[host].run(["kill", "-KILL", str(pid)], check=True)
    return pid


def history_checks(config):
    """The checks in the history of this test's state for ``config``,
    newest first."""
    return entry.recent_checks(paths.config_state_dir(config))


def summary(text):
    """The first line of a check, without its perfdata."""
    return text.split("\n", 1)[0].split(" | ", 1)[0]


@pytest.mark.cluster
def test_the_line_runs_under_cron_as_it_runs_by_hand(
        user_crontab, installer, sleepers, cluster):
    installer("cron", "install", "-c", sleepers)
    line = crontab.installed().line

    quiet = run_as_cron(line)
    by_hand = watchdog("check", "-c", sleepers)

    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    assert by_hand.status == 0, by_hand.stdout + by_hand.stderr
    assert [check.status for check in history_checks(sleepers)] == [0, 0]

    kill_one(cluster, sleepers)
    loud = run_as_cron(line)
    by_hand = watchdog("check", "-c", sleepers)

    assert loud.returncode == by_hand.status == 2, loud.stderr
    assert summary(loud.stdout) == summary(by_hand.stdout)
    assert summary(loud.stdout).startswith("DROVER CRITICAL - 1 dead")
    assert "dead: host02 sleeper.1" in loud.stdout
    assert [check.status for check in history_checks(sleepers)] == \
        [2, 2, 0, 0]

    shown = watchdog("cron", "show", "-c", sleepers)
    assert shown.status == entry.SHOW_OK, shown.stdout
    assert shown.stdout.split("\n")[2].startswith("last check: ")
    assert summary(loud.stdout) in shown.stdout
    assert "last 4 checks took " in shown.stdout


@pytest.mark.cluster
def test_a_quiet_run_still_logs_its_story(user_crontab, installer,
                                          sleepers):
    installer("cron", "install", "-c", sleepers)

    quiet = run_as_cron(crontab.installed().line)

    assert (quiet.returncode, quiet.stdout, quiet.stderr) == (0, "", "")
    log_file = runlog.log_path(paths.config_state_dir(sleepers))
    assert log_file.stat().st_mode & 0o777 == 0o600
    lines = log_file.read_text().splitlines()
    assert f"INFO drover.cron.runlog: run: watchdog check -c " \
           f"'{sleepers}'" in lines[0]
    for host in ("host01", "host02"):
        assert any(f": {host}: ok (" in line for line in lines), host
    assert any("DROVER OK - 4 running on 2 hosts | " in line
               for line in lines)
    assert "INFO drover.cron.runlog: done: exit status 0 in " in lines[-1]


@pytest.mark.cluster
def test_mail_settings_with_percent_signs_survive_the_crontab(
        user_crontab, installer, sleepers, cluster, smtp_server):
    # The password holds "%" and the login "@", both written %-encoded in
    # the URL, in a configuration whose path has a "%" too.
    smtp_server.require_auth("ops@example.org", "p%ss")
    url = (f"mailto://ops%40example.org:p%25ss@{smtp_server.host}:"
           f"{smtp_server.port}?to=team@example.org&from=drover@example.org")
    with open(sleepers, "a") as config:
        config.write(f'\n[notify]\nemail = ["{url}"]\n')
    installer("cron", "install", "-c", sleepers, "--email")
    kill_one(cluster, sleepers)

    result = run_as_cron(crontab.installed().line)

    assert result.returncode == 2, result.stdout + result.stderr
    assert ("ops@example.org", True) in smtp_server.logins
    assert len(smtp_server.messages) == 1
    assert smtp_server.messages[0]["To"] == "team@example.org"


# -- the cron daemon itself ---------------------------------------------------

@pytest.fixture
def cron_daemon():
    """``start()``: Debian's cron, running. The one already there, or one
    started for the test and stopped after it, by pid. Returns the
    seconds within which a ``* * * * *`` entry installed before runs."""
    daemon = shutil.which("cron") or "/usr/sbin/cron"
    if not os.path.exists(daemon):
        pytest.skip("no cron daemon (Debian: apt-get install cron)")
    started = []

    def start():
        running = subprocess.run(["pgrep", "-x", "cron"],
                                 capture_output=True)
        if running.returncode == 0:
            # A running cron notices a changed crontab at one minute's
            # tick and runs its new entries from the next one.
            return 150
        # -f: in the foreground, a child of this test, so its pid is
        # ours. Started now it reads the crontab at once.
        started.append(subprocess.Popen(
            [daemon, "-f"], stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return 90

    yield start
    for process in started:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.cluster
@pytest.mark.slow
def test_the_cron_daemon_runs_the_entry_and_respawns(
        user_crontab, installer, sleepers, cluster, cron_daemon):
    installer("cron", "install", "-c", sleepers, "--every", "1m",
              "--respawn")
    killed = kill_one(cluster, sleepers)

    timeout = cron_daemon()
    checks = wait_until(lambda: history_checks(sleepers), timeout=timeout,
                        interval=2)
    remove = watchdog("cron", "remove", "-c", sleepers)

    assert checks, f"the cron daemon ran no check within {timeout} s"
    assert remove.status == 0
    assert checks[-1].status == 1, checks[-1].summary
    assert "1 respawned" in checks[-1].summary
    status = launcher("-c", sleepers, "status", "--json").json()
    states = {(item["host"], item["instance"]): (item["state"], item["pid"])
              for item in status["instances"]}
    assert states[("host02", 1)][0] == "running"
    assert states[("host02", 1)][1] != killed
