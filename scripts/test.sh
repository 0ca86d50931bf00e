#!/usr/bin/env bash
# Run Moldau's whole test suite on a fresh machine: makes .venv, installs the project with its test
# extras, installs kcat (apt) and node with the kafkajs packages when missing, then runs pytest.
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv test

SUDO=""
[ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
if ! command -v kcat >/dev/null 2>&1; then
    echo "installing kcat (Debian package) for the compatibility tests" >&2
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq kcat >/dev/null
fi

# kafkajs compatibility scenarios need node and the pinned npm packages in tests/compat/node.
if [ -f tests/compat/node/package-lock.json ]; then
    if ! command -v npm >/dev/null 2>&1; then
        echo "installing node and npm (Debian packages) for the kafkajs tests" >&2
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq nodejs npm >/dev/null
    fi
    stamp=tests/compat/node/node_modules/.moldau-lock
    if [ ! -f "$stamp" ] || ! cmp -s tests/compat/node/package-lock.json "$stamp"; then
        (cd tests/compat/node && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
        cp tests/compat/node/package-lock.json "$stamp"
    fi
fi

exec "$VENV/bin/python" -m pytest "$@"
