"""publish, logs and exec: files to hosts, logs from them, commands."""

import argparse
import sys

from drover import console
from drover.console import (EXIT_FAILED, EXIT_OK, EXIT_UNREACHABLE,
                            EXIT_USAGE)
from drover.errors import DroverError

# How many names of sent files a summary line shows before "N more".
SHOWN_NAMES = 5

EXEC_EPILOG = f"""\
exit status:
  the highest exit status of the hosts, where 255 stands for a host
  where the command did not run or did not end (unreachable, timed out,
  killed by a signal), as with ssh(1) and clush; {EXIT_USAGE} for a bad command
  line or configuration (no host contacted)
"""


class UsageError(DroverError):
    """Options that do not go together; nothing was contacted."""

    category = "usage"
    exit_status = EXIT_USAGE


def add_commands(command):
    """Register the subcommands of this module on the launcher parser."""
    from drover.launcher.cli import register

    publish = command("publish", "copy files and directories to hosts; "
                                 "only what differs travels")
    publish.add_argument("sources", nargs="+", metavar="FILE_OR_DIR",
                         help="a directory goes over with its whole tree, "
                              "as cp -r copies it")
    publish.add_argument("--to", required=True, metavar="REMOTE_DIR",
                         dest="remote_dir",
                         help="where the files go; a relative path or ~/ "
                              "is in the remote user's home")
    _hosts_option(publish, "only these hosts (default: the --restart "
                           "program's hosts, else every host)")
    publish.add_argument("--restart", metavar="PROGRAM",
                         help="restart PROGRAM on each host once its files "
                              "are in place")
    publish.add_argument("--batch", type=console.positive_number, metavar="N",
                         help="with --restart: N hosts at a time; a batch "
                              "that fails to start stops the rollout")
    publish.add_argument("--check", action="store_true",
                         help="only say which hosts have other versions "
                              "(sha256); send nothing")
    register("publish", _publish)

    logs = command("logs", "the last lines of the program's logs, read "
                           "on each host")
    logs.add_argument("program", metavar="PROGRAM")
    _hosts_option(logs, "only these hosts")
    logs.add_argument("-i", "--instance", type=console.whole_number,
                      action="append", metavar="N", dest="instances",
                      help="only instance N; repeatable")
    logs.add_argument("-n", "--lines", type=console.whole_number, default=10,
                      metavar="LINES",
                      help="lines per instance (default 10; at most the "
                           "last 1 MiB of a log is read)")
    logs.add_argument("--stderr", action="store_true",
                      help="the stderr log instead of stdout "
                           "(program.NAME.stderr)")
    register("logs", _logs)

    run = command("exec", "run a command on hosts; hosts with the same "
                          "answer are shown together, as clush -b does")
    run.epilog = EXEC_EPILOG
    _hosts_option(run, "these hosts (hosts outside the configuration "
                       "are allowed)", required=True)
    run.add_argument("--shell", action="store_true",
                     help="let the remote shell read the command "
                          "(pipes, $VARS); without it every word "
                          "arrives as it is")
    run.add_argument("--timeout", type=_seconds, metavar="S",
                     help="end the command on each host after S seconds "
                          "(timeout(1) there: TERM, KILL 2 s later; the "
                          "host's status is then 124); default: "
                          "ssh.deadline")
    # Not "command": launcher.cli keeps the subcommand's name there.
    run.add_argument("remote_command", nargs=argparse.REMAINDER,
                     metavar="-- COMMAND...",
                     help="the command and its arguments, after --")
    register("exec", _exec)


def _hosts_option(parser, help_text, required=False):
    # dest "hosts": launcher.cli reads the patterns from there.
    parser.add_argument("-H", "--hosts", action="append", metavar="HOSTS",
                        required=required,
                        help=help_text + "; names, ranges such as "
                                         "crawl[01-05], group names; "
                                         "repeatable")


def _seconds(text):
    from drover.config import parse_duration
    try:
        value = parse_duration(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(
            f'expected a duration such as 30 or "2m", got {text!r}')
    return value


# -- publish ------------------------------------------------------------------

def _publish(config, arguments, hosts):
    from drover import publish

    if arguments.check and arguments.restart:
        raise UsageError("--check sends nothing, so it restarts nothing: "
                         "give one of --check and --restart")
    if arguments.batch and not arguments.restart:
        raise UsageError("--batch paces a restart: give --restart PROGRAM")
    if arguments.restart:
        config.expected([arguments.restart], hosts)  # checks the names
    files = publish.local_files(arguments.sources, arguments.remote_dir)

    if arguments.check:
        progress = console.Progress(len(publish.target_hosts(config,
                                                             hosts)))
        comparison = publish.check(config, files, hosts, progress)
        progress.finish()
        return _print_comparison(comparison)

    progress = console.Progress(len(publish.target_hosts(
        config, hosts, arguments.restart)))
    publication = publish.publish(config, files, hosts, arguments.restart,
                                  arguments.batch, progress)
    progress.finish()
    return _print_publication(publication)


def _print_publication(publication):
    from drover.hostlist import fold_count

    groups = {}
    for host, delivery in publication.deliveries.items():
        key = (tuple(delivery.sent), len(delivery.unchanged),
               tuple(sorted(delivery.failed.items())))
        groups.setdefault(key, []).append(host)
    for (sent, unchanged, failed), hosts in groups.items():
        print(f"{fold_count(hosts)}: {_sent_summary(sent, unchanged)}"
              + (f", failed {len(failed)}" if failed else ""))
        for name, error in failed:
            print(f"    {name}: {error}")

    if publication.restart:
        _print_restarts(publication)
    console.print_failed_hosts("launcher", publication.hosts)

    if publication.stopped is not None:
        print(f"rollout stopped after batch {publication.stopped + 1} of "
              f"{len(publication.batches)}: {publication.restart} failed "
              "to start")
    if publication.without_new_files:
        _print_whereabouts(publication)

    if publication.problems:
        return EXIT_FAILED
    return EXIT_UNREACHABLE if publication.unreached else EXIT_OK


def _print_whereabouts(publication):
    """Which hosts hold the new files and which do not, and why."""
    from drover.hostlist import fold_count

    if publication.with_new_files:
        print(f"new files on {fold_count(publication.with_new_files)}")
    for hosts, why in (
            (publication.not_tried, "old files on {}: not sent, the "
                                    "rollout stopped"),
            (publication.failed, "incomplete files on {}: some could not "
                                 "be put in place"),
            (publication.unreached, "no new files on {}: not reached")):
        if hosts:
            print(why.format(fold_count(hosts)))


def _sent_summary(sent, unchanged):
    names = ", ".join(sent[:SHOWN_NAMES])
    if len(sent) > SHOWN_NAMES:
        names += f", {len(sent) - SHOWN_NAMES} more"
    text = f"sent {len(sent)}" + (f" ({names})" if sent else "")
    return f"{text}, unchanged {unchanged}"


def _print_restarts(publication):
    from drover.hostlist import fold

    program = publication.restart
    for item in publication.instances:
        if item.failed or item.result == "killed":
            print(_instance_line(item))
            for line in item.stderr_tail[-5:]:
                print(f"    | {line}")

    results = {}
    for item in publication.instances:
        results.setdefault(item.result, []).append(item.host)
    for result, hosts in sorted(results.items()):
        print(f"{program} {result}: {len(hosts)} on {fold(hosts)}")

    held_back = [host for host, delivery in publication.deliveries.items()
                 if not delivery.ok]
    if held_back:
        print(f"{program} not restarted on {fold(held_back)} "
              "(files missing there)")


def _instance_line(item):
    details = [text for text in (
        item.error,
        f"survivors: {' '.join(map(str, item.survivors))}"
        if item.survivors else None,
        "needed SIGKILL" if item.result == "killed" else None) if text]
    text = f"{item.host} {item.name}: {item.result}"
    return f"{text} ({'; '.join(details)})" if details else text


def _print_comparison(comparison):
    from drover import publish
    from drover.hostlist import fold_count

    alike = 0
    for local_file in comparison.files:
        states = comparison.states(local_file)
        if set(states) <= {publish.SAME}:
            alike += 1
            continue
        parts = [f"{state} on {fold_count(states[state])}"
                 for state in (publish.DIFFERS, publish.MISSING,
                               publish.SAME) if state in states]
        print(f"{local_file.name}: {'; '.join(parts)}")
    reached = len(comparison.hosts) - len(comparison.unreached)
    print(f"{alike} of {len(comparison.files)} files the same on all "
          f"{reached} hosts reached")
    console.print_failed_hosts("launcher", comparison.hosts)

    if comparison.differs:
        return EXIT_FAILED
    return EXIT_UNREACHABLE if comparison.unreached else EXIT_OK


# -- logs ---------------------------------------------------------------------

def _logs(config, arguments, hosts):
    from drover import logs

    config.expected([arguments.program], hosts)  # checks the names
    progress = console.Progress(len(config.hosts_for([arguments.program],
                                                     hosts)))
    found = logs.tails(config, arguments.program, hosts,
                       arguments.instances, arguments.lines,
                       "stderr" if arguments.stderr else "stdout", progress)
    progress.finish()

    for tail in found.tails:
        prefix = f"{tail.host} {tail.name}| "
        for line in tail.lines:
            print(prefix + line)
    for tail in found.failed:
        where = f" ({tail.path})" if tail.path else ""
        print(f"launcher: {tail.host} {tail.name}: {tail.error}{where}",
              file=sys.stderr)
    console.print_failed_hosts("launcher", found.hosts)

    if found.failed:
        return EXIT_FAILED
    return EXIT_UNREACHABLE if found.unreached else EXIT_OK


# -- exec ---------------------------------------------------------------------

def _exec(config, arguments, hosts):
    from drover import gather
    from drover.hostlist import fold_count

    command = list(arguments.remote_command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise UsageError("no command given: launcher exec -H HOSTS -- "
                         "COMMAND...")

    names = gather.hosts_named(config, hosts)
    progress = console.Progress(len(names))
    gathered = gather.run_everywhere(config, hosts, command,
                                     arguments.shell, arguments.timeout,
                                     progress)
    progress.finish()

    for hosts_alike, answer in gathered.groups():
        header = fold_count(hosts_alike)
        if answer.status != 0:
            header += f": exit {gather.status_of(answer)}"
        rule = "-" * min(len(header), 79)
        print(f"{rule}\n{header}\n{rule}")
        text = (answer.stdout + answer.stderr).decode("utf-8", "replace")
        if text:
            print(text, end="" if text.endswith("\n") else "\n")
    console.print_failed_hosts("launcher", gathered.hosts)
    return gathered.exit_status
