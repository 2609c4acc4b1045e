"""A dead instance on a fake host, told by mail once, and its recovery."""

import textwrap

import pytest

from tests.helpers import launcher, run_cli, write_config

pytestmark = [pytest.mark.cluster,
              pytest.mark.filterwarnings("ignore:Requiring AUTH")]


def watchdog(*argv):
    from drover.watchdog.cli import main
    return run_cli(main, *argv)


def _parts(message):
    plain = html = None
    for part in message.walk():
        if part.get_content_type() == "text/plain":
            plain = part.get_content()
        elif part.get_content_type() == "text/html":
            html = part.get_content()
    return plain, html


def test_one_mail_when_an_instance_dies_and_one_when_it_is_back(
        cluster, control_home, tmp_path, smtp_server):
    target = smtp_server.email_target()
    config = write_config(tmp_path / "drover.toml", cluster, textwrap.dedent(
        f"""
        [hosts]
        one = ["host02"]

        [program.crawler]
        command = "echo 'fetch <failed> & gave up' >&2; exec sleep 900"
        count = 2
        start_seconds = 0.3

        [[notify.email]]
        host = "{target['host']}"
        port = {target['port']}
        security = "none"
        from = "drover@example.org"
        to = ["ops@example.org"]
        """))
    assert launcher("-c", config, "start").status == 0
    try:
        records = launcher("-c", config, "status", "--json").json()
        victim = records["instances"][1]
        cluster["host02"].run(["kill", "-KILL", str(victim["pid"])])

        runs = [watchdog("-c", config, "check", "--email")
                for _ in range(3)]
        mails_while_down = len(smtp_server.messages)
        assert launcher("-c", config, "start").status == 0
        back = watchdog("-c", config, "check", "--email")
    finally:
        launcher("-c", config, "stop")

    assert [run.status for run in runs] == [2, 2, 2]
    assert mails_while_down == 1
    down = smtp_server.messages[0]
    assert down["Subject"] == \
        "[drover] CRITICAL: crawler.1 dead (pid gone) on host02"
    plain, html = _parts(down)
    for part in (plain, html):
        assert "crawler.1" in part
    assert "fetch <failed> & gave up" in plain
    assert "fetch &lt;failed&gt; &amp; gave up" in html

    assert back.status == 0
    assert len(smtp_server.messages) == 2
    assert smtp_server.messages[1]["Subject"].startswith(
        "[drover] OK: recovered: crawler.1 on host02")
