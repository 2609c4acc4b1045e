"""The outcome of one host in a fan-out, as reports and exit codes name it.

Every host of every command ends with exactly one of these (DESIGN.md,
"One round trip per host"); ``NOT_REACHED`` are those after which nothing
is known of the host's instances.
"""

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
