#!/usr/bin/env bash
# Run Moldau's whole test suite on a fresh machine: makes .venv, installs the project with its test
# extras, installs kcat (apt) when it is missing, then runs pytest. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
ensure_venv test

if ! command -v kcat >/dev/null 2>&1; then
    echo "installing kcat (Debian package) for the compatibility tests" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq kcat >/dev/null
fi

exec "$VENV/bin/python" -m pytest "$@"
