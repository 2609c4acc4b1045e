"""When the watchdog tells a person: one mail per change, reminders,
heartbeats, and nothing lost when the mail server is down (CASES C12,
C14), against a real SMTP server on 127.0.0.1."""

import json
import logging
from datetime import datetime, time as clock_time
from types import SimpleNamespace

import pytest

from drover.errors import ConfigError
from drover.notify import Spool
from drover.watchdog import alerts
from tests.results import change, check, host, instance, one_dead

pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")

PASSWORD = "s3cr3t@pass/word"
T0 = 1764748800.0  # any moment; the runs are five minutes apart


class MemoryHistory:
    """The two calls of drover.watchdog.history.History alerts use."""

    def __init__(self):
        self.meta = {}

    def get_meta(self, key, default=None):
        # Through JSON, as SQLite keeps it: nothing but plain data.
        return json.loads(self.meta[key]) if key in self.meta else default

    def set_meta(self, key, value):
        self.meta[key] = json.dumps(value)


class Watchdog:
    """Runs `after_check` as cron would, counting the mails of each run."""

    def __init__(self, server, tmp_path, remind_every=None, heartbeat=None,
                 templates=None, email=None, urls=()):
        self.server = server
        self.history = MemoryHistory()
        self.spool = Spool(tmp_path / "spool")
        self.config = SimpleNamespace(
            path=tmp_path / "drover.toml",
            notify=SimpleNamespace(
                email=tuple(email if email is not None else [
                    server.email_target(user="alice", password=PASSWORD)]),
                urls=tuple(urls), config=None),
            watchdog=SimpleNamespace(remind_every=remind_every,
                                     heartbeat=heartbeat),
            report=SimpleNamespace(templates=templates))
        server.require_auth("alice", PASSWORD)
        self.deliveries = []

    def run(self, result, now, notify=False):
        """The mails that arrived during this run."""
        before = len(self.server.messages)
        delivery = alerts.after_check(
            self.config, result, self.history, email=True, notify=notify,
            now=now, spool=self.spool)
        self.deliveries.append(delivery)
        return self.server.messages[before:]


def dead_run(number):
    """Run `number` (1, 2, ...) of a check where crawler.0 stays dead."""
    changes = [change("died", "crawl01", "crawler.0", "exit status 3")] \
        if number == 1 else []
    return one_dead(True, changes, started_at=T0 + 300 * (number - 1))


def recovered_run(number):
    return one_dead(False, [change("recovered", "crawl01", "crawler.0")],
                    started_at=T0 + 300 * (number - 1))


def parts(message):
    plain, html = message.iter_parts()
    return plain.get_content(), html.get_content()


def test_one_mail_per_change_and_one_on_recovery(smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)

    mails = [watchdog.run(dead_run(number), T0 + 300 * (number - 1))
             for number in (1, 2, 3)]
    mails.append(watchdog.run(recovered_run(4), T0 + 900))

    assert [len(batch) for batch in mails] == [1, 0, 0, 1]
    down, up = mails[0][0], mails[3][0]
    assert down["Subject"] == "[drover] CRITICAL: crawler.0 dead on crawl01"
    for part in parts(down):
        assert "crawler.0 on crawl01" in part
        assert "boom" in part
    assert up["Subject"] == "[drover] OK: recovered: crawler.0 on crawl01"
    assert all(delivery.ok for delivery in watchdog.deliveries)


def test_a_first_check_without_changes_still_tells_the_problem(
        smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)

    mails = watchdog.run(one_dead(True, started_at=T0), T0)

    assert len(mails) == 1


def test_a_server_down_at_first_gets_the_down_mail_next_run(
        smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)
    smtp_server.stop()

    first = watchdog.run(dead_run(1), T0)
    smtp_server.start()
    mails = [first] + [watchdog.run(dead_run(number), T0 + 300 * (number - 1))
                       for number in (2, 3)]
    mails.append(watchdog.run(recovered_run(4), T0 + 900))

    assert [len(batch) for batch in mails] == [0, 1, 0, 1]
    failed = watchdog.deliveries[0]
    assert not failed.ok and failed.spooled == 1
    assert failed.failed == [(
        f"mailto://alice:****@127.0.0.1:{smtp_server.port}",
        "connection refused")]
    assert mails[1][0]["Subject"] == \
        "[drover] CRITICAL: crawler.0 dead on crawl01"
    assert [delivery.ok for delivery in watchdog.deliveries[1:]] == \
        [True, True, True]
    assert watchdog.deliveries[-1].spooled == 0


def test_a_report_for_a_target_no_longer_configured_is_dropped(
        smtp_server, tmp_path, caplog):
    watchdog = Watchdog(smtp_server, tmp_path)
    smtp_server.stop()
    watchdog.run(dead_run(1), T0)
    assert len(watchdog.spool.pending()) == 1

    # The person fixed the URL: the old target is gone from the config.
    smtp_server.start()
    watchdog.config.notify.email = (smtp_server.email_target(
        user="alice", password=PASSWORD, sender="watch@example.org"),)
    watchdog.run(dead_run(2), T0 + 300)

    assert watchdog.spool.pending() == []
    assert watchdog.deliveries[-1].spooled == 0
    assert "1 unsent reports for targets no longer in the configuration" \
        in caplog.text


def test_every_delivery_is_logged_for_the_run_log(smtp_server, tmp_path,
                                                 caplog):
    caplog.set_level(logging.INFO, logger="drover")
    watchdog = Watchdog(smtp_server, tmp_path)
    label = f"mailto://alice:****@127.0.0.1:{smtp_server.port}"
    smtp_server.stop()

    watchdog.run(dead_run(1), T0)
    smtp_server.start()
    watchdog.run(dead_run(2), T0 + 300)
    watchdog.run(dead_run(3), T0 + 600)

    said = [record.getMessage() for record in caplog.records
            if record.name.startswith("drover.")]
    expected = [
        f"failed: report to {label} (connection refused)",
        f"spooled: change report to {label} (sent with a later run)",
        "waiting: 1 unsent reports in the spool (",
        f"sent: report to {label} (",
        f"not sent: report to {label} (nothing new to tell)",
        f"not sent: report to {label} (nothing new to tell)"]
    assert len(said) == len(expected), said
    for line, start in zip(said, expected):
        assert line.startswith(start), line
    assert PASSWORD not in caplog.text


def test_a_long_outage_sends_one_down_mail_when_it_ends(
        smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)
    smtp_server.stop()

    for number in (1, 2, 3):
        assert watchdog.run(dead_run(number), T0 + 300 * (number - 1)) == []
    smtp_server.start()
    mails = watchdog.run(dead_run(4), T0 + 900)

    assert len(mails) == 1
    assert [delivery.spooled for delivery in watchdog.deliveries] == \
        [1, 1, 1, 0]
    assert [delivery.ok for delivery in watchdog.deliveries] == \
        [False, False, False, True]


def test_what_happened_during_an_outage_is_told_in_order(
        smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)
    smtp_server.stop()

    watchdog.run(dead_run(1), T0)
    watchdog.run(recovered_run(2), T0 + 300)
    smtp_server.start()
    mails = watchdog.run(one_dead(False, started_at=T0 + 600), T0 + 600)

    assert [mail["Subject"] for mail in mails] == [
        "[drover] CRITICAL: crawler.0 dead on crawl01",
        "[drover] OK: recovered: crawler.0 on crawl01"]


def test_only_a_reminder_interval_repeats_a_down(smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path, remind_every=3600)
    moments = [0, 300, 3300, 3600, 3900, 7200]

    mails = [watchdog.run(dead_run(1 if moment == 0 else 2), T0 + moment)
             for moment in moments]

    assert [len(batch) for batch in mails] == [1, 0, 0, 1, 0, 1]
    reminder = mails[3][0]
    assert reminder["Subject"] == \
        "[drover] CRITICAL (reminder): crawler.0 dead on crawl01"
    assert "Reminder: problems first reported" in parts(reminder)[0]


@pytest.mark.parametrize("heartbeat", ["08:00", clock_time(8, 0)])
def test_a_heartbeat_goes_once_a_day_after_its_time(
        smtp_server, tmp_path, heartbeat):
    watchdog = Watchdog(smtp_server, tmp_path, heartbeat=heartbeat)
    moments = [datetime(2025, 12, 3, 7, 55), datetime(2025, 12, 3, 8, 0),
               datetime(2025, 12, 3, 8, 5), datetime(2025, 12, 3, 23, 0),
               datetime(2025, 12, 4, 7, 55), datetime(2025, 12, 4, 8, 1)]

    mails = [watchdog.run(one_dead(False, started_at=moment.timestamp()),
                          moment.timestamp())
             for moment in moments]

    assert [len(batch) for batch in mails] == [0, 1, 0, 0, 0, 1]
    assert mails[1][0]["Subject"] == \
        "[drover] OK (daily): all 4 instances running"


def test_a_respawn_is_told_though_nothing_stays_down(smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)
    respawned = check(
        [host("crawl01")],
        [instance("crawl01", "crawler", 0, respawned=True, exit_status=1,
                  stderr_tail=["segfault"], restarts=1)],
        [change("respawned", "crawl01", "crawler.0", "exit status 1")],
        started_at=T0)
    quiet = check([host("crawl01")], [instance("crawl01", "crawler", 0)],
                  started_at=T0 + 300)

    mails = [watchdog.run(respawned, T0), watchdog.run(quiet, T0 + 300)]

    assert [len(batch) for batch in mails] == [1, 0]
    text, html = parts(mails[0][0])
    assert "crawler.0 on crawl01: died, respawned, exit status 1" in text
    assert "segfault" in text and "segfault" in html


def test_a_failed_notification_is_noticed_and_not_delivered(
        smtp_server, tmp_path, caplog):
    watchdog = Watchdog(smtp_server, tmp_path)
    smtp_server.stop()
    caplog.set_level(logging.DEBUG)

    watchdog.run(dead_run(1), T0)

    delivery = watchdog.deliveries[0]
    assert not delivery.ok
    ((target, reason),) = delivery.failed
    assert target == f"mailto://alice:****@127.0.0.1:{smtp_server.port}"
    assert "connection refused" in reason
    state = watchdog.history.get_meta("alerts")
    assert state["targets"] == {}
    assert state["seen"]["problems"] == ["crawl01 crawler.0: dead"]
    for text in (caplog.text, json.dumps(state), repr(delivery)):
        assert PASSWORD not in text and "s3cr3t%40" not in text


def test_a_url_apprise_cannot_parse_is_refused_before_any_check():
    config = SimpleNamespace(path="/etc/drover.toml", notify=SimpleNamespace(
        email=(), urls=("json://127.0.0.1/", "json://127.0.0.1:8080/",
                        "bogus://user:t0ken-s3cret@host/x"), config=None))

    with pytest.raises(ConfigError) as raised:
        alerts.validate_targets(config, email=False, notify=True)

    assert raised.value.key == "notify.urls[2]"
    assert "bogus://****" in str(raised.value)
    assert "t0ken-s3cret" not in str(raised.value)


def test_a_failed_target_does_not_cost_the_others_their_mail(
        smtp_server, tmp_path):
    dead_end = smtp_server.email_target(to="lost@example.org")
    dead_end["port"] = 9  # discard: nothing listens on loopback
    working = smtp_server.email_target(user="alice", password=PASSWORD)
    watchdog = Watchdog(smtp_server, tmp_path, email=[dead_end, working])

    mails = watchdog.run(dead_run(1), T0)

    assert len(mails) == 1
    delivery = watchdog.deliveries[0]
    assert [target for target, _ in delivery.failed] == \
        ["mailto://127.0.0.1:9"]
    assert len(delivery.sent) == 1 and delivery.spooled == 1


def test_email_and_notify_targets_each_get_the_report(
        smtp_server, http_server, tmp_path):
    url = f"json://127.0.0.1:{http_server.server_address[1]}/"
    watchdog = Watchdog(smtp_server, tmp_path, urls=[url])

    mails = watchdog.run(dead_run(1), T0, notify=True)
    watchdog.run(dead_run(2), T0 + 300, notify=True)

    assert len(mails) == 1
    assert [posted["title"] for posted in http_server.received] == \
        ["[drover] CRITICAL: crawler.0 dead on crawl01"]


def test_a_broken_user_template_does_not_silence_the_alert(
        smtp_server, tmp_path, caplog):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "report.txt.j2").write_text("{% if %}\n")
    watchdog = Watchdog(smtp_server, tmp_path, templates=templates)

    mails = watchdog.run(dead_run(1), T0)

    assert len(mails) == 1
    assert "crawler.0 on crawl01" in parts(mails[0])[0]
    assert "failed: report template" in caplog.text


def test_the_state_is_plain_json_under_one_key(smtp_server, tmp_path):
    watchdog = Watchdog(smtp_server, tmp_path)

    watchdog.run(dead_run(1), T0)

    assert list(watchdog.history.meta) == ["alerts"]
    state = watchdog.history.get_meta("alerts")
    (told,) = state["targets"].values()
    assert told["problems"] == ["crawl01 crawler.0: dead"]
    assert told["label"] == \
        f"mailto://alice:****@127.0.0.1:{smtp_server.port}"
    assert told["at"] == T0


def test_problems_leave_out_unknown_and_stopped_instances():
    result = check(
        [host("crawl01"), host("crawl02", "unreachable")],
        [instance("crawl01", "crawler", 0, "stopped"),
         instance("crawl01", "crawler", 1, "quarantined"),
         instance("crawl02", "crawler", 0, "unknown")])

    assert alerts.problems(result) == [
        "crawl01 crawler.1: quarantined", "crawl02: unreachable"]


@pytest.mark.parametrize("current, changes, told, now, expected", [
    (["a"], [], None, 0, "change"),
    (["a"], [], {"problems": ["a"], "at": 0}, 10, None),
    (["a", "b"], [], {"problems": ["a"], "at": 0}, 10, "change"),
    ([], [], {"problems": ["a"], "at": 0}, 10, "recovery"),
    ([], [{"kind": "rebooted"}], {"problems": [], "at": 0}, 10, "change"),
    ([], [], {"problems": [], "at": 0}, 10 ** 6, None),
    (["a"], [], {"problems": ["a"], "at": 0}, 3600, "reminder"),
])
def test_decide(current, changes, told, now, expected):
    assert alerts.decide(current, changes, told, now,
                         remind_every=3600) == expected
