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

import base64
import binascii
import errno
import hmac
import logging
import os
import posixpath
import queue
import random
import select
import shlex
import socket
import stat
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Optional

from drover import payload
from drover.errors import (AgentError, CommandTimeout, ConfigError,
                           TransportError)

log = logging.getLogger(__name__)

# Outcomes of one host, as reports and exit codes name them.
OK = "ok"
REFUSED = "refused"                  # nothing listens on the port
CONNECT_TIMEOUT = "connect timeout"  # no TCP answer or no ssh banner
UNREACHABLE = "unreachable"          # no route, name does not resolve
AUTH_FAILED = "auth failed"
HOSTKEY_UNKNOWN = "host key unknown"
HOSTKEY_CHANGED = "host key changed"
TIMED_OUT = "timed out"              # reached, but past its deadline
AGENT_ERROR = "agent error"
ERROR = "error"

# Outcomes that say the host could not be asked at all: its instances are
# unknown, never dead.
NOT_REACHED = frozenset({REFUSED, CONNECT_TIMEOUT, UNREACHABLE, AUTH_FAILED,
                         HOSTKEY_UNKNOWN, HOSTKEY_CHANGED, TIMED_OUT})

LOCAL_HOSTS = frozenset({"localhost"})

# sshd drops connections past MaxStartups (default 10:30:100) before it
# sends its banner; the client sees EOF or a reset. Such a drop is worth a
# few retries with growing, jittered pauses (sshd(8), MaxStartups).
BANNER_RETRIES = 6
RETRY_PAUSE = 0.15

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


def split_port(host):
    """``"spare1:2222"`` -> ``("spare1", 2222)``; no suffix -> port None."""
    name, sep, port = host.rpartition(":")
    if sep and name and port.isdigit():
        return name, int(port)
    return host, None


def is_local(host):
    return host in LOCAL_HOSTS


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


class Connector:
    """Opens sessions with one set of ssh settings; shared by threads.

    It reads the OpenSSH client config and known_hosts once, caches keys,
    and turns every failure into a TransportError with its outcome.
    """

    def __init__(self, settings):
        self.settings = settings
        self._lock = threading.Lock()
        self._ssh_config = None
        self._known_hosts = {}
        self._keys = {}

    def connect(self, host, deadline):
        if is_local(host):
            return LocalSession(host, self.settings, deadline)
        target = self.resolve(host)
        client, jumps = self._connect_chain(target, deadline)
        return SshSession(host, self.settings, deadline, client, jumps)

    # -- what to connect to ------------------------------------------------

    def preflight(self, hosts):
        """Read what every connection needs, once, before any host is
        contacted: a file that cannot be read is said once, as the
        configuration error it is, not once per host."""
        if all(is_local(host) for host in hosts):
            return
        import paramiko

        files = [(self.ssh_config, self.settings.config_file, "ssh.config"),
                 (lambda: self._host_keys(str(self.settings.known_hosts)),
                  self.settings.known_hosts, "ssh.known_hosts")]
        if self.settings.identity_file:
            path = str(self.settings.identity_file)
            files.append((lambda: self._key(path), path,
                          "ssh.identity_file"))
        for read, path, key in files:
            try:
                read()
            except OSError as error:
                raise ConfigError(f"cannot read it ({error.strerror})",
                                  path, key=key) from None
            except (paramiko.SSHException, TransportError) as error:
                raise ConfigError(str(error), path, key=key) from None

    def _key(self, path):
        with self._lock:
            if path not in self._keys:
                self._keys[path] = _load_key(path)
            return self._keys[path]

    def ssh_config(self):
        with self._lock:
            if self._ssh_config is None:
                import paramiko
                path = self.settings.config_file
                if path and os.path.exists(path):
                    self._ssh_config = paramiko.SSHConfig.from_path(path)
                else:
                    self._ssh_config = paramiko.SSHConfig()
            return self._ssh_config

    def resolve(self, host):
        """The address, user, keys and jumps of a configured host name."""
        alias, port = split_port(host)
        options = self.ssh_config().lookup(alias)

        identities = []
        if self.settings.identity_file:
            identities.append(str(self.settings.identity_file))
        identities += [os.path.expanduser(path)
                       for path in options.get("identityfile", ())]

        known_hosts = [str(self.settings.known_hosts)]
        for path in options.get("userknownhostsfile", "").split():
            known_hosts.append(os.path.expanduser(path))

        return Target(
            name=host,
            address=options.get("hostname", alias),
            port=port or _port(options.get("port", 22), alias),
            user=(self.settings.user or options.get("user")
                  or _login_name()),
            identities=identities,
            known_hosts=known_hosts,
            key_alias=options.get("hostkeyalias"),
            proxy_jump=options.get("proxyjump"),
            proxy_command=options.get("proxycommand"),
        )

    # -- connecting ----------------------------------------------------------

    def _connect_chain(self, target, deadline):
        """Connect through each ProxyJump hop in turn, then to the target."""
        hops = []
        if target.proxy_jump and target.proxy_jump.lower() != "none":
            hops = [_jump_target(self, hop)
                    for hop in target.proxy_jump.split(",")]

        jumps = []
        try:
            for hop in hops + [target]:
                if jumps:
                    sock = self._open_tunnel(jumps[-1], hop, deadline)
                elif hop.proxy_command and not hops:
                    sock = _proxy_command(hop.proxy_command)
                else:
                    sock = None
                client = self._connect_one(hop, deadline, sock)
                if hop is target:
                    return client, jumps
                jumps.append(client)
        except BaseException:
            for jump in jumps:
                jump.close()
            raise

    def _open_tunnel(self, client, target, deadline):
        """A direct-tcpip channel through a jump host, used as a socket."""
        try:
            return client.get_transport().open_channel(
                "direct-tcpip", (target.address, target.port),
                ("127.0.0.1", 0),
                timeout=max(0.1, deadline - time.monotonic()))
        except Exception as error:
            raise TransportError(
                f"jump host could not reach {target.address}:{target.port}"
                f" ({error})", UNREACHABLE) from None

    def _connect_one(self, target, deadline, sock=None):
        """One ssh connection, retried while sshd drops it pre-banner."""
        for attempt in range(BANNER_RETRIES + 1):
            try:
                return self._handshake(target, deadline, sock)
            except _BannerDropped:
                if sock is not None or attempt == BANNER_RETRIES:
                    raise TransportError(
                        f"{target.address}:{target.port} closed the "
                        f"connection before the ssh banner {attempt + 1} "
                        "times (sshd MaxStartups?)", ERROR) from None
                pause = RETRY_PAUSE * (2 ** attempt) * random.uniform(1, 2)
                if time.monotonic() + pause >= deadline:
                    raise TransportError(
                        f"{target.address}:{target.port} kept dropping the "
                        "connection before the ssh banner", ERROR) from None
                log.debug("retrying %s in %.2fs (dropped before banner)",
                          target.name, pause)
                time.sleep(pause)

    def _handshake(self, target, deadline, sock):
        import paramiko

        timeout = min(self.settings.connect_timeout,
                      max(0.1, deadline - time.monotonic()))
        if sock is None:
            sock = _tcp_connect(target, timeout)

        client = paramiko.SSHClient()
        for name, key_type, key in self._known_keys(target):
            client.get_host_keys().add(name, key_type, key)
        client.set_missing_host_key_policy(_HostKeyPolicy(self, target))
        pkey, key_files = self._auth_keys(target)
        try:
            client.connect(
                target.address, port=target.port, username=target.user,
                pkey=pkey, key_filename=key_files or None, sock=sock,
                # paramiko's start_client stops waiting at `timeout` with
                # no error of its own ("No existing session" follows): the
                # banner timeout must fire first to be reported as such.
                timeout=timeout + 1.0, banner_timeout=timeout,
                auth_timeout=max(timeout, 1.0),
                channel_timeout=max(timeout, 1.0),
                allow_agent=bool(os.environ.get("SSH_AUTH_SOCK")),
                look_for_keys=not target.identities)
        except BaseException as error:
            client.close()
            raise _classify(error, target, timeout) from None
        return client

    def _known_keys(self, target):
        """known_hosts entries for this target, as OpenSSH would name it."""
        name = target.key_alias or target.address
        if target.port != 22:
            name = f"[{name}]:{target.port}"

        # The same file often comes twice: ssh.known_hosts and the ssh
        # config's UserKnownHostsFile.
        found = {}
        for path in dict.fromkeys(target.known_hosts):
            for key in self._host_keys(path).lookup(name):
                # One key per type, the first, as paramiko's lookup gives.
                found.setdefault(key.get_name(), key)
        return [(name, key_type, key) for key_type, key in found.items()]

    def _host_keys(self, path):
        with self._lock:
            if path not in self._known_hosts:
                self._known_hosts[path] = _KnownHosts(path)
            return self._known_hosts[path]

    def _auth_keys(self, target):
        """The first identity loaded once for every host; names of the rest."""
        existing = [path for path in target.identities
                    if os.path.exists(path)]
        if self.settings.identity_file and \
                not os.path.exists(self.settings.identity_file):
            raise TransportError(
                f"identity file {self.settings.identity_file} not found "
                "(ssh.identity_file)", AUTH_FAILED)
        if not existing:
            return None, []

        return self._key(existing[0]), existing[1:]

    def remember_host_key(self, target, name, key):
        """Append a newly seen key, as OpenSSH's accept-new does."""
        path = str(self.settings.known_hosts)
        line = f"{name} {key.get_name()} {key.get_base64()}\n"
        with self._lock:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700,
                        exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_APPEND
                                 | os.O_CREAT, 0o600)
            with os.fdopen(descriptor, "a") as known_hosts:
                known_hosts.write(line)
            if path in self._known_hosts:
                self._known_hosts[path].add(name, key)
        log.warning("added host key of %s to %s (ssh.accept_new_host_keys)",
                    name, path)


@dataclass
class Target:
    """Where a configured host name leads, after the ssh config."""

    name: str
    address: str
    port: int
    user: str
    identities: list = field(default_factory=list)
    known_hosts: list = field(default_factory=list)
    key_alias: Optional[str] = None
    proxy_jump: Optional[str] = None
    proxy_command: Optional[str] = None


class _KnownHosts:
    """One known_hosts file, read once and indexed for many lookups.

    paramiko's HostKeys compares each name asked for with every line,
    hashing the name again for each hashed line (``|1|SALT|HMAC``,
    sshd(8)) and comparing byte by byte in Python: about 18 us a line, so
    N hosts in a file of N lines cost N * N of those. Here plain names
    are a dict, and hashed lines keep their salt decoded: a lookup costs
    one HMAC-SHA1, in C, per hashed line. Names match exactly, as in
    paramiko (no wildcards, no negation).
    """

    def __init__(self, path):
        self.plain = {}      # name -> [PKey]
        self.hashed = []     # (salt, digest, PKey)
        if os.path.exists(path):
            self._load(path)

    def _load(self, path):
        from paramiko import SSHException
        from paramiko.hostkeys import HostKeyEntry

        with open(path) as lines:
            for number, line in enumerate(lines, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, number)
                except SSHException:
                    continue  # a damaged line: skipped, as paramiko does
                if entry is not None:
                    for name in entry.hostnames:
                        self.add(name, entry.key)

    def add(self, name, key):
        if not name.startswith("|1|"):
            self.plain.setdefault(name, []).append(key)
            return
        try:
            _, _, salt, digest = name.split("|")
            self.hashed.append((base64.b64decode(salt),
                                base64.b64decode(digest), key))
        except (ValueError, binascii.Error):
            log.debug("unreadable hashed name in known_hosts: %s", name)

    def lookup(self, name):
        """The keys recorded for ``name``, in file order, plain first."""
        encoded = name.encode()
        return self.plain.get(name, []) + [
            key for salt, digest, key in self.hashed
            if hmac.compare_digest(hmac.digest(salt, encoded, "sha1"),
                                   digest)]


class _BannerDropped(Exception):
    """sshd closed the connection before its banner."""


class _UnknownHostKey(Exception):
    """The server's key is in no known_hosts file."""


class _HostKeyPolicy:
    """Refuse unknown keys unless accept_new_host_keys; see OpenSSH's
    StrictHostKeyChecking=accept-new."""

    def __init__(self, connector, target):
        self.connector = connector
        self.target = target

    def missing_host_key(self, client, hostname, key):
        if not self.connector.settings.accept_new_host_keys:
            raise _UnknownHostKey(hostname)
        self.connector.remember_host_key(self.target, hostname, key)


def _tcp_connect(target, timeout):
    # Our own socket: to tell refused from timed out, and to set
    # TCP_NODELAY, which paramiko leaves off (two delayed-ACK stalls of
    # about 40 ms per connection were measured without it).
    try:
        sock = socket.create_connection((target.address, target.port),
                                        timeout=timeout)
    except socket.timeout:
        raise TransportError(
            f"no answer from {target.address}:{target.port} within "
            f"{timeout:.3g}s (ssh.connect_timeout)", CONNECT_TIMEOUT) from None
    except ConnectionRefusedError:
        raise TransportError(
            f"connection refused by {target.address}:{target.port}",
            REFUSED) from None
    except socket.gaierror as error:
        raise TransportError(
            f"cannot resolve {target.address} ({error.strerror})",
            UNREACHABLE) from None
    except OSError as error:
        raise TransportError(
            f"cannot reach {target.address}:{target.port} "
            f"({error.strerror or error})", UNREACHABLE) from None
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _classify(error, target, timeout):
    """A paramiko or socket failure as a TransportError with its outcome."""
    import paramiko

    where = f"{target.address}:{target.port}"
    if isinstance(error, TransportError):
        return error
    if isinstance(error, _UnknownHostKey):
        return TransportError(
            f"host key of {error} is not in "
            f"{', '.join(target.known_hosts)} (connect once with ssh, or set "
            "ssh.accept_new_host_keys = true)", HOSTKEY_UNKNOWN)
    if isinstance(error, paramiko.BadHostKeyException):
        return TransportError(
            f"host key of {where} CHANGED: it is not the one in known_hosts "
            "(possible attack; remove the old entry if the host was "
            "reinstalled)", HOSTKEY_CHANGED)
    if isinstance(error, paramiko.AuthenticationException):
        keys = ", ".join(target.identities) or "agent and default keys"
        return TransportError(
            f"authentication failed for {target.user}@{where} "
            f"(tried {keys})", AUTH_FAILED)
    if isinstance(error, paramiko.SSHException) and \
            "protocol banner" in str(error):
        cause = error.__context__
        if isinstance(cause, (EOFError, ConnectionResetError)):
            return _BannerDropped()
        return TransportError(
            f"no ssh banner from {where} within {timeout:.3g}s "
            "(ssh.connect_timeout)", CONNECT_TIMEOUT)
    if isinstance(error, (socket.timeout, TimeoutError)):
        return TransportError(f"{where} stopped answering during the ssh "
                              "handshake", CONNECT_TIMEOUT)
    if isinstance(error, (EOFError, ConnectionResetError)):
        return _BannerDropped()
    if isinstance(error, paramiko.PasswordRequiredException):
        return TransportError(f"identity file for {where} is encrypted; "
                              "load it into ssh-agent", AUTH_FAILED)
    return TransportError(f"ssh to {where} failed: {error}", ERROR)


def _load_key(path):
    import paramiko
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise TransportError(f"identity file {path} is encrypted; load it "
                             "into ssh-agent", AUTH_FAILED) from None
    except (OSError, paramiko.SSHException, ValueError) as error:
        raise TransportError(f"cannot read identity file {path} ({error})",
                             AUTH_FAILED) from None


def _jump_target(connector, hop):
    """A ProxyJump hop (``[user@]host[:port]``) resolved like any host."""
    user, _, host = hop.rpartition("@")
    target = connector.resolve(host)
    target.proxy_jump = None
    if user:
        target.user = user
    return target


def _port(value, alias):
    try:
        return int(value)
    except ValueError:
        raise TransportError(f"the ssh config gives {alias} the port "
                             f"{value!r}, not a number", ERROR) from None


def _proxy_command(command):
    import paramiko
    try:
        return paramiko.ProxyCommand(command)
    except OSError as error:
        raise TransportError(f"ProxyCommand {command!r} cannot run "
                             f"({error.strerror})", ERROR) from None


def _login_name():
    import getpass
    return getpass.getuser()


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
        session = connector.connect(host, host_deadline)
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
