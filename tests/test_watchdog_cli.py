"""The watchdog command line on localhost: output, quiet, exit statuses.

``localhost`` runs the same agent as a local process, so these tests use
real daemons without a fake cluster (and without root).
"""

import os
import signal
import subprocess
import sys

import pytest

from drover import paths
from drover.cron import runlog
from drover.cron.lock import RunLock
from drover.watchdog.check import CheckResult
from drover.watchdog.history import History, Quarantine, Updates
from tests.helpers import launcher, run_cli, wait_until

CONFIG = """
[hosts]
here = ["localhost"]

[program.sleeper]
command = ["sleep", "311"]
count = 2
start_seconds = 0.2
"""


def watchdog(*argv):
    from drover.watchdog.cli import main
    return run_cli(main, *argv)


def gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


@pytest.fixture
def config(control_home, tmp_path):
    """A started herd of two sleepers on localhost; stopped at the end
    and verified gone by pid."""
    path = tmp_path / "drover.toml"
    path.write_text(CONFIG)
    assert launcher("-c", path, "start").status == 0
    yield path

    status = launcher("-c", path, "status", "--json").json()
    pids = [item["pid"] for item in status["instances"]
            if item["state"] == "running"]
    launcher("-c", path, "stop")
    for pid in pids:
        assert wait_until(lambda: gone(pid), timeout=10), pid


def pid_of(config, number):
    status = launcher("-c", config, "status", "--json").json()
    return next(item["pid"] for item in status["instances"]
                if item["instance"] == number)


def test_an_ok_check_is_silent_without_a_terminal(config):
    quiet = watchdog("-c", config, "check")
    loud = watchdog("-c", config, "check", "-v")
    assert (quiet.status, quiet.stdout, quiet.stderr) == (0, "", "")
    assert loud.status == 0
    assert loud.stdout.splitlines()[0].startswith(
        "DROVER OK - 2 running on 1 host | running=2;;;0;2 dead=0;;;0;2")


def test_a_death_prints_the_summary_and_the_problem_then_respawns(config):
    os.kill(pid_of(config, 1), signal.SIGKILL)

    dead = watchdog("-c", config, "check")
    assert dead.status == 2
    lines = dead.stdout.splitlines()
    assert lines[0].startswith("DROVER CRITICAL - 1 dead (1/2 running) | ")
    assert lines[1] == "problems:"
    assert lines[2].startswith("  dead: localhost sleeper.1 (")

    respawned = watchdog("-c", config, "check", "--respawn")
    assert respawned.status == 1
    assert respawned.stdout.splitlines() == [
        respawned.stdout.splitlines()[0], "problems:",
        "  respawned: localhost: sleeper.1"]

    again = watchdog("-c", config, "check")
    assert (again.status, again.stdout) == (0, "")


def test_json_is_the_whole_result(config):
    run = watchdog("-c", config, "check", "--json")
    result = CheckResult.from_dict(run.json())
    assert (run.status, result.status) == (0, 0)
    assert [item.name for item in result.instances] == \
        ["sleeper.0", "sleeper.1"]
    assert result.hosts[0].boot_id


def test_respawn_can_be_set_in_the_configuration(config):
    config.write_text(CONFIG + "\n[watchdog]\nrespawn = true\n")
    os.kill(pid_of(config, 0), signal.SIGKILL)
    assert watchdog("-c", config, "check").status == 1
    os.kill(pid_of(config, 0), signal.SIGKILL)
    assert watchdog("-c", config, "check", "--no-respawn").status == 2


def test_a_bad_configuration_is_unknown_in_one_line(control_home,
                                                    tmp_path):
    path = tmp_path / "drover.toml"
    path.write_text(CONFIG.replace("count = 2", "count = \"two\""))
    run = watchdog("-c", path, "check")
    assert run.status == 3
    assert run.stdout == ""
    assert run.stderr.count("\n") == 1
    assert run.stderr.startswith(f"watchdog: config: {path}:")


def test_an_unknown_program_is_unknown_before_any_host(config):
    run = watchdog("-c", config, "check", "nosuch")
    assert run.status == 3
    assert 'no program named "nosuch"' in run.stderr
    with History.open(config_path=config) as history:
        assert history.checks() == []


def test_an_unusable_notification_target_stops_the_check_first(config):
    config.write_text(CONFIG + '\n[notify]\nurls = ["nosuch://x"]\n')
    run = watchdog("-c", config, "check", "--notify")
    assert run.status == 3
    assert "notify.urls" in run.stderr
    with History.open(config_path=config) as history:
        assert history.checks() == []


def test_a_usage_error_is_unknown_not_critical():
    from drover.watchdog.cli import main
    with pytest.raises(SystemExit) as caught:
        main(["check", "--no-such-option"])
    assert caught.value.code == 3


def test_a_held_lock_exits_4_and_checks_nothing(config):
    with RunLock(config_path=config):
        run = watchdog("-c", config, "check")
    assert run.status == 4
    assert run.stderr.startswith("watchdog: lock: another watchdog run "
                                 "holds ")
    with History.open(config_path=config) as history:
        assert history.checks() == []


def test_a_damaged_history_is_unknown_and_left_in_place(config):
    path = str(paths.ensure_config_state_dir(config) / "history.sqlite3")
    with open(path, "wb") as damaged:
        damaged.write(b"\0garbage" * 1000)

    run = watchdog("-c", config, "check")
    assert run.status == 3
    assert run.stderr.startswith(f"watchdog: state: {path} is damaged")
    with open(path, "rb") as damaged:
        assert damaged.read(8) == b"\0garbage"


def test_release_ends_matching_quarantines_only(config):
    with History.open(config_path=config) as history:
        history.record_check(
            CheckResult(1.0, 0.1, 2, "CRITICAL", "DROVER CRITICAL", ""),
            Updates(quarantined={
                ("localhost", "sleeper", 0): Quarantine(1.0, 4),
                ("localhost", "sleeper", 1): Quarantine(1.0, 4)}))

    first = watchdog("-c", config, "release", "-i", "1")
    second = watchdog("-c", config, "release", "-i", "1")
    assert first.status == second.status == 0
    assert "released: sleeper.1 on localhost" in first.stdout
    assert "nothing to release" in second.stdout
    with History.open(config_path=config) as history:
        assert list(history.quarantined()) == [("localhost", "sleeper", 0)]


def test_help_names_every_exit_status_and_loads_nothing_heavy():
    script = ("import sys\n"
              "from drover.watchdog.cli import build_parser\n"
              "print(build_parser().format_help())\n"
              "heavy = ('paramiko', 'jinja2', 'apprise', 'psutil', "
              "'sqlite3')\n"
              "print(sorted(name for name in heavy if name in sys.modules))")
    run = subprocess.run([sys.executable, "-c", script],
                         capture_output=True, text=True, check=True)
    text, loaded = run.stdout.rsplit("\n", 2)[0], run.stdout.split("\n")[-2]
    assert loaded == "[]"
    for status in ("0   OK", "1   WARNING", "2   CRITICAL", "3   UNKNOWN",
                   "4   another watchdog run holds the lock",
                   "5   the check was done, but a notification"):
        assert f"  {status}" in text


# -- one configuration's state ------------------------------------------------

@pytest.fixture
def other_config(config, tmp_path):
    """A second configuration file, named like the first, elsewhere."""
    path = tmp_path / "other" / "drover.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def test_each_configuration_has_its_own_history_and_lock(config,
                                                         other_config):
    with RunLock(config_path=config):
        # A slow run of one configuration does not hold up another's.
        mine = watchdog("-c", other_config, "check")
        busy = watchdog("-c", config, "check")

    assert (mine.status, busy.status) == (0, 4), mine.stderr
    with History.open(config_path=config) as history:
        assert history.checks() == []
    with History.open(config_path=other_config) as history:
        assert len(history.checks()) == 1
    # (localhost's own records share the folder: instances/, logs/.)
    mine = sorted(path for path in paths.state_dir().iterdir()
                  if path.name.startswith("drover-"))
    assert [path.name for path in mine] == sorted(
        [paths.config_id(config), paths.config_id(other_config)])
    for path in mine:
        assert path.stat().st_mode & 0o777 == 0o700


def test_a_report_runs_a_check_and_exits_with_its_status(config):
    os.kill(pid_of(config, 1), signal.SIGKILL)

    run = watchdog("-c", config, "report")

    assert run.status == 2, run.stderr
    assert run.stdout.startswith("DROVER CRITICAL - 1 dead")


# -- the run log --------------------------------------------------------------

def run_log(config):
    return runlog.log_path(paths.config_state_dir(config)).read_text()


def test_the_run_log_tells_the_whole_story_of_a_quiet_run(config,
                                                          other_config):
    os.kill(pid_of(config, 1), signal.SIGKILL)

    run = watchdog("-c", config, "check", "--respawn")

    assert (run.status, run.stderr) == (1, "")
    text = run_log(config)
    lines = text.splitlines()
    assert " INFO drover.cron.runlog: run: watchdog -c " \
           f"{config} check --respawn" in lines[0]
    assert "localhost: ok (" in text
    assert "died: localhost sleeper.1 (dead" in text
    assert "respawned: localhost sleeper.1 (pid " in text
    assert "DROVER WARNING - 1 respawned (2/2 running) | running=2" in text
    assert " INFO drover.cron.runlog: done: exit status 1 in " in lines[-1]
    assert not runlog.log_path(
        paths.config_state_dir(other_config)).exists()


def test_verbose_shows_the_same_lines_on_stderr(config):
    run = watchdog("-c", config, "check", "-v")

    assert run.status == 0
    assert "watchdog: localhost: ok (" in run.stderr
    assert "watchdog: DROVER OK - 2 running" in run.stderr
    assert "localhost: ok (" in run_log(config)


def test_an_error_goes_to_the_log_and_once_to_stderr(config):
    run = watchdog("-c", config, "check", "nosuch")

    assert run.status == 3
    assert run.stderr.count("\n") == 1
    assert 'ERROR drover.cron.runlog: failed after ' in run_log(config)
    assert 'no program named "nosuch"' in run_log(config)


def test_the_log_level_is_put_back_after_the_run(config):
    import logging

    watchdog("-c", config, "check")
    after = launcher("-c", config, "status")

    assert logging.getLogger("drover").level == logging.NOTSET
    assert after.stderr == ""


def test_a_config_without_hosts_is_unknown_not_ok(control_home, tmp_path):
    path = tmp_path / "drover.toml"
    path.write_text('[program.lonely]\ncommand = "sleep 1"\n')

    run = watchdog("-c", path, "check")

    assert run.status == 3
    assert run.stdout == ""
    assert "no host to check: [hosts] names none" in run.stderr


def test_instances_beyond_count_are_counted_apart(config):
    assert launcher("-c", config, "start", "-n", "4").status == 0

    status = launcher("-c", config, "status")

    assert "sleeper: 2/2 running; 2 beyond count" in status.stdout
    assert status.stdout.count("running (beyond count)") == 2

    # Once stopped, the extras are history, not clutter.
    assert launcher("-c", config, "stop").status == 0
    assert launcher("-c", config, "start").status == 0
    status = launcher("-c", config, "status")
    assert "sleeper: 2/2 running\n" in status.stdout
