"""What the two command-line programs share: errors, logging, progress.

Only the CLI modules import this; the library below them never prints.
"""

import argparse
import logging
import os
import sys

from drover.errors import ConfigError, DroverError, HostPatternError

log = logging.getLogger(__name__)

# Exit statuses of ``launcher`` (the watchdog has its own, see its --help).
EXIT_OK = 0           # everything asked for holds on every host
EXIT_FAILED = 1       # an instance did not reach the asked state
EXIT_USAGE = 2        # bad command line or configuration; nothing was done
EXIT_UNREACHABLE = 3  # some hosts could not be asked; the rest is fine
EXIT_INTERNAL = 70    # a bug in drover (EX_SOFTWARE of sysexits.h)
EXIT_INTERRUPTED = 130

DEBUG_ENV = "DROVER_DEBUG"


def setup_logging(prog, verbose=0, debug=False):
    """Log lines on stderr: warnings by default, more with -v/--debug."""
    level = logging.WARNING
    if verbose:
        level = logging.INFO
    if debug:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"{prog}: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    if not debug:
        # paramiko logs every failed connection at ERROR with a traceback;
        # drover reports the same failure once, as a host outcome.
        logging.getLogger("paramiko").setLevel(logging.CRITICAL)


def run_main(prog, body, argv, debug_flag="--debug", error_status=None):
    """Run ``body(argv) -> exit status``; turn errors into one line.

    A traceback is shown only with ``--debug`` (or ``DROVER_DEBUG=1``); a
    closed stdout (``| head``) ends the program quietly. ``error_status``
    maps a DroverError to the program's own exit status.
    """
    debug = debug_flag in argv or os.environ.get(DEBUG_ENV) == "1"
    try:
        return body(argv)
    except DroverError as error:
        if debug:
            raise
        print(f"{prog}: {error.category}: {error}", file=sys.stderr)
        if error_status is not None:
            return error_status(error)
        if isinstance(error, (ConfigError, HostPatternError)):
            return EXIT_USAGE
        return getattr(error, "exit_status", EXIT_FAILED)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # Point stdout at /dev/null so the interpreter's final flush does
        # not raise again (Python docs, "Note on SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except Exception as error:
        if debug:
            raise
        print(f"{prog}: internal error: {type(error).__name__}: {error} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_INTERNAL


def common_options(suppress=False, parser_class=argparse.ArgumentParser,
                   verbose_help="log what is done, per host"):
    """-c, -v and --debug, accepted before and after the subcommand.

    The subcommand's copy (``suppress``) has no defaults: argparse would
    otherwise let them overwrite a value given before the subcommand.
    """
    unset = {"default": argparse.SUPPRESS} if suppress else {}
    common = parser_class(add_help=False)
    common.add_argument("-c", "--config", metavar="FILE",
                        help="configuration file (TOML)", **unset)
    common.add_argument("-v", "--verbose", action="count",
                        help=verbose_help, **(unset or {"default": 0}))
    common.add_argument("--debug", action="store_true",
                        help="log everything; show tracebacks", **unset)
    return common


def add_selection(parser):
    """PROGRAM... and -H HOSTS: which instances a command is about."""
    parser.add_argument("programs", nargs="*", metavar="PROGRAM",
                        help="programs of the configuration (default: all)")
    parser.add_argument("-H", "--hosts", action="append", metavar="HOSTS",
                        help="only these hosts: names, ranges such as "
                             "crawl[01-05], or group names; repeatable")


def host_patterns(arguments):
    """-H values as patterns; commas outside brackets separate them."""
    from drover.hostlist import split_patterns
    values = getattr(arguments, "hosts", None) or []
    patterns = [pattern for value in values
                for pattern in split_patterns(value)]
    return patterns or None


def whole_number(text, least=0):
    """An argparse type: a whole number >= ``least``."""
    try:
        value = int(text)
    except ValueError:
        value = least - 1
    if value < least:
        raise argparse.ArgumentTypeError(
            f"expected a whole number >= {least}, got {text!r}")
    return value


def positive_number(text):
    return whole_number(text, least=1)


class Progress:
    """``12/40 hosts`` on stderr, only when stderr is a terminal."""

    def __init__(self, total, label="hosts", stream=None):
        self.total = total
        self.label = label
        self.stream = stream or sys.stderr
        self.done = 0
        self.enabled = total > 1 and self.stream.isatty()

    def __call__(self, result=None):
        self.done += 1
        if self.enabled:
            self.stream.write(f"\r{self.done}/{self.total} {self.label}")
            self.stream.flush()

    def finish(self):
        if self.enabled and self.done:
            self.stream.write("\r\033[K")
            self.stream.flush()


def fold_outcomes(host_results):
    """Lines ``host[01-03] (3): ok``, one per distinct outcome and error.

    Problems come first, the largest group of each kind first.
    """
    from drover.hostlist import fold

    groups = {}
    for host, result in host_results.items():
        label = result.outcome if result.ok or not result.error \
            else f"{result.outcome}: {result.message}"
        groups.setdefault((result.ok, label), []).append(host)

    ordered = sorted(groups.items(),
                     key=lambda item: (item[0][0], -len(item[1]),
                                       item[0][1]))
    return [f"{fold(hosts)} ({len(hosts)}): {label}"
            for (_, label), hosts in ordered]


def print_failed_hosts(prog, host_results):
    """Hosts without an ok outcome, folded, on stderr: stdout holds what
    the hosts did or said, for pipes and greps."""
    for line in fold_outcomes({host: result
                               for host, result in host_results.items()
                               if not result.ok}):
        print(f"{prog}: {line}", file=sys.stderr)
