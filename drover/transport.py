"""Sessions with hosts, and the bounded fan-out over many of them.

A session is one connection to one host: an ssh connection through
paramiko, or, for ``localhost``, plain subprocesses. Both offer the same
three calls (``call`` the agent, ``run`` a command, ``put_file``), so every
plan above this module has one code path.

Example::

    results = fan_out(["crawl01", "crawl02"],
                      lambda session: session.call({"action": "status"}),
                      config.ssh)
    for host, result in results.items():
        print(host, result.outcome, result.value if result.ok else
              result.error)
"""

import errno
import logging
import os
import posixpath
import queue
import select
import shlex
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Optional

from drover import payload
from drover.errors import AgentError, CommandTimeout, TransportError
from drover.ssh import Connector, is_local

log = logging.getLogger(__name__)

from drover.outcomes import AGENT_ERROR, ERROR, NOT_REACHED, OK, TIMED_OUT



READ_SIZE = 65536


@dataclass
class CommandResult:
    """What a command left: exit status and both output streams."""

    status: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self):
        return self.status == 0


@dataclass
class HostResult:
    """The outcome of one host in a fan-out, with its value or error."""

    host: str
    outcome: str
    value: Any = None
    error: Optional[str] = None
    elapsed: float = 0.0

    @property
    def ok(self):
        return self.outcome == OK

    @property
    def message(self):
        """The error without a leading ``host:``, so that equal errors of
        many hosts read (and fold) alike."""
        error = self.error or ""
        prefix = f"{self.host}: "
        return error[len(prefix):] if error.startswith(prefix) else error

    @property
    def reached(self):
        return self.outcome not in NOT_REACHED


def _in_home(path):
    """A local path, relative ones (and ``~/``) in the home directory."""
    return os.path.join(os.path.expanduser("~"), os.path.expanduser(path))


def _sftp_path(path):
    """``~/x`` as ``x``: SFTP has no ``~``, but its relative paths start
    in the home directory (sftp-server(8))."""
    if path == "~":
        return "."
    if path.startswith("~/"):
        return path[2:] or "."
    return path


def _remove_quietly(remove, path):
    """Remove what a failed upload left; that failure is the one to see."""
    try:
        remove(path)
    except Exception:  # gone already, or the connection itself broke
        log.debug("could not remove %s", path, exc_info=True)


class HostOutcomes:
    """For results that hold ``hosts``, ``{host: HostResult}``: which of
    them could not be asked (a mixin of the plans' result objects)."""

    @property
    def unreached(self):
        return [host for host, result in self.hosts.items()
                if not result.ok]


class Session:
    """One connection to one host; see the module docstring."""

    def __init__(self, host, settings, deadline):
        self.host = host
        self.settings = settings
        self.deadline = deadline

    def until(self, timeout=None):
        """The monotonic moment a command started now must end by."""
        if timeout is None:
            return self.deadline
        return min(self.deadline, time.monotonic() + timeout)

    def remaining(self, until=None):
        """Seconds left before ``until`` (default: the host's deadline)."""
        left = (until or self.deadline) - time.monotonic()
        if left <= 0:
            raise CommandTimeout(
                f"{self.host}: command still running after its deadline")
        return left

    def call(self, request):
        """One agent round trip: the request dict in, the answer dict out."""
        request = dict(request, host=self.host,
                       state_dir=request.get("state_dir",
                                             self.settings.state_dir))
        python = self.agent_python()
        result = self.run(payload.bootstrap_argv(python),
                          stdin=payload.request_bytes(request))
        return payload.decode_answer(result.stdout, result.stderr,
                                     result.status, python)

    def agent_python(self):
        return self.settings.python

    def run(self, command, timeout=None, stdin=b""):
        raise NotImplementedError

    def put_file(self, local_path, remote_path, mode=None):
        """Copy a local file to the host: temporary name, then rename.

        A relative `remote_path`, or one under ``~/``, is in the home
        directory of the remote user.
        """
        raise NotImplementedError

    def makedirs(self, remote_path):
        """Create a directory and its missing parents (as ``mkdir -p``)."""
        raise NotImplementedError

    def close(self):
        pass


# sshd's PATH for a session (the default of its build, see sshd(8),
# "LOGIN PROCESS"); a local session gets the same.
LOGIN_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER_LOGIN_PATH = "/usr/local/bin:/usr/bin:/bin"


def login_environment(environ=os.environ):
    """The environment of a session on this host, as sshd would make it.

    A local command (and the daemons the agent starts from it) must not
    inherit whatever the caller's shell holds: a worker started by hand
    and the same one respawned from cron would run differently. HOME is
    the caller's, so that a test or a user may move it on purpose.
    """
    import pwd
    entry = pwd.getpwuid(os.getuid())
    return {
        "HOME": environ.get("HOME") or entry.pw_dir,
        "USER": entry.pw_name,
        "LOGNAME": entry.pw_name,
        "SHELL": entry.pw_shell or "/bin/sh",
        "PATH": LOGIN_PATH if os.getuid() == 0 else USER_LOGIN_PATH,
    }


class LocalSession(Session):
    """``localhost``: the same protocol over two pipes, no ssh."""

    def __init__(self, host, settings, deadline):
        super().__init__(host, settings, deadline)
        self._children = set()

    def agent_python(self):
        # The control host's own interpreter: under cron PATH may not
        # reach the python3 the user has in mind.
        return sys.executable

    def run(self, command, timeout=None, stdin=b""):
        argv = command if isinstance(command, (list, tuple)) else [
            "/bin/sh", "-c", command]
        try:
            child = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, cwd=os.path.expanduser("~"),
                env=login_environment())
        except OSError as error:
            return CommandResult(127, b"", str(error).encode())

        self._children.add(child)
        try:
            stdout, stderr = child.communicate(
                stdin, timeout=self.remaining(self.until(timeout)))
        except subprocess.TimeoutExpired:
            child.kill()
            child.communicate()
            raise CommandTimeout(
                f"{self.host}: command still running after its deadline"
            ) from None
        finally:
            self._children.discard(child)
        return CommandResult(child.returncode, stdout, stderr)

    def put_file(self, local_path, remote_path, mode=None):
        remote_path = _in_home(remote_path)
        directory = os.path.dirname(remote_path)
        os.makedirs(directory, exist_ok=True)
        temporary = os.path.join(
            directory, f".{os.path.basename(remote_path)}.drover-tmp")

        try:
            with open(local_path, "rb") as source, \
                    open(temporary, "wb") as target:
                while True:
                    block = source.read(1 << 20)
                    if not block:
                        break
                    target.write(block)
                target.flush()
                os.fsync(target.fileno())
            if mode is not None:
                os.chmod(temporary, mode)
            os.replace(temporary, remote_path)
        except BaseException:
            _remove_quietly(os.remove, temporary)
            raise

    def makedirs(self, remote_path):
        os.makedirs(_in_home(remote_path), exist_ok=True)

    def close(self):
        for child in list(self._children):
            child.kill()


class SshSession(Session):
    """A paramiko connection; each ``run`` is one exec channel."""

    def __init__(self, host, settings, deadline, client, jumps=()):
        super().__init__(host, settings, deadline)
        self.client = client
        self.jumps = list(jumps)
        self._sftp = None

    def run(self, command, timeout=None, stdin=b""):
        if isinstance(command, (list, tuple)):
            command = shlex.join(command)
        until = self.until(timeout)
        channel = self.client.get_transport().open_session(
            timeout=self.remaining(until))
        try:
            return self._exchange(channel, command, stdin, until)
        finally:
            channel.close()

    def _exchange(self, channel, command, stdin, until):
        channel.settimeout(self.remaining(until))
        channel.exec_command(command)
        if stdin:
            channel.sendall(stdin)
        channel.shutdown_write()

        # Read both streams as they come: a command that fills one while
        # we wait on the other would block forever (CASES C03).
        stdout, stderr = [], []
        channel.setblocking(False)
        while True:
            if channel.recv_ready():
                stdout.append(channel.recv(READ_SIZE))
                continue
            if channel.recv_stderr_ready():
                stderr.append(channel.recv_stderr(READ_SIZE))
                continue
            if channel.exit_status_ready() and channel.eof_received:
                break
            left = self.remaining(until)
            select.select([channel], [], [], min(left, 1.0))

        return CommandResult(channel.recv_exit_status(), b"".join(stdout),
                             b"".join(stderr))

    def sftp(self):
        """The connection's SFTP client, opened once."""
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        self._sftp.get_channel().settimeout(self.remaining())
        return self._sftp

    def put_file(self, local_path, remote_path, mode=None):
        sftp = self.sftp()
        remote_path = _sftp_path(remote_path)
        directory, name = posixpath.split(remote_path)
        temporary = posixpath.join(directory, f".{name}.drover-tmp")

        # Upload beside the target, then rename over it: a reader never
        # sees half a file and a running executable keeps its old inode.
        step = "upload"
        try:
            sftp.put(local_path, temporary, confirm=True)
            if mode is not None:
                step = "chmod"
                sftp.chmod(temporary, mode)
            step = "rename into place"
            sftp.posix_rename(temporary, remote_path)
        except BaseException as error:
            _remove_quietly(sftp.remove, temporary)
            # SFTP v3 often answers a bare "Failure": the step tells more.
            if isinstance(error, OSError):
                reason = error.strerror or str(error)
                raise OSError(error.errno, f"{step}: {reason}",
                              remote_path) from None
            raise

    def makedirs(self, remote_path):
        sftp = self.sftp()
        path = _sftp_path(remote_path)
        try:
            if stat.S_ISDIR(sftp.stat(path).st_mode):
                return
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", path)
        except FileNotFoundError:
            pass

        # Parents first, as mkdir -p; SFTP has no such request.
        parent = posixpath.dirname(path)
        if parent not in ("", "/", path):
            self.makedirs(parent)
        try:
            sftp.mkdir(path)
        except OSError:
            # SFTP answers a bare "Failure" when it exists already:
            # created meanwhile by another run, which is fine.
            if not stat.S_ISDIR(sftp.stat(path).st_mode):
                raise

    def close(self):
        for client in [self.client] + self.jumps:
            try:
                client.close()
            except Exception:  # closing is best effort by nature
                log.debug("closing %s failed", self.host, exc_info=True)


def fan_out(hosts, work, settings, deadline=None, progress=None,
            connector=None):
    """Run ``work(session)`` on every host, ``settings.parallel`` at once.

    Returns ``{host: HostResult}`` in the order of ``hosts``. No host can
    hold the run past its own ``settings.deadline`` nor the whole run past
    ``deadline`` seconds: sessions still open then are closed under their
    threads, which are daemons so that nothing waits for them at exit.
    """
    hosts = list(dict.fromkeys(hosts))
    connector = connector or Connector(settings)
    connector.preflight(hosts)
    started = time.monotonic()
    run_deadline = started + (deadline or float("inf"))

    pending = queue.SimpleQueue()
    for host in hosts:
        pending.put(host)
    results = {}
    active = {}
    done = threading.Condition()

    def worker():
        while True:
            try:
                host = pending.get_nowait()
            except queue.Empty:
                return
            with done:
                if host in results:
                    continue
            try:
                result = _run_host(host, work, settings, connector, active,
                                   run_deadline, done)
            except BaseException as failure:
                # Not even an error result could be made (a bug, or a
                # test's assertion inside ``work``): keep the run going.
                result = HostResult(host, ERROR, error=repr(failure))
            with done:
                results.setdefault(host, result)
                done.notify_all()
            _log_result(result)
            if progress:
                progress(result)

    threads = [threading.Thread(target=worker, daemon=True,
                                name=f"drover-{number}")
               for number in range(min(settings.parallel, len(hosts)))]
    for thread in threads:
        thread.start()

    with done:
        while len(results) < len(hosts):
            now = time.monotonic()
            if now >= run_deadline:
                break
            _close_overdue(active, now)
            done.wait(min(run_deadline - now, 0.5))

        # The run's deadline passed: what is still out is timed out.
        for host in hosts:
            if host not in results:
                results[host] = HostResult(
                    host, TIMED_OUT, error="still pending when the run's "
                    f"deadline passed ({deadline or 0:g}s)",
                    elapsed=time.monotonic() - started)
                _log_result(results[host])
                session = active.pop(host, None)
                if session is not None:
                    session[0].close()

    return {host: results[host] for host in hosts}


def _open_session(connector, host, deadline):
    if is_local(host):
        return LocalSession(host, connector.settings, deadline)
    client, jumps = connector.open(host, deadline)
    return SshSession(host, connector.settings, deadline, client, jumps)


def _log_result(result):
    """``host01: ok (0.21s)``, or the outcome and error: what -v shows,
    and what the watchdog's run log keeps of every host."""
    if result.ok:
        log.info("%s: ok (%.2fs)", result.host, result.elapsed)
    else:
        log.info("%s: %s: %s (%.2fs)", result.host, result.outcome,
                 result.message, result.elapsed)


def _close_overdue(active, now):
    for host, (session, host_deadline) in list(active.items()):
        if now > host_deadline + 1.0:
            log.debug("closing %s: past its deadline", host)
            session.close()


def _run_host(host, work, settings, connector, active, run_deadline, lock):
    started = time.monotonic()
    host_deadline = min(started + settings.deadline, run_deadline)
    session = None
    try:
        session = _open_session(connector, host, host_deadline)
        with lock:
            active[host] = (session, host_deadline)
        value = work(session)
        outcome, error = OK, None
    except TransportError as failure:
        value, outcome, error = None, failure.outcome, str(failure)
    except AgentError as failure:
        value, outcome, error = None, AGENT_ERROR, str(failure)
    except Exception as failure:
        value, error = None, f"{type(failure).__name__}: {failure}"
        outcome = TIMED_OUT if time.monotonic() >= host_deadline else ERROR
        if outcome == ERROR:
            log.debug("%s failed", host, exc_info=True)
    finally:
        with lock:
            active.pop(host, None)
        if session is not None:
            session.close()

    if outcome == TIMED_OUT and not error.startswith(host):
        error = f"no result within {settings.deadline:g}s (ssh.deadline)"
    return HostResult(host, outcome, value, error,
                      time.monotonic() - started)
