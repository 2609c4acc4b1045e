"""Delivering reports: apprise targets, email in two parts, the spool.

Targets come from the configuration: ``[notify] email`` (mailto URLs, or
the structured form turned into one), ``[notify] urls`` (any apprise URL)
and ``[notify] config`` (an apprise configuration file)::

    >>> for target in chosen_targets(config, email=True):
    ...     send(target, rendered)      # NotifyError if it did not go
    >>> target.label
    'mailto://alice:****@smtp.example.org:587'

An email carries the text and the HTML report as the two parts of one
multipart/alternative message. apprise's mailto plugin cannot send that:
handed HTML, it derives the text part from the HTML itself and takes no
text of its own (apprise/plugins/email/base.py, ``prepare_emails``), which
turns every table into one cell per line. So apprise parses and checks
email URLs, one syntax with its provider defaults, and drover composes the
message with the standard library and submits it to the server apprise
names. Every other target is apprise's to send, as plain text.

A secret never leaves this module: targets are shown by ``label``, a URL
with its secrets masked; error reasons are scrubbed of every secret
fragment of their URL; so are apprise's own log records while it works.
"""

import hashlib
import json
import logging
import re
import os
import time
from collections import namedtuple
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, unquote, urlencode, urlsplit

from drover.errors import ConfigError, NotifyError, StateError

log = logging.getLogger(__name__)

MASK = "****"
EMAIL_SCHEMES = ("mailto", "mailtos")
SECURITY_SCHEMES = {"none": "mailto", "starttls": "mailtos",
                    "ssl": "mailtos"}

# Bounds of the spool of unsent reports: a mail server down for a long
# weekend must not fill the disk, and a report a week old is history.
SPOOL_REPORTS = 100
SPOOL_BYTES = 20 * 1024 * 1024
SPOOL_AGE = 7 * 86400
SPOOL_NAME = "spool"


@dataclass(frozen=True)
class Target:
    """Where a report goes; ``label`` is safe to show, ``url`` is not."""

    key: str
    label: str
    setting: str
    email: bool
    url: str = field(repr=False)
    secrets: tuple = field(repr=False, default=())
    plugin: object = field(repr=False, compare=False, default=None)


@dataclass
class Delivery:
    """What one run delivered: ``ok`` unless a target failed."""

    sent: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    spooled: int = 0
    spool_bytes: int = 0
    dropped: int = 0

    @property
    def ok(self):
        return not self.failed


# A report that went out: masked target, its subject, why it was sent.
Sent = namedtuple("Sent", "target subject reason")


# -- targets -----------------------------------------------------------------

def chosen_targets(config, email=False, notify=False):
    """The targets `--email` and `--notify` select, checked by apprise.

    Raises ConfigError naming the setting (``notify.urls[2]``) and the
    URL, masked, before anything is sent.
    """
    notify_config = config.notify
    found = []
    if email:
        entries = tuple(notify_config.email or ())
        if not entries:
            raise ConfigError("--email needs at least one target here",
                              path=_config_path(config), key="notify.email")
        for index, entry in enumerate(entries):
            setting = f"notify.email[{index}]"
            url = email_url(entry, setting, config)
            target = _target(url, setting, config)
            if not target.email:
                raise ConfigError(
                    f"not an email URL: {target.label} (expected mailto:// "
                    "or mailtos://, or the host/port/user form)",
                    path=_config_path(config), key=setting)
            found.append(target)

    if notify:
        urls = tuple(notify_config.urls or ())
        source = getattr(notify_config, "config", None)
        if not urls and not source:
            raise ConfigError("--notify needs [notify] urls or config here",
                              path=_config_path(config), key="notify.urls")
        for index, url in enumerate(urls):
            found.append(_target(url, f"notify.urls[{index}]", config))
        if source:
            found.extend(_config_file_targets(Path(source), config))

    # The same URL given twice gets one report.
    return list({target.key: target for target in found}.values())


def email_url(entry, setting="notify.email", config=None):
    """A mailto URL from the structured email form; a URL stays as is.

    User and password are percent-encoded whole, so ``@ % # & ; /`` in
    a password reach the server unchanged.
    """
    if isinstance(entry, str):
        return entry
    fields = dict(entry) if isinstance(entry, Mapping) else vars(entry)

    def fail(message, key=""):
        raise ConfigError(message, path=_config_path(config),
                          key=f"{setting}.{key}" if key else setting)

    host = fields.get("host")
    if not host:
        fail("the SMTP server is missing", "host")
    security = fields.get("security") or "starttls"
    if security not in SECURITY_SCHEMES:
        fail(f'expected "none", "starttls" or "ssl", got {security!r}',
             "security")
    password = _password(fields, fail, config)
    user = fields.get("user")
    if password and not user:
        fail("a password needs a user", "user")

    userinfo = ""
    if user:
        userinfo = quote(str(user), safe="")
        if password:
            userinfo += ":" + quote(password, safe="")
        userinfo += "@"
    server = f"[{host}]" if ":" in str(host) else str(host)
    port = f":{int(fields['port'])}" if fields.get("port") else ""

    # smtp= pins the server: without it apprise may swap a known
    # provider's domain for that provider's own SMTP host.
    query = {"smtp": str(host)}
    if security != "none":
        query["mode"] = security
    # config.EmailServer calls it `sender`: `from` is a Python keyword.
    sender = fields.get("from") or fields.get("sender")
    if sender:
        query["from"] = str(sender)
    recipients = fields.get("to") or ()
    if isinstance(recipients, str):
        recipients = (recipients,)
    if recipients:
        query["to"] = ",".join(str(address) for address in recipients)
    return (f"{SECURITY_SCHEMES[security]}://{userinfo}{server}{port}/?"
            + urlencode(query, quote_via=quote, safe=""))


def _password(fields, fail, config):
    if fields.get("password") is not None and fields.get("password_file"):
        fail("give password or password_file, not both", "password_file")
    if fields.get("password") is not None:
        return str(fields["password"])
    if not fields.get("password_file"):
        return None

    path = Path(fields["password_file"]).expanduser()
    if not path.is_absolute() and _config_path(config):
        path = Path(_config_path(config)).parent / path
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        fail(f"cannot read {path}: "
             f"{getattr(error, 'strerror', None) or error}", "password_file")
    # An editor's final newline is not part of the password.
    return text.rstrip("\r\n")


def _target(url, setting, config):
    """A Target for `url`, checked by apprise; ConfigError if it cannot."""
    plugin = _instantiate(url, _fragments(url))
    if plugin is None:
        # Unparsed, nothing tells its secrets from the rest: scheme only.
        raise ConfigError(
            f"apprise cannot use the URL {_scheme_of(url)}://{MASK} "
            "(unknown scheme, or a part missing or malformed)",
            path=_config_path(config), key=setting)
    return _make_target(url, setting, plugin)


def _make_target(url, setting, plugin):
    email = urlsplit(url).scheme.lower() in EMAIL_SCHEMES
    if email:
        label = mask_url(url)
        password = getattr(plugin, "password", None)
        secrets = _email_secrets(url) + tuple(
            {password, quote(password, safe="")} if password else ())
        # A password with a raw "/" or "#" reads as path or port to
        # urlsplit; then even the masked form shows part of it.
        if any(secret in label for secret in secrets):
            label = f"{_scheme_of(url)}://{MASK}"
    else:
        # Whatever part of the URL apprise hides in its own display is
        # a secret (tokens sit in the host or path of many services).
        shown = plugin.url(privacy=True)
        label = _strip_query(shown)
        secrets = tuple(fragment for fragment in _fragments(url)
                        if fragment not in shown) + _email_secrets(url)
    key = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    return Target(key=key, label=label, setting=setting, email=email,
                  url=url, secrets=secrets, plugin=plugin)


def _config_file_targets(path, config):
    import apprise

    setting = "notify.config"
    if not path.is_absolute() and _config_path(config):
        path = Path(_config_path(config)).parent / path
    if not path.is_file():
        raise ConfigError(f"no apprise configuration file at {path}",
                          path=_config_path(config), key=setting)

    bundle = apprise.Apprise(asset=_asset())
    source = apprise.AppriseConfig(asset=_asset())
    with _apprise_log(()):
        source.add(str(path))
        bundle.add(source)
        plugins = list(bundle)
    if not plugins:
        raise ConfigError(f"apprise found no usable URL in {path}",
                          path=_config_path(config), key=setting)
    return [_make_target(plugin.url(privacy=False),
                         f"{setting} ({path}, entry {index + 1})", plugin)
            for index, plugin in enumerate(plugins)]


def _instantiate(url, secrets):
    import apprise

    with _apprise_log(secrets):
        try:
            return apprise.Apprise.instantiate(url, asset=_asset())
        except Exception:
            # A URL that does not parse, whatever apprise raises for it.
            return None


def _asset():
    import apprise
    return apprise.AppriseAsset(app_id="drover",
                                app_desc="drover watchdog")


def _config_path(config):
    return getattr(config, "path", None)


# -- masking -----------------------------------------------------------------

def mask_url(url):
    """`url` fit for a log: ``mailto://user:****@host``.

    An email URL keeps its user, server and recipients. Any other URL
    keeps its scheme only: apprise URLs put tokens in every part.
    """
    try:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = parts.hostname
        port = parts.port
    except ValueError:
        return f"{_scheme_of(url)}://{MASK}"
    if scheme not in EMAIL_SCHEMES or not host or parts.fragment:
        # A "#" in a mailto URL is a password's, not a fragment.
        return f"{scheme or '?'}://{MASK}"

    userinfo = ""
    if parts.username is not None:
        userinfo = parts.username
        if parts.password is not None:
            userinfo += ":" + MASK
        userinfo += "@"
    if ":" in host:
        host = f"[{host}]"
    port = f":{port}" if port else ""
    path = parts.path.rstrip("/")
    return f"{scheme}://{userinfo}{host}{port}{path}"


def redact(text, secrets):
    """`text` with every secret replaced by ****, longest first."""
    text = str(text)
    for secret in sorted(set(secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return text


def _fragments(url):
    """The parts of `url` that may hold a secret, raw and decoded."""
    try:
        parts = urlsplit(url)
        pieces = [parts.username, parts.password, parts.hostname]
    except ValueError:
        parts = None
        pieces = [url]
    if parts is not None:
        pieces.extend(parts.path.split("/"))
        for pair in parts.query.split("&"):
            pieces.append(pair.partition("=")[2])
    found = set()
    for piece in pieces:
        # Short pieces ("to", "25", "ssl") would mask half of every
        # message and hide nothing.
        if piece and len(piece) >= 4:
            found.update({piece, unquote(piece)})
    return tuple(found)


def _email_secrets(url):
    """The password of `url`, in the URL or as ``pass=``, both spellings."""
    try:
        parts = urlsplit(url)
        found = [parts.password]
    except ValueError:
        return ()
    for pair in parts.query.split("&"):
        name, _, value = pair.partition("=")
        if name.lower() in ("pass", "password", "pwd"):
            found.append(value)
    return tuple({spelling for secret in found if secret
                  for spelling in (secret, unquote(secret))})


def _strip_query(url):
    return url.split("?", 1)[0].rstrip("/")


def _scheme_of(url):
    scheme, separator, _ = str(url).partition("://")
    return scheme.lower() if separator and scheme.isalnum() else "?"


class _Collect(logging.Handler):
    """Keeps apprise's log lines of one send, secrets masked."""

    def __init__(self, secrets):
        super().__init__(logging.DEBUG)
        self.secrets = secrets
        self.warnings = []
        self.details = []

    def emit(self, record):
        message = " ".join(redact(record.getMessage(), self.secrets).split())
        if record.levelno >= logging.WARNING:
            self.warnings.append(message)
        elif message.startswith("Socket Exception: "):
            self.details.append(message[len("Socket Exception: "):])

    def reason(self):
        """The most telling line: the socket error when there is one."""
        if self.details:
            detail = re.sub(r"^\[Errno \d+\] ", "", self.details[-1])
            answer = re.match(r"^\((\d{3}), b?['\"](.*)['\"]\)$", detail)
            if answer and answer.group(1) == "535":
                return f"authentication refused ({answer.group(1)} " \
                       f"{answer.group(2)})"
            if answer:
                return f"the server said {answer.group(1)} " \
                       f"{answer.group(2)}"
            if detail[1:2].islower():
                detail = detail[:1].lower() + detail[1:]
            return detail
        if self.warnings:
            return self.warnings[-1]
        return "apprise reported a failure"


@contextmanager
def _apprise_log(secrets):
    """Route apprise's log of one send to us alone.

    apprise says why a send failed only in its log (the socket error at
    debug level); drover reports that reason once, as its own line, so
    apprise's lines are kept off the user's stderr.
    """
    logger = logging.getLogger("apprise")
    collect = _Collect(secrets)
    saved = logger.level, logger.propagate
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    logger.addHandler(collect)
    try:
        yield collect
    finally:
        logger.removeHandler(collect)
        logger.setLevel(saved[0])
        logger.propagate = saved[1]


# -- sending -----------------------------------------------------------------

def send(target, rendered):
    """Deliver `rendered` (subject, text, html) to `target`.

    Raises NotifyError with a one-line, secret-free reason.
    """
    started = time.monotonic()
    try:
        _send_apprise(target, rendered)
    except NotifyError as error:
        log.warning("failed: report to %s (%s)", target.label, error.reason)
        raise
    log.info("sent: report to %s (%.2fs)", target.label,
             time.monotonic() - started)


def send_all(chosen, rendered):
    """Send `rendered` to every target of `chosen` now; no spool."""
    delivery = Delivery()
    for target in chosen:
        try:
            send(target, rendered)
        except NotifyError as error:
            delivery.failed.append((target.label, error.reason))
        else:
            delivery.sent.append(Sent(target.label, rendered.subject,
                                      "report"))
    return delivery


def _failure(target, reason):
    reason = " ".join(redact(reason, target.secrets).split())
    error = NotifyError(f"{target.label}: {reason}")
    error.target, error.reason = target.label, reason
    return error


def _send_apprise(target, rendered):
    import apprise

    # Mail gets the HTML report; apprise adds the text part beside it
    # (multipart/alternative). Other services get the text report.
    if target.email:
        body, body_format = rendered.html, apprise.NotifyFormat.HTML
    else:
        body, body_format = rendered.text, apprise.NotifyFormat.TEXT

    with _apprise_log(target.secrets) as collect:
        try:
            ok = target.plugin.notify(body=body, title=rendered.subject,
                                      body_format=body_format)
        except Exception as error:
            # A plugin bug must not cost the other targets their report.
            collect.warnings.append(f"{type(error).__name__}: {error}")
            ok = False
    if not ok:
        raise _failure(target, collect.reason())


# -- the spool ---------------------------------------------------------------

# One report waiting in the spool; `meta` is the sender's own data.
SpooledReport = namedtuple("SpooledReport",
                           "path target created_at rendered meta size")


class Spool:
    """Reports that could not be sent, kept on disk until they are.

    One JSON file per report, private to the user, named so that name
    order is age order. Bounded in count, bytes and age; the oldest
    report goes first, with a warning. Files hold no secret: a report
    names its target by ``Target.key`` only.
    """

    def __init__(self, directory, max_reports=SPOOL_REPORTS,
                 max_bytes=SPOOL_BYTES, max_age=SPOOL_AGE):
        self.directory = Path(directory)
        self.max_reports = max_reports
        self.max_bytes = max_bytes
        self.max_age = max_age

    def add(self, target, rendered, meta=None, created_at=None):
        """Keep `rendered` for `target` (a Target or its key)."""
        created_at = time.time() if created_at is None else created_at
        key = getattr(target, "key", target)
        document = {"target": key, "created_at": created_at,
                    "subject": rendered.subject, "text": rendered.text,
                    "html": rendered.html, "meta": meta or {}}
        name = (f"{int(created_at * 1e6):020d}-{key}-"
                f"{os.urandom(4).hex()}.json")
        self._write(self.directory / name, json.dumps(document))

    def pending(self, target=None):
        """Waiting reports, oldest first; only `target`'s if given."""
        key = getattr(target, "key", target)
        reports = []
        for path in self._files():
            if key is not None and f"-{key}-" not in path.name:
                continue
            report = self._read(path)
            if report is not None:
                reports.append(report)
        return reports

    def remove(self, report):
        try:
            report.path.unlink()
        except FileNotFoundError:
            pass

    def trim(self, now=None):
        """Drop what is over the bounds, oldest first: how many went."""
        now = time.time() if now is None else now
        files = [(path, path.stat().st_size) for path in self._files()]
        total = sum(size for _, size in files)
        dropped = 0
        for index, (path, size) in enumerate(files):
            left = len(files) - index
            too_old = _created_at(path) < now - self.max_age
            if not (too_old or left > self.max_reports
                    or total > self.max_bytes):
                break
            path.unlink()
            total -= size
            dropped += 1
        if dropped:
            log.warning(
                "dropped: %d oldest unsent reports from the spool %s "
                "(bounds: %d reports, %d MiB, %d days)", dropped,
                self.directory, self.max_reports, self.max_bytes >> 20,
                self.max_age // 86400)
        return dropped

    def size(self):
        """(reports, bytes) waiting."""
        sizes = [path.stat().st_size for path in self._files()]
        return len(sizes), sum(sizes)

    def _files(self):
        try:
            return sorted(path for path in self.directory.iterdir()
                          if path.suffix == ".json")
        except FileNotFoundError:
            return []

    def _read(self, path):
        from drover.templates.render import Rendered

        try:
            data = path.read_bytes()
            document = json.loads(data)
            rendered = Rendered(document["subject"], document["text"],
                                document["html"])
            return SpooledReport(path, document["target"],
                                 document["created_at"], rendered,
                                 document.get("meta") or {}, len(data))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as error:
            # A torn or foreign file must not block every later report.
            log.warning("dropped: unreadable spooled report %s (%s)",
                        path, error)
            path.unlink(missing_ok=True)
            return None

    def _write(self, path, text):
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.name}.tmp")
            descriptor = os.open(temporary,
                                 os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
                stream.write(text)
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(temporary, path)
        except OSError as error:
            raise StateError(f"cannot write to the spool {self.directory}: "
                             f"{error.strerror or error}") from None


def _created_at(path):
    try:
        return int(path.name.split("-", 1)[0]) / 1e6
    except ValueError:
        return 0.0


def default_spool(config_path):
    """The spool in the state directory of the configuration file
    ``config_path`` on the control host (created 0700 if missing)."""
    from drover import paths
    return Spool(paths.ensure_config_state_dir(config_path) / SPOOL_NAME)
