"""The configuration file: values, defaults, paths, and every error."""

import dataclasses
import datetime
import doctest
import textwrap
from pathlib import Path

import pytest

from drover import config
from drover.config import load, load_text, find_config
from drover.errors import ConfigError, HostPatternError

FULL = """\
[ssh]
config = "ssh_config"
known_hosts = "~/.ssh/known_hosts"
user = "crawler"
identity_file = "keys/id_ed25519"
connect_timeout = 10
deadline = 120
parallel = 64
accept_new_host_keys = false
python = "python3"
state_dir = "~/.local/state/drover"

[hosts]
crawlers = ["crawl[01-40].example.org", "spare1:2222"]

[program.crawler]
command = ["java", "-jar", "crawler.jar", "--id", "{instance}"]
hosts = ["crawlers"]
count = 8
workdir = "/srv/crawler"
env = { JAVA_OPTS = "-Xmx2g" }
stdout = "logs/crawler-{instance}.out"
stderr = "logs/crawler-{instance}.err"
stop_signal = "TERM"
stop_timeout = 30
start_seconds = 2
umask = "022"

[watchdog]
respawn = false
max_restarts = 3
restart_window = "1h"
deadline = "240s"
min_free_disk = "1G"
min_free_memory = "256M"
remind_every = "6h"
heartbeat = "08:00"

[report]
templates = "my-templates"

[notify]
email = ["mailtos://user:pass@smtp.example.org?to=ops@example.org"]
urls = ["slack://T0/B0/XXXX"]
config = "apprise.yml"
"""


@pytest.fixture
def folder(tmp_path, control_home):
    """A folder for the configuration file, with the files it names."""
    folder = tmp_path / "etc"
    (folder / "keys").mkdir(parents=True)
    (folder / "my-templates").mkdir()
    for name in ("ssh_config", "keys/id_ed25519", "apprise.yml",
                 "smtp-password"):
        (folder / name).write_text("")
    return folder


def write(folder, text, name="drover.toml"):
    path = folder / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def load_error(folder, text):
    path = write(folder, text)
    with pytest.raises(ConfigError) as raised:
        load(path)
    return path, raised.value


def line_of(text, fragment):
    lines = textwrap.dedent(text).split("\n")
    return next(number for number, line in enumerate(lines, 1)
                if fragment in line)


def test_module_examples_hold(control_home):
    assert doctest.testmod(config).failed == 0


# -- what loads ---------------------------------------------------------------

def test_an_empty_file_is_a_valid_configuration(folder):
    loaded = load(write(folder, ""))

    assert loaded.hosts == ()
    assert loaded.programs == {}
    assert loaded.groups == {}
    assert loaded.expected() == []
    assert loaded.ssh.parallel == 64
    assert loaded.ssh.connect_timeout == 10
    assert loaded.ssh.state_dir == "~/.local/state/drover"
    assert loaded.watchdog.respawn is False
    assert loaded.watchdog.remind_every is None
    assert loaded.notify.email == ()


def test_the_documented_example_loads(folder, control_home):
    loaded = load(write(folder, FULL))

    ssh = loaded.ssh
    assert ssh.config_file == folder / "ssh_config"
    assert ssh.known_hosts == control_home / ".ssh/known_hosts"
    assert ssh.identity_file == folder / "keys/id_ed25519"
    assert (ssh.user, ssh.python, ssh.parallel) == ("crawler", "python3", 64)
    assert (ssh.connect_timeout, ssh.deadline) == (10.0, 120.0)

    assert len(loaded.hosts) == 41
    assert loaded.hosts[0] == "crawl01.example.org"
    assert loaded.hosts[-1] == "spare1:2222"
    assert loaded.groups["crawlers"] == loaded.hosts

    crawler = loaded.programs["crawler"]
    assert crawler.command == (
        "java", "-jar", "crawler.jar", "--id", "{instance}")
    assert crawler.hosts == loaded.hosts
    assert (crawler.count, crawler.workdir) == (8, "/srv/crawler")
    assert crawler.env == {"JAVA_OPTS": "-Xmx2g"}
    assert (crawler.stop_signal, crawler.stop_timeout) == ("TERM", 30.0)
    assert (crawler.start_seconds, crawler.umask) == (2.0, "022")

    watchdog = loaded.watchdog
    assert (watchdog.restart_window, watchdog.deadline) == (3600.0, 240.0)
    assert watchdog.min_free_disk == 1024 ** 3
    assert watchdog.min_free_memory == 256 * 1024 ** 2
    assert watchdog.remind_every == 6 * 3600.0
    assert watchdog.heartbeat == datetime.time(8, 0)

    assert loaded.report.templates == folder / "my-templates"
    assert loaded.notify.config == folder / "apprise.yml"
    assert loaded.notify.urls == ("slack://T0/B0/XXXX",)
    assert len(loaded.expected()) == 41 * 8


def test_the_loaded_configuration_is_immutable(folder):
    loaded = load(write(folder, FULL))

    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.ssh.parallel = 1
    assert isinstance(loaded.programs["crawler"].command, tuple)
    assert isinstance(loaded.hosts, tuple)


def test_instances_can_key_a_dict(folder):
    loaded = load(write(folder, FULL))

    seen = {instance: instance.name for instance in loaded.expected()}

    assert len(seen) == 41 * 8
    again = load(write(folder, FULL)).expected()[-1]
    assert seen[again] == "crawler.7"


def test_secrets_stay_out_of_repr(folder):
    text = FULL.replace("email =", "# email =") + """
    [[notify.email]]
    host = "smtp.example.org"
    to = "ops@example.org"

    [[notify.email]]
    host = "smtp.example.org"
    to = "ops@example.org"
    user = "ops"
    password = "hunter2"
    """
    loaded = load(write(folder, text))

    shown = repr(loaded)
    assert "pass@" not in shown and "XXXX" not in shown
    assert "hunter2" not in repr(loaded.notify.email[1])


@pytest.mark.parametrize("value, seconds", [
    ("30", 30.0), ("1.5", 1.5), ('"30s"', 30.0), ('"5m"', 300.0),
    ('"1h"', 3600.0), ('"2d"', 172800.0), ('"1h30m"', 5400.0),
    ('"1h 30m"', 5400.0), ('"90"', 90.0), ('"0.5s"', 0.5),
])
def test_durations_take_seconds_or_units(folder, value, seconds):
    loaded = load(write(folder, f"[watchdog]\nrestart_window = {value}\n"))

    assert loaded.watchdog.restart_window == seconds


@pytest.mark.parametrize("value, size", [
    ("4096", 4096), ('"512K"', 512 * 1024), ('"500M"', 500 * 1024 ** 2),
    ('"2G"', 2 * 1024 ** 3), ('"1T"', 1024 ** 4), ('"1.5G"', 3 * 2 ** 29),
    ('"100MB"', 100 * 1024 ** 2), ('"100MiB"', 100 * 1024 ** 2),
])
def test_sizes_take_bytes_or_units(folder, value, size):
    loaded = load(write(folder, f"[watchdog]\nmin_free_disk = {value}\n"))

    assert loaded.watchdog.min_free_disk == size


@pytest.mark.parametrize("value, name", [
    ('"TERM"', "TERM"), ('"SIGINT"', "INT"), ('"hup"', "HUP"),
    ("15", "TERM"), ('"9"', "KILL"), ('"SIGIOT"', "ABRT"),
])
def test_stop_signal_takes_names_and_numbers(folder, value, name):
    text = f"[program.p]\ncommand = \"true\"\nstop_signal = {value}\n"

    loaded = load(write(folder, text))

    assert loaded.programs["p"].stop_signal == name


def test_a_reminder_of_zero_means_never(folder):
    loaded = load(write(folder, "[watchdog]\nremind_every = 0\n"))

    assert loaded.watchdog.remind_every is None


def test_heartbeat_takes_a_toml_time_too(folder):
    loaded = load(write(folder, "[watchdog]\nheartbeat = 07:30:00\n"))

    assert loaded.watchdog.heartbeat == datetime.time(7, 30)


def test_a_mail_server_table_gets_the_port_of_its_security(folder):
    text = """
    [[notify.email]]
    host = "localhost"
    security = "none"
    to = ["a@x", "b@x"]

    [[notify.email]]
    host = "smtp.x"
    security = "ssl"
    to = "c@x"
    from = "d@x"
    user = "d"
    password_file = "smtp-password"

    [[notify.email]]
    host = "smtp.y"
    port = 2525
    to = "e@x"
    """
    email = load(write(folder, text)).notify.email

    assert (email[0].port, email[0].to) == (25, ("a@x", "b@x"))
    assert (email[1].port, email[1].sender) == (465, "d@x")
    assert email[1].password_file == folder / "smtp-password"
    assert (email[2].port, email[2].security) == (2525, "starttls")


# -- hosts and selection ------------------------------------------------------

HOSTS = """
[hosts]
crawlers = ["crawl[01-04]", "spare1:2222"]
web = ["web[1-2]"]
everything = ["crawlers", "web", "db1"]

[program.crawler]
command = ["crawl", "{instance}"]
hosts = ["crawlers"]
count = 2

[program.frontend]
command = "serve --port 80{instance}"
hosts = ["web1", "crawl01"]

[program.idle]
command = ["sleep", "1000"]
hosts = ["web"]
count = 0
"""


@pytest.fixture
def cluster_config(folder):
    return load(write(folder, HOSTS))


def test_hosts_list_every_host_once_in_file_order(cluster_config):
    assert cluster_config.hosts == (
        "crawl01", "crawl02", "crawl03", "crawl04", "spare1:2222",
        "web1", "web2", "db1")


def test_a_group_may_name_other_groups(cluster_config):
    assert cluster_config.groups["everything"] == cluster_config.hosts


def test_a_program_without_hosts_runs_on_every_host(folder):
    loaded = load(write(folder, HOSTS + "[program.all]\ncommand = 'x'\n"))

    assert loaded.programs["all"].hosts == loaded.hosts


def test_a_host_named_like_a_group_still_runs_programs_without_hosts(folder):
    text = ("[hosts]\nweb = ['web[1-2]']\nweb1 = ['db1']\n"
            "[program.p]\ncommand = 'x'\n")

    loaded = load(write(folder, text))

    assert loaded.programs["p"].hosts == ("web1", "web2", "db1")


def test_expected_goes_host_by_program_by_number(cluster_config):
    names = [str(instance) for instance in cluster_config.expected()]

    assert names[:4] == [
        "crawler.0 on crawl01", "crawler.1 on crawl01",
        "frontend.0 on crawl01", "crawler.0 on crawl02"]
    assert names[-1] == "frontend.0 on web1"
    assert len(names) == 5 * 2 + 2


def test_expected_filters_by_program_and_host(cluster_config):
    chosen = cluster_config.expected(["frontend"], ["web[1-2]"])

    assert [str(instance) for instance in chosen] == ["frontend.0 on web1"]
    assert cluster_config.expected("frontend", "web1") == chosen


def test_a_host_filter_takes_group_names(cluster_config):
    chosen = cluster_config.expected(None, ["web", "crawl04"])

    assert [str(instance) for instance in chosen] == [
        "crawler.0 on crawl04", "crawler.1 on crawl04",
        "frontend.0 on web1"]


def test_a_name_without_port_selects_the_entry_with_one(cluster_config):
    assert cluster_config.select_hosts(["spare1"]) == ("spare1:2222",)
    assert cluster_config.select_hosts("spare1:2222") == ("spare1:2222",)


def test_hosts_for_keeps_hosts_of_a_program_with_count_zero(cluster_config):
    assert cluster_config.hosts_for(["idle"]) == ("web1", "web2")
    assert cluster_config.expected(["idle"]) == []


def test_hosts_for_without_programs_is_every_selected_host(cluster_config):
    assert cluster_config.hosts_for() == cluster_config.hosts
    assert cluster_config.hosts_for(None, ["db1", "crawl0[1-2]"]) == (
        "crawl01", "crawl02", "db1")


def test_an_unknown_program_lists_the_known_ones(cluster_config):
    with pytest.raises(ConfigError) as raised:
        cluster_config.expected(["crawlr"])

    message = str(raised.value)
    assert 'no program named "crawlr"' in message
    assert "crawler, frontend, idle" in message


@pytest.mark.parametrize("patterns, named", [
    (["crawl05"], '"crawl05"'),
    (["crawl[03-06]"], '"crawl05" (of "crawl[03-06]")'),
    (["webs"], '"webs" is neither a group nor a host'),
])
def test_a_host_filter_matching_nothing_is_an_error(
        cluster_config, patterns, named):
    with pytest.raises(ConfigError) as raised:
        cluster_config.expected(None, patterns)

    assert named in str(raised.value)


def test_a_bad_host_filter_is_a_pattern_error(cluster_config):
    with pytest.raises(HostPatternError):
        cluster_config.select_hosts(["crawl[01-"])


# -- placeholders -------------------------------------------------------------

AWKWARD = "a b 'q' \"dq\" ; $HOME `id` \u00e9\u00e8 \u65e5\u672c *"


def test_placeholders_expand_and_awkward_text_stays_intact(folder):
    text = f"""
    [hosts]
    h = ["crawl07:2200"]

    [program.p]
    command = ["run", "--id={{instance}}", "{{host}}/{{program}}",
               {_toml(AWKWARD)}]
    workdir = "/srv/{{program}} dir/\u00e9"
    env = {{ A = "{{instance}}-{{host}}", B = {_toml(AWKWARD)} }}
    stdout = "logs/{{program}}-{{instance:02d}}.out"
    stderr = "{{{{literal}}}}-{{instance}}"
    umask = "027"
    """
    program = load(write(folder, text)).programs["p"]

    spec = program.start_spec("crawl07:2200", 3)

    assert spec == {
        "program": "p", "instance": 3,
        "argv": ["run", "--id=3", "crawl07:2200/p", AWKWARD],
        "workdir": "/srv/p dir/\u00e9",
        "env": {"A": "3-crawl07:2200", "B": AWKWARD},
        "stdout": "logs/p-03.out",
        "stderr": "{literal}-3",
        "umask": "027",
    }


def test_a_shell_string_command_runs_under_sh(folder):
    text = """
    [program.p]
    command = "cd data && ./serve --id {instance} | tee -a 'x y.log'; echo $$"
    """
    program = load(write(folder, text)).programs["p"]

    assert program.command[:2] == ("/bin/sh", "-c")
    assert program.start_spec("h", 4)["argv"] == [
        "/bin/sh", "-c",
        "cd data && ./serve --id 4 | tee -a 'x y.log'; echo $$"]


def test_unset_logs_are_left_to_the_agent(folder):
    program = load(write(folder, "[program.p]\ncommand = 'x'\n")).programs["p"]

    spec = program.start_spec("h", 0)

    assert (spec["stdout"], spec["stderr"], spec["workdir"]) == (
        None, None, "~")
    assert spec["env"] == {} and spec["umask"] == "022"


def _toml(value):
    """A TOML basic string of `value`."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


# -- paths --------------------------------------------------------------------

def test_local_paths_are_relative_to_the_file_whatever_the_cwd(
        folder, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    write(folder, FULL)
    monkeypatch.chdir(tmp_path)

    loaded = load(Path("etc/drover.toml"))
    monkeypatch.chdir(elsewhere)

    assert loaded.path == folder / "drover.toml"
    assert loaded.ssh.config_file == folder / "ssh_config"
    assert loaded.ssh.identity_file == folder / "keys/id_ed25519"
    assert loaded.report.templates == folder / "my-templates"
    assert loaded.notify.config == folder / "apprise.yml"
    assert loaded.ssh.identity_file.is_file()


def test_tilde_expands_on_the_control_host_only(folder, control_home):
    (control_home / ".ssh").mkdir()
    (control_home / ".ssh" / "id_rsa").write_text("")
    text = """
    [ssh]
    identity_file = "~/.ssh/id_rsa"
    state_dir = "~/state"

    [program.p]
    command = ["~/bin/worker"]
    workdir = "~/work"
    stdout = "~/logs/p.out"
    """
    loaded = load(write(folder, text))

    assert loaded.ssh.identity_file == control_home / ".ssh/id_rsa"
    assert loaded.ssh.state_dir == "~/state"
    program = loaded.programs["p"]
    assert (program.command, program.workdir, program.stdout) == (
        ("~/bin/worker",), "~/work", "~/logs/p.out")


def test_the_default_ssh_config_is_used_when_it_exists(folder, control_home):
    assert load(write(folder, "")).ssh.config_file is None

    (control_home / ".ssh").mkdir()
    (control_home / ".ssh" / "config").write_text("Host *\n")

    assert load(write(folder, "")).ssh.config_file == (
        control_home / ".ssh/config")


# -- errors -------------------------------------------------------------------

ERRORS = [
    # (text, dotted key, fragment of the offending line, message fragment)
    ("[program.crawler]\ncommand = 'x'\ncount = \"eight\"\n",
     "program.crawler.count", "count",
     'expected a whole number >= 0, got "eight"'),
    ("[program.crawler]\ncommand = 'x'\ncount = -1\n",
     "program.crawler.count", "count", "got -1"),
    ("[program.crawler]\ncommand = 'x'\ncount = 2.5\n",
     "program.crawler.count", "count", "got 2.5"),
    ("[program.crawler]\ncommand = 'x'\ncount = true\n",
     "program.crawler.count", "count", "got true"),
    ("[program.crawler]\ncommand = 'x'\ncuont = 3\n",
     "program.crawler.cuont", "cuont", 'unknown key (did you mean "count"?)'),
    ("[programs.crawler]\ncommand = 'x'\n",
     "programs", "[programs", 'did you mean "program"?'),
    ("[ssh]\nparallel = 0\n", "ssh.parallel", "parallel",
     "expected a whole number from 1 to 1024, got 0"),
    ("[ssh]\nparallel = 5000\n", "ssh.parallel", "parallel", "got 5000"),
    ("[ssh]\nconnect_timeout = 0\n", "ssh.connect_timeout", "connect",
     "expected a duration above 0"),
    ("[ssh]\nuser = \"-oProxyCommand=x\"\n", "ssh.user", "user",
     "expected a user name"),
    ("[ssh]\npython = \"python3; rm -rf /\"\n", "ssh.python", "python",
     "expected a program name or path"),
    ("[ssh]\naccept_new_host_keys = \"yes\"\n",
     "ssh.accept_new_host_keys", "accept",
     'expected true or false, got "yes"'),
    ("[ssh]\nidentity_file = \"keys/missing\"\n", "ssh.identity_file",
     "identity_file", "no such file: {folder}/keys/missing"),
    ("[ssh]\nconfig = \"no_such_config\"\n", "ssh.config", "config",
     "no such file: {folder}/no_such_config"),
    ("ssh = 5\n", "ssh", "ssh", "expected a table, got 5"),
    ("[hosts]\ncrawlers = [\n  \"ok1\",\n  \"crawl[01-40\",\n]\n",
     "hosts.crawlers[1]", "crawlers",
     'bad host pattern "crawl[01-40": no "]" closes'),
    ("[hosts]\ncrawlers = \"n[5-1]\"\n", "hosts.crawlers[0]", "crawlers",
     'reversed range "5-1"'),
    ("[hosts]\n\"a b\" = [\"x\"]\n", "hosts.a b", "a b", "bad group name"),
    ("[hosts]\na = [\"b\"]\nb = [\"a\"]\n", "hosts.b[0]", "b =",
     "groups name each other: a -> b -> a"),
    ("[hosts]\nweb = [\"web1\"]\n[program.p]\ncommand = 'x'\n"
     "hosts = [\"web\", \"crawlers\"]\n",
     "program.p.hosts[1]", "hosts =",
     '"crawlers" is neither a group nor a host of [hosts] (groups: web)'),
    ("[hosts]\nweb = [\"web1\"]\n[program.p]\ncommand = 'x'\n"
     "hosts = [\"web[1-\"]\n",
     "program.p.hosts", "hosts =", 'bad host pattern "web[1-"'),
    ("[program.\".hidden\"]\ncommand = 'x'\n", "program..hidden",
     "hidden", "bad program name"),
    ("[program.\"a b\"]\ncommand = 'x'\n", "program.a b", "a b",
     "bad program name"),
    ("[program.p]\ncount = 1\n", "program.p.command", "[program.p]",
     "missing: expected an array of strings or a shell command string"),
    ("[program.p]\ncommand = []\n", "program.p.command", "command",
     "expected an array of strings or a shell command string, got an "
     "empty array"),
    ("[program.p]\ncommand = [\"\", \"x\"]\n", "program.p.command[0]",
     "command", "expected a program to run"),
    ("[program.p]\ncommand = [\"run\", 3]\n", "program.p.command[1]",
     "command", "expected a string, got 3"),
    ("[program.p]\ncommand = [\"run\", \"--id\", \"{instanse}\"]\n",
     "program.p.command[2]", "command",
     'unknown placeholder "{instanse}"'),
    ("[program.p]\ncommand = \"echo ${HOME}\"\n", "program.p.command",
     "command", 'unknown placeholder "{HOME}"'),
    ("[program.p]\ncommand = 'x'\nworkdir = \"/srv/{program\"\n",
     "program.p.workdir", "workdir", "unbalanced brace"),
    ("[program.p]\ncommand = 'x'\nstdout = \"log-{}\"\n",
     "program.p.stdout", "stdout", 'unknown placeholder "{}"'),
    ("[program.p]\ncommand = 'x'\nstderr = \"{host.upper}\"\n",
     "program.p.stderr", "stderr", 'unknown placeholder "{host.upper}"'),
    ("[program.p]\ncommand = 'x'\nstderr = \"{host:d}\"\n",
     "program.p.stderr", "stderr", "bad placeholder"),
    ("[program.p]\ncommand = 'x'\n\n[program.p.env]\nGOOD = \"1\"\n"
     "JAVA_OPTS = \"-Dx={hots}\"\n",
     "program.p.env.JAVA_OPTS", "JAVA_OPTS", 'unknown placeholder "{hots}"'),
    ("[program.p]\ncommand = 'x'\nenv = { \"BAD NAME\" = \"1\" }\n",
     "program.p.env.BAD NAME", "env", "expected a variable name"),
    ("[program.p]\ncommand = 'x'\nenv = { N = 4 }\n",
     "program.p.env.N", "env", "expected a string, got 4"),
    ("[program.p]\ncommand = 'x'\nstop_signal = \"SIGFOO\"\n",
     "program.p.stop_signal", "stop_signal", 'got "SIGFOO"'),
    ("[program.p]\ncommand = 'x'\nstop_signal = 999\n",
     "program.p.stop_signal", "stop_signal", "got 999"),
    ("[program.p]\ncommand = 'x'\numask = 22\n", "program.p.umask", "umask",
     'expected an octal string such as "022", got 22'),
    ("[program.p]\ncommand = 'x'\numask = \"999\"\n", "program.p.umask",
     "umask", 'got "999"'),
    ("[program.p]\ncommand = 'x'\nstop_timeout = \"soon\"\n",
     "program.p.stop_timeout", "stop_timeout",
     'expected a duration such as 30, "30s", "5m", "1h30m" or "2d", '
     'got "soon"'),
    ("[watchdog]\nrestart_window = \"1h-30m\"\n", "watchdog.restart_window",
     "restart_window", 'got "1h-30m"'),
    ("[watchdog]\ndeadline = -5\n", "watchdog.deadline", "deadline",
     "got -5"),
    ("[watchdog]\ndeadline = inf\n", "watchdog.deadline", "deadline",
     "got inf"),
    ("[watchdog]\nmin_free_disk = \"lots\"\n", "watchdog.min_free_disk",
     "min_free_disk", 'expected a size in bytes, or such as "512K"'),
    ("[watchdog]\nmin_free_memory = 1.5\n", "watchdog.min_free_memory",
     "min_free_memory", "got 1.5"),
    ("[watchdog]\nheartbeat = \"25:00\"\n", "watchdog.heartbeat",
     "heartbeat", 'expected a time of day "HH:MM", got "25:00"'),
    ("[watchdog]\nmax_restarts = \"3\"\n", "watchdog.max_restarts",
     "max_restarts", 'got "3"'),
    ("[report]\ntemplates = \"nowhere\"\n", "report.templates", "templates",
     "no such directory: {folder}/nowhere"),
    ("[notify]\nconfig = \"missing.yml\"\n", "notify.config", "config",
     "no such file: {folder}/missing.yml"),
    ("[notify]\nurls = [\"slack://a\", \"secret-token\"]\n",
     "notify.urls[1]", "urls", "expected an apprise URL"),
    ("[notify]\nemail = [\"smtp://u:secret-token@x\"]\n",
     "notify.email[0]", "email", "expected a mailto:// or mailtos:// URL"),
    ("[[notify.email]]\nhost = \"a\"\nto = \"x@y\"\n\n"
     "[[notify.email]]\nhost = \"b\"\nsecurity = \"tls\"\n",
     "notify.email[1].security", "\"tls\"",
     'expected "none" or "starttls" or "ssl", got "tls"'),
    ("[[notify.email]]\nhost = \"a\"\n", "notify.email[0].to",
     "[[notify.email]]", "missing: a mail server table needs host and to"),
    ("[notify]\nemail = [{host = \"a\", to = \"b@c\", password = \"x\", "
     "password_file = \"smtp-password\"}]\n",
     "notify.email[0].password_file", "email", "not both"),
    ("[notify]\nemail = [{host = \"a\", to = \"b@c\", password = 1234}]\n",
     "notify.email[0].password", "email", "value not shown"),
]


@pytest.mark.parametrize("text, key, line_fragment, message", ERRORS)
def test_every_error_names_file_line_key_and_expectation(
        folder, text, key, line_fragment, message):
    path, error = load_error(folder, text)

    line = line_of(text, line_fragment)
    assert str(error).startswith(f"{path}:{line}: {key}: ")
    assert message.replace("{folder}", str(folder)) in str(error)
    assert (error.path, error.line, error.key) == (path, line, key)


@pytest.mark.parametrize("text", [
    "[notify]\nurls = [\"secret-token\"]\n",
    "[notify]\nemail = [\"smtp://u:secret-token@x\"]\n",
    "[notify]\nemail = [{host = \"a\", to = \"b@c\", "
    "password = [\"secret-token\"]}]\n",
])
def test_errors_never_show_a_secret(folder, text):
    _, error = load_error(folder, text)

    assert "secret-token" not in str(error)


def test_a_toml_syntax_error_names_its_line(folder):
    path, error = load_error(folder, "[ssh]\nparallel = 64\nuser = crawler\n")

    assert str(error).startswith(f"{path}:3: not valid TOML: ")
    assert error.line == 3


def test_a_toml_error_at_the_end_names_the_last_line(folder):
    path, error = load_error(folder, "[hosts]\nweb = [\"a\",\n")

    assert error.line == 3


def test_a_file_that_is_not_utf8_names_its_line(folder):
    path = folder / "drover.toml"
    path.write_bytes(b"[ssh]\nuser = \"caf\xe9\"\n")

    with pytest.raises(ConfigError) as raised:
        load(path)

    assert str(raised.value) == f"{path}:2: not UTF-8 text"


def test_a_missing_file_is_named(folder):
    path = folder / "absent.toml"

    with pytest.raises(ConfigError) as raised:
        load(path)

    assert str(raised.value) == (
        f"{path}: cannot read: No such file or directory")


def test_load_text_needs_no_file(tmp_path):
    loaded = load_text("[hosts]\nh = ['a']\n", tmp_path / "virtual.toml")

    assert loaded.hosts == ("a",)
    assert loaded.path == tmp_path / "virtual.toml"


# -- finding the file ---------------------------------------------------------

@pytest.fixture
def places(tmp_path):
    """A working directory, a user config dir, and a file in each place."""
    cwd = tmp_path / "cwd"
    xdg = tmp_path / "xdg"
    (xdg / "drover").mkdir(parents=True)
    cwd.mkdir()
    files = {
        "explicit": tmp_path / "explicit.toml",
        "variable": tmp_path / "variable.toml",
        "cwd": cwd / "drover.toml",
        "user": xdg / "drover" / "drover.toml",
    }
    for path in files.values():
        path.write_text("")
    environ = {"HOME": str(tmp_path), "XDG_CONFIG_HOME": str(xdg),
               "DROVER_CONFIG": str(files["variable"])}
    return cwd, environ, files


def test_find_config_prefers_the_explicit_file(places):
    cwd, environ, files = places

    assert find_config(files["explicit"], environ, cwd) == files["explicit"]


def test_find_config_then_takes_the_variable(places):
    cwd, environ, files = places

    assert find_config(None, environ, cwd) == files["variable"]


def test_find_config_then_takes_the_working_directory(places):
    cwd, environ, files = places
    del environ["DROVER_CONFIG"]

    assert find_config(None, environ, cwd) == files["cwd"]


def test_find_config_then_takes_the_user_config_dir(places):
    cwd, environ, files = places
    del environ["DROVER_CONFIG"]
    files["cwd"].unlink()

    assert find_config(None, environ, cwd) == files["user"]


def test_find_config_lists_what_it_tried(places):
    cwd, environ, files = places
    del environ["DROVER_CONFIG"]
    files["cwd"].unlink()
    files["user"].unlink()

    with pytest.raises(ConfigError) as raised:
        find_config(None, environ, cwd)

    message = str(raised.value)
    assert "--config (not given)" in message
    assert "$DROVER_CONFIG (not set)" in message
    assert str(files["cwd"]) in message and str(files["user"]) in message


@pytest.mark.parametrize("named_by", ["--config", "$DROVER_CONFIG"])
def test_a_named_file_that_is_missing_is_an_error_not_a_fallback(
        places, named_by):
    cwd, environ, files = places
    explicit = None
    if named_by == "--config":
        explicit = "missing.toml"
    else:
        environ["DROVER_CONFIG"] = "missing.toml"

    with pytest.raises(ConfigError) as raised:
        find_config(explicit, environ, cwd)

    assert str(raised.value) == (
        f"{cwd / 'missing.toml'}: no such file (named by {named_by})")


def test_find_config_expands_tilde_and_relative_names(places, tmp_path):
    cwd, environ, files = places
    environ["DROVER_CONFIG"] = "~/variable.toml"

    assert find_config(None, environ, cwd) == files["variable"]
    assert find_config("../explicit.toml", environ, cwd) == (
        cwd / "../explicit.toml")


def test_the_hosts_state_dir_takes_no_placeholders(tmp_path):
    with pytest.raises(ConfigError, match=r"drover.toml:2: ssh.state_dir: "
                                          r"expected a path without"):
        load_text('[ssh]\nstate_dir = "/srv/{host}"\n',
                  str(tmp_path / "drover.toml"))
