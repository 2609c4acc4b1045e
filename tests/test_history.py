"""The watchdog's history: schema, memory between checks, damage."""

import os
import sqlite3
import stat
from types import SimpleNamespace

import pytest

from drover import paths
from drover.errors import StateError
from drover.watchdog import history as history_module
from drover.watchdog.history import (History, HostMemory, InstanceMemory,
                                     Quarantine, Respawn, Updates)

KEY = ("host01", "crawler", 3)


def result(moment, status=0, summary="DROVER OK - fine"):
    """The few attributes record_check reads from a CheckResult."""
    return SimpleNamespace(
        started_at=moment, duration=0.5, status=status, summary=summary,
        to_dict=lambda: {"started_at": moment, "summary": summary})


@pytest.fixture
def path(tmp_path):
    return tmp_path / "state" / "history.sqlite3"


@pytest.fixture
def history(path):
    path.parent.mkdir()
    with History.open(path) as opened:
        yield opened


def test_a_new_history_is_private_and_current(history, path):
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert history.schema_version() == history_module.SCHEMA_VERSION
    assert history.snapshot().last_check is None


def test_default_path_is_in_the_configurations_state_directory(
        control_home, tmp_path):
    config = tmp_path / "prod.toml"
    with History.open(config_path=config) as opened:
        expected = (control_home / ".local/state/drover" /
                    paths.config_id(config) / "history.sqlite3")
        assert opened.path == str(expected)
    assert expected.parent.name.startswith("prod-")
    assert stat.S_IMODE(os.stat(expected.parent).st_mode) == 0o700


def test_two_configurations_never_share_a_history(control_home, tmp_path):
    first, second = tmp_path / "a" / "drover.toml", tmp_path / "drover.toml"
    with History.open(config_path=first) as history:
        history.set_meta("who", "first")
    with History.open(config_path=second) as history:
        assert history.get_meta("who") is None


def test_a_history_needs_a_path_or_a_configuration():
    with pytest.raises(TypeError, match="config_path"):
        History.open()


def test_meta_keeps_json_values(history):
    assert history.get_meta("alerts") is None
    assert history.get_meta("alerts", {}) == {}
    history.set_meta("alerts", {"down": ["host01 crawler.3"], "n": 1})
    history.set_meta("alerts", {"down": [], "n": 2})
    assert history.get_meta("alerts") == {"down": [], "n": 2}


def test_a_file_that_is_not_a_database_is_refused_by_name(path):
    path.parent.mkdir()
    path.write_bytes(b"definitely not sqlite\n" * 200)
    with pytest.raises(StateError) as caught:
        History.open(path)
    assert str(path) in str(caught.value)
    assert "move it aside" in str(caught.value)
    # Nothing was overwritten.
    assert path.read_bytes().startswith(b"definitely not sqlite")


def test_a_damaged_database_gives_a_clear_error(path):
    path.parent.mkdir()
    with History.open(path) as opened:
        for moment in range(200):
            opened.record_check(result(float(moment)), Updates(
                hosts={f"host{moment}": HostMemory("ok", "ok", "b", 1.0)}))
    data = bytearray(path.read_bytes())
    data[4096:len(data) - 4096] = b"\xff" * (len(data) - 8192)
    path.write_bytes(bytes(data))

    with pytest.raises(StateError) as caught:
        with History.open(path) as opened:
            opened.snapshot()
            opened.checks(1000)
    assert "damaged" in str(caught.value)


def test_a_newer_schema_is_refused_not_downgraded(path):
    path.parent.mkdir()
    with sqlite3.connect(path) as connection:
        connection.execute("PRAGMA user_version = 99")
    with pytest.raises(StateError) as caught:
        History.open(path)
    assert "newer drover" in str(caught.value)
    with sqlite3.connect(path) as connection:
        assert connection.execute("PRAGMA user_version").fetchone()[0] == 99


def test_a_database_of_the_previous_schema_is_upgraded_with_its_data(path):
    path.parent.mkdir()
    connection = sqlite3.connect(path)
    connection.executescript(history_module.MIGRATIONS[0])
    connection.execute(
        "INSERT INTO hosts VALUES ('host01', 'ok', 'ok', 'boot-1', 1.0)")
    connection.execute(
        "INSERT INTO quarantine VALUES ('host01', 'crawler', 3, 5.0, 4, "
        "42, 4.0, NULL, NULL)")
    connection.execute("PRAGMA user_version = 1")
    connection.commit()
    connection.close()

    with History.open(path) as opened:
        assert opened.schema_version() == history_module.SCHEMA_VERSION
        past = opened.snapshot()
        assert past.hosts["host01"].boot_id == "boot-1"
        assert past.quarantine[KEY].restarts == 4
        opened.set_meta("alerts", [1])
        assert opened.get_meta("alerts") == [1]


def test_a_check_is_remembered(history):
    updates = Updates(
        hosts={"host01": HostMemory("ok", "ok", "boot-1", 100.0)},
        instances={KEY: InstanceMemory("running", pid=42, started_at=50.0,
                                       held_pid=42, checked_at=100.0)},
        respawns=[Respawn(KEY, 100.0, "started", 42)])
    check_id = history.record_check(result(100.0, 1, "DROVER WARNING"),
                                    updates)

    past = history.snapshot(now=200.0, window=3600)
    assert past.last_check == 100.0
    assert past.hosts["host01"].boot_id == "boot-1"
    assert past.instances[KEY].held_pid == 42
    assert past.restarts_since(KEY, 0) == 1
    assert history.checks()[0].summary == "DROVER WARNING"
    assert history.last_result()["started_at"] == 100.0
    host_events, instance_events = history.events(check_id)
    assert [event[0] for event in host_events] == ["host01"]
    assert [event[3] for event in instance_events] == ["running"]


def test_only_changes_become_events(history):
    memory = {KEY: InstanceMemory("running", pid=42, checked_at=1.0)}
    first = history.record_check(result(1.0), Updates(instances=memory))
    second = history.record_check(result(2.0), Updates(instances=memory))
    third = history.record_check(result(3.0), Updates(instances={
        KEY: InstanceMemory("dead", "pid gone", 42, checked_at=3.0)}))

    assert len(history.events(first)[1]) == 1
    assert history.events(second)[1] == []
    assert history.events(third)[1][0][3:5] == ("dead", "pid gone")


def test_an_unreachable_host_keeps_its_last_boot_id(history):
    history.record_check(result(1.0), Updates(
        hosts={"host01": HostMemory("ok", "ok", "boot-1", 1.0)}))
    history.record_check(result(2.0), Updates(
        hosts={"host01": HostMemory("refused", "unreachable", None, 2.0)}))
    memory = history.snapshot().hosts["host01"]
    assert (memory.state, memory.boot_id) == ("unreachable", "boot-1")


def test_respawns_count_within_the_window_only(history):
    history.record_check(result(1000.0), Updates(respawns=[
        Respawn(KEY, moment) for moment in (100.0, 700.0, 900.0)]))
    past = history.snapshot(now=1000.0, window=500)
    assert past.restarts_since(KEY, 500.0) == 2


def test_reset_forgets_the_respawns_of_an_instance(history):
    other = ("host02", "crawler", 3)
    history.record_check(result(1.0), Updates(
        respawns=[Respawn(KEY, 1.0), Respawn(other, 1.0)]))
    history.record_check(result(2.0), Updates(reset={KEY}))
    past = history.snapshot()
    assert past.restarts_since(KEY, 0) == 0
    assert past.restarts_since(other, 0) == 1


def test_release_marks_and_the_next_check_clears(history):
    other = ("host02", "crawler", 3)
    history.record_check(result(1.0), Updates(quarantined={
        KEY: Quarantine(since=1.0, restarts=4, pid=42, started_at=0.5),
        other: Quarantine(since=1.0, restarts=4)}))

    released = history.release(lambda key: key[0] == "host01", now=5.0)
    assert released == [KEY]
    assert list(history.quarantined()) == [other]
    entry = history.snapshot().quarantine[KEY]
    assert (entry.released_at, entry.released_by) == \
        (5.0, "watchdog release")
    # Released twice is released once.
    assert history.release(lambda key: True, now=6.0) == [other]

    history.record_check(result(7.0), Updates(released={KEY}))
    assert KEY not in history.snapshot().quarantine


def test_old_full_results_are_dropped_but_the_rows_stay(history,
                                                         monkeypatch):
    monkeypatch.setattr(history_module, "RESULTS_KEPT", 3)
    for moment in range(1, 8):
        history.record_check(result(float(moment)), Updates())
    rows = history._db.execute(
        "SELECT count(*), count(result) FROM checks").fetchone()
    assert rows == (7, 3)
    assert history.last_result()["started_at"] == 7.0


def test_checks_older_than_the_retention_are_pruned(history):
    day = 86400.0
    history.record_check(result(day), Updates(
        hosts={"host01": HostMemory("ok", "ok", "b", day)}))
    later = day + history_module.RETENTION + day
    history.record_check(result(later), Updates())
    assert [row.started_at for row in history.checks()] == [later]
    # The host's memory outlives its events.
    assert history.snapshot().hosts["host01"].boot_id == "b"


def test_a_reader_is_not_blocked_by_a_writer(history, path):
    history._db.execute("BEGIN IMMEDIATE")
    history._db.execute(
        "INSERT INTO meta VALUES ('pending', '1')")
    with History.open(path) as reader:
        assert reader.get_meta("pending") is None
    history._db.execute("COMMIT")
