"""The report templates: order, folding, escaping, user overrides."""

import json
from html.parser import HTMLParser

import pytest

from drover.errors import ConfigError
from drover.templates.render import render
from tests.results import (HOSTILE_HOST, HOSTILE_TAIL, change, check, host,
                           hostile, instance)

def crawl_farm():
    """crawler.3 dead on three hosts, one host unreachable."""
    hosts = [host("crawl01"), host("crawl02"), host("crawl03"),
             host("crawl07", "unreachable")]
    instances = [instance(name, "crawler", number,
                          "dead" if number == 3 else "running")
                 for name in ("crawl01", "crawl02", "crawl03")
                 for number in range(4)]
    instances += [instance("crawl07", "crawler", number, "unknown")
                  for number in range(4)]
    changes = [change("died", name, "crawler.3", "exit status 3")
               for name in ("crawl01", "crawl02", "crawl03")]
    changes.append(change("unreachable", "crawl07"))
    return check(hosts, instances, changes)


class _Visible(HTMLParser):
    """The text a mail client shows, and every tag and attribute."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.text = []
        self.tags = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def visible(html):
    parser = _Visible()
    parser.feed(html)
    parser.close()
    return "".join(parser.text), parser.tags


def test_text_tells_verdict_changes_problems_dead_hosts_then_table():
    text = render(crawl_farm()).text
    lines = text.splitlines()

    assert lines[0] == "DROVER CRITICAL - 3 dead, 1 host unreachable"
    order = [text.index(heading) for heading in (
        "Changes since the last check", "Problems", "Dead instances",
        "Hosts", "Instances")]
    assert order == sorted(order)


def test_problems_fold_hosts_into_ranges():
    text = render(crawl_farm()).text

    assert "crawler.3 on crawl[01-03] (3)" in text
    assert "died: crawler.3 on crawl[01-03] (3): exit status 3" in text
    assert "crawl07: their instances are unknown" in text


def test_instance_numbers_sharing_hosts_fold_too():
    hosts = [host("n1"), host("n2")]
    instances = [instance(name, "crawler", number, "dead")
                 for name in ("n1", "n2") for number in range(3)]

    text = render(check(hosts, instances)).text

    assert "crawler.[0-2] on n[1-2] (2)" in text


def test_unreachable_host_instances_are_unknown_not_dead():
    rendered = render(crawl_farm())
    problems = rendered.text.split("Problems")[1].split("Dead instances")[0]

    assert "unreachable (connect timeout)" in problems
    assert "crawl07" in problems
    assert "crawler.0 on crawl07" not in problems
    assert "unknown" not in rendered.subject


def test_dead_instance_shows_exit_information_and_stderr_tail():
    hosts = [host("crawl01")]
    instances = [instance("crawl01", "crawler", 0, "dead", exit_status=None,
                          signal=9, reason="zombie",
                          stderr_tail=["Traceback:", "  MemoryError"])]
    rendered = render(check(hosts, instances))
    html_text, _ = visible(rendered.html)

    for part in (rendered.text, html_text):
        assert "crawler.0 on crawl01: dead (zombie), killed by signal " \
               "9 (SIGKILL)" in " ".join(part.split())
        assert "  MemoryError" in part
    assert "    | Traceback:\n    |   MemoryError\n" in rendered.text


def test_the_same_failure_on_many_hosts_is_told_once():
    text = render(crawl_farm()).text
    dead = text.split("Dead instances")[1].split("Hosts")[0]

    assert dead.count("crawler.3 on crawl[01-03] (3): dead, exit status 3") \
        == 1
    assert dead.count("| boom") == 1


def test_hosts_show_boot_uptime_load_memory_and_disk():
    text = render(crawl_farm()).text
    row = next(line for line in text.split("Hosts")[1].splitlines()
               if line.strip().startswith("crawl01"))

    assert "2d01h" in row
    assert "0.52 0.48 0.40" in row
    assert "1.2G of 3.8G (32%)" in row
    assert "/srv/crawler 10.0G of 20.0G (50%)" in row


def test_subject_names_the_problem():
    hosts = [host("crawl01")]
    instances = [instance("crawl01", "crawler", 0, "dead"),
                 instance("crawl01", "crawler", 1)]

    subject = render(check(hosts, instances)).subject

    assert subject == "[drover] CRITICAL: crawler.0 dead on crawl01"


def test_subject_of_a_recovery_says_what_came_back():
    hosts = [host("crawl01")]
    instances = [instance("crawl01", "crawler", 0)]
    changes = [change("recovered", "crawl01", "crawler.0")]

    rendered = render(check(hosts, instances, changes),
                      alert={"reason": "recovery"})

    assert rendered.subject == \
        "[drover] OK: recovered: crawler.0 on crawl01"


def test_subject_marks_reminders_and_heartbeats():
    result = check([host("crawl01")], [instance("crawl01", "crawler", 0)])

    heartbeat = render(result, alert={"reason": "heartbeat"})
    reminder = render(crawl_farm(), alert={"reason": "reminder",
                                           "since": 1764780000.0})

    assert heartbeat.subject == \
        "[drover] OK (daily): all 1 instance running"
    assert reminder.subject.startswith("[drover] CRITICAL (reminder): ")
    assert "Reminder: problems first reported" in reminder.text


def test_subject_is_one_line_whatever_the_names_hold():
    hosts = [host("crawl\n01\r\nBcc: victim@example.org")]
    instances = [instance(hosts[0]["name"], "crawler", 0, "dead")]

    subject = render(check(hosts, instances)).subject

    assert "\n" not in subject and "\r" not in subject


def test_hostile_content_is_escaped_in_html_and_verbatim_elsewhere():
    rendered = render(hostile())
    html_text, tags = visible(rendered.html)

    # The HTML shows the very characters, and carries no markup of theirs.
    assert "script" not in {tag for tag, _ in tags}
    assert "<script>" not in rendered.html and "<b>\"" not in rendered.html
    for piece in [HOSTILE_HOST, 'pid <reused> & "gone"',
                  "exec: </opt/x&y> not found"] + HOSTILE_TAIL:
        assert piece in html_text
        assert piece in rendered.text
    command = "sh -c 'echo \"<b>\" & echo '\"'\"'&amp;'\"'\"' >&2; exit 3'"
    assert command in html_text
    assert command in rendered.text

    # Subject and text are never HTML-escaped.
    assert "&lt;" not in rendered.text and "&amp;amp;" not in rendered.text
    assert rendered.subject == (
        '[drover] CRITICAL: crawler.0 dead (pid <reused> & "gone") on '
        f"{HOSTILE_HOST} and 1 more")


def test_control_characters_in_stderr_do_not_reach_the_mail():
    tail = ["\x1b[31mred\x1b[0m\x00 \tend"]
    result = check([host("crawl01")],
                   [instance("crawl01", "crawler", 0, "dead",
                             stderr_tail=tail)])

    rendered = render(result)

    assert "\x1b" not in rendered.text and "\x00" not in rendered.text
    assert "\ufffd[31mred\ufffd[0m\ufffd \tend" in rendered.text


def test_html_has_inline_styles_no_scripts_and_no_external_resources():
    html = render(hostile()).html
    _, tags = visible(html)
    names = {tag for tag, _ in tags}

    assert not names & {"script", "style", "link", "img", "iframe",
                        "object", "embed", "form", "base"}
    for _, attributes in tags:
        assert not any(name.startswith("on") for name in attributes)
        assert "src" not in attributes and "href" not in attributes
    assert "http://" not in html and "https://" not in html
    assert any("style" in attributes for _, attributes in tags)


def test_renders_a_check_stored_as_json():
    result = crawl_farm()

    stored = json.loads(json.dumps(result))

    assert render(stored) == render(result)


def test_a_user_template_replaces_the_shipped_one_of_that_name(tmp_path):
    (tmp_path / "subject.txt.j2").write_text(
        "ALERT {{ verdict }} {{ result.hosts[0].name }}\n")

    rendered = render(hostile(), templates_dir=tmp_path)

    assert rendered.subject == f"ALERT CRITICAL {HOSTILE_HOST}"
    assert rendered.text == render(hostile()).text


def test_a_user_html_template_is_autoescaped_text_one_is_not(tmp_path):
    (tmp_path / "report.html.j2").write_text(
        "<p>{{ result.hosts[0].name }}</p>")
    (tmp_path / "report.txt.j2").write_text("{{ result.hosts[0].name }}")

    rendered = render(hostile(), templates_dir=tmp_path)

    assert rendered.html == \
        "<p>web&lt;script&gt;alert(&#34;h&#34;)&lt;/script&gt;&amp;&#39;é</p>"
    assert rendered.text == HOSTILE_HOST


def test_a_broken_user_template_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "report.txt.j2"
    path.write_text("line one\n{% for x in %}\n")

    with pytest.raises(ConfigError) as raised:
        render(hostile(), templates_dir=tmp_path)

    assert str(path) in str(raised.value)
    assert raised.value.line == 2


def test_a_typo_in_a_user_template_fails_loudly(tmp_path):
    (tmp_path / "report.txt.j2").write_text("{{ verdcit }}\n")

    with pytest.raises(ConfigError, match="verdcit"):
        render(hostile(), templates_dir=tmp_path)


def test_renders_a_real_check_result():
    from drover.watchdog.check import CheckResult

    result = CheckResult.from_dict(crawl_farm())

    rendered = render(result.to_dict())

    assert "crawler.3 on crawl[01-03] (3)" in rendered.text
