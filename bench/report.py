"""The benchmark's figures as Markdown, with the facts of the machine."""

import os
import platform
import statistics
import subprocess
import time
from dataclasses import dataclass, field

# Each drover command is compared with each peer asking the same hosts.
DROVER = ("watchdog check", "launcher status")
PEERS = ("pdsh", "pdsh, curve25519", "clush", "clush, curve25519",
         "taktuk")

# The targets, where the fleet is this large.
TARGET_SIZE = 100

READING = [
    "- The fake hosts share the client's cores. Each drover call starts "
    "python3 on the host (the agent: interpreter, json, compiling the "
    "agent's source) where the peers run `cat`; on real hosts that work "
    "runs on their own cores, in parallel, but here it adds to the "
    "client's wall time. `ssh, 1 host` against `watchdog check, 1 host` "
    "shows the fixed cost of one drover run.",
    "- OpenSSH's default key exchange (sntrup761x25519 in OpenSSH 9.x) "
    "costs its client far more CPU than curve25519: compare the CPU "
    "columns of pdsh and clush with and without it. paramiko never "
    "offers sntrup761; against this sshd it settles on curve25519.",
    "- The machine may be busy with other work: the load averages above "
    "say how much. The ratios compare commands of the same round, which "
    "keeps them steadier than the times themselves.",
]


@dataclass
class Results:
    """Everything one benchmark run measured, and where."""

    command_line: str
    runs: int
    warmup: int
    facts: dict
    clusters: dict = field(default_factory=dict)   # N -> {name: Series}
    single: dict = field(default_factory=dict)     # name -> Series


def machine_facts():
    facts = {
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
        "nproc": str(len(os.sched_getaffinity(0))),
        "cpu": _cpu_model(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "paramiko": _module_version("paramiko"),
        "cryptography": _module_version("cryptography"),
        "OpenSSH": _first_line(["ssh", "-V"]),
    }
    for package in ("pdsh", "clustershell", "taktuk"):
        facts[package] = _first_line(
            ["dpkg-query", "-W", "-f", "${Version}", package])
    facts["load before"] = load_average()
    return facts


def load_average():
    """The 1, 5 and 15 minute load: how busy the machine was besides."""
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def markdown(results):
    lines = [
        "# drover benchmark results",
        "",
        f"Made by `{results.command_line}` (see bench/run.py). Each "
        f"figure is the median of {results.runs} runs after "
        f"{results.warmup} warm-up round(s), with the lowest and highest "
        "in brackets. Every command is timed as a whole process: wall "
        "time from fork to exit; CPU time is user + system of the "
        "process and of the children it reaped (the ssh clients of pdsh, "
        "clush and taktuk; `wait4(2)`); peak memory is the largest "
        "resident set among them (GNU time's `%M`). The fake hosts' sshd "
        "run on the same "
        "cores: their CPU time is not in these figures, but it is in "
        "the wall times.",
        "",
        "Each host holds 8 instances of `sleep` (started with "
        "`launcher start`, `start_seconds = 0.5`). The peers ask every "
        "host `" + "cat /proc/sys/kernel/random/boot_id "
        "~/.local/state/drover/instances/*/*.json" + "` with their own "
        "defaults (pdsh: 32 at a time, clush: 64, taktuk: its window "
        "of 10); drover uses its shipped `[ssh]` defaults.",
        "",
        "## Machine",
        "",
        "| fact | value |",
        "| --- | --- |",
    ]
    lines += [f"| {name} | {value} |"
              for name, value in results.facts.items()]

    for size, series in results.clusters.items():
        lines += ["", f"## {size} hosts, {size * 8} instances", ""]
        lines += _series_table(series.values())
        lines += ["", "Wall time of drover / peer (median of the ratios "
                      "within each round):", ""]
        lines += _ratio_table(series)
        lines += _failures(series.values())

    if results.single:
        lines += ["", "## One host, and the command line alone", ""]
        lines += _series_table(results.single.values())
        lines += _failures(results.single.values())

    lines += ["", "## Targets (issue 7)", ""]
    lines += _targets(results)
    lines += ["", "## Reading the figures", ""] + READING
    return "\n".join(lines) + "\n"


def ratio(series, mine, theirs):
    """Median of mine/theirs over the rounds where both have a sample:
    a slow spell of the machine then weighs on both sides alike."""
    if mine not in series or theirs not in series:
        return None
    ours, others = series[mine].samples, series[theirs].samples
    ratios = [ours[key].wall / others[key].wall
              for key in ours if key in others]
    return statistics.median(ratios) if ratios else None


# -- tables -------------------------------------------------------------------

def _series_table(all_series):
    rows = ["| command | wall s | CPU s | peak RSS MB |",
            "| --- | ---: | ---: | ---: |"]
    for series in all_series:
        if not series.samples:
            rows.append(f"| {series.name} | failed | | |")
            continue
        rows.append(
            f"| {series.name} | {_spread(series, 'wall', _seconds)} "
            f"| {_spread(series, 'cpu', _seconds)} "
            f"| {_spread(series, 'rss', _megabytes)} |")
    return rows


def _ratio_table(series):
    peers = [peer for peer in PEERS if peer in series]
    rows = ["| drover \\ peer | " + " | ".join(peers) + " |",
            "| --- |" + " ---: |" * len(peers)]
    for mine in DROVER:
        cells = [_times(ratio(series, mine, peer)) for peer in peers]
        rows.append(f"| {mine} | " + " | ".join(cells) + " |")
    return rows


def _failures(all_series):
    lines = []
    for series in all_series:
        for failure in series.failures:
            lines.append(f"- {series.name} failed: {failure}")
    return ["", "Failures:", ""] + lines if lines else []


def _targets(results):
    sizes = sorted(results.clusters)
    size = TARGET_SIZE if TARGET_SIZE in results.clusters else (
        sizes[-1] if sizes else None)
    series = results.clusters.get(size, {})
    where = f"N={size}" + ("" if size == TARGET_SIZE
                           else f" (N={TARGET_SIZE} not measured)")

    check = series.get("watchdog check")
    rss = check.median("rss") if check and check.samples else None
    single = results.single
    targets = [
        (f"watchdog check / pdsh curve25519, {where}",
         ratio(series, "watchdog check", "pdsh, curve25519"), 1.5,
         _times),
        (f"watchdog check / clush defaults, {where}",
         ratio(series, "watchdog check", "clush"), 0.5, _times),
        ("watchdog --help, wall", _median(single, "watchdog --help"),
         0.15, _seconds_unit),
        (f"watchdog check peak memory, {where}",
         rss, 100e6, _megabytes_unit),
        ("launcher start of 200 instances on 1 host, wall",
         _median(single, "launcher start, 200 on 1 host"), 2.0,
         _seconds_unit),
    ]
    rows = ["| target | measured | limit | met |",
            "| --- | ---: | ---: | --- |"]
    for name, value, limit, shown in targets:
        if value is None:
            verdict = "not measured"
        else:
            verdict = "yes" if value <= limit else (
                f"no, by {value / limit:.2f}x")
        rows.append(f"| {name} | {shown(value)} | {shown(limit)} "
                    f"| {verdict} |")
    return rows


def _median(series, name):
    found = series.get(name)
    return found.median("wall") if found and found.samples else None


# -- numbers ------------------------------------------------------------------

def _spread(series, attribute, shown):
    return (f"{shown(series.median(attribute))} "
            f"({shown(series.low(attribute))}-"
            f"{shown(series.high(attribute))})")


def _seconds(value):
    return f"{value:.3f}" if value < 1 else f"{value:.2f}"


def _seconds_unit(value):
    return "-" if value is None else f"{_seconds(value)} s"


def _megabytes(value):
    return f"{value / 1e6:.0f}"


def _megabytes_unit(value):
    return "-" if value is None else f"{_megabytes(value)} MB"


def _times(value):
    return "-" if value is None else f"{value:.2f}x"


# -- facts --------------------------------------------------------------------

def _cpu_model():
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine()


def _module_version(name):
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def _first_line(argv):
    """A tool's version line; ssh -V writes it to stderr."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True,
                              timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "not found"
    text = (done.stdout.strip() or done.stderr.strip())
    return text.splitlines()[0] if text else "unknown"
