"""The drover agent: runs on a host, serves one JSON request, exits.

The control host runs `python3 -c` with a bootstrap that reads N bytes of
stdin, decompresses and executes them (drover/payload.py): this file. The
JSON request follows on stdin up to EOF; the answer is one JSON document
on stdout (docs/internals.md, "The agent protocol"). It runs on python3
3.6 with the standard library alone, so it reads /proc itself (proc(5)).

Every path, argument and environment entry is encoded here, as UTF-8 with
surrogateescape, before it reaches an os call: under a C locale Python 3.6
encodes str paths as ASCII and would fail on the first non-ASCII name.

No daemon runs without a record: the forked child waits at a gate until
its record is durable, and is killed instead if the record cannot be
written; a stop signals nothing it could not first mark stopped.
"""

import collections
import errno
import json
import os
import signal
import sys
import time

DEFAULT_STATE_DIR = "~/.local/state/drover"
DEFAULT_SETTLE = 2.0        # seconds a new daemon must stay up
DEFAULT_TAIL_LINES = 10
DEFAULT_STOP_TIMEOUT = 30.0
DEFAULT_KILL_TIMEOUT = 5.0

# How far back from the end of a log a tail may read, whatever its size.
STATUS_TAIL_BYTES = 64 * 1024
LOGS_TAIL_BYTES = 1024 * 1024
BLOCK_SIZE = 16 * 1024

# Logs are appended to, never truncated: a respawn keeps what came before.
LOG_FLAGS = os.O_WRONLY | os.O_APPEND | os.O_CREAT

SETTLE_POLL = 0.05          # seconds between waitpid checks while settling
STOP_POLL = 0.1             # seconds between /proc scans while stopping

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")

# States of /proc/PID/stat field 3 that no longer run code (proc(5)).
ZOMBIE, DEAD = "Z", "X"


class RequestError(Exception):
    """The request cannot be served as asked; the message says why."""


def to_bytes(text):
    """A str for the kernel: UTF-8, undecodable bytes restored."""
    return text.encode("utf-8", "surrogateescape")


def to_text(raw):
    """Bytes from the kernel as str, reversible by to_bytes."""
    return raw.decode("utf-8", "surrogateescape")


def expand(path, base=None):
    """An absolute, normalized path; ~ expanded, relative ones on base."""
    raw = os.path.expanduser(to_bytes(path))
    if base is not None:
        raw = os.path.join(to_bytes(base), raw)
    return to_text(os.path.normpath(os.path.abspath(raw)))


def checked_name(value, what):
    """A program or host name that is safe as part of a file name."""
    if (not isinstance(value, str) or value in ("", ".")
            or "/" in value or ".." in value or "\0" in value):
        raise RequestError(f"invalid {what} name: {value!r}")
    return value


def instance_key(spec):
    """(program, instance) of a spec, checked: both become file names."""
    program = checked_name(spec.get("program"), "program")
    number = spec.get("instance")
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise RequestError(f"invalid instance number: {number!r}")
    return program, number


def signal_number(value):
    """A signal from "TERM", "SIGTERM" or 15."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    name = str(value).upper()
    try:
        return signal.Signals[name if name.startswith("SIG") else "SIG" + name]
    except KeyError:
        raise RequestError(f"unknown signal: {value!r}") from None


def signal_name(number):
    """ "SEGV" for 11; the number itself for signals without a name."""
    try:
        return signal.Signals(number).name[3:]
    except ValueError:
        return str(number)


# --- /proc ---------------------------------------------------------------

ProcStat = collections.namedtuple(
    "ProcStat", "state pgrp session cpu_ticks start_ticks")


def read_stat(pid):
    """The fields of /proc/PID/stat that drover uses; None if no such pid."""
    try:
        with open(b"/proc/%d/stat" % pid, "rb") as file:
            raw = file.read()
    except (FileNotFoundError, ProcessLookupError):
        return None

    # Field 2 (comm) is in parentheses and may itself hold spaces and
    # parentheses; the other fields follow the last ")" (proc(5)).
    # fields[0] is field 3, so field N of proc(5) is fields[N - 3].
    fields = raw[raw.rindex(b")") + 2:].split()
    return ProcStat(state=fields[0].decode("ascii"),
                    pgrp=int(fields[2]),
                    session=int(fields[3]),
                    cpu_ticks=int(fields[11]) + int(fields[12]),
                    start_ticks=int(fields[19]))


def read_boot_id():
    """This boot's random id: a recorded pid means nothing across boots."""
    with open("/proc/sys/kernel/random/boot_id") as file:
        return file.read().strip()


def live_processes():
    """{pid: ProcStat} of every process on the host that is not a zombie."""
    table = {}
    for name in os.listdir(b"/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat is not None and stat.state not in (ZOMBIE, DEAD):
                table[int(name)] = stat
    return table


def identify(record, boot_id):
    """(state, reason, stat) of a recorded process, from /proc.

    A pid alone is not an identity (DESIGN.md): the start time (stat field
    22) and the boot id must match too. State is running, zombie, dead or
    lost; stat is the process's when it is running, else None.
    """
    if record.get("boot_id") != boot_id:
        return "lost", "host rebooted", None

    pid = record.get("pid")
    stat = read_stat(pid) if pid else None
    if stat is None or stat.state == DEAD:
        return "dead", "pid gone", None
    if stat.start_ticks != record.get("start_ticks"):
        return "dead", "pid reused", None
    if stat.state == ZOMBIE:
        return "zombie", "exited, not yet reaped", None
    return "running", None, stat


def usage(pid, stat):
    """(resident bytes, CPU seconds) of a running process."""
    try:
        with open(b"/proc/%d/statm" % pid, "rb") as file:
            resident_pages = int(file.read().split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None, None
    return resident_pages * PAGE_SIZE, stat.cpu_ticks / CLOCK_TICKS


# --- files ---------------------------------------------------------------

def write_json_atomically(path, data):
    """Temp file, fsync, rename, fsync the directory: never a torn file.

    A temp file left by a failed write (disk full) is never read as a
    record: its name ends in .tmp.PID.
    """
    directory = to_bytes(os.path.dirname(path))
    os.makedirs(directory, 0o700, exist_ok=True)

    temp = to_bytes(path) + b".tmp.%d" % os.getpid()
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    try:
        with os.fdopen(os.open(temp, flags, 0o600), "wb") as file:
            file.write(json.dumps(data, ensure_ascii=True).encode("ascii"))
            file.flush()
            os.fsync(file.fileno())
        os.rename(temp, to_bytes(path))
    except OSError:
        try:
            os.unlink(temp)
        except OSError:
            pass  # never created, or the directory refuses even that
        raise

    # The rename itself is durable only once the directory is synced.
    directory_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(directory_fd)
    finally:
        os.close(directory_fd)


def tail_lines(path, count, limit):
    """The last `count` lines of a file, reading back at most `limit` bytes.

    Reads from the end in blocks, so a log of any size costs at most `limit`
    bytes; a line cut by that limit is dropped rather than shown in part.
    """
    if count <= 0:
        return []

    # One newline more than the lines wanted: the one before the first.
    blocks = []
    newlines = 0
    with open(to_bytes(path), "rb") as file:
        end = start = file.seek(0, os.SEEK_END)
        while start > 0 and end - start < limit and newlines <= count:
            size = min(BLOCK_SIZE, start, limit - (end - start))
            start -= size
            file.seek(start)
            block = file.read(size)
            blocks.append(block)
            newlines += block.count(b"\n")

    lines = b"".join(reversed(blocks)).split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    if start > 0:
        lines = lines[1:]
    return [line.decode("utf-8", "replace") for line in lines[-count:]]


def stderr_tail(record, count, limit=STATUS_TAIL_BYTES):
    """The end of an instance's stderr log; [] when there is none."""
    try:
        return tail_lines(record["stderr"], count, limit)
    except (OSError, KeyError, TypeError):
        return []


class StateDir:
    """Records and default logs kept on this host for one host name.

    Records are per configured host name, not per machine, so two aliases
    of one machine never share them (docs/internals.md).
    """

    def __init__(self, request):
        root = expand(request.get("state_dir") or DEFAULT_STATE_DIR)
        self.host = checked_name(request.get("host"), "host")
        self.records = os.path.join(root, "instances", self.host)
        self.logs = os.path.join(root, "logs", self.host)

    def record_path(self, program, instance):
        return os.path.join(self.records, f"{program}.{instance}.json")

    def read(self, program, instance):
        """The record of one instance, or None if it was never started."""
        path = self.record_path(program, instance)
        try:
            with open(to_bytes(path), "rb") as file:
                return json.loads(file.read().decode("ascii"))
        except FileNotFoundError:
            return None
        except ValueError as error:
            raise RequestError(f"unreadable record {path}: {error}")

    def write(self, record):
        path = self.record_path(record["program"], record["instance"])
        write_json_atomically(path, record)

    def write_error(self, record, error):
        """Why a record could not be written, in the user's words."""
        path = self.record_path(record["program"], record["instance"])
        return f"{path}: {error.strerror or error}"

    def check_writable(self):
        """Create the records directory and prove a file can be made there.

        Called before anything is forked: a start that could not record
        what it starts starts nothing (RequestError names the directory).
        The probe's name ends in .tmp.PID, so it is never read as a record.
        """
        directory = to_bytes(self.records)
        probe = os.path.join(directory, b".probe.tmp.%d" % os.getpid())
        try:
            os.makedirs(directory, 0o700, exist_ok=True)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                             0o600))
            os.unlink(probe)
        except OSError as error:
            raise RequestError(f"cannot write records in {self.records}: "
                               f"{error.strerror or error}") from None

    def all_records(self):
        """Every record of this host name, by program and instance."""
        try:
            names = os.listdir(to_bytes(self.records))
        except FileNotFoundError:
            return []

        # PROGRAM.INSTANCE.json, where a program name may hold dots; temp
        # files end in .tmp.PID and are passed over.
        keys = []
        for name in names:
            parts = to_text(name).rsplit(".", 2)
            if len(parts) == 3 and parts[2] == "json" and parts[1].isdigit():
                keys.append((parts[0], int(parts[1])))
        return [self.read(program, instance)
                for program, instance in sorted(keys)]


# --- status --------------------------------------------------------------

def status(request):
    """Host facts, and every record of this host name with its state."""
    place = StateDir(request)
    boot_id = read_boot_id()
    programs = request.get("programs")
    count = int(request.get("tail_lines", DEFAULT_TAIL_LINES))

    instances = []
    for record in place.all_records():
        if programs is None or record["program"] in programs:
            instances.append(describe(record, boot_id, count))
    return {"host": host_facts(request.get("paths") or [], boot_id),
            "instances": instances}


def describe(record, boot_id, count):
    """One instance as status reports it.

    What runs is running whatever the record says; otherwise a person's
    stop or a failed start explains the absence better than /proc does.
    """
    state, reason, stat = identify(record, boot_id)
    rss = cpu = None
    if state == "running":
        rss, cpu = usage(record["pid"], stat)
    elif record.get("stopped"):
        state, reason = "stopped", None
    elif record.get("failure"):
        state, reason = "failed", record["failure"].get("error")

    return {"program": record["program"], "instance": record["instance"],
            "state": state, "reason": reason, "pid": record.get("pid"),
            "started_at": record.get("started_at"), "rss": rss, "cpu": cpu,
            "argv": record.get("argv"), "stdout": record.get("stdout"),
            "stderr": record.get("stderr"), "failure": record.get("failure"),
            "stderr_tail": ([] if state == "running"
                            else stderr_tail(record, count))}


def host_facts(paths, boot_id):
    """What the watchdog wants to know about the machine itself."""
    clock = time.time()
    with open("/proc/uptime", "rb") as file:
        uptime = float(file.read().split()[0])
    with open("/proc/loadavg", "rb") as file:
        load = [float(value) for value in file.read().split()[:3]]
    memory = meminfo()

    return {"boot_id": boot_id, "uptime": uptime,
            "boot_time": clock - uptime, "load": load,
            "mem_total": memory.get(b"MemTotal"),
            "mem_available": memory.get(b"MemAvailable"),
            "disks": [disk_usage(path) for path in paths],
            "hostname": os.uname().nodename,
            "python": "%d.%d.%d" % sys.version_info[:3], "clock": clock}


def meminfo():
    """The kB lines of /proc/meminfo, in bytes, by name.

    MemAvailable only exists since Linux 3.14 (proc(5)); it is then None.
    """
    values = {}
    with open("/proc/meminfo", "rb") as file:
        for line in file:
            name, _, rest = line.partition(b":")
            fields = rest.split()
            if len(fields) == 2 and fields[1] == b"kB":
                values[name] = int(fields[0]) * 1024
    return values


def disk_usage(path):
    """Free and total bytes of the filesystem that holds, or will hold, path.

    A log directory may not exist before the first start: its nearest
    existing parent is on the filesystem where it will be created.
    """
    try:
        raw = to_bytes(expand(path))
        while not os.path.exists(raw):
            raw = os.path.dirname(raw)
        vfs = os.statvfs(raw)
    except OSError as error:
        return {"path": path, "free": None, "total": None,
                "error": error.strerror}
    return {"path": path, "free": vfs.f_bavail * vfs.f_frsize,
            "total": vfs.f_blocks * vfs.f_frsize}


# --- start ---------------------------------------------------------------

class Launch:
    """One instance to start, checked and turned into bytes beforehand.

    The forked child does as little as it can: no parsing, no decisions.
    """

    def __init__(self, spec, place):
        self.program, self.instance = instance_key(spec)
        self.name = f"{self.program}.{self.instance}"

        self.argv = spec.get("argv")
        if not (isinstance(self.argv, list) and self.argv
                and all(isinstance(arg, str) and "\0" not in arg
                        for arg in self.argv)):
            raise RequestError(f"{self.name}: argv must be a non-empty "
                               f"list of strings without NUL")

        # Relative log paths are relative to the working directory.
        self.workdir = expand(spec.get("workdir") or "~")
        default_log = os.path.join(place.logs,
                                   f"{self.program}-{self.instance}")
        self.stdout = expand(spec.get("stdout") or default_log + ".out",
                             self.workdir)
        self.stderr = expand(spec.get("stderr") or default_log + ".err",
                             self.workdir)

        umask = spec.get("umask", "022")
        self.umask = int(umask, 8) if isinstance(umask, str) else umask
        if not isinstance(self.umask, int) or not 0 <= self.umask <= 0o777:
            raise RequestError(f"{self.name}: invalid umask: {umask!r}")

        # The program's environment over the agent's, as the daemon gets it.
        self.env = dict(os.environb)
        for key, value in (spec.get("env") or {}).items():
            if (not isinstance(key, str) or not key or "=" in key
                    or "\0" in key
                    or not isinstance(value, str) or "\0" in value):
                raise RequestError(f"{self.name}: invalid environment "
                                   f"entry: {key!r}")
            self.env[to_bytes(key)] = to_bytes(value)

    def record(self, boot_id, host):
        """The record of this launch, before the fork tells its pid."""
        return {"program": self.program, "instance": self.instance,
                "host": host, "pid": None, "pgid": None,
                "start_ticks": None, "boot_id": boot_id,
                "argv": self.argv, "workdir": self.workdir,
                "stdout": self.stdout, "stderr": self.stderr,
                "started_at": time.time(), "stopped": False,
                "failure": None}

    def step_error(self, report):
        """The user's words for the child's `step:errno` report."""
        step, _, number = report.partition(":")
        number = int(number or 0)
        if step == "exec" and number == errno.ENOENT:
            return f"command not found: {self.argv[0]}"

        subject = {"chdir": self.workdir, "stdout": self.stdout,
                   "stderr": self.stderr, "exec": self.argv[0]}.get(step)
        reason = os.strerror(number) if number else "failed"
        if subject is None:
            return f"{step}: {reason}"
        return f"{step} {subject}: {reason}"


def start(request):
    """Start every instance that is not running; report how each held up."""
    place = StateDir(request)
    boot_id = read_boot_id()
    settle = float(request.get("settle", DEFAULT_SETTLE))
    count = int(request.get("tail_lines", DEFAULT_TAIL_LINES))

    # Every spec and every existing record is checked, and the records
    # directory proven writable, before anything starts: a bad request
    # starts nothing at all.
    launches = [Launch(spec, place) for spec in request.get("instances") or []]
    place.check_writable()
    records = [place.read(launch.program, launch.instance)
               for launch in launches]

    answers = []
    started = {}
    processes = None
    for launch, record in zip(launches, records):
        if record is not None and identify(record, boot_id)[0] == "running":
            answer = answer_for(launch, "running", record["pid"])
            answers.append(answer)
            if record.get("stopped"):
                record["stopped"] = False
                try:
                    place.write(record)
                except OSError as error:
                    answer["error"] = ("cannot clear its stopped mark ("
                                       + place.write_error(record, error)
                                       + ")")
            continue

        if record is not None and not record.get("stopped") and \
                processes is None:
            processes = live_processes()  # one scan for the whole batch
        leftovers = clear_leftovers(record, boot_id, processes)
        answer, record = launch_one(launch, boot_id, place, count)
        if leftovers:
            answer["leftovers"] = leftovers
        answers.append(answer)
        if answer["result"] == "started":
            started[record["pid"]] = (answer, record)

    # One settle time for the whole batch, not one per instance.
    deaths = await_deaths(list(started), settle)
    for pid, wait_status in deaths.items():
        answer, record = started[pid]
        record["failure"] = exit_failure(wait_status)
        record["failure"]["stderr_tail"] = stderr_tail(record, count)
        answer.update(record["failure"], result="failed")
        keep_failure(place, record, answer)
    return {"instances": answers}


def clear_leftovers(record, boot_id, processes):
    """Kill what remains of an instance's previous run; its pids.

    A wrapper whose leader died may leave its children running in the
    group it led (a JVM under a dead shell script): starting the instance
    again beside them would run it twice. They are this instance's for
    sure (see group_to_signal), so they get SIGKILL at once.
    """
    if record is None or record.get("stopped"):
        return []
    group = group_to_signal(record, boot_id, processes)
    if group is None:
        return []
    members = sorted(pid for pid, stat in processes.items()
                     if stat.pgrp == group)
    signal_group(group, signal.SIGKILL)
    deadline = time.time() + 2.0
    while time.time() < deadline and any(
            stat.pgrp == group for stat in live_processes().values()):
        time.sleep(STOP_POLL)
    return members


def keep_failure(place, record, answer):
    """Write a failed start's record; say so in the answer if it cannot.

    Nothing runs by then, so a lost write loses only the explanation:
    status will show the instance dead instead of failed.
    """
    try:
        place.write(record)
    except OSError as error:
        answer["error"] += (" (not recorded: "
                            + place.write_error(record, error) + ")")


def answer_for(launch, result, pid, failure=None):
    answer = {"program": launch.program, "instance": launch.instance,
              "result": result, "pid": pid, "error": None,
              "exit_status": None, "signal": None, "stderr_tail": []}
    answer.update(failure or {})
    return answer


def launch_one(launch, boot_id, place, count):
    """(answer, record) of one fork and exec; record None if none written.

    The record is durable before the program runs: the child waits at its
    gate until then. If the record cannot be written the child is killed
    and the instance answered as failed; the program never runs.
    """
    record = launch.record(boot_id, place.host)
    try:
        child = Child(launch)
    except OSError as error:
        record["failure"] = {"error": launch.step_error(f"fork:{error.errno}"),
                             "exit_status": None, "signal": None,
                             "stderr_tail": []}
        answer = answer_for(launch, "failed", None, record["failure"])
        keep_failure(place, record, answer)
        return answer, record

    # The child is ours and not reaped yet: its stat is there to read.
    try:
        record.update(pid=child.pid, pgid=child.pid,
                      start_ticks=read_stat(child.pid).start_ticks)
        place.write(record)
    except BaseException as error:
        child.kill()
        if not isinstance(error, OSError):
            raise
        failure = {"error": "not started: cannot record it ("
                            + place.write_error(record, error) + ")",
                   "exit_status": None, "signal": None, "stderr_tail": []}
        return answer_for(launch, "failed", None, failure), None

    report = child.release()
    if not report:
        return answer_for(launch, "started", child.pid), record

    # A step before the program ran failed: there is no exit status of
    # the program to report, only the step's error.
    os.waitpid(child.pid, 0)
    record["failure"] = {"error": launch.step_error(report),
                         "exit_status": None, "signal": None,
                         "stderr_tail": stderr_tail(record, count)}
    answer = answer_for(launch, "failed", None, record["failure"])
    keep_failure(place, record, answer)
    return answer, record


class Child:
    """A forked child on its way to become the daemon, held at a gate.

    Two pipes, both close-on-exec (PEP 446): the child reports a failed
    step on one (EOF there means exec succeeded), and waits on the other
    before exec. Only release() lets it exec; kill(), or EOF because the
    agent died (SIGKILL, OOM), ends it before the program ever runs.
    """

    def __init__(self, launch):
        pipes = []
        try:
            pipes += os.pipe()
            pipes += os.pipe()
            self.pid = os.fork()
        except BaseException:
            for fd in pipes:
                os.close(fd)
            raise
        self.reports, report_end, gate_end, self.gate = pipes
        if self.pid == 0:
            os.close(self.reports)
            os.close(self.gate)
            become_daemon(launch, report_end, gate_end)
        os.close(report_end)
        os.close(gate_end)

    def release(self):
        """Let the child exec: "" or the `step:errno` of a failed step."""
        try:
            os.write(self.gate, b"go")
        except OSError:
            pass  # it died at a step before the gate; its report says so
        os.close(self.gate)

        # The child writes its report once, far below PIPE_BUF, so one
        # read gets all of it (pipe(7)).
        report = os.read(self.reports, 512)
        os.close(self.reports)
        return report.decode("ascii", "replace")

    def kill(self):
        """SIGKILL the child's process group, and the child, and reap it.

        It has not exec'd: nothing of the program ran. Whether or not it
        reached setsid yet, no other group has its pid as id (kernel/pid.c),
        so killpg can hit nothing else.
        """
        os.close(self.gate)
        os.close(self.reports)
        for kill in (os.killpg, os.kill):
            try:
                kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        os.waitpid(self.pid, 0)


def become_daemon(launch, error_pipe, gate):
    """In the forked child: detach, redirect, wait at the gate, exec.

    Never returns. The gate opens once the agent has recorded this child;
    EOF there (the agent refused, or died) ends it without a report.

    One fork, not two: the daemon stays a session leader (sid == pid) and
    the agent stays its parent during settle, to reap an early death and
    report its exit status (docs/internals.md).
    """
    step = "setsid"
    try:
        # A session of its own: no controlling tty, and a process group
        # that stop can signal as a whole.
        os.setsid()

        step = "chdir"
        os.chdir(to_bytes(launch.workdir))
        os.umask(launch.umask)

        step = "stdin"
        redirect(b"/dev/null", os.O_RDONLY, 0)
        step = "stdout"
        redirect(to_bytes(launch.stdout), LOG_FLAGS, 1)
        step = "stderr"
        redirect(to_bytes(launch.stderr), LOG_FLAGS, 2)

        # Any inherited descriptor, an ssh channel's above all, would keep
        # that channel open for the daemon's whole life (CASES C01).
        step = "close"
        close_descriptors(keep=(error_pipe, gate))

        step = "signals"
        reset_signals()

        step = "gate"
        if os.read(gate, 2) != b"go":
            os._exit(127)

        step = "exec"
        exec_in_path([to_bytes(arg) for arg in launch.argv], launch.env)
    except BaseException as error:
        number = getattr(error, "errno", None) or 0
        try:
            os.write(error_pipe, f"{step}:{number}".encode("ascii"))
        except OSError:
            pass
    os._exit(127)


def redirect(path, flags, target):
    """Open path on descriptor target, inheritable across exec.

    A file to create gets its missing directories too.
    """
    if flags & os.O_CREAT:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    fd = os.open(path, flags, 0o644)
    if fd == target:
        os.set_inheritable(fd, True)
    else:
        os.dup2(fd, target)
        os.close(fd)


def close_descriptors(keep):
    """Close every descriptor above 2 but those in keep.

    Listing /proc/self/fd costs what is open; closerange up to
    SC_OPEN_MAX costs a syscall per possible descriptor, often 10**6.
    """
    for name in os.listdir(b"/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                os.close(fd)
            except OSError:
                pass  # the listing's own descriptor, closed already


def reset_signals():
    """Default dispositions for all signals and an empty signal mask.

    Python ignores SIGPIPE and SIGXFSZ, and an ignored signal stays ignored
    across exec, as does the mask (signal(7)): a daemon writing to a closed
    pipe would never die of it.
    """
    for number in range(1, signal.NSIG):
        try:
            signal.signal(number, signal.SIG_DFL)
        except (OSError, ValueError, RuntimeError):
            pass  # SIGKILL, SIGSTOP and the C library's own signals
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def exec_in_path(argv, env):
    """execve argv, looking argv[0] up in env's PATH as execvp(3) does."""
    if b"/" in argv[0]:
        os.execve(argv[0], argv, env)

    # Like execvp: a directory where the file is not found is skipped;
    # another error (EACCES) is kept in case no directory has it.
    failure = None
    for directory in env.get(b"PATH", to_bytes(os.defpath)).split(b":"):
        try:
            os.execve(os.path.join(directory, argv[0]), argv, env)
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as error:
            failure = failure or error
    raise failure or FileNotFoundError(errno.ENOENT, "not found")


def await_deaths(pids, seconds):
    """{pid: wait status} of the children that die within seconds."""
    deadline = time.monotonic() + seconds
    deaths = {}
    while True:
        for pid in pids:
            if pid not in deaths:
                done, wait_status = os.waitpid(pid, os.WNOHANG)
                if done:
                    deaths[pid] = wait_status

        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(deaths) == len(pids):
            return deaths
        time.sleep(min(SETTLE_POLL, remaining))


def exit_failure(wait_status):
    """The failure of a daemon that died during settle, from waitpid."""
    if os.WIFSIGNALED(wait_status):
        number = os.WTERMSIG(wait_status)
        return {"error": f"killed by signal {signal_name(number)}",
                "exit_status": None, "signal": number}
    code = os.WEXITSTATUS(wait_status)
    return {"error": f"exited with status {code}", "exit_status": code,
            "signal": None}


# --- stop ----------------------------------------------------------------

class Stopping:
    """One process group on its way down."""

    def __init__(self, answer, group, timeout):
        self.answer = answer
        self.group = group
        self.kill_at = time.monotonic() + timeout
        self.killed = False
        self.give_up_at = None


def stop(request):
    """Signal the selected groups, wait for all, SIGKILL the late ones."""
    place = StateDir(request)
    boot_id = read_boot_id()
    kill_timeout = float(request.get("kill_timeout", DEFAULT_KILL_TIMEOUT))
    targets = [instance_key(spec) + (
                   signal_number(spec.get("signal", "TERM")),
                   float(spec.get("timeout", DEFAULT_STOP_TIMEOUT)))
               for spec in request.get("instances") or []]
    # Every record is read before any group is signalled: an unreadable
    # one fails the request with nothing signalled.
    records = [place.read(program, instance)
               for program, instance, _, _ in targets]
    processes = live_processes()

    answers = []
    stopping = []
    for (program, instance, number, timeout), record in zip(targets,
                                                            records):
        answer = {"program": program, "instance": instance,
                  "result": "not running", "survivors": []}
        answers.append(answer)
        if record is None:
            answer["error"] = "no record"
            continue

        # Marked first, so a watchdog run meanwhile does not respawn it;
        # what cannot be marked is not signalled, for the same reason.
        group = group_to_signal(record, boot_id, processes)
        if not record.get("stopped"):
            record["stopped"] = True
            try:
                place.write(record)
            except OSError as error:
                answer["result"] = "failed"
                answer["error"] = (
                    ("not stopped" if group is not None
                     else "not marked stopped")
                    + ": cannot record it ("
                    + place.write_error(record, error) + ")")
                continue

        # Stopping with KILL is killing: there is no grace to wait out.
        if group is not None:
            signal_group(group, number)
            if number == signal.SIGKILL:
                timeout = 0
            stopping.append(Stopping(answer, group, timeout))

    await_groups(stopping, kill_timeout)
    return {"instances": answers}


def group_to_signal(record, boot_id, processes):
    """The recorded process group if it is still this instance's, or None.

    It is, when its leader's identity matches, or when the leader is gone
    and members remain in the session it led: the kernel does not reuse a
    pid while it still names a live group or session (kernel/pid.c). A
    reused pid never qualifies (CASES C07).
    """
    pid = record.get("pid")
    if not pid or record.get("boot_id") != boot_id:
        return None

    leader = read_stat(pid)
    if leader is not None and leader.start_ticks != record.get("start_ticks"):
        return None

    # A zombie leader may still have live members: those count.
    if any(stat.pgrp == pid and stat.session == pid
           for stat in processes.values()):
        return pid
    return None


def signal_group(group, number):
    try:
        os.killpg(group, number)
    except ProcessLookupError:
        pass  # gone meanwhile; the next scan sees it empty


def await_groups(stopping, kill_timeout):
    """Poll /proc until every group is empty, killing at each timeout."""
    while stopping:
        members = collections.defaultdict(list)
        for pid, stat in live_processes().items():
            members[stat.pgrp].append(pid)
        now = time.monotonic()

        for item in list(stopping):
            left = members.get(item.group)
            if not left:
                item.answer["result"] = "killed" if item.killed else "stopped"
                stopping.remove(item)
            elif item.give_up_at is not None and now >= item.give_up_at:
                item.answer["result"] = "survived"
                item.answer["survivors"] = sorted(left)
                stopping.remove(item)
            elif item.give_up_at is None and now >= item.kill_at:
                signal_group(item.group, signal.SIGKILL)
                item.killed = True
                item.give_up_at = now + kill_timeout

        if stopping:
            time.sleep(STOP_POLL)


# --- logs and hash -------------------------------------------------------

def logs(request):
    """The last lines of one stream of each selected instance."""
    place = StateDir(request)
    count = int(request.get("lines", 50))
    stream = request.get("stream", "stdout")
    if stream not in ("stdout", "stderr"):
        raise RequestError(f"unknown stream: {stream!r}")

    answers = []
    for spec in request.get("instances") or []:
        program, instance = instance_key(spec)
        record = place.read(program, instance) or {}
        path = record.get(stream)
        answer = {"program": program, "instance": instance, "path": path,
                  "lines": [], "error": None if record else "no record"}
        try:
            if record:
                answer["lines"] = tail_lines(path, count, LOGS_TAIL_BYTES)
        except OSError as error:
            answer["error"] = error.strerror
        answers.append(answer)
    return {"instances": answers}


def file_hashes(request):
    """Size, sha256 and permission bits of each path; None if missing."""
    # Imported here: it costs about 3 ms of every call's start otherwise,
    # and only publish asks for hashes (bench/RESULTS.md).
    import hashlib

    files = {}
    for path in request.get("paths") or []:
        digest = hashlib.sha256()
        size = 0
        try:
            with open(to_bytes(expand(path)), "rb") as file:
                mode = os.fstat(file.fileno()).st_mode & 0o7777
                for block in iter(lambda: file.read(1024 * 1024), b""):
                    digest.update(block)
                    size += len(block)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            # No file there to compare: what would be sent has no copy.
            files[path] = None
            continue
        except OSError as error:
            raise RequestError(f"{path}: {error.strerror}")
        files[path] = {"size": size, "sha256": digest.hexdigest(),
                       "mode": mode}
    return {"files": files}


# --- the request ---------------------------------------------------------

ACTIONS = {"status": status, "start": start, "stop": stop, "logs": logs,
           "hash": file_hashes}


def serve(request):
    """The answer to one request."""
    if not isinstance(request, dict):
        raise RequestError("request is not a JSON object")
    action = ACTIONS.get(request.get("action"))
    if action is None:
        raise RequestError(f"unknown action: {request.get('action')!r}")
    answer = action(request)
    answer["ok"] = True
    return answer


def one_line(error):
    """An exception as the one line the user sees."""
    if isinstance(error, RequestError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())


def main():
    """Read the request from stdin, write one JSON answer on stdout."""
    try:
        request = json.loads(sys.stdin.buffer.read().decode("utf-8"))
        answer = serve(request)
    except Exception as error:
        answer = {"ok": False, "error": one_line(error)}
    sys.stdout.buffer.write(json.dumps(answer, ensure_ascii=True)
                            .encode("ascii"))
    sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()
