"""A fake cluster for drover's integration tests: real sshd, fake machines.

Each fake host is one real OpenSSH server on 127.0.0.1, started inside its
own PID and mount namespace (``unshare``).  Inside, ``/root`` is the host's
own home directory and ``/proc/sys/kernel/random/boot_id`` reads the host's
own boot id, so a "reboot" (killing the namespace and starting it again with
a new boot id) looks to drover exactly like a real one: every process is
gone and every recorded pid is meaningless.

The client side is what a user would have: one key, one OpenSSH client
configuration with an alias per host, and a ``known_hosts`` whose lines were
written by ``ssh`` itself (hashed, ``[127.0.0.1]:PORT``).

    with FakeCluster(size=3) as cluster:
        cluster.ssh("host01", "cat /proc/sys/kernel/random/boot_id")
        host = cluster["host02"]
        host.run("cat /proc/1/comm").stdout      # 'sshd\\n'
        host.reboot()                            # new boot id, nothing left
        text = cluster.toml_ssh_section(connect_timeout=3)

Nothing here depends on pytest; the benchmark uses the same class.  It needs
root, ``unshare``/``nsenter`` (util-linux) and ``openssh-server``.
"""

import base64
import concurrent.futures
import hashlib
import hmac
import logging
import os
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
import weakref
from pathlib import Path

log = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
# sshd refuses to start without its privilege separation directory.
PRIVSEP_DIR = Path("/run/sshd")
BOOT_ID = "/proc/sys/kernel/random/boot_id"
LOOPBACK = "127.0.0.1"

# Inside the namespace: give the host its own boot id and home, then become
# sshd, so that sshd is the namespace's pid 1 and its death ends them all.
# unshare's default propagation is already private; it is spelled out on
# the command line because a shared mount here would leak into the real /.
NAMESPACE_SCRIPT = (
    'mount --bind "$1" ' + BOOT_ID + ' && '
    'mount --bind "$2" /root && '
    'exec "$3" -D -e -E "$4" -f "$5"'
)

SSHD_CONFIG = """\
# Written by tests/cluster.py: Debian's stock settings where drover cares.
ListenAddress {address}
Port {port}
HostKey {host_key}
PidFile {pid_file}
LogLevel INFO
PermitRootLogin prohibit-password
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
# No PAM stack inside a bare namespace (no systemd-logind, no loginuid).
UsePAM no
PrintMotd no
MaxStartups 10:30:100
AcceptEnv LANG LC_*
Subsystem sftp internal-sftp
"""

HOST_ALIAS = """\
Host {name}
    HostName {address}
    Port {port}
    User root
    IdentityFile {identity_file}
    IdentitiesOnly yes
    UserKnownHostsFile {known_hosts}
"""

# BatchMode keeps the ssh client of a test from ever waiting for a prompt.
ALL_HOSTS = """\
Host *
    BatchMode yes
    GlobalKnownHostsFile /dev/null
"""

HOST_ENVIRONMENT = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "SHELL": "/bin/sh",
    "LANG": "C.UTF-8",
}

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0
SSH_TIMEOUT = 20.0
# Bind conflicts with other programs picking ports at the same moment.
PORT_ATTEMPTS = 5


class ClusterError(Exception):
    """A fake host could not be started, reached or stopped."""


def unavailable_reason():
    """Why no fake cluster can run here, or None when one can."""
    if os.geteuid() != 0:
        return "needs root (for unshare, mount and sshd)"
    for program in (SSHD, "unshare", "nsenter", "ssh", "ssh-keygen"):
        if shutil.which(program) is None:
            return "%s not found (install openssh-server, openssh-client" \
                   " and util-linux)" % program
    probe = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--mount-proc",
         "--propagation", "private", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=10)
    if probe.returncode != 0:
        return "unshare of a PID and mount namespace failed: %s" % (
            probe.stderr.strip() or "status %d" % probe.returncode)
    return None


class FakeHost:
    """One sshd in its own PID and mount namespace, with its own boot id."""

    def __init__(self, cluster, name, directory, port):
        self.cluster = cluster
        self.name = name
        self.port = port
        self.dir = directory
        self.home = directory / "home"
        self.boot_id_file = directory / "boot_id"
        self.host_key = directory / "ssh_host_ed25519_key"
        self.sshd_config = directory / "sshd_config"
        self.pid_file = directory / "sshd.pid"
        self.log_file = directory / "sshd.log"
        self.console_file = directory / "console.log"
        # What `ssh -o StrictHostKeyChecking=accept-new` wrote for this host.
        self.known_hosts_part = directory / "known_hosts"
        self.init_pid = None
        self._init_start = None
        self._process = None

    def __repr__(self):
        state = "up" if self.is_up else "down"
        return "<FakeHost %s port %d %s>" % (self.name, self.port, state)

    @property
    def boot_id(self):
        """The boot id the host reports now."""
        return self.boot_id_file.read_text().strip()

    @property
    def host_public_key(self):
        """The host key as `TYPE BASE64`, without the comment."""
        fields = Path(str(self.host_key) + ".pub").read_text().split()
        return " ".join(fields[:2])

    @property
    def is_up(self):
        return (self._process is not None and self._process.poll() is None
                and self.init_pid is not None)

    def start(self, timeout=START_TIMEOUT):
        """Boot the host with a new boot id and wait until sshd answers."""
        self._launch()
        # The port stays: the client config and known_hosts name it.
        _await_hosts([self], time.monotonic() + timeout, rebind=False)

    def stop(self, timeout=STOP_TIMEOUT):
        """Power the host off: SIGKILL its pid 1; all its processes die."""
        self._send_kill()
        self._await_gone(time.monotonic() + timeout)

    def reboot(self, timeout=START_TIMEOUT):
        """Power off, then boot with a new boot id; home survives."""
        self.stop()
        self.start(timeout)

    def run(self, command, timeout=30, input=None, env=None, check=False):
        """Run a command inside this host's namespaces, as its root.

        `command` is an argv list or a shell string.  Pids seen by the
        command (in /proc, from $$) are the host's own, the ones drover's
        agent records.  Returns a text-mode CompletedProcess.
        """
        if not self.is_up:
            raise ClusterError("%s is not running" % self.name)
        if isinstance(command, str):
            command = ["/bin/sh", "-c", command]
        environment = dict(HOST_ENVIRONMENT, **(env or {}))
        argv = ["nsenter", "--target", str(self.init_pid), "--mount",
                "--pid", "--wd=/root", "--"] + list(command)
        return subprocess.run(
            argv, input=input, capture_output=True, text=True,
            env=environment, timeout=timeout, check=check,
            stdin=None if input is not None else subprocess.DEVNULL)

    def outside_pid(self, pid):
        """The pid, as seen from outside, of this host's process `pid`."""
        for outside, inside in self._members():
            if inside == pid:
                return outside
        return None

    def outside_pids(self):
        """Pids, as seen from outside, of every process on this host."""
        return [outside for outside, _ in self._members()]

    def _members(self):
        """(outside pid, host pid) of each process in the PID namespace."""
        if not self.is_up:
            return
        namespace = os.readlink("/proc/%d/ns/pid" % self.init_pid)
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry.path + "/ns/pid") != namespace:
                    continue
                status = Path(entry.path, "status").read_text()
            except OSError:
                continue  # exited while we looked
            for line in status.splitlines():
                # The last NSpid field is the pid in the innermost namespace.
                if line.startswith("NSpid:"):
                    yield int(entry.name), int(line.split()[-1])
                    break

    def _launch(self):
        """Write a new boot id and start the namespace; do not wait."""
        if self._process is not None and self._process.poll() is None:
            raise ClusterError("%s is already running" % self.name)
        self.boot_id_file.write_text("%s\n" % uuid.uuid4())
        _write_file(self.sshd_config, SSHD_CONFIG.format(
            address=LOOPBACK, port=self.port, host_key=self.host_key,
            pid_file=self.pid_file), 0o600)
        # sshd does not remove its pid file when killed; a stale one would
        # make the new boot look ready before it listens.
        _remove(self.pid_file)

        argv = ["unshare", "--mount", "--pid", "--fork", "--mount-proc",
                "--propagation", "private", "--kill-child",
                "/bin/sh", "-c", NAMESPACE_SCRIPT, "sh",
                str(self.boot_id_file), str(self.home), SSHD,
                str(self.log_file), str(self.sshd_config)]
        with open(self.console_file, "ab") as console:
            self._process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=console,
                stderr=console, close_fds=True)
        self.init_pid = None
        self._init_start = None
        self.cluster._processes.append(self._process)
        log.debug("booting %s (port %d, unshare pid %d)",
                  self.name, self.port, self._process.pid)

    def _poll_ready(self):
        """True once sshd listens; raises if the namespace died."""
        status = self._process.poll()
        if status is not None:
            raise ClusterError("%s: sshd exited with status %d: %s" % (
                self.name, status, self._log_tail()))
        if self.init_pid is None:
            self.init_pid = _child_of(self._process.pid)
            if self.init_pid is None:
                return False
            self._init_start = _start_ticks(self.init_pid)
        # sshd writes its pid file only once its listeners are bound.
        if not self.pid_file.exists():
            return False
        return _reads_banner(self.port)

    def _send_kill(self):
        """SIGKILL the namespace's pid 1, by pid, if it is still ours."""
        if self._process is None or self._process.poll() is not None:
            return
        # While unshare lives unreaped, its child's pid cannot be reused.
        pid = self.init_pid or _child_of(self._process.pid)
        if pid is not None:
            _kill(pid)
        else:
            # unshare has not forked yet; killing it prevents the fork.
            _kill(self._process.pid)

    def _await_gone(self, deadline):
        if self._process is None:
            return
        try:
            self._process.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise ClusterError("%s: namespace still alive after SIGKILL"
                               " (unshare pid %d)"
                               % (self.name, self._process.pid)) from None
        if (self.init_pid is not None
                and _start_ticks(self.init_pid) == self._init_start):
            raise ClusterError("%s: pid %d survived SIGKILL"
                               % (self.name, self.init_pid))
        log.debug("stopped %s", self.name)
        self.init_pid = None
        self._init_start = None

    def _log_tail(self, lines=5):
        text = ""
        for path in (self.console_file, self.log_file):
            if path.exists():
                text += path.read_text(errors="replace")
        tail = text.strip().splitlines()[-lines:]
        return " | ".join(tail) or "(no output)"

    def _bind_failed(self):
        return self.log_file.exists() and \
            "Address already in use" in self.log_file.read_text()


class Endpoint:
    """A host alias that reaches something that is not an sshd."""

    def __init__(self, name, port, sock):
        self.name = name
        self.port = port
        self._socket = sock

    def close(self):
        self._socket.close()


class SilentHost(Endpoint):
    """Accepts TCP connections and never says a word: no ssh banner."""

    def __init__(self, name):
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        sock.listen(128)
        sock.settimeout(0.2)
        super().__init__(name, sock.getsockname()[1], sock)
        self._connections = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._accept_forever, name="silent-" + name, daemon=True)
        self._thread.start()

    def _accept_forever(self):
        # Holding the accepted sockets keeps every client waiting.
        while not self._stopping.is_set():
            try:
                connection, _ = self._socket.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._connections.append(connection)

    def close(self):
        self._stopping.set()
        self._thread.join(5)
        for connection in self._connections:
            connection.close()
        super().close()


class ClosedPort(Endpoint):
    """A port with nothing listening: connections are refused at once.

    The socket stays bound but never listens, so no other program can take
    the port while the cluster lives, and Linux answers a SYN with RST.
    """

    def __init__(self, name):
        sock = socket.socket()
        sock.bind((LOOPBACK, 0))
        super().__init__(name, sock.getsockname()[1], sock)


class FakeCluster:
    """Fake hosts `PREFIX01`, `PREFIX02`, ... and the client files for them.

    `base_dir` holds the cluster's temporary directory (the system default
    when None); `close()` removes it.  `start()` brings every host up.
    """

    def __init__(self, base_dir=None, size=3, prefix="host"):
        self.base_dir = base_dir
        self.size = size
        self.prefix = prefix
        self.dir = None
        self.hosts = []
        self.aliases = {}        # alias name -> FakeHost it reaches
        self.endpoints = []      # SilentHost and ClosedPort
        self._processes = []     # every unshare we started, for close()
        self.startup_seconds = None
        self._finalizer = None

    def __enter__(self):
        if self.dir is None:
            self.start()
        return self

    def __exit__(self, *exc_info):
        self.close()

    def __getitem__(self, name):
        for host in self.hosts:
            if host.name == name:
                return host
        if name in self.aliases:
            return self.aliases[name]
        raise KeyError(name)

    @property
    def names(self):
        """The fake hosts' names, in order (aliases and endpoints apart)."""
        return [host.name for host in self.hosts]

    @property
    def ssh_config(self):
        return self.dir / "client" / "ssh_config"

    @property
    def known_hosts(self):
        return self.dir / "client" / "known_hosts"

    @property
    def identity_file(self):
        return self.dir / "client" / "id_ed25519"

    def start(self):
        """Create keys and configs, boot every host, learn their keys.

        On failure everything started so far is closed again.
        """
        began = time.monotonic()
        self._make_directories()
        self._finalizer = weakref.finalize(
            self, _kill_all, self._processes, str(self.dir))
        try:
            self._generate_keys()
            # Boot all namespaces at once, then wait for them together.
            for host in self.hosts:
                host._launch()
            _await_hosts(self.hosts, time.monotonic() + START_TIMEOUT)
            self._write_ssh_config()
            self._learn_host_keys()
        except BaseException:
            self.close()
            raise
        self.startup_seconds = time.monotonic() - began
        log.info("started %d fake hosts in %.2fs",
                 len(self.hosts), self.startup_seconds)
        return self

    def close(self):
        """Kill every namespace by pid, verify, close listeners, clean up."""
        survivors = []
        for host in self.hosts:
            host._send_kill()
        deadline = time.monotonic() + STOP_TIMEOUT
        for host in self.hosts:
            try:
                host._await_gone(deadline)
            except ClusterError as error:
                survivors.append(str(error))
        for endpoint in self.endpoints:
            endpoint.close()
        self.endpoints = []
        if self._finalizer is not None:
            self._finalizer.detach()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
        if survivors:
            raise ClusterError("; ".join(survivors))

    def ssh(self, name, command, *options, timeout=SSH_TIMEOUT, input=None,
            env=None):
        """Run `command` on host alias `name` with the real ssh client.

        `command` is a shell string or an argv list (quoted for the remote
        shell); `options` go before the host name, e.g. "-o", "X=y"; `env`
        adds to the client's environment (for SendEnv).
        """
        if not isinstance(command, str):
            command = shlex.join(command)
        argv = ["ssh", "-F", str(self.ssh_config)] + list(options) + \
               [name, command]
        return subprocess.run(
            argv, input=input, capture_output=True, text=True,
            timeout=timeout, env=dict(_client_environment(), **(env or {})),
            stdin=None if input is not None else subprocess.DEVNULL)

    def alias_hosts(self, count, target, prefix="many"):
        """Add `count` aliases (many01, ...) that reach the same sshd.

        They share HostName and Port with the target, so the target's
        known_hosts line already vouches for them.
        """
        if not isinstance(target, FakeHost):
            target = self[target]
        names = _numbered(prefix, count)
        for name in names:
            self._claim(name)
            self.aliases[name] = target
        self._write_ssh_config()
        return names

    def add_silent_host(self, name=None):
        """Add an alias to a listener that never sends the ssh banner."""
        return self._add_endpoint(SilentHost, name, "silent")

    def closed_port_host(self, name=None):
        """Add an alias to a port where nothing listens."""
        return self._add_endpoint(ClosedPort, name, "closed")

    def port_of(self, name):
        for endpoint in self.endpoints:
            if endpoint.name == name:
                return endpoint.port
        return self[name].port

    def toml_ssh_section(self, **overrides):
        """The `[ssh]` table of a drover.toml that reaches this cluster.

        Keyword arguments replace or add keys; a value of None drops one.
        """
        settings = {
            "config": str(self.ssh_config),
            "known_hosts": str(self.known_hosts),
            "identity_file": str(self.identity_file),
            "user": "root",
            "connect_timeout": 5,
            "parallel": 64,
        }
        settings.update(overrides)
        lines = ["[ssh]"]
        for key, value in settings.items():
            if value is not None:
                lines.append("%s = %s" % (key, _toml_value(value)))
        return "\n".join(lines) + "\n"

    def _make_directories(self):
        if self.dir is not None:
            raise ClusterError("cluster already started")
        if self.base_dir is not None:
            os.makedirs(self.base_dir, exist_ok=True)
        self.dir = Path(tempfile.mkdtemp(prefix="drover-cluster-",
                                         dir=self.base_dir))
        # Paths go unquoted into ssh and sshd configs.
        if any(character.isspace() for character in str(self.dir)):
            raise ClusterError("cluster directory must not contain"
                               " whitespace: %s" % self.dir)
        (self.dir / "client").mkdir(mode=0o700)
        PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)

        ports = _free_ports(self.size)
        for name, port in zip(_numbered(self.prefix, self.size), ports):
            directory = self.dir / "hosts" / name
            (directory / "home" / ".ssh").mkdir(parents=True)
            # sshd's StrictModes checks these.
            os.chmod(directory / "home", 0o700)
            os.chmod(directory / "home" / ".ssh", 0o700)
            self.hosts.append(FakeHost(self, name, directory, port))

    def _generate_keys(self):
        """One client key and one host key per host, generated in parallel."""
        keys = [self.identity_file] + [host.host_key for host in self.hosts]
        _run_parallel([
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C",
             "drover-fake-cluster", "-f", str(key)] for key in keys])
        public_key = Path(str(self.identity_file) + ".pub").read_text()
        for host in self.hosts:
            _write_file(host.home / ".ssh" / "authorized_keys",
                        public_key, 0o600)

    def _learn_host_keys(self):
        """Let OpenSSH write known_hosts: one accept-new login per host.

        Each login writes its own file (no two ssh processes append to the
        same one); the cluster's known_hosts is their lines in host order.
        The login also proves the host takes our key.
        """
        commands = [
            ["ssh", "-F", str(self.ssh_config),
             "-o", "StrictHostKeyChecking=accept-new",
             "-o", "HashKnownHosts=yes", "-o", "BatchMode=yes",
             "-o", "UserKnownHostsFile=%s" % host.known_hosts_part,
             host.name, "true"]
            for host in self.hosts]
        _run_parallel(commands, limit=16)

        lines = []
        for host in self.hosts:
            line = host.known_hosts_part.read_text().strip()
            hostport = "[%s]:%d" % (LOOPBACK, host.port)
            if _known_host_key(line, hostport) != host.host_public_key:
                raise ClusterError(
                    "%s: port %d answered with another host key"
                    % (host.name, host.port))
            lines.append(line + "\n")
        _write_file(self.known_hosts, "".join(lines), 0o600)

    def _write_ssh_config(self):
        entries = [(host.name, host.port) for host in self.hosts]
        entries += [(name, host.port) for name, host in self.aliases.items()]
        entries += [(point.name, point.port) for point in self.endpoints]
        text = "# Written by tests/cluster.py.\n\n"
        for name, port in entries:
            text += HOST_ALIAS.format(
                name=name, address=LOOPBACK, port=port,
                identity_file=self.identity_file,
                known_hosts=self.known_hosts) + "\n"
        _write_file(self.ssh_config, text + ALL_HOSTS, 0o600)

    def _add_endpoint(self, kind, name, prefix):
        if name is None:
            taken = sum(1 for point in self.endpoints
                        if isinstance(point, kind))
            name = "%s%02d" % (prefix, taken + 1)
        self._claim(name)
        endpoint = kind(name)
        self.endpoints.append(endpoint)
        self._write_ssh_config()
        return endpoint

    def _claim(self, name):
        taken = set(self.names) | set(self.aliases) | \
            {point.name for point in self.endpoints}
        if name in taken:
            raise ClusterError("host name already in the cluster: %s" % name)


def _await_hosts(hosts, deadline, rebind=True):
    """Poll booting hosts together until all answer.

    With `rebind`, a host whose port was taken meanwhile gets another one.
    """
    attempts = dict.fromkeys(hosts, 1)
    pending = list(hosts)
    while pending:
        for host in list(pending):
            try:
                ready = host._poll_ready()
            except ClusterError:
                # Someone took the port between our probe and sshd's bind.
                if not (rebind and host._bind_failed()) or \
                        attempts[host] >= PORT_ATTEMPTS:
                    raise
                attempts[host] += 1
                host.port = _free_ports(1)[0]
                _remove(host.log_file)
                host._launch()
                continue
            if ready:
                pending.remove(host)
        if pending and time.monotonic() > deadline:
            raise ClusterError("not up in time: " + ", ".join(
                "%s (%s)" % (host.name, host._log_tail(2))
                for host in pending))
        if pending:
            time.sleep(0.01)


def _run_parallel(commands, limit=32, timeout=SSH_TIMEOUT):
    """Run commands, at most `limit` at a time; raise on the first failure."""
    def run(argv):
        return subprocess.run(
            argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=timeout, env=_client_environment())

    workers = max(1, min(limit, len(commands)))
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(run, commands))
    for result in results:
        if result.returncode != 0:
            raise ClusterError("%s failed with status %d: %s" % (
                shlex.join(result.args), result.returncode,
                result.stderr.strip()))


def _client_environment():
    # Keep the caller's ssh-agent out: only the cluster's key may log in.
    environment = dict(os.environ)
    environment.pop("SSH_AUTH_SOCK", None)
    return environment


def _free_ports(count):
    """Ports free on loopback right now, all different."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((LOOPBACK, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _reads_banner(port):
    """True if an ssh server on `port` sends its identification string."""
    try:
        with socket.create_connection((LOOPBACK, port), timeout=2) as sock:
            return sock.recv(4).startswith(b"SSH-")
    except OSError:
        return False


def _known_host_key(line, hostport):
    """The `TYPE BASE64` key of a hashed known_hosts line for `hostport`.

    Hashed names are `|1|SALT|HMAC-SHA1(SALT, NAME)` (sshd(8), "SSH_KNOWN_
    HOSTS FILE FORMAT"); None if the line names another host.
    """
    fields = line.split()
    if len(fields) < 3 or not fields[0].startswith("|1|"):
        return None
    _, _, salt, digest = fields[0].split("|")
    expected = hmac.new(base64.b64decode(salt), hostport.encode(),
                        hashlib.sha1).digest()
    if not hmac.compare_digest(expected, base64.b64decode(digest)):
        return None
    return " ".join(fields[1:3])


def _child_of(parent):
    """The pid of a child of `parent` (unshare has exactly one), or None."""
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        # Field 4 is the ppid; the command name in field 2 may hold spaces.
        if int(stat.rsplit(")", 1)[1].split()[1]) == parent:
            return int(entry.name)
    return None


def _start_ticks(pid):
    """Field 22 of /proc/PID/stat, or None if there is no such process."""
    try:
        stat = Path("/proc/%d/stat" % pid).read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])


def _kill(pid):
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _kill_all(processes, directory):
    """Last resort at garbage collection or exit: the cluster was not closed.

    SIGKILL to unshare reaches the namespace through --kill-child.
    """
    for process in processes:
        if process.poll() is None:
            _kill(process.pid)
            process.wait(STOP_TIMEOUT)
    shutil.rmtree(directory, ignore_errors=True)


def _numbered(prefix, count):
    width = max(2, len(str(count)))
    return ["%s%0*d" % (prefix, width, number)
            for number in range(1, count + 1)]


def _write_file(path, text, mode):
    """Write atomically (temporary name, then rename) with `mode`."""
    temporary = Path(str(path) + ".tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                         mode)
    with open(descriptor, "w") as stream:
        stream.write(text)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _remove(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _toml_value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[%s]" % ", ".join(_toml_value(item) for item in value)
    raise TypeError("no TOML form for %r" % (value,))


def _toml_string(text):
    """A TOML basic string: backslash, quote and controls escaped."""
    escaped = []
    for character in text:
        if character in '"\\':
            escaped.append("\\" + character)
        elif ord(character) < 0x20 or ord(character) == 0x7F:
            escaped.append("\\u%04x" % ord(character))
        else:
            escaped.append(character)
    return '"%s"' % "".join(escaped)
