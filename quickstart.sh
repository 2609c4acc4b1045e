#!/bin/sh
# Install drover into ./.venv and run three workers on this machine.
# Works as root on a fresh Debian: it installs python3 and venv if needed.
set -eu
cd "$(dirname "$0")"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 \
        python3-venv >/dev/null
fi
[ -x .venv/bin/launcher ] || {
    python3 -m venv .venv
    .venv/bin/pip install -q --upgrade pip
}
.venv/bin/pip install -q .

.venv/bin/launcher -c examples/localhost.toml start
.venv/bin/launcher -c examples/localhost.toml status
echo
echo "Stop them with: .venv/bin/launcher -c examples/localhost.toml stop"
