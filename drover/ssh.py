"""From a configured host name to an authenticated ssh connection.

The OpenSSH client config (HostName, User, Port, IdentityFile,
ProxyJump, ProxyCommand, UserKnownHostsFile) and known_hosts are read
once and shared by every connection of a run; keys are loaded once. Every
failure becomes a TransportError whose ``outcome`` says what kind it is
(drover.outcomes), so that a report can tell refused from timed out from a
changed host key.
"""

import base64
import binascii
import hmac
import logging
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

from drover.errors import ConfigError, TransportError
from drover.outcomes import (AUTH_FAILED, CONNECT_TIMEOUT, ERROR,
                             HOSTKEY_CHANGED, HOSTKEY_UNKNOWN, REFUSED,
                             UNREACHABLE)

log = logging.getLogger(__name__)

LOCAL_HOSTS = frozenset({"localhost"})

# sshd drops connections past MaxStartups (default 10:30:100) before it
# sends its banner; the client sees EOF or a reset. Such a drop is worth a
# few retries with growing, jittered pauses (sshd(8), MaxStartups).
BANNER_RETRIES = 6
RETRY_PAUSE = 0.15


def split_port(host):
    """``"spare1:2222"`` -> ``("spare1", 2222)``; no suffix -> port None."""
    name, sep, port = host.rpartition(":")
    if sep and name and port.isdigit():
        return name, int(port)
    return host, None


def is_local(host):
    return host in LOCAL_HOSTS


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

    def open(self, host, deadline):
        """``(client, jumps)``: an authenticated paramiko client of
        ``host`` and the ProxyJump clients it goes through."""
        return self._connect_chain(self.resolve(host), deadline)

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
        name = _known_hosts_name(target)

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


def _known_hosts_name(target):
    """The name OpenSSH files a host's key under: ``[addr]:port`` off 22."""
    name = target.key_alias or target.address
    return f"[{name}]:{target.port}" if target.port != 22 else name


def _classify(error, target, timeout):
    """A paramiko or socket failure as a TransportError with its outcome."""
    import paramiko

    where = f"{target.address}:{target.port}"
    if isinstance(error, TransportError):
        return error
    files = ", ".join(dict.fromkeys(target.known_hosts))
    if isinstance(error, _UnknownHostKey):
        return TransportError(
            f"host key of {error} is not in {files} (connect once with "
            "ssh, or set ssh.accept_new_host_keys = true)", HOSTKEY_UNKNOWN)
    if isinstance(error, paramiko.BadHostKeyException):
        name = _known_hosts_name(target)
        return TransportError(
            f"host key of {name} CHANGED: it is not the one in {files} "
            "(possible attack; if the host was reinstalled, remove the old "
            f"entry: ssh-keygen -R '{name}')", HOSTKEY_CHANGED)
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
