"""launcher logs and launcher exec on fake hosts."""

import time

import pytest

from tests.helpers import host_pids, launcher, wait_until
from tests.herd import Herd

TALKERS = """
    [hosts]
    all = ["host[01-03]"]

    [program.talker]
    command = '''
    echo "instance {instance} up on {host}"
    echo "err line \u00e9 {instance}" >&2
    exec sleep 300'''
    workdir = "~/talk"
    stdout = "talker-{instance}.out"
    stderr = "talker-{instance}.err"
    count = 2
    start_seconds = 0.3
    stop_timeout = 5
    """


@pytest.fixture
def herd(cluster, control_home, tmp_path):
    helper = Herd(cluster, tmp_path)
    yield helper
    helper.clean_up()
    for host in cluster.hosts:
        host.run("rm -rf /root/talk /root/.local/state/drover /root/flag")


@pytest.fixture
def talkers(herd):
    herd.configure(TALKERS)
    assert herd.launcher("exec", "-H", "all", "--", "mkdir", "talk")\
        .status == 0
    started = herd.launcher("start")
    assert started.status == 0, started.stdout + started.stderr
    assert len(herd.pids()) == 6
    return herd


# -- logs ---------------------------------------------------------------------

@pytest.mark.cluster
def test_logs_prefix_each_line_with_host_and_instance(talkers):
    result = talkers.launcher("logs", "talker")

    assert result.status == 0, result.stderr
    assert result.stdout.splitlines() == [
        f"host0{host} talker.{number}| instance {number} up on host0{host}"
        for host in (1, 2, 3) for number in (0, 1)]

    errors = talkers.launcher("logs", "talker", "--stderr", "-i", "1",
                              "-H", "host02")
    assert (errors.status, errors.stdout) == (
        0, "host02 talker.1| err line \u00e9 1\n")


@pytest.mark.cluster
def test_logs_of_an_instance_never_started_say_so(talkers):
    result = talkers.launcher("logs", "talker", "-H", "host01", "-i", "0",
                              "-i", "7")

    assert result.status == 1
    assert result.stdout == "host01 talker.0| instance 0 up on host01\n"
    assert result.stderr == "launcher: host01 talker.7: no record\n"


@pytest.mark.cluster
def test_logs_of_a_100_mb_log_read_only_its_end(talkers, cluster):
    host = cluster["host01"]
    host.run("yes 'filler line of a big log' | head -c 100000000 "
             ">> /root/talk/talker-0.out && "
             "seq 1 5 | sed 's/^/last /' >> /root/talk/talker-0.out",
             check=True)
    assert host.run("stat -c %s /root/talk/talker-0.out").stdout.strip() \
        == str(100000000 + len("instance 0 up on host01\n") + 35)

    began = time.monotonic()
    result = talkers.launcher("logs", "talker", "-H", "host01", "-i", "0",
                              "-n", "3")
    elapsed = time.monotonic() - began

    assert result.status == 0, result.stderr
    assert result.stdout == ("host01 talker.0| last 3\n"
                             "host01 talker.0| last 4\n"
                             "host01 talker.0| last 5\n")
    assert elapsed < 2

    # Asked for more lines than 1 MiB holds, it gets what 1 MiB holds.
    many = talkers.launcher("logs", "talker", "-H", "host01", "-i", "0",
                            "-n", "1000000")
    lines = many.stdout.splitlines()
    prefix = len("host01 talker.0| ")
    assert 1000000 < sum(len(line) - prefix + 1 for line in lines) \
        <= 1024 * 1024
    assert lines[-1] == "host01 talker.0| last 5"
    assert set(lines[:-5]) == {"host01 talker.0| filler line of a big log"}


# -- exec ---------------------------------------------------------------------

@pytest.mark.cluster
def test_exec_folds_alike_hosts_and_gives_255_for_an_unreachable_one(
        herd, cluster):
    herd.configure('[hosts]\nall = ["host[01-03]"]\n')
    closed = cluster.closed_port_host()
    cluster["host02"].run("echo flagged > /root/flag", check=True)
    command = ["--shell", "--", "cat flag 2>/dev/null && exit 4;",
               "echo plain; echo to stderr >&2"]

    result = herd.launcher("exec", "-H", "all", "-H", closed.name, *command)

    assert result.status == 255
    assert result.stdout == (
        "---------------\n"
        "host[01,03] (2)\n"
        "---------------\n"
        "plain\n"
        "to stderr\n"
        "------------------\n"
        "host02 (1): exit 4\n"
        "------------------\n"
        "flagged\n")
    assert result.stderr.startswith(
        f"launcher: {closed.name} (1): refused: connection "
        "refused by 127.0.0.1:")

    reached = herd.launcher("exec", "-H", "host[01-03]", *command)
    assert reached.status == 4


@pytest.mark.cluster
def test_exec_passes_every_word_as_it_is(herd):
    herd.configure('[hosts]\nall = ["host[01-03]"]\n')
    words = ["a b", "it's", '"d"', "$HOME", "`id`", "\u00e9t\u00e9 \u2713",
             "-n", ";", "--shell", ""]

    result = herd.launcher("exec", "-H", "host01", "--", "printf", "%s|\n",
                           *words)

    assert result.status == 0, result.stderr
    assert result.stdout.splitlines()[3:] == [f"{word}|" for word in words]

    shell = herd.launcher("exec", "-H", "host01", "--shell", "--",
                          "echo", "$HOME", "|", "tr", "a-z", "A-Z")
    assert shell.stdout.splitlines()[3:] == ["/ROOT"]


@pytest.mark.cluster
def test_exec_ends_the_command_on_the_host_at_its_timeout(herd, cluster):
    herd.configure('[hosts]\nall = ["host[01-03]"]\n')
    host = cluster["host03"]

    began = time.monotonic()
    result = herd.launcher("exec", "-H", "host03", "--timeout", "1", "--",
                           "sleep", "29.5")
    elapsed = time.monotonic() - began

    # timeout(1)'s status, as `timeout 1 sleep 29.5` would give it.
    assert result.status == 124
    assert elapsed < 5
    assert "host03 (1): exit 124" in result.stdout
    assert host_pids(host, "^sleep 29.5$") == []


def test_exec_on_localhost_runs_in_the_home(control_home, tmp_path):
    config = tmp_path / "drover.toml"
    config.write_text('[hosts]\nhere = ["localhost"]\n')

    result = launcher("-c", config, "exec", "-H", "localhost", "--", "pwd")

    assert (result.status, result.stdout) == (
        0, f"-------------\nlocalhost (1)\n-------------\n{control_home}\n")


def test_exec_without_a_command_is_a_usage_error(control_home, tmp_path):
    config = tmp_path / "drover.toml"
    config.write_text('[hosts]\nhere = ["localhost"]\n')

    result = launcher("-c", config, "exec", "-H", "localhost", "--")

    assert result.status == 2
    assert result.stderr.startswith("launcher: usage: no command given")
