"""launcher publish on fake hosts: what travels, where it lands, restarts.

Every check of a host's copy is made inside the host (``host.run``), not
through drover: mode, sha256, inode, and the inode a running daemon
executes (/proc/PID/exe).
"""

import hashlib
import os
import shutil
import sys
import time

import pytest

from tests.helpers import launcher
from tests.herd import Herd

# Names that break naive quoting, in paths and file names alike.
AWKWARD_DIR = "d\u00e9p\u00f4t \"q\" it's"
AWKWARD_NAME = "r\u00e8gle $HOME `x` \u2713.js"


@pytest.fixture
def herd(cluster, control_home, tmp_path):
    helper = Herd(cluster, tmp_path)
    yield helper
    helper.clean_up()
    for host in cluster.hosts:
        _empty_home(host)


@pytest.fixture
def make_herd(make_cluster, control_home, tmp_path):
    """A factory: make_herd(size) -> a Herd on a new cluster of `size`."""
    made = []

    def make(size):
        helper = Herd(make_cluster(size), tmp_path / f"herd{len(made)}")
        helper.config.parent.mkdir()
        made.append(helper)
        return helper

    yield make
    for helper in made:
        helper.clean_up()


def _empty_home(host):
    host.run("find /root -mindepth 1 -maxdepth 1 ! -name .ssh "
             "-exec rm -rf {} +")


def write(path, content, mode=0o644):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content if isinstance(content, bytes)
                     else content.encode())
    path.chmod(mode)
    return path


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def remote(host, path):
    """(mode as octal text, sha256, inode) of a file on a host, or None."""
    result = host.run(['sh', '-c', 'stat -c "%a %i" "$1" && '
                       'sha256sum < "$1"', 'sh', path])
    if result.returncode != 0:
        return None
    mode_inode, digest = result.stdout.splitlines()
    mode, inode = mode_inode.split()
    return mode, digest.split()[0], int(inode)


def assert_copies(cluster, source, remote_dir, names):
    """Each named file under `source` is on every host, mode and all."""
    for host in cluster.hosts:
        for name in names:
            local = source / name
            found = remote(host, f"{remote_dir}/{name}")
            assert found is not None, f"{name} missing on {host.name}"
            assert found[:2] == (format(local.stat().st_mode & 0o7777, "o"),
                                 sha256(local)), f"{name} on {host.name}"


def rules_tree(root):
    source = root / "rules"
    write(source / "a.js", "rule a\n")
    write(source / "run.sh", "#!/bin/sh\necho run\n", 0o755)
    write(source / "secret.key", "k" * 5000, 0o600)
    write(source / "sous dossier" / AWKWARD_NAME, "\u00e9t\u00e9\n", 0o640)
    return source


NAMES = ["a.js", "run.sh", "secret.key", f"sous dossier/{AWKWARD_NAME}"]

THREE_HOSTS = """
    [hosts]
    all = ["host[01-03]"]
    """


@pytest.mark.cluster
def test_second_publish_sends_nothing_and_a_change_only_that_file(
        herd, cluster, tmp_path):
    herd.configure(THREE_HOSTS)
    source = rules_tree(tmp_path)

    first = herd.launcher("publish", source, "--to", "~/pub")

    assert first.status == 0, first.stdout + first.stderr
    assert first.stdout.startswith("host[01-03] (3): sent 4 (rules/a.js, ")
    assert first.stdout.splitlines()[0].endswith(", unchanged 0")
    assert_copies(cluster, source, "/root/pub/rules", NAMES)
    inodes = {host.name: remote(host, "/root/pub/rules/run.sh")[2]
              for host in cluster.hosts}

    again = herd.launcher("publish", source, "--to", "~/pub")

    assert again.status == 0, again.stdout + again.stderr
    assert again.stdout == "host[01-03] (3): sent 0, unchanged 4\n"
    # Not even renamed into place again: the same inodes hold the files.
    assert inodes == {host.name: remote(host, "/root/pub/rules/run.sh")[2]
                      for host in cluster.hosts}

    write(source / "a.js", "rule a, second version\n")
    (source / "run.sh").chmod(0o700)
    changed = herd.launcher("publish", source, "--to", "~/pub")

    assert changed.status == 0, changed.stdout + changed.stderr
    assert changed.stdout == ("host[01-03] (3): sent 2 (rules/a.js, "
                              "rules/run.sh), unchanged 2\n")
    assert_copies(cluster, source, "/root/pub/rules", NAMES)
    leftovers = cluster["host02"].run(
        "find /root/pub -name '*drover-tmp*'").stdout
    assert leftovers == ""


@pytest.mark.cluster
def test_a_file_that_cannot_be_put_in_place_fails_on_its_host_only(
        herd, cluster, tmp_path):
    herd.configure(THREE_HOSTS)
    source = rules_tree(tmp_path)
    assert herd.launcher("publish", source, "--to", "pub").status == 0
    # A directory where the file should be: the rename cannot replace it.
    cluster["host03"].run("rm /root/pub/rules/a.js && "
                          "mkdir -p /root/pub/rules/a.js/inside",
                          check=True)
    write(source / "a.js", "rule a, second version\n")

    result = herd.launcher("publish", source, "--to", "pub")

    assert result.status == 1
    assert result.stdout.splitlines()[:3] == [
        "host[01-02] (2): sent 1 (rules/a.js), unchanged 3",
        "host03 (1): sent 0, unchanged 3, failed 1",
        "    rules/a.js: rename into place: Failure",
    ]
    for host in cluster.hosts[:2]:
        assert remote(host, "/root/pub/rules/a.js")[1] == \
            sha256(source / "a.js")
    listing = cluster["host03"].run("ls -A /root/pub/rules").stdout\
        .splitlines()
    assert sorted(listing) == ["a.js", "run.sh", "secret.key",
                               "sous dossier"]


@pytest.mark.cluster
def test_paths_with_spaces_quotes_and_non_ascii_land_where_asked(
        herd, cluster, tmp_path):
    herd.configure(THREE_HOSTS)
    single = write(tmp_path / AWKWARD_NAME, "one file\n", 0o604)
    tree = rules_tree(tmp_path)

    targets = [f"~/{AWKWARD_DIR}/x y", f"/root/abs {AWKWARD_DIR}",
               f"rel {AWKWARD_DIR}"]
    for target in targets:
        result = herd.launcher("publish", single, tree, "--to", target,
                               "-H", "host01,host03")
        assert result.status == 0, result.stdout + result.stderr
        assert result.stdout.startswith("host[01,03] (2): sent 5 (")

    for host in (cluster["host01"], cluster["host03"]):
        for directory in (f"/root/{AWKWARD_DIR}/x y",
                          f"/root/abs {AWKWARD_DIR}",
                          f"/root/rel {AWKWARD_DIR}"):
            assert remote(host, f"{directory}/{AWKWARD_NAME}")[:2] == \
                ("604", sha256(single))
            assert remote(host, f"{directory}/rules/{NAMES[3]}")[:2] == \
                ("640", sha256(tree / NAMES[3]))
    assert cluster["host02"].run("ls -A /root").stdout.split() == [".ssh"]


@pytest.mark.cluster
def test_check_names_the_hosts_that_differ_and_sends_nothing(
        herd, cluster, tmp_path):
    herd.configure(THREE_HOSTS)
    source = rules_tree(tmp_path)
    assert herd.launcher("publish", source, "--to", "pub").status == 0
    cluster["host02"].run("echo local edit >> /root/pub/rules/a.js",
                          check=True)
    cluster["host03"].run("rm /root/pub/rules/run.sh", check=True)
    write(source / "secret.key", "new secret", 0o600)

    result = herd.launcher("publish", "--check", source, "--to", "pub")

    assert result.status == 1
    assert result.stdout.splitlines() == [
        "rules/a.js: differs on host02 (1); same on host[01,03] (2)",
        "rules/run.sh: missing on host03 (1); same on host[01-02] (2)",
        "rules/secret.key: differs on host[01-03] (3)",
        "1 of 4 files the same on all 3 hosts reached",
    ]
    assert remote(cluster["host03"], "/root/pub/rules/run.sh") is None
    assert "new secret" not in cluster["host01"].run(
        "cat /root/pub/rules/secret.key").stdout

    assert herd.launcher("publish", source, "--to", "pub").status == 0
    same = herd.launcher("publish", "--check", source, "--to", "pub")
    assert (same.status, same.stdout) == (
        0, "4 of 4 files the same on all 3 hosts reached\n")


def test_publish_to_localhost_goes_to_the_home(control_home, tmp_path):
    config = tmp_path / "drover.toml"
    config.write_text('[hosts]\nhere = ["localhost"]\n')
    source = rules_tree(tmp_path)

    for target in ("~/here", "here"):
        result = launcher("-c", config, "publish", source, "--to", target)
        assert result.status == 0, result.stdout + result.stderr
    assert result.stdout == "localhost (1): sent 0, unchanged 4\n"

    for name in NAMES:
        copy = control_home / "here" / "rules" / name
        assert sha256(copy) == sha256(source / name)
        assert copy.stat().st_mode == (source / name).stat().st_mode


def test_bad_sources_and_options_stop_before_any_host(control_home,
                                                     tmp_path):
    config = tmp_path / "drover.toml"
    # No host here could be reached: an attempt would show as unreached.
    config.write_text('[hosts]\nnowhere = ["192.0.2.1"]\n'
                      '[program.p]\ncommand = "true"\n')
    source = rules_tree(tmp_path)
    other = write(tmp_path / "other" / "a.js", "x")

    cases = [
        (["missing.js", "--to", "x"], "launcher: files: missing.js: no "
                                      "such file or directory\n"),
        ([source / "a.js", other, "--to", "x"], "would both become x/a.js"),
        ([source, "--to", "~bob/x"], "~user is not supported"),
        ([source, "--to", "x", "--batch", "2"], "give --restart PROGRAM"),
        ([source, "--to", "x", "--check", "--restart", "p"],
         "launcher: usage: --check sends nothing"),
        ([source, "--to", "x", "--restart", "q"], 'no program named "q"'),
    ]
    for argv, message in cases:
        result = launcher("-c", config, "publish", *argv)
        assert result.status == 2, (argv, result.stderr)
        assert message in result.stderr
        assert result.stdout == ""


# -- replacing what runs -----------------------------------------------------

WORKER = """
    [hosts]
    one = ["host01"]

    [program.worker]
    command = ["./worker", "300"]
    workdir = "~/app"
    start_seconds = 0.5
    stop_timeout = 5
    """


def exe_inode(host, pid):
    return int(host.run(["stat", "-L", "-c", "%i",
                         f"/proc/{pid}/exe"]).stdout)


@pytest.mark.cluster
def test_a_running_executable_is_replaced_not_overwritten(herd, cluster,
                                                          tmp_path):
    host = cluster["host01"]
    herd.configure(WORKER)
    # A real binary under our own name: /proc/PID/exe is then that file.
    worker = tmp_path / "worker"
    shutil.copyfile(shutil.which("sleep"), worker)
    worker.chmod(0o755)
    assert herd.launcher("publish", worker, "--to", "~/app").status == 0
    assert herd.launcher("start").status == 0
    pid = herd.pids()[("host01", "worker.0")]
    old_inode = remote(host, "/root/app/worker")[2]
    assert exe_inode(host, pid) == old_inode

    # Extra bytes after an ELF image change its hash, not what it runs.
    worker.write_bytes(worker.read_bytes() + b"\0second version")
    result = herd.launcher("publish", worker, "--to", "~/app")

    assert result.status == 0, result.stdout + result.stderr
    assert result.stdout.startswith("host01 (1): sent 1 (worker)")
    mode, digest, new_inode = remote(host, "/root/app/worker")
    assert (mode, digest) == ("755", sha256(worker))
    assert new_inode != old_inode
    assert herd.pids()[("host01", "worker.0")] == pid
    assert exe_inode(host, pid) == old_inode
    assert host.run(["readlink", f"/proc/{pid}/exe"]).stdout == \
        "/root/app/worker (deleted)\n"

    restarted = herd.launcher("publish", worker, "--to", "~/app",
                              "--restart", "worker")

    assert restarted.status == 0, restarted.stdout + restarted.stderr
    assert restarted.stdout.splitlines() == [
        "host01 (1): sent 0, unchanged 1",
        "worker started: 1 on host01",
    ]
    new_pid = herd.pids()[("host01", "worker.0")]
    assert new_pid != pid
    assert host.run(["test", "-e", f"/proc/{pid}"]).returncode == 1
    assert exe_inode(host, new_pid) == new_inode


PICKY = """
    [hosts]
    all = ["host[01-03]"]

    [program.picky]
    # Braces doubled: single ones are placeholders of the configuration.
    command = '''
    grep -q good rules.txt || {{ cat rules.txt >&2; exit 3; }}
    exec sleep 300'''
    workdir = "~/picky"
    count = 2
    start_seconds = 1
    stop_timeout = 5
    """


@pytest.mark.cluster
def test_rollout_stops_at_the_first_batch_that_fails_to_start(
        herd, cluster, tmp_path):
    herd.configure(PICKY)
    rules = write(tmp_path / "rules.txt", "good rules\n")
    assert herd.launcher("publish", rules, "--to", "~/picky").status == 0
    assert herd.launcher("start").status == 0
    before = herd.pids()
    assert len(before) == 6

    write(rules, "broken rules\n")
    result = herd.launcher("publish", rules, "--to", "~/picky",
                           "--restart", "picky", "--batch", "1")

    assert result.status == 1
    assert result.stdout.splitlines() == [
        "host01 (1): sent 1 (rules.txt), unchanged 0",
        "host01 picky.0: failed (exited with status 3)",
        "    | broken rules",
        "host01 picky.1: failed (exited with status 3)",
        "    | broken rules",
        "picky failed: 2 on host01",
        "rollout stopped after batch 1 of 3: picky failed to start",
        "new files on host01 (1)",
        "old files on host[02-03] (2): not sent, the rollout stopped",
    ]
    assert remote(cluster["host01"], "/root/picky/rules.txt")[1] == \
        sha256(rules)
    now = herd.pids()
    for host in cluster.hosts[1:]:
        assert remote(host, "/root/picky/rules.txt")[1] == \
            hashlib.sha256(b"good rules\n").hexdigest()
        for number in (0, 1):
            key = (host.name, f"picky.{number}")
            assert now[key] == before[key]
    assert not any(host == "host01" for host, _ in now)


# -- the whole story ----------------------------------------------------------

CRAWLER = """
    [hosts]
    all = ["host[01-10]"]

    [program.crawler]
    command = "sha256sum rules/rule.js; exec sleep 300"
    workdir = "~/crawler"
    count = 2
    start_seconds = 0.5
    stop_timeout = 5
    """


@pytest.mark.cluster
def test_a_rule_file_rolls_out_to_ten_hosts_five_at_a_time(make_herd,
                                                           tmp_path):
    herd = make_herd(10)
    herd.configure(CRAWLER)
    rule = write(tmp_path / "rules" / "rule.js", "// first rules\n")
    assert herd.launcher("publish", rule.parent, "--to", "~/crawler")\
        .status == 0
    assert herd.launcher("start").status == 0
    before = herd.pids()
    assert len(before) == 20

    write(rule, "// second rules \u2713\n")
    result = herd.launcher("publish", rule.parent, "--to", "~/crawler",
                           "--restart", "crawler", "--batch", "5")

    assert result.status == 0, result.stdout + result.stderr
    assert result.stdout.splitlines() == [
        "host[01-10] (10): sent 1 (rules/rule.js), unchanged 0",
        "crawler started: 20 on host[01-10]",
    ]
    after = herd.pids()
    assert sorted(after) == sorted(before)
    assert all(after[key] != before[key] for key in after)
    logs = herd.launcher("logs", "crawler", "-n", "1")
    assert logs.status == 0, logs.stderr
    expected = f"{sha256(rule)}  rules/rule.js"
    assert sorted(logs.stdout.splitlines()) == sorted(
        f"{host} {name}| {expected}" for host, name in after)


@pytest.mark.cluster
@pytest.mark.slow
def test_publish_time_of_a_10mb_tree_to_ten_hosts(make_herd, tmp_path):
    herd = make_herd(10)
    herd.configure('[hosts]\nall = ["host[01-10]"]\n')
    tree = tmp_path / "data"
    for number in range(100):
        write(tree / f"part{number % 10}" / f"file{number:03d}.bin",
              os.urandom(100 * 1024))

    began = time.monotonic()
    first = herd.launcher("publish", tree, "--to", "~/data")
    first_seconds = time.monotonic() - began
    began = time.monotonic()
    second = herd.launcher("publish", tree, "--to", "~/data")
    second_seconds = time.monotonic() - began

    assert first.status == 0, first.stdout + first.stderr
    assert first.stdout.startswith("host[01-10] (10): sent 100 (")
    assert second.stdout == "host[01-10] (10): sent 0, unchanged 100\n"
    print(f"\npublish 10 MB in 100 files to 10 hosts: first "
          f"{first_seconds:.2f}s, unchanged {second_seconds:.2f}s",
          file=sys.__stderr__)
    assert first_seconds < 60
    assert second_seconds < 10
