"""How the agent travels to a host and how its answer comes back.

The agent's source goes zlib-compressed over the channel's stdin, followed
by the JSON request, so the command line stays short and nothing is ever
installed on the host (DESIGN.md, "One round trip per host").
"""

import functools
import json
import os
import zlib

from drover.errors import AgentError

AGENT_PATH = os.path.join(os.path.dirname(__file__), "agent.py")

# The stderr lines kept in an AgentError: enough to show a traceback's end.
STDERR_TAIL_LINES = 8


@functools.lru_cache(maxsize=1)
def compressed_agent():
    """The agent's source, compressed once per process."""
    with open(AGENT_PATH, "rb") as source:
        return zlib.compress(source.read(), 9)


def bootstrap_argv(python="python3"):
    """The argv that runs the agent: it reads itself, then the request.

    ``-S``: the agent needs the standard library alone, and skipping the
    ``site`` module (site-packages, .pth files) saves about a third of
    the interpreter's start on every call (bench/RESULTS.md).
    """
    size = len(compressed_agent())
    script = (
        "import sys,zlib;"
        f"exec(zlib.decompress(sys.stdin.buffer.read({size})))"
    )
    return [python, "-S", "-c", script]


def request_bytes(request):
    """The whole stdin of one agent call: compressed source, then JSON."""
    body = json.dumps(request, ensure_ascii=False).encode("utf-8")
    return compressed_agent() + body


def decode_answer(stdout, stderr, status, python="python3"):
    """The agent's answer as a dict; AgentError when there is none."""
    tail = stderr.decode("utf-8", "replace").splitlines()[-STDERR_TAIL_LINES:]

    if status == 127:
        raise AgentError(f"{python} not found on host (exit 127)",
                         status, tail)
    try:
        answer = json.loads(stdout.decode("utf-8"))
    except ValueError:
        last = tail[-1] if tail else "no output"
        raise AgentError(f"agent gave no answer (exit {status}: {last})",
                         status, tail) from None

    if not isinstance(answer, dict):
        raise AgentError("agent answer is not a JSON object", status, tail)
    if not answer.get("ok", False):
        message = answer.get("error") or "agent refused the request"
        raise AgentError(message, status, tail)
    return answer
