"""When to tell a person, and telling them: alert state between runs.

Every ``watchdog check --email/--notify`` ends in ``after_check``. A target
gets a report when the problems differ from those it was last told of, or
the check saw a change (a death, a respawn, a reboot, a host gone or
back); as a reminder every ``remind_every`` while problems last; and once
a day after ``heartbeat`` ("HH:MM", local time), so that a cron that went
silent is noticed. Not every five minutes::

    run  crawler.0  told of      sends
    1    dead       nothing      "crawler.0 dead on crawl01"   change
    2    dead       dead         nothing
    3    dead       dead         nothing
    4    running    dead         "recovered: crawler.0 ..."    recovery

"Seen" (the problems of the last check) is kept apart from "delivered"
(what each target was last told): a send that fails changes nothing
delivered, the report waits in the spool, and the next run sends it
before anything newer. The state is one JSON document in the watchdog's
history, under the key ``alerts``::

    {"seen": {"at": 1764780000.0, "problems": ["crawl01 crawler.0: dead"]},
     "targets": {"<Target.key>": {"label": "mailto://ops:****@smtp...",
                 "problems": [...], "since": ..., "at": ...}}}
"""

import logging
import time
from datetime import datetime

from drover.errors import ConfigError, NotifyError, StateError
from drover.notify import Delivery, Sent, chosen_targets, default_spool, send

log = logging.getLogger(__name__)

STATE_KEY = "alerts"


def validate_targets(config, email=False, notify=False):
    """The targets of this run, checked before any host is contacted.

    Raises ConfigError naming the setting (``notify.urls[2]``) and the
    URL with its secrets masked.
    """
    return chosen_targets(config, email=email, notify=notify)


def after_check(config, result, history, email=False, notify=False,
                now=None, spool=None):
    """Send what this check calls for, and the spool: a Delivery.

    `result` is a CheckResult or its dictionary; `history` offers
    ``get_meta(key)`` and ``set_meta(key, value)``; `spool` defaults to
    the one in the state directory of `config` (``config.path``).
    """
    now = time.time() if now is None else now
    data = result.to_dict() if hasattr(result, "to_dict") else result
    chosen = chosen_targets(config, email=email, notify=notify)
    spool = default_spool(config.path) if spool is None else spool

    state = _load(history)
    delivery = Delivery(dropped=spool.trim(now))
    run = _Run(config, data, state, spool, delivery, now)
    for target in chosen:
        run.deliver(target)

    state["seen"] = {"at": now, "problems": run.problems}
    history.set_meta(STATE_KEY, state)
    _drop_orphans(config, spool)
    delivery.spooled, delivery.spool_bytes = spool.size()
    if delivery.spooled:
        # At info: the failed send that filled the spool was said when it
        # happened; under cron every printed line is a mail.
        log.info("waiting: %d unsent reports in the spool (%d bytes; "
                 "sent with the next run)", delivery.spooled,
                 delivery.spool_bytes)
    return delivery


def _drop_orphans(config, spool):
    """Drop spooled reports whose target left the configuration: nothing
    would ever send them, and they would wait forever."""
    notify = config.notify
    try:
        known = {target.key for target in chosen_targets(
            config, email=bool(notify.email),
            notify=bool(notify.urls or notify.config))}
    except ConfigError:
        return  # a target that does not parse: keep everything
    orphans = [report for report in spool.pending()
               if report.target not in known]
    for report in orphans:
        spool.remove(report)
    if orphans:
        log.warning("dropped: %d unsent reports for targets no longer in "
                    "the configuration", len(orphans))


def problems(result):
    """The problems of a check, as sorted keys a person is told about.

    An unreachable host is one problem; its instances are unknown, not
    dead, and add none. A stopped instance is a person's choice.
    """
    from drover.templates.render import HOST_PROBLEMS, INSTANCE_PROBLEMS

    keys = set()
    unreachable = set()
    for host in result.get("hosts") or []:
        if host.get("state") in HOST_PROBLEMS:
            keys.add(f"{host.get('name')}: {host['state']}")
        if host.get("state") == "unreachable":
            unreachable.add(host.get("name"))
    for instance in result.get("instances") or []:
        if instance.get("state") in INSTANCE_PROBLEMS \
                and instance.get("host") not in unreachable:
            name = instance.get("name") or \
                f"{instance.get('program')}.{instance.get('number')}"
            keys.add(f"{instance.get('host')} {name}: {instance['state']}")
    return sorted(keys)


def decide(current, changes, told, now, remind_every=None, heartbeat=None):
    """Why a target should get a report now, or None.

    `current` are this check's problems, `changes` its changes since
    the previous check, `told` what the target was last told (or will
    be, once the spool drains): {"problems", "at"} or None.
    """
    told_problems = set(told["problems"]) if told else set()
    if set(current) != told_problems or changes:
        return "recovery" if told_problems and not current else "change"
    if current and remind_every and now - told["at"] >= remind_every:
        return "reminder"
    if heartbeat and _heartbeat_due(heartbeat, now, told and told["at"]):
        return "heartbeat"
    return None


def _heartbeat_due(heartbeat, now, told_at):
    """Past today's HH:MM, and nothing sent since then."""
    if isinstance(heartbeat, str):
        hour, _, minute = heartbeat.partition(":")
        hour, minute = int(hour), int(minute or 0)
    else:
        hour, minute = heartbeat.hour, heartbeat.minute
    mark = datetime.fromtimestamp(now).replace(
        hour=hour, minute=minute, second=0, microsecond=0).timestamp()
    return now >= mark and (told_at is None or told_at < mark)


class _Run:
    """One run's deliveries: spool first, then this check's report."""

    def __init__(self, config, data, state, spool, delivery, now):
        watchdog = getattr(config, "watchdog", None)
        self.remind_every = getattr(watchdog, "remind_every", None)
        self.heartbeat = getattr(watchdog, "heartbeat", None)
        self.templates = getattr(getattr(config, "report", None),
                                 "templates", None)
        self.data = data
        self.state = state
        self.spool = spool
        self.delivery = delivery
        self.now = now
        self.problems = problems(data)
        self.changes = data.get("changes") or []
        self._rendered = {}

    def deliver(self, target):
        told = self.state["targets"].get(target.key)

        # Older reports first, in order. The first failure ends the
        # target's turn: its server is down, and order must hold.
        waiting = self.spool.pending(target)
        reachable = True
        for report in waiting:
            try:
                send(target, report.rendered)
            except NotifyError as error:
                self.delivery.failed.append((target.label, error.reason))
                reachable = False
                break
            told = self._told(target, report.meta, report.rendered)
            self.spool.remove(report)
            self.delivery.sent.append(Sent(
                target.label, report.rendered.subject,
                f"spooled {report.meta.get('reason', 'report')}"))

        # What the target will have heard once the spool drains.
        still = [report for report in waiting if report.path.exists()]
        if still:
            told = dict(still[-1].meta, at=still[-1].created_at)

        reason = decide(self.problems, self.changes, told, self.now,
                        self.remind_every, self.heartbeat)
        if reason is None:
            log.info("not sent: report to %s (nothing new to tell)",
                     target.label)
            return
        meta = {"problems": self.problems, "reason": reason,
                "since": self._since(told)}
        rendered = self._render(reason, meta["since"])

        if reachable:
            try:
                send(target, rendered)
            except NotifyError as error:
                self.delivery.failed.append((target.label, error.reason))
            else:
                self._told(target, meta, rendered)
                self.delivery.sent.append(
                    Sent(target.label, rendered.subject, reason))
                return
        try:
            self.spool.add(target, rendered, meta, created_at=self.now)
            log.info("spooled: %s report to %s (sent with a later run)",
                     reason, target.label)
        except StateError as error:
            # Still tell the other targets; this run fails as it is.
            log.error("lost: report to %s (%s)", target.label, error)

    def _since(self, told):
        """When the problems now told of were first reported."""
        if not self.problems:
            return None
        if told and told.get("problems") and told.get("since"):
            return told["since"]
        return self.now

    def _told(self, target, meta, rendered):
        told = {"label": target.label,
                "problems": list(meta.get("problems") or []),
                "since": meta.get("since"), "at": self.now,
                "subject": rendered.subject}
        self.state["targets"][target.key] = told
        return told

    def _render(self, reason, since):
        key = (reason, since)
        if key not in self._rendered:
            self._rendered[key] = _render(self.data, self.templates,
                                          {"reason": reason, "since": since})
        return self._rendered[key]


def _render(data, templates, alert):
    """The report; a broken user template must not silence the alert."""
    from drover.templates.render import render

    if templates is not None:
        try:
            return render(data, templates, alert)
        except ConfigError as error:
            log.warning("failed: report template (%s); using the shipped "
                        "templates", error)
    try:
        return render(data, None, alert)
    except Exception as error:
        log.error("failed: shipped report templates (%s: %s); sending the "
                  "summary alone", type(error).__name__, error)
        return _bare_report(data, error)


def _bare_report(data, error):
    import html

    from drover.templates.render import Rendered

    summary = " ".join(str(data.get("summary") or "DROVER UNKNOWN").split())
    text = (f"{summary}\n\nThe report could not be rendered "
            f"({type(error).__name__}: {error}); run `watchdog report` "
            "for the details.\n")
    return Rendered(f"[drover] {summary}", text,
                    f"<pre>{html.escape(text)}</pre>")


def _load(history):
    state = history.get_meta(STATE_KEY)
    if not isinstance(state, dict) or \
            not isinstance(state.get("targets"), dict):
        if state is not None:
            log.warning("reset: alert state in the history was unreadable "
                        "(every target will be told the current problems)")
        state = {}
    state.setdefault("seen", None)
    state.setdefault("targets", {})
    return state
