"""``watchdog report``: render a check and, when asked, send it.

Without ``--from-last`` it runs a fresh check first, without respawning
anything. The report goes to stdout or ``-o FILE`` in the ``--format``
asked; ``--email`` and ``--notify`` send it now to every target, whatever
the alert state: deciding when to tell is ``watchdog check``'s business.

The exit status is the reported check's, as ``watchdog check`` gives it
(0 to 3, the monitoring-plugin convention), or 5 when a target could
not be sent the report.
"""

import json
import sys
from pathlib import Path

from drover.errors import StateError
from drover.watchdog.cli import (EXIT_NOTIFY_FAILED, EXIT_OK, EXIT_UNKNOWN,
                                 PROG)

FORMATS = ("text", "html", "json")


def add_commands(command):
    """Register ``report`` on the watchdog parser (see watchdog/cli.py)."""
    report = command("report", "the whole picture: a fresh check, or the "
                               "last one, as text, HTML or JSON; sent with "
                               "--email or --notify")
    report.add_argument("--email", action="store_true",
                        help="mail it now (notify.email)")
    report.add_argument("--notify", action="store_true",
                        help="send it now (notify.urls, notify.config)")
    report.add_argument("--format", choices=FORMATS, default="text",
                        help="text (the default), html, or json (the "
                             "check result as data)")
    report.add_argument("-o", "--output", metavar="FILE",
                        help="write it to FILE; when sending, it is "
                             "written only if this is given")
    report.add_argument("--from-last", action="store_true",
                        help="report the last stored check; contact no "
                             "host")
    return report


def run_report(config, arguments, history):
    """Render (and send) the report; the exit status: the check's, or
    EXIT_NOTIFY_FAILED when sending failed."""
    from drover.watchdog import alerts

    # Targets are checked before any host is contacted (CASES C14).
    chosen = []
    if arguments.email or arguments.notify:
        chosen = alerts.validate_targets(config, arguments.email,
                                         arguments.notify)

    result = _stored_check(history) if arguments.from_last \
        else _fresh_check(config, history)
    rendered = None
    if chosen or arguments.format != "json":
        from drover.templates.render import render
        rendered = render(result, config.report.templates,
                          {"reason": "report"})

    if arguments.output or not chosen:
        _write(_document(result, rendered, arguments.format),
               arguments.output)
    if chosen and not _send(chosen, rendered):
        return EXIT_NOTIFY_FAILED
    return check_status(result)


def check_status(result):
    """The exit status of a check result (its dictionary): its status,
    or UNKNOWN when it holds none that is known."""
    status = result.get("status")
    if isinstance(status, int) and EXIT_OK <= status <= EXIT_UNKNOWN:
        return status
    return EXIT_UNKNOWN


def _stored_check(history):
    result = history.last_result()
    if result is None:
        raise StateError("no check stored yet: run `watchdog check` "
                         "first, or leave out --from-last")
    return result


def _fresh_check(config, history):
    from drover import console
    from drover.watchdog import check

    progress = console.Progress(len(config.hosts_for(None, None)))
    result = check.run_check(config, history, respawn=False,
                             progress=progress)
    progress.finish()
    return result.to_dict()


def _document(result, rendered, form):
    if form == "json":
        return json.dumps(result, indent=2, ensure_ascii=False) + "\n"
    return rendered.html if form == "html" else rendered.text


def _write(document, output):
    if not output or output == "-":
        sys.stdout.write(document)
        return
    try:
        Path(output).write_text(document, encoding="utf-8")
    except OSError as error:
        raise StateError(f"cannot write the report to {output}: "
                         f"{error.strerror or error}") from None


def _send(chosen, rendered):
    """Send to every target now; whether all of them took it."""
    from drover.notify import send_all

    delivery = send_all(chosen, rendered)
    for sent in delivery.sent:
        print(f"sent: {sent.subject} to {sent.target}")
    for target, reason in delivery.failed:
        print(f"{PROG}: notify: {target}: {reason}", file=sys.stderr)
    return delivery.ok
