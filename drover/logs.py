"""The last lines of instances' logs, read on their hosts.

The agent reads each log from its end, at most 1 MiB of it (its ``logs``
action), so a log of any size costs one short answer per host::

    logs = tails(config, "crawler", hosts=["crawl0[1-2]"], lines=20)
    for tail in logs.tails:
        print(tail.host, tail.name, tail.lines[-1:])
"""

from dataclasses import dataclass, field
from typing import Optional

from drover import transport

STREAMS = ("stdout", "stderr")


@dataclass
class LogTail:
    """The end of one instance's log, or why it could not be read."""

    host: str
    program: str
    number: int
    path: Optional[str] = None
    lines: list = field(default_factory=list)
    error: Optional[str] = None

    @property
    def name(self):
        return f"{self.program}.{self.number}"


@dataclass
class Logs(transport.HostOutcomes):
    """Every host's outcome and every instance's tail, in config order."""

    hosts: dict                 # {host: HostResult}
    tails: list                 # [LogTail]

    @property
    def failed(self):
        return [tail for tail in self.tails if tail.error]


def tails(config, program, hosts=None, instances=None, lines=10,
          stream="stdout", progress=None):
    """The last `lines` lines of `stream` of the program's instances.

    `instances` are numbers to read; by default every configured one.
    A number beyond the configured count is asked for all the same: an
    instance started with ``-n`` has a log too.
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}: {stream!r}")
    wanted = {}
    for instance in config.expected([program], hosts):
        if instances is None or instance.number in instances:
            wanted.setdefault(instance.host, []).append(instance.number)
    for host in config.hosts_for([program], hosts):
        for number in instances or ():
            if number not in wanted.setdefault(host, []):
                wanted[host].append(number)

    def work(session):
        answer = session.call({
            "action": "logs", "lines": lines, "stream": stream,
            "instances": [{"program": program, "instance": number}
                          for number in sorted(wanted[session.host])]})
        return answer["instances"]

    results = transport.fan_out(list(wanted), work, config.ssh,
                                progress=progress)
    found = []
    for host, result in results.items():
        if result.ok:
            found += [LogTail(host, item["program"], item["instance"],
                              item.get("path"), item.get("lines") or [],
                              item.get("error"))
                      for item in result.value]
    return Logs(results, found)
