"""One command on many hosts, the answers gathered and folded.

Hosts that answered alike (same exit status, same output on both
streams) form one group, as ``clush -b`` shows them::

    gathered = run_everywhere(config, ["crawl[01-40]"], ["uptime"])
    for hosts, answer in gathered.groups():
        print(fold(hosts), answer.status, answer.stdout)
    gathered.exit_status      # the highest one; 255 if a host was not run
"""

import dataclasses

from drover import hostlist, transport

# The exit status of a host where the command did not run or did not end
# with a status (killed by a signal, timed out): ssh(1) gives 255 too.
NO_STATUS = 255


@dataclasses.dataclass
class Gathered(transport.HostOutcomes):
    """Every host's outcome; the value of a reached one a CommandResult."""

    hosts: dict             # {host: HostResult}

    def groups(self):
        """``[([host, ...], CommandResult)]`` of the hosts that ran it,
        alike ones together, in the order of each group's first host."""
        found = {}
        for host, result in self.hosts.items():
            if result.ok:
                answer = result.value
                key = (answer.status, answer.stdout, answer.stderr)
                found.setdefault(key, ([], answer))[0].append(host)
        return list(found.values())

    @property
    def exit_status(self):
        statuses = [status_of(result.value) if result.ok else NO_STATUS
                    for result in self.hosts.values()]
        return max(statuses, default=0)


def status_of(answer):
    """A remote exit status as a shell would give it: 0 to 255."""
    return answer.status if 0 <= answer.status <= 255 else NO_STATUS


def hosts_named(config, patterns):
    """Group names of the configuration, or host patterns.

    Unlike the other commands, a host outside the configuration is
    fine: the ssh settings and ~/.ssh/config still say how to reach it.
    """
    names = []
    for pattern in patterns:
        if pattern in config.groups:
            names += config.groups[pattern]
        else:
            names += hostlist.expand(pattern)
    return list(dict.fromkeys(names))


# Seconds between timeout(1)'s TERM and its KILL on the host.
KILL_GRACE = 2


def with_timeout(command, seconds):
    """``command`` run under coreutils' timeout(1) on the host.

    Closing an ssh channel does not end a command started without a tty:
    it would run on after drover gave up on it. timeout(1) on the host
    ends it (TERM, then KILL) and exits 124, which the user sees as that
    host's status.
    """
    if isinstance(command, str):
        command = ["/bin/sh", "-c", command]
    return ["timeout", f"--kill-after={KILL_GRACE}", f"{seconds:g}",
            *command]


def run_everywhere(config, patterns, command, shell=False, timeout=None,
                   progress=None):
    """Run `command` on every host `patterns` name; a Gathered.

    `command` is an argv list, passed on word for word; with `shell`, its
    words are joined by spaces and the remote shell reads them, as
    ``ssh host WORDS...`` does.
    """
    if shell:
        command = " ".join(command)
    settings = config.ssh
    waited = None
    if timeout is not None:
        command = with_timeout(command, timeout)
        waited = timeout + KILL_GRACE + 2
        # The host's deadline must leave the command its whole time.
        needed = settings.connect_timeout + waited + 5
        if needed > settings.deadline:
            settings = dataclasses.replace(settings, deadline=needed)

    def work(session):
        return session.run(command, timeout=waited)

    return Gathered(transport.fan_out(hosts_named(config, patterns), work,
                                      settings, progress=progress))
