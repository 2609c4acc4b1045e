"""``watchdog report``: the last stored check rendered, written, sent."""

import json

import pytest

from tests.helpers import run_cli
from tests.results import one_dead

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")

PASSWORD = "p@ss%w#rd&x;y/z"


def watchdog(*argv):
    from drover.watchdog.cli import main
    return run_cli(main, *argv)


@pytest.fixture
def config_file(control_home, smtp_server, tmp_path):
    """A configuration whose notify.email is the test SMTP server."""
    smtp_server.require_auth("alice", PASSWORD)
    path = tmp_path / "drover.toml"
    path.write_text(f"""\
[hosts]
crawlers = ["crawl[01-02]"]

[program.crawler]
command = ["crawler"]
count = 2

[[notify.email]]
host = "127.0.0.1"
port = {smtp_server.port}
security = "none"
user = "alice"
password = {json.dumps(PASSWORD)}
from = "drover@example.org"
to = ["ops@example.org"]
""")
    return path


def store(config_path, result):
    """``result`` as the last check in the history of ``config_path``."""
    from drover.watchdog.check import CheckResult
    from drover.watchdog.history import History, Updates

    with History.open(config_path=config_path) as history:
        history.record_check(CheckResult.from_dict(result), Updates())
    return result


@pytest.fixture
def stored_check(config_file):
    """One check in the history: crawler.0 dead on crawl01."""
    return store(config_file, one_dead())


def test_report_from_last_prints_the_text_report(config_file, stored_check):
    run = watchdog("-c", config_file, "report", "--from-last")

    # CRITICAL, as the check itself exited.
    assert run.status == 2, run.stderr
    assert run.stdout.startswith("DROVER CRITICAL - 1 dead\n")
    assert "crawler.0 on crawl01" in run.stdout


@pytest.mark.parametrize("form, start", [
    ("html", "<!DOCTYPE html>"), ("json", "{")])
def test_report_writes_the_format_asked_to_a_file(
        config_file, stored_check, tmp_path, form, start):
    output = tmp_path / f"report.{form}"

    run = watchdog("-c", config_file, "report", "--from-last",
                   "--format", form, "-o", output)

    assert run.status == 2, run.stderr
    assert run.stdout == ""
    assert output.read_text().startswith(start)
    if form == "json":
        assert json.loads(output.read_text())["summary"] == \
            stored_check["summary"]


def test_report_email_sends_it_now(config_file, stored_check, smtp_server):
    run = watchdog("-c", config_file, "report", "--from-last", "--email")

    assert run.status == 2, run.stderr
    (message,) = smtp_server.messages
    assert message["Subject"] == \
        "[drover] CRITICAL: crawler.0 dead on crawl01"
    assert run.stdout == (f"sent: {message['Subject']} to "
                          f"mailto://alice:****@127.0.0.1:"
                          f"{smtp_server.port}\n")


def test_report_email_failure_has_its_own_status(
        config_file, stored_check, smtp_server):
    smtp_server.stop()

    run = watchdog("-c", config_file, "report", "--from-last", "--email")

    assert run.status == 5
    assert f"watchdog: notify: mailto://alice:****@127.0.0.1:" \
           f"{smtp_server.port}: connection refused" in run.stderr
    assert PASSWORD not in run.stderr + run.stdout


def test_report_from_last_without_a_check_says_so(config_file):
    run = watchdog("-c", config_file, "report", "--from-last")

    assert run.status == 3
    assert "no check stored yet" in run.stderr


@pytest.mark.parametrize("dead, status", [(False, 0), (True, 2)])
def test_report_exits_with_the_status_of_the_check(config_file, dead,
                                                    status):
    store(config_file, one_dead(dead=dead))

    run = watchdog("-c", config_file, "report", "--from-last",
                   "--format", "json")

    assert run.status == status == run.json()["status"], run.stderr


def test_report_from_last_is_the_last_check_of_its_own_configuration(
        config_file, tmp_path):
    other = tmp_path / "other" / "drover.toml"
    other.parent.mkdir()
    other.write_text(config_file.read_text())
    store(config_file, one_dead(dead=True))
    store(other, one_dead(dead=False))

    mine = watchdog("-c", config_file, "report", "--from-last")
    theirs = watchdog("-c", other, "report", "--from-last")

    assert mine.stdout.startswith("DROVER CRITICAL - 1 dead\n")
    assert theirs.stdout.startswith("DROVER OK - 4 running\n")
    assert (mine.status, theirs.status) == (2, 0)
