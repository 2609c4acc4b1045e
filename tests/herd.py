"""A herd on a fake cluster for the publish, logs and exec tests.

It writes the drover.toml, runs the launcher in-process, remembers every
daemon pid it saw running, and at the end stops them all and checks, pid
by pid on each host, that none is left.
"""

import textwrap

from tests.helpers import launcher, wait_until, write_config


class Herd:
    """One configuration on one fake cluster, and what it started."""

    def __init__(self, cluster, directory):
        self.cluster = cluster
        self.config = directory / "drover.toml"
        self.seen = set()           # (host, pid) of every running daemon

    def configure(self, body, **ssh):
        write_config(self.config, self.cluster, textwrap.dedent(body),
                     **ssh)
        return self.config

    def launcher(self, *argv):
        return launcher("-c", self.config, *argv)

    def instances(self):
        """{(host, "program.N"): status record} of every record."""
        result = self.launcher("status", "--json")
        assert result.stdout, result.stderr
        found = {}
        for item in result.json()["instances"]:
            name = f"{item['program']}.{item['instance']}"
            found[(item["host"], name)] = item
            if item["state"] == "running":
                self.seen.add((item["host"], item["pid"]))
        return found

    def pids(self):
        """{(host, "program.N"): pid} of the running instances."""
        return {key: item["pid"] for key, item in self.instances().items()
                if item["state"] == "running"}

    def clean_up(self):
        """Stop everything; every pid ever seen must be gone."""
        if not self.config.exists():
            return
        self.instances()
        stopped = self.launcher("stop")
        assert stopped.status == 0, stopped.stdout + stopped.stderr

        def left():
            return [(host, pid) for host, pid in sorted(self.seen)
                    if self.cluster[host].run(
                        ["test", "-e", f"/proc/{pid}"]).returncode == 0]

        # A stopped daemon is re-parented to the host's sshd (its pid 1),
        # which reaps it; give that a moment.
        wait_until(lambda: not left(), timeout=5)
        remaining = left()
        assert not remaining, f"daemons left: {remaining}"
