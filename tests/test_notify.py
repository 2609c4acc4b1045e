"""Delivery: email in two parts over real SMTP, apprise URLs, secrets
masked, and the spool of unsent reports. All traffic is on 127.0.0.1."""

import logging
import time
from types import SimpleNamespace

import pytest

from drover import notify, paths
from drover.errors import ConfigError, NotifyError
from drover.notify import Spool, chosen_targets, email_url, mask_url, send
from drover.templates.render import Rendered, render
from tests.results import HOSTILE_HOST, HOSTILE_TAIL, hostile, one_dead

# aiosmtpd warns of AUTH without TLS on every connection: wanted here,
# where nothing leaves 127.0.0.1.
pytestmark = pytest.mark.filterwarnings("ignore:Requiring AUTH:UserWarning")

PASSWORD = "p@ss%w#rd&x;y/z"
USER = "alice@example.org"


def settings(email=(), urls=(), config=None, path=None):
    return SimpleNamespace(
        path=path, notify=SimpleNamespace(email=tuple(email),
                                          urls=tuple(urls), config=config))


def email_target(server, **fields):
    return chosen_targets(settings([server.email_target(**fields)]),
                          email=True)[0]


def lines(text):
    """SMTP carries CRLF line ends; the parser keeps them."""
    return text.replace("\r\n", "\n").splitlines()


# -- email -------------------------------------------------------------------

def test_structured_email_becomes_a_url_apprise_reads_back():
    import apprise

    url = email_url({"host": "smtp.example.org", "port": 2525,
                     "security": "starttls", "user": USER,
                     "password": PASSWORD, "from": "Ops <ops@example.org>",
                     "to": ["a@example.org", "b@example.org"]})
    plugin = apprise.Apprise.instantiate(url)

    assert plugin.user == USER
    assert plugin.password == PASSWORD
    assert (plugin.smtp_host, plugin.port) == ("smtp.example.org", 2525)
    assert plugin.secure_mode == "starttls"
    assert tuple(plugin.from_addr) == ("Ops", "ops@example.org")
    assert [address for _, address in plugin.targets] == \
        ["a@example.org", "b@example.org"]


def test_config_email_server_objects_are_accepted():
    from drover.config import EmailServer

    server = EmailServer(host="127.0.0.1", to=("ops@example.org",),
                         port=2525, security="none", user=USER,
                         password=PASSWORD, sender="drover@example.org")

    url = email_url(server)

    assert url.startswith("mailto://alice%40example.org:")
    assert "from=drover%40example.org" in url


# Non-ASCII passwords are left out: apprise logs in through smtplib,
# which encodes credentials as ASCII.
@pytest.mark.parametrize("password", [
    PASSWORD, "colon:plus+space quote\"question?equals="])
def test_a_password_with_reserved_characters_authenticates(
        smtp_server, password):
    smtp_server.require_auth(USER, password)
    target = email_target(smtp_server, user=USER, password=password)

    send(target, render(one_dead()))

    assert smtp_server.logins == [(USER, True)]
    assert len(smtp_server.messages) == 1


def test_a_password_file_is_read_without_its_newline(smtp_server, tmp_path):
    smtp_server.require_auth(USER, PASSWORD)
    secret = tmp_path / "smtp-password"
    secret.write_text(PASSWORD + "\n")
    entry = smtp_server.email_target(user=USER)
    entry["password_file"] = secret

    send(chosen_targets(settings([entry]), email=True)[0],
         render(one_dead()))

    assert smtp_server.logins == [(USER, True)]


def test_email_carries_the_text_and_the_html_part(smtp_server):
    rendered = render(one_dead())
    target = email_target(smtp_server, to=["ops@example.org",
                                           "dev@example.org"])

    send(target, rendered)

    # apprise sends one message per recipient; the text part is its
    # rendering of the HTML report.
    assert sorted(message["To"] for message in smtp_server.messages) == \
        ["dev@example.org", "ops@example.org"]
    message = smtp_server.messages[0]
    assert message["Subject"] == rendered.subject
    assert "drover@example.org" in message["From"]
    assert message["Date"] and message["Message-ID"]
    assert message.get_content_type() == "multipart/alternative"
    plain, html = message.iter_parts()
    assert plain.get_content_type() == "text/plain"
    assert html.get_content_type() == "text/html"
    assert lines(html.get_content()) == lines(rendered.html)
    text = plain.get_content()
    assert "crawler.0" in text and "DROVER CRITICAL - 1 dead" in text


def test_hostile_content_arrives_intact_in_every_part(smtp_server):
    rendered = render(hostile())

    send(email_target(smtp_server), rendered)

    message = smtp_server.messages[0]
    plain, html = message.iter_parts()
    assert message["Subject"] == rendered.subject
    assert HOSTILE_HOST in message["Subject"]
    for line in HOSTILE_TAIL:
        assert line in plain.get_content()
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;" in \
        html.get_content()
    assert "<script>" not in html.get_content()


def test_a_mailto_url_string_is_a_target_too(smtp_server):
    url = (f"mailto://{smtp_server.host}:{smtp_server.port}/"
           "ops@example.org?from=drover@example.org")

    send(chosen_targets(settings([url]), email=True)[0],
         render(one_dead()))

    assert smtp_server.messages[0]["To"] == "ops@example.org"


def test_a_wrong_password_fails_without_showing_it(smtp_server, caplog):
    smtp_server.require_auth(USER, PASSWORD)
    target = email_target(smtp_server, user=USER, password="x" + PASSWORD)
    caplog.set_level(logging.DEBUG)

    with pytest.raises(NotifyError) as raised:
        send(target, render(one_dead()))

    assert "authentication refused (535" in raised.value.reason
    assert "alice%40example.org:****@127.0.0.1" in str(raised.value)
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in caplog.text
    assert smtp_server.messages == []


def test_nothing_listening_is_a_failure_naming_the_target_masked(
        smtp_server, caplog):
    target = email_target(smtp_server, user=USER, password=PASSWORD)
    smtp_server.stop()
    caplog.set_level(logging.DEBUG)

    with pytest.raises(NotifyError) as raised:
        send(target, render(one_dead()))

    assert raised.value.target == \
        f"mailto://alice%40example.org:****@127.0.0.1:{smtp_server.port}"
    assert raised.value.reason == "connection refused"
    assert PASSWORD not in caplog.text


def test_sending_takes_a_fraction_of_a_second(smtp_server):
    target = email_target(smtp_server)
    started = time.monotonic()

    send(target, render(one_dead()))

    assert time.monotonic() - started < 1.0


# -- apprise URLs ------------------------------------------------------------

def test_an_apprise_url_gets_the_text_report(http_server):
    port = http_server.server_address[1]
    url = f"json://127.0.0.1:{port}/hook"
    rendered = render(hostile())

    targets = chosen_targets(settings(urls=[url]), notify=True)
    send(targets[0], rendered)

    posted = http_server.received[0]
    assert posted["title"] == rendered.subject
    assert posted["message"] == rendered.text.rstrip("\n")


def test_an_apprise_failure_reason_is_scrubbed_of_secrets(caplog):
    # Port 9 (discard): nothing listens on loopback.
    url = "json://user:s3cr3t-t0ken@127.0.0.1:9/hook"
    target = chosen_targets(settings(urls=[url]), notify=True)[0]
    caplog.set_level(logging.DEBUG)

    with pytest.raises(NotifyError) as raised:
        send(target, render(one_dead()))

    assert raised.value.target == "json://user:****@127.0.0.1:9/hook"
    assert "s3cr3t-t0ken" not in str(raised.value)
    assert "s3cr3t-t0ken" not in caplog.text


def test_tokens_apprise_hides_are_scrubbed_from_messages():
    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ"
    target = chosen_targets(settings(urls=[url]), notify=True)[0]

    message = notify.redact(f"POST {url} failed", target.secrets)

    assert "TIiajkdnlazkcOXrIdevi7FQ" not in message
    assert "TIiajkdnlazkcOXrIdevi7FQ" not in target.label


def test_a_url_apprise_cannot_parse_is_a_config_error_naming_its_key():
    urls = ["json://127.0.0.1/",
            "mailto://127.0.0.1/a@example.org?from=d@example.org",
            "nosuchservice://tok3n-s3cret@host/path"]

    with pytest.raises(ConfigError) as raised:
        chosen_targets(settings(urls=urls), notify=True)

    assert raised.value.key == "notify.urls[2]"
    assert "nosuchservice://****" in str(raised.value)
    assert "tok3n-s3cret" not in str(raised.value)


@pytest.mark.parametrize("password", ["12#ss", "a:b@c", "x/y#z"])
def test_a_raw_password_that_breaks_the_url_is_never_shown(password):
    url = f"mailto://bob:{password}@smtp.example.org/?from=d@example.org"

    try:
        labels = [target.label for target in chosen_targets(
            settings([url]), email=True)]
    except ConfigError as error:
        labels = [str(error)]

    assert all(password not in label for label in labels)


def test_email_needs_an_email_url():
    with pytest.raises(ConfigError) as raised:
        chosen_targets(settings(["json://user:pa55w0rd@127.0.0.1/"]),
                       email=True)

    assert raised.value.key == "notify.email[0]"
    assert "pa55w0rd" not in str(raised.value)


def test_email_and_notify_need_targets():
    with pytest.raises(ConfigError, match="notify.email"):
        chosen_targets(settings(), email=True)
    with pytest.raises(ConfigError, match="notify.urls"):
        chosen_targets(settings(), notify=True)


def test_an_apprise_config_file_lists_targets(
        tmp_path, smtp_server, http_server):
    port = http_server.server_address[1]
    config_file = tmp_path / "apprise.txt"
    config_file.write_text(
        f"json://127.0.0.1:{port}/hook\n"
        f"mailto://{smtp_server.host}:{smtp_server.port}/ops@example.org"
        "?from=drover@example.org\n")
    rendered = render(one_dead())

    targets = chosen_targets(settings(config=config_file), notify=True)
    for target in targets:
        send(target, rendered)

    assert len(targets) == 2
    assert http_server.received[0]["title"] == rendered.subject
    assert smtp_server.messages[0].get_content_type() == \
        "multipart/alternative"


def test_a_missing_apprise_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError) as raised:
        chosen_targets(settings(config=tmp_path / "none.yml"), notify=True)

    assert raised.value.key == "notify.config"


@pytest.mark.parametrize("url, masked", [
    ("mailto://bob:pa55@smtp.example.org:587/ops@example.org",
     "mailto://bob:****@smtp.example.org:587/ops@example.org"),
    ("mailtos://alice%40example.org:p%40ss@smtp.example.org",
     "mailtos://alice%40example.org:****@smtp.example.org"),
    ("mailto://smtp.example.org?pass=pa55", "mailto://smtp.example.org"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ", "slack://****"),
    ("not a url", "?://****"),
    ("mailto://bob:123#45@smtp.example.org", "mailto://****"),
])
def test_mask_url_hides_every_secret(url, masked):
    assert mask_url(url) == masked


# -- the spool ---------------------------------------------------------------

def rendered_of(size):
    return Rendered("subject", "x" * size, "<p>x</p>")


def test_the_spool_gives_reports_back_oldest_first(tmp_path):
    spool = Spool(tmp_path / "spool")
    for moment in (300.0, 100.0, 200.0):
        spool.add("key1", rendered_of(10), {"at": moment}, moment)
    spool.add("key2", rendered_of(10), {}, 50.0)

    waiting = spool.pending("key1")

    assert [report.meta["at"] for report in waiting] == [100.0, 200.0,
                                                         300.0]
    assert [report.target for report in spool.pending()] == \
        ["key2", "key1", "key1", "key1"]
    spool.remove(waiting[0])
    assert spool.size()[0] == 3


def test_the_spool_is_private_and_holds_no_secret(tmp_path, smtp_server):
    target = email_target(smtp_server, user=USER, password=PASSWORD)
    spool = Spool(tmp_path / "spool")

    spool.add(target, render(one_dead()), {"problems": []}, time.time())

    (path,) = (tmp_path / "spool").iterdir()
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert path.stat().st_mode & 0o777 == 0o600
    assert PASSWORD not in path.read_text()
    assert "p%40ss" not in path.read_text()


def test_the_spool_drops_the_oldest_past_its_count(tmp_path, caplog):
    spool = Spool(tmp_path, max_reports=3)
    for moment in range(1, 6):
        spool.add("key", rendered_of(10), {"at": moment}, moment)

    dropped = spool.trim(now=10)

    assert dropped == 2
    assert [report.meta["at"] for report in spool.pending()] == [3, 4, 5]
    assert "dropped: 2 oldest unsent reports" in caplog.text


def test_the_spool_drops_the_oldest_past_its_bytes(tmp_path):
    spool = Spool(tmp_path, max_bytes=5000)
    for moment in range(1, 5):
        spool.add("key", rendered_of(2000), {"at": moment}, moment)

    spool.trim(now=10)

    reports, size = spool.size()
    assert reports == 2 and size <= 5000
    assert [report.meta["at"] for report in spool.pending()] == [3, 4]


def test_the_spool_drops_reports_past_its_age(tmp_path):
    spool = Spool(tmp_path, max_age=3600)
    spool.add("key", rendered_of(10), {"at": "old"}, 1000.0)
    spool.add("key", rendered_of(10), {"at": "new"}, 4000.0)

    spool.trim(now=5000.0)

    assert [report.meta["at"] for report in spool.pending()] == ["new"]


def test_an_unreadable_spooled_report_is_dropped_not_fatal(tmp_path):
    spool = Spool(tmp_path)
    spool.add("key", rendered_of(10), {}, 1.0)
    (tmp_path / "00000000000000000002-key-torn.json").write_text("{")

    waiting = spool.pending("key")

    assert len(waiting) == 1
    assert spool.size()[0] == 1


def test_the_default_spool_is_in_the_configurations_state_directory(
        monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    config = tmp_path / "etc" / "drover.toml"

    spool = notify.default_spool(config)

    assert spool.directory == (tmp_path / "drover" /
                               paths.config_id(config) / "spool")
    assert spool.directory.parent.stat().st_mode & 0o777 == 0o700
