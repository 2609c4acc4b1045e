#!/bin/sh
# Run drover's whole test suite. As root on a fresh Debian it installs what
# the real-part tests need: sshd (fake hosts), cron, and a venv with the
# test dependencies. Extra arguments go to pytest.
set -eu
cd "$(dirname "$0")/.."

need=""
[ -x /usr/sbin/sshd ] || need="$need openssh-server"
command -v ssh >/dev/null || need="$need openssh-client"
command -v cron >/dev/null || need="$need cron"
command -v unshare >/dev/null || need="$need util-linux"
command -v pgrep >/dev/null || need="$need procps"
python3 -c 'import venv, ensurepip' 2>/dev/null || need="$need python3-venv"
if [ -n "$need" ] && [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need >/dev/null
fi

[ -x .venv/bin/python ] || {
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
}
.venv/bin/pip install -q -e '.[test]'

exec .venv/bin/python -m pytest -ra "$@"
