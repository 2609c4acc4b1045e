"""Files to many hosts: publish what differs, or check who differs.

Every local file is hashed once on the control host. Each host is then
asked once, through the agent's ``hash`` action, for the size, sha256 and
mode of its copies, and is sent only the files that differ, over the SFTP
channel of the same connection. A file lands under a temporary name and
is renamed into place (``Session.put_file``), so a reader never sees half
of it and a running executable keeps its old inode.

With a restart, hosts go in batches: each host restarts the program once
its files are in place, and a batch where an instance fails to start
ends the rollout, leaving the later batches untouched::

    files = local_files(["rules/"], "~/crawler")
    publication = publish(config, files, restart="crawler", batch=5)
    publication.stopped              # index of the batch that failed
    publication.with_new_files       # hosts that hold every file
    publication.without_new_files    # every other host
"""

import hashlib
import logging
import os
import posixpath
import stat
from dataclasses import dataclass, field
from typing import Optional

from drover import transport
from drover.errors import DroverError
from drover.launcher import plans

log = logging.getLogger(__name__)

BLOCK_SIZE = 1 << 20

# What a host's copy of a file is, next to the local one.
SAME = "same"
DIFFERS = "differs"
MISSING = "missing"


class SourceError(DroverError):
    """A file to publish cannot be read here, or has no place there."""

    category = "files"
    exit_status = 2  # like a usage error: no host was contacted


@dataclass(frozen=True)
class LocalFile:
    """One file to publish: where it is here and where it goes there."""

    path: str       # on the control host
    name: str       # below the remote directory, as reports show it
    remote: str     # on the host: absolute, or relative to the home
    size: int
    sha256: str
    mode: int       # permission bits, kept on the host

    def compare(self, facts):
        """SAME, DIFFERS or MISSING, from the agent's facts of the copy.

        The mode counts: a file whose bits differ is sent again, which
        keeps one way of changing a file (the atomic rename).
        """
        if facts is None:
            return MISSING
        if (facts["size"], facts["sha256"], facts["mode"]) == \
                (self.size, self.sha256, self.mode):
            return SAME
        return DIFFERS


@dataclass
class Delivery:
    """What one host was sent, and how its restart went."""

    sent: list = field(default_factory=list)
    unchanged: list = field(default_factory=list)
    failed: dict = field(default_factory=dict)   # name -> error
    instances: list = field(default_factory=list)  # plans.InstanceResult

    @property
    def ok(self):
        return not self.failed

    @property
    def restart_failed(self):
        return any(item.failed for item in self.instances)


@dataclass
class Publication(transport.HostOutcomes):
    """Every host's delivery, in the batches they were sent in."""

    hosts: dict                     # {host: HostResult}, value Delivery
    batches: list                   # [[host, ...], ...]
    restart: Optional[str] = None   # the program restarted, if any
    stopped: Optional[int] = None   # the batch whose restart failed

    @property
    def deliveries(self):
        return {host: result.value for host, result in self.hosts.items()
                if result.ok}

    @property
    def failed(self):
        """Hosts where some file could not be put in place."""
        return [host for host, delivery in self.deliveries.items()
                if not delivery.ok]

    @property
    def not_tried(self):
        """Hosts of the batches after the one that stopped the rollout."""
        return [host for batch in self.batches for host in batch
                if host not in self.hosts]

    @property
    def with_new_files(self):
        return [host for host, delivery in self.deliveries.items()
                if delivery.ok]

    @property
    def without_new_files(self):
        done = set(self.with_new_files)
        return [host for batch in self.batches for host in batch
                if host not in done]

    @property
    def instances(self):
        return [item for delivery in self.deliveries.values()
                for item in delivery.instances]

    @property
    def problems(self):
        """True when a file or a restart failed, or the rollout stopped."""
        return (self.stopped is not None or bool(self.failed)
                or any(item.failed for item in self.instances))

    @property
    def ok(self):
        return not self.problems and not self.unreached


@dataclass
class Comparison(transport.HostOutcomes):
    """Each host's copy of each file, next to the local one."""

    files: list                     # [LocalFile]
    hosts: dict                     # {host: HostResult}, value facts

    def states(self, local_file):
        """``{SAME | DIFFERS | MISSING: [host, ...]}`` of one file."""
        found = {}
        for host, result in self.hosts.items():
            if result.ok:
                state = local_file.compare(result.value.get(
                    local_file.remote))
                found.setdefault(state, []).append(host)
        return found

    @property
    def differs(self):
        """True when some reached host lacks some file as it is here."""
        return any(set(self.states(local_file)) - {SAME}
                   for local_file in self.files)


def remote_directory(text):
    """The --to directory, checked: absolute, ``~/...`` or relative.

    ``~user`` is refused: SFTP cannot expand it and the agent would, so
    the files and their check would go to two different places.
    """
    text = text.strip()
    if not text:
        raise SourceError("the remote directory is empty")
    if text.startswith("~") and text != "~" and not text.startswith("~/"):
        raise SourceError(f"{text}: ~user is not supported; give the "
                          "path, or one relative to the remote home")
    _check_utf8(text)
    return posixpath.normpath(text)


def local_files(sources, remote_dir):
    """Every file of `sources` with the remote path it gets, hashed.

    A file goes to REMOTE_DIR/NAME; a directory to REMOTE_DIR/NAME/...
    with its whole tree, as ``cp -r`` puts it, except that directories
    are made only where a file goes (an empty one is left out). Links
    to files are followed; links to directories inside a tree are
    skipped, since they could loop.
    """
    remote_dir = remote_directory(remote_dir)
    files = {}
    for source in sources:
        for path, name in _walk(source):
            remote = posixpath.join(remote_dir, name)
            if remote in files:
                raise SourceError(f"{path} and {files[remote].path} would "
                                  f"both become {remote}")
            files[remote] = _hashed(path, name, remote)
    if not files:
        raise SourceError("no file to publish in " + ", ".join(sources))
    return list(files.values())


def publish(config, files, hosts=None, restart=None, batch=None,
            progress=None):
    """Send each host the files it lacks; restart `restart` after.

    `hosts` are patterns or group names of the configuration; without
    them, the program's hosts when restarting, else every host. With
    `restart`, `batch` hosts at a time (default: all at once).
    """
    targets = target_hosts(config, hosts, restart)
    settings = config.ssh
    restart_on, runs_it = None, ()
    if restart is not None:
        restart_on, settings = plans.restart_work(config, [restart], hosts)
        runs_it = config.programs[restart].hosts

    def work(session):
        delivery = deliver(session, files)

        # Half a set of files is no state to start a program in.
        if restart_on is not None and delivery.ok \
                and session.host in runs_it:
            delivery.instances = plans.instance_results(
                session.host, restart_on(session))
        return delivery

    size = batch if restart is not None and batch else len(targets)
    batches = [targets[start:start + size]
               for start in range(0, len(targets), max(size, 1))]
    publication = Publication({}, batches, restart)
    for index, members in enumerate(batches):
        results = transport.fan_out(members, work, settings,
                                    progress=progress)
        publication.hosts.update(results)

        # Files that make the program fail to start are not sent further.
        if any(result.ok and result.value.restart_failed
               for result in results.values()):
            publication.stopped = index
            log.warning("stopped the rollout at batch %d of %d (%s failed "
                        "to start)", index + 1, len(batches), restart)
            break
    return publication


def check(config, files, hosts=None, progress=None):
    """Ask every host for its copies of `files`; send nothing."""
    targets = target_hosts(config, hosts, None)
    paths = [local_file.remote for local_file in files]

    def work(session):
        return session.call({"action": "hash", "paths": paths})["files"]

    return Comparison(files, transport.fan_out(targets, work, config.ssh,
                                               progress=progress))


def deliver(session, files):
    """Send one host the files whose copy differs; a Delivery.

    A file that cannot be put in place is recorded and the others still
    go; a lost connection ends the host's delivery (its outcome says so).
    """
    facts = session.call({"action": "hash",
                          "paths": [local_file.remote
                                    for local_file in files]})["files"]
    delivery = Delivery()
    changed = []
    for local_file in files:
        if local_file.compare(facts.get(local_file.remote)) == SAME:
            delivery.unchanged.append(local_file.name)
        else:
            changed.append(local_file)

    # A directory that holds a copy exists; only the others are made.
    present = {directory for path, found in facts.items() if found
               for directory in _parents(path)}
    broken = {}
    for directory in sorted({posixpath.dirname(local_file.remote)
                             for local_file in changed}):
        if directory in present or not directory:
            continue
        try:
            session.makedirs(directory)
            present.update(_parents(directory + "/"))
        except OSError as error:
            broken[directory] = f"cannot create {directory} " \
                                f"({_reason(error)})"

    for local_file in changed:
        directory = posixpath.dirname(local_file.remote)
        if directory in broken:
            delivery.failed[local_file.name] = broken[directory]
            continue
        try:
            session.put_file(local_file.path, local_file.remote,
                             local_file.mode)
        except OSError as error:
            delivery.failed[local_file.name] = _reason(error)
            log.warning("not sent: %s to %s (%s)", local_file.name,
                        session.host, _reason(error))
            continue
        delivery.sent.append(local_file.name)
    log.info("published to %s (sent %d, unchanged %d, failed %d)",
             session.host, len(delivery.sent), len(delivery.unchanged),
             len(delivery.failed))
    return delivery


def target_hosts(config, hosts=None, restart=None):
    """The hosts -H names; else the program's, else every host."""
    if hosts:
        return list(config.select_hosts(hosts))
    if restart is not None:
        return list(config.hosts_for([restart]))
    return list(config.hosts)


def _walk(source):
    """(local path, name below the remote directory) of each file."""
    if not os.path.exists(source):
        raise SourceError(f"{source}: no such file or directory")
    if not os.path.isdir(source):
        return [(source, os.path.basename(source))]

    # "rules/" is "rules"; the contents of "." go straight in.
    top = os.path.basename(os.path.normpath(source))
    top = "" if top in (".", "..") else top
    found = []
    for directory, subdirectories, names in os.walk(source):
        subdirectories.sort()
        for subdirectory in subdirectories:
            if os.path.islink(os.path.join(directory, subdirectory)):
                log.warning("skipped %s: a link to a directory",
                            os.path.join(directory, subdirectory))
        relative = os.path.relpath(directory, source)
        for name in sorted(names):
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                log.warning("skipped %s: not a regular file", path)
                continue
            parts = [top, relative, name]
            found.append((path, posixpath.join(
                *[part for part in parts if part not in ("", ".")])))
    return found


def _hashed(path, name, remote):
    _check_utf8(remote)
    digest = hashlib.sha256()
    try:
        # Checked before opening: opening a FIFO would wait for a writer.
        if not stat.S_ISREG(os.stat(path).st_mode):
            raise SourceError(f"{path}: not a regular file")
        with open(path, "rb") as source:
            facts = os.fstat(source.fileno())
            for block in iter(lambda: source.read(BLOCK_SIZE), b""):
                digest.update(block)
    except OSError as error:
        raise SourceError(f"{path}: {_reason(error)}") from None
    return LocalFile(path, name, remote, facts.st_size, digest.hexdigest(),
                     stat.S_IMODE(facts.st_mode))


def _check_utf8(text):
    # Names travel as UTF-8 (the agent's JSON, SFTP): one that is not
    # could not name the same file over there.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise SourceError(f"{text!r}: the name is not UTF-8") from None


def _parents(path):
    """The directories above a path: ``a/b/c`` gives ``a/b`` and ``a``."""
    found = []
    directory = posixpath.dirname(path)
    while directory and directory not in found:
        found.append(directory)
        parent = posixpath.dirname(directory)
        if parent == directory:
            break
        directory = parent
    return found


def _reason(error):
    return error.strerror or str(error) or type(error).__name__
