"""CheckResult-shaped plain data for the report and alert tests.

The same dictionaries ``CheckResult.to_dict()`` gives (docs/internals.md,
"Watchdog check result"), built from a few words::

    check([host("crawl01")], [instance("crawl01", "crawler", 0, "dead")])
"""

import time

STARTED_AT = 1764780000.0

# What a report must show as it is: markup, entities, quotes, non-ASCII.
HOSTILE_HOST = 'web<script>alert("h")</script>&\'é'
HOSTILE_TAIL = ['<script>alert("x")</script>', "a & b < c > d 'q' \"dq\"",
                "ünïcødé ✓ 日本"]
HOSTILE_ARGV = ["sh", "-c", 'echo "<b>" & echo \'&amp;\' >&2; exit 3']
VERDICTS = ("OK", "WARNING", "CRITICAL", "UNKNOWN")


def host(name, state="ok", **fields):
    report = {
        "name": name, "outcome": "ok", "error": None, "state": state,
        "notes": [], "boot_id": "b-" + name, "previous_boot_id": None,
        "boot_time": STARTED_AT - 86400 * 2 - 3600,
        "uptime": 86400 * 2 + 3600, "load": [0.52, 0.48, 0.4],
        "mem_available": 1288490188, "mem_total": 4080218931,
        "disks": [{"path": "/srv/crawler", "free": 10737418240,
                   "total": 21474836480}],
    }
    if state == "unreachable":
        report.update(outcome="connect timeout", boot_id=None,
                      error=f"{name}: connect timed out after 3s",
                      boot_time=None, uptime=None, load=None,
                      mem_available=None, mem_total=None, disks=[])
    report.update(fields)
    return report


def instance(host_name, program, number, state="running", **fields):
    report = {
        "host": host_name, "program": program, "number": number,
        "name": f"{program}.{number}", "state": state, "reason": None,
        "pid": 4242 + number if state == "running" else None,
        "started_at": STARTED_AT - 3600, "exit_status": None,
        "signal": None, "stderr_tail": [], "respawned": False,
        "respawn_error": None, "restarts": 0,
    }
    if state == "dead":
        report.update(exit_status=3, stderr_tail=["boom"])
    report.update(fields)
    return report


def change(kind, host_name, instance_name=None, detail=None):
    return {"kind": kind, "host": host_name, "instance": instance_name,
            "detail": detail}


def check(hosts, instances, changes=(), started_at=STARTED_AT):
    """A whole result; status and summary follow from the states."""
    dead = sum(1 for item in instances
               if item["state"] in ("dead", "failed", "lost",
                                    "quarantined"))
    unreachable = sum(1 for item in hosts if item["state"] == "unreachable")
    running = sum(1 for item in instances if item["state"] == "running")
    status = 2 if dead else 3 if unreachable else 0
    words = []
    if dead:
        words.append(f"{dead} dead")
    if unreachable:
        words.append(f"{unreachable} host unreachable")
    if not words:
        words.append(f"{running} running")
    return {
        "started_at": started_at, "duration": 1.25, "status": status,
        "verdict": VERDICTS[status],
        "summary": f"DROVER {VERDICTS[status]} - " + ", ".join(words),
        "perfdata": f"running={running};;;0;{len(instances)}",
        "hosts": list(hosts), "instances": list(instances),
        "changes": list(changes),
    }


def one_dead(dead=True, changes=None, started_at=None):
    """Two hosts, four instances; crawler.0 on crawl01 dead or not."""
    hosts = [host("crawl01"), host("crawl02")]
    instances = [
        instance("crawl01", "crawler", 0, "dead" if dead else "running"),
        instance("crawl01", "crawler", 1),
        instance("crawl02", "crawler", 0),
        instance("crawl02", "crawler", 1),
    ]
    return check(hosts, instances, changes or (),
                 started_at=started_at or time.time())


def hostile():
    """Markup and non-ASCII in a host name, a reason, a command, stderr."""
    hosts = [host(HOSTILE_HOST), host("crawl01")]
    instances = [
        instance(HOSTILE_HOST, "crawler", 0, "dead",
                 stderr_tail=HOSTILE_TAIL, argv=HOSTILE_ARGV,
                 reason='pid <reused> & "gone"'),
        instance("crawl01", "crawler", 0, "failed",
                 respawn_error="exec: </opt/x&y> not found"),
    ]
    return check(hosts, instances,
                 [change("died", HOSTILE_HOST, "crawler.0", "exit <3>")])
