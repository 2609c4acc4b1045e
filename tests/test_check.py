"""Classification, respawn decisions and restart limits, without hosts.

Each test builds what the agents would answer, runs the pure part of a
check (``check.evaluate``), and feeds what it learned to a real history
file for the next run, as cron would.
"""

import json

import pytest

from drover import config as config_module
from drover import inventory, outcomes, transport
from drover.watchdog import check
from drover.watchdog.check import Rules
from drover.watchdog.history import History, Quarantine

NOW = 1_800_000_000.0
CONFIG = """
[hosts]
all = ["host01", "host02"]

[program.crawler]
command = ["crawler", "--id", "{instance}"]
count = 2
start_seconds = 10

[watchdog]
max_restarts = 3
restart_window = "1h"
min_free_disk = "1G"
min_free_memory = "100M"
"""
GIB = 1024 ** 3


@pytest.fixture
def config(tmp_path):
    return config_module.load_text(CONFIG, tmp_path / "drover.toml")


@pytest.fixture
def history(tmp_path):
    with History.open(tmp_path / "history.sqlite3") as opened:
        yield opened


def record(number, state="running", pid=None, started_at=NOW - 3600,
           reason=None, failure=None, tail=(), program="crawler"):
    return {"program": program, "instance": number, "state": state,
            "reason": reason, "pid": pid or 1000 + number,
            "started_at": started_at, "rss": 1, "cpu": 0.1,
            "failure": failure, "stderr_tail": list(tail)}


def answer(*records, boot_id="boot-1", free=10 * GIB, available=GIB):
    return {"ok": True, "instances": list(records), "host": {
        "boot_id": boot_id, "uptime": 7200.0, "boot_time": NOW - 7200,
        "load": [0.5, 0.4, 0.3], "mem_total": 4 * GIB,
        "mem_available": available, "clock": NOW,
        "disks": [{"path": "/srv", "free": free, "total": 100 * GIB}]}}


def healthy(**facts):
    return answer(record(0), record(1), **facts)


def refused(host):
    return transport.HostResult(host, outcomes.REFUSED,
                                error=f"connection refused by {host}:22")


def survey_of(config, answers):
    """The Survey of agent answers (dicts) or failed HostResults."""
    results = {}
    for host, value in answers.items():
        if isinstance(value, transport.HostResult):
            results[host] = value
        else:
            results[host] = transport.HostResult(host, outcomes.OK, value)
    return inventory.Survey(results,
                            inventory.compare(config.expected(), results))


def run(config, history, answers, respawn=False, now=NOW, starts=None):
    """One check over these answers; the history learns from it.

    With respawn, ``starts`` maps (host, program, number) to the result
    the agent's start gives (default "started").
    """
    rules = Rules.from_config(config, respawn)
    past = history.snapshot(now, rules.restart_window)
    for value in answers.values():
        if isinstance(value, dict):
            value["host"]["clock"] = now
    survey = survey_of(config, answers)
    if respawn:
        _follow_up(config, survey, past, rules, now, starts or {})
    result, updates = check.evaluate(survey, past, rules, now, now + 1.5)
    history.record_check(result, updates)
    return result


def _follow_up(config, survey, past, rules, now, starts):
    """What run_check does on each host that answered, with a session
    that answers start requests as told."""
    from drover.launcher import plans

    for host, result in survey.hosts.items():
        if not result.ok:
            continue
        states = [state for state in survey.instances if state.host == host]
        specs = {(spec["program"], spec["instance"]): spec
                 for spec in plans.start_specs(config).get(host, [])}
        session = FakeSession(host, starts)
        result.value["follow_up"] = check.act_on_host(
            session, states, past, rules, specs, now)


class FakeSession:
    """Answers the agent's start action; remembers what it was asked."""

    def __init__(self, host, starts):
        self.host = host
        self.starts = starts
        self.requests = []

    def call(self, request):
        assert request["action"] == "start"
        self.requests.append(request)
        answers = []
        for spec in request["instances"]:
            outcome = self.starts.get(
                (self.host, spec["program"], spec["instance"]), "started")
            item = {"program": spec["program"],
                    "instance": spec["instance"], "result": outcome,
                    "pid": 5000 + spec["instance"], "error": None,
                    "exit_status": None, "signal": None, "stderr_tail": []}
            if outcome == "failed":
                item.update(pid=None, error="exited with status 1",
                            exit_status=1, stderr_tail=["boom"])
            answers.append(item)
        return {"ok": True, "instances": answers}


def states(result):
    return {(item.host, item.name): item.state for item in result.instances}


def kinds(result):
    return [(change.kind, change.host, change.instance)
            for change in result.changes]


# -- classification -----------------------------------------------------------

def test_all_running_is_ok_with_a_summary_and_perfdata(config, history):
    result = run(config, history, {"host01": healthy(), "host02": healthy()})
    assert result.status == check.OK
    assert result.summary == "DROVER OK - 4 running on 2 hosts"
    assert result.perfdata.startswith(
        "running=4;;;0;4 dead=0;;;0;4 lost=0;;;0;4")
    assert result.status_line.startswith(
        "DROVER OK - 4 running on 2 hosts | running=4;;;0;4 ")
    assert [host.state for host in result.hosts] == ["ok", "ok"]


def test_a_zombie_is_dead(config, history):
    zombie = record(1, "zombie", reason="exited, not yet reaped")
    result = run(config, history, {"host01": answer(record(0), zombie),
                                   "host02": healthy()})
    item = result.instances[1]
    assert (item.state, item.reason) == ("dead", "zombie")
    assert result.status == check.CRITICAL
    assert result.summary.startswith("DROVER CRITICAL - 1 dead")


def test_a_reused_pid_is_dead(config, history):
    reused = record(0, "dead", reason="pid reused")
    result = run(config, history, {"host01": answer(reused, record(1)),
                                   "host02": healthy()})
    assert (result.instances[0].state, result.instances[0].reason) == \
        ("dead", "pid reused")


def test_every_kind_of_down_is_critical(config, history):
    failure = {"error": "exited with status 3", "exit_status": 3,
               "signal": None, "stderr_tail": ["boom"]}
    result = run(config, history, {
        "host01": answer(record(0, "failed", failure=failure,
                                reason="exited with status 3",
                                tail=["boom"])),
        "host02": answer(record(0, "lost", reason="host rebooted"),
                         record(1, "lost", reason="host rebooted"))})
    assert states(result) == {
        ("host01", "crawler.0"): "failed",
        ("host01", "crawler.1"): "not started",
        ("host02", "crawler.0"): "lost",
        ("host02", "crawler.1"): "lost"}
    failed = result.instances[0]
    assert (failed.exit_status, failed.stderr_tail) == (3, ["boom"])
    assert result.status == check.CRITICAL
    assert result.summary.startswith(
        "DROVER CRITICAL - 1 failed, 2 lost, 1 not started")


def test_a_stopped_instance_is_not_a_problem(config, history):
    stopped = record(1, "stopped")
    result = run(config, history, {"host01": answer(record(0), stopped),
                                   "host02": healthy()})
    assert result.instances[1].state == "stopped"
    assert result.status == check.OK


def test_an_unreachable_host_makes_its_instances_unknown(config, history):
    result = run(config, history, {"host01": healthy(),
                                   "host02": refused("host02")},
                 respawn=True)
    assert states(result)[("host02", "crawler.0")] == "unknown"
    assert not any(item.respawned for item in result.instances)
    assert result.status == check.UNKNOWN
    assert result.summary == \
        "DROVER UNKNOWN - 1 host unreachable (2/4 running)"
    host = result.hosts[1]
    assert (host.state, host.outcome) == ("unreachable", "refused")


def test_unreachable_does_not_hide_a_dead_instance(config, history):
    result = run(config, history, {
        "host01": answer(record(0), record(1, "dead", reason="pid gone")),
        "host02": refused("host02")})
    assert result.status == check.CRITICAL


def test_a_host_that_comes_back_is_reachable_once(config, history):
    run(config, history, {"host01": healthy(), "host02": healthy()})
    down = run(config, history, {"host01": healthy(),
                                 "host02": refused("host02")})
    again = run(config, history, {"host01": healthy(),
                                  "host02": refused("host02")})
    back = run(config, history, {"host01": healthy(), "host02": healthy()})
    assert kinds(down) == [("unreachable", "host02", None)]
    assert kinds(again) == []
    assert kinds(back) == [("reachable", "host02", None)]


def test_low_disk_and_memory_warn(config, history):
    result = run(config, history, {
        "host01": healthy(free=GIB // 2),
        "host02": healthy(available=50 * 1024 ** 2)})
    assert [host.state for host in result.hosts] == \
        ["low disk", "low memory"]
    assert "watchdog.min_free_disk" in result.hosts[0].notes[0]
    assert result.status == check.WARNING
    assert "1 host low on disk, 1 host low on memory" in result.summary


# -- reboots ------------------------------------------------------------------

def test_a_reboot_is_said_once(config, history):
    run(config, history, {"host01": healthy(), "host02": healthy()})
    lost = answer(record(0, "lost"), record(1, "lost"), boot_id="boot-2")
    first = run(config, history, {"host01": healthy(), "host02": lost})
    second = run(config, history, {"host01": healthy(), "host02": lost})

    assert first.hosts[1].state == "rebooted"
    assert first.hosts[1].previous_boot_id == "boot-1"
    assert kinds(first) == [("rebooted", "host02", None),
                            ("died", "host02", "crawler.0"),
                            ("died", "host02", "crawler.1")]
    assert second.hosts[1].state == "ok"
    assert kinds(second) == []
    assert second.status == check.CRITICAL   # still lost


def test_without_history_records_from_another_boot_mean_a_reboot(
        config, history):
    lost = answer(record(0, "lost"), record(1))
    result = run(config, history, {"host01": lost, "host02": healthy()})
    assert result.hosts[0].state == "rebooted"


def test_a_reboot_whose_instances_came_back_warns(config, history):
    run(config, history, {"host01": healthy(), "host02": healthy()})
    lost = answer(record(0, "lost"), record(1, "lost"), boot_id="boot-2")
    result = run(config, history, {"host01": healthy(), "host02": lost},
                 respawn=True)
    assert states(result)[("host02", "crawler.0")] == "running"
    assert result.status == check.WARNING
    assert result.summary.startswith(
        "DROVER WARNING - 2 respawned, 1 host rebooted (4/4 running)")


# -- respawn and restart limits -------------------------------------------

def test_respawn_uses_the_launchers_start_specs(config, history):
    from drover.launcher import plans

    rules = Rules.from_config(config, respawn=True)
    past = history.snapshot(NOW, rules.restart_window)
    survey = survey_of(config, {"host01": answer(record(0)),
                                "host02": healthy()})
    states_here = [state for state in survey.instances
                   if state.host == "host01"]
    specs = {(spec["program"], spec["instance"]): spec
             for spec in plans.start_specs(config)["host01"]}
    session = FakeSession("host01", {})
    actions = check.act_on_host(session, states_here, past, rules, specs,
                                NOW)

    [request] = session.requests
    assert request["instances"] == [config.expected()[1].start_spec()]
    assert request["settle"] == 10
    assert actions.started[("host01", "crawler", 1)]["result"] == "started"


def test_without_respawn_nothing_is_started(config, history):
    result = run(config, history, {"host01": answer(record(0)),
                                   "host02": healthy()})
    assert not any(item.respawned for item in result.instances)
    assert states(result)[("host01", "crawler.1")] == "not started"


def test_a_respawn_that_fails_stays_critical_with_its_reason(
        config, history):
    dead = answer(record(0), record(1, "dead", reason="pid gone"))
    result = run(config, history, {"host01": dead, "host02": healthy()},
                 respawn=True,
                 starts={("host01", "crawler", 1): "failed"})
    item = result.instances[1]
    assert (item.state, item.respawned, item.exit_status) == \
        ("failed", True, 1)
    assert item.respawn_error == "exited with status 1"
    assert item.stderr_tail == ["boom"]
    assert result.status == check.CRITICAL
    assert ("respawned", "host01", "crawler.1") in kinds(result)


def test_a_failed_start_call_counts_and_keeps_the_state(config, history):
    class Broken(FakeSession):
        def call(self, request):
            from drover.errors import CommandTimeout
            raise CommandTimeout("host01: deadline passed")

    rules = Rules.from_config(config, respawn=True)
    past = history.snapshot(NOW, rules.restart_window)
    survey = survey_of(config, {"host01": answer(record(0)),
                                "host02": healthy()})
    for host in ("host01", "host02"):
        survey.hosts[host].value["follow_up"] = check.act_on_host(
            Broken(host, {}), [s for s in survey.instances
                               if s.host == host], past, rules,
            {("crawler", 1): {"program": "crawler", "instance": 1}}, NOW)
    result, updates = check.evaluate(survey, past, rules, NOW, NOW + 1)
    item = result.instances[1]
    assert (item.state, item.respawned) == ("not started", True)
    assert item.respawn_error == "host01: deadline passed"
    assert len(updates.respawns) == 1


def crash_loop(config, history, runs, start=NOW, step=300):
    """Checks with respawn where crawler.0 of host01 never holds."""
    results = []
    failure = {"error": "exited with status 1", "exit_status": 1,
               "signal": None, "stderr_tail": []}
    pid, started_at = 7000, start - 200
    for number in range(runs):
        now = start + number * step
        down = answer(record(0, "failed", pid=pid, started_at=started_at,
                             failure=failure), record(1))
        results.append(run(
            config, history, {"host01": down, "host02": healthy()},
            respawn=True, now=now,
            starts={("host01", "crawler", 0): "failed"}))
        # Each respawn writes a new record; a quarantine leaves it be.
        if results[-1].instances[0].respawned:
            pid, started_at = pid + 1, now
    return results


def test_a_crash_loop_is_quarantined_after_max_restarts(config, history):
    results = crash_loop(config, history, 5)
    respawned = [result.instances[0].respawned for result in results]
    assert respawned == [True, True, True, False, False]
    assert [result.instances[0].state for result in results] == \
        ["failed", "failed", "failed", "quarantined", "quarantined"]
    given_up = [change for result in results for change in result.changes
                if change.kind == "quarantined"]
    assert len(given_up) == 1
    assert "giving up" in given_up[0].detail
    assert results[3].instances[0].restarts == 3
    assert results[4].status == check.CRITICAL
    assert "1 quarantined" in results[4].summary
    assert list(history.quarantined()) == [("host01", "crawler", 0)]


def test_respawns_outside_the_window_do_not_count(config, history):
    # An hour and a bit between runs: never more than one in the window.
    results = crash_loop(config, history, 5, step=3700)
    assert all(result.instances[0].respawned for result in results)


def test_an_instance_that_held_before_dying_starts_its_count_again(
        config, history):
    crash_loop(config, history, 3)    # three respawns within the hour
    now = NOW + 3 * 300
    # Seen running for longer than start_seconds (10 s) ...
    alive = answer(record(0, pid=8000, started_at=now - 60), record(1))
    run(config, history, {"host01": alive, "host02": healthy()},
        respawn=True, now=now)
    # ... then dead: not a failed start, so it may be respawned again.
    dead = answer(record(0, "dead", pid=8000, started_at=now - 60,
                         reason="pid gone"), record(1))
    result = run(config, history, {"host01": dead, "host02": healthy()},
                 respawn=True, now=now + 60)
    item = result.instances[0]
    assert (item.state, item.respawned, item.restarts) == \
        ("running", True, 1)


def test_a_young_death_still_counts(config, history):
    crash_loop(config, history, 3)
    now = NOW + 3 * 300
    # Up for 5 s only when seen (start_seconds is 10).
    young = answer(record(0, pid=8000, started_at=now - 5), record(1))
    run(config, history, {"host01": young, "host02": healthy()},
        respawn=True, now=now)
    dead = answer(record(0, "dead", pid=8000, started_at=now - 5),
                  record(1))
    result = run(config, history, {"host01": dead, "host02": healthy()},
                 respawn=True, now=now + 60)
    assert result.instances[0].state == "quarantined"


def test_a_respawn_that_only_survived_settle_still_counts(config,
                                                           history):
    # A worker that dies a minute after each start survives every settle
    # time; no check ever sees it up, so its respawns add up.
    crash_loop(config, history, 2)
    now = NOW + 2 * 300
    dead = answer(record(0, "dead", pid=8000), record(1))
    run(config, history, {"host01": dead, "host02": healthy()},
        respawn=True, now=now)            # third respawn: started, pid 5000
    dead_again = answer(record(0, "dead", pid=5000), record(1))
    result = run(config, history, {"host01": dead_again,
                                   "host02": healthy()},
                 respawn=True, now=now + 300)
    assert not result.instances[0].respawned
    assert result.instances[0].state == "quarantined"


def test_a_start_by_hand_ends_the_quarantine(config, history):
    crash_loop(config, history, 4)
    now = NOW + 4 * 300
    # `launcher start` wrote a new record, which runs.
    started = answer(record(0, pid=9000, started_at=now - 30), record(1))
    result = run(config, history, {"host01": started, "host02": healthy()},
                 respawn=True, now=now)
    assert result.instances[0].state == "running"
    assert ("released", "host01", "crawler.0") in kinds(result)
    assert ("recovered", "host01", "crawler.0") in kinds(result)
    assert history.quarantined() == {}
    assert result.status == check.OK


def test_watchdog_release_lets_the_next_check_respawn(config, history):
    results = crash_loop(config, history, 4)
    assert results[-1].instances[0].state == "quarantined"
    history.release(lambda key: True, now=NOW + 4 * 300)
    results = crash_loop(config, history, 1, start=NOW + 5 * 300)
    item = results[0].instances[0]
    assert (item.respawned, item.restarts) == (True, 1)
    released = [change for change in results[0].changes
                if change.kind == "released"]
    assert released[0].detail == "watchdog release"


def test_a_quarantined_instance_on_an_unreachable_host_stays(config,
                                                             history):
    crash_loop(config, history, 4)
    result = run(config, history, {"host01": refused("host01"),
                                   "host02": healthy()}, respawn=True,
                 now=NOW + 4 * 300)
    assert result.instances[0].state == "unknown"
    assert list(history.quarantined()) == [("host01", "crawler", 0)]


# -- changes --------------------------------------------------------------

def test_deaths_and_recoveries_are_changes(config, history):
    run(config, history, {"host01": healthy(), "host02": healthy()})
    dead = answer(record(0), record(1, "dead", reason="pid gone"))
    died = run(config, history, {"host01": dead, "host02": healthy()})
    still = run(config, history, {"host01": dead, "host02": healthy()})
    back = run(config, history, {"host01": answer(record(0),
                                                  record(1, pid=4242)),
                                 "host02": healthy()})

    assert kinds(died) == [("died", "host01", "crawler.1")]
    assert died.changes[0].detail == "dead: pid gone"
    assert kinds(still) == []
    assert kinds(back) == [("recovered", "host01", "crawler.1")]


def test_never_started_instances_are_problems_not_deaths(config, history):
    result = run(config, history, {"host01": answer(), "host02": answer()})
    assert result.status == check.CRITICAL
    assert kinds(result) == []


# -- the result as data ---------------------------------------------------

def test_the_result_survives_json(config, history):
    result = run(config, history, {
        "host01": answer(record(0), record(1, "zombie")),
        "host02": refused("host02")}, respawn=True)
    text = json.dumps(result.to_dict())
    again = check.CheckResult.from_dict(json.loads(text))
    assert again == result
    assert again.to_dict()["version"] == check.RESULT_VERSION
    assert history.last_result() == json.loads(text)


def test_quarantine_entries_remember_the_record_given_up_on(config,
                                                            history):
    crash_loop(config, history, 4)
    entry = history.snapshot().quarantine[("host01", "crawler", 0)]
    assert isinstance(entry, Quarantine)
    assert entry.pid == 7003
    assert entry.started_at == NOW + 2 * 300
