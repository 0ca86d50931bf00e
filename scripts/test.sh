#!/usr/bin/env bash
# Run Moldau's whole test suite on a fresh machine: makes .venv, installs the project with its test
# extras, installs kcat and PostgreSQL (apt), node with the kafkajs packages, and a JDK with Maven to build
# the Java client scenarios when missing, then runs pytest, in parallel (pytest-xdist).
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

# The PostgreSQL storage engine's tests start throwaway servers (tests/postgres_server.py) with initdb and
# pg_ctl, from PATH or /usr/lib/postgresql/*/bin.
if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian package postgresql) for the PostgreSQL storage tests" >&2
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq postgresql >/dev/null
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

# Apache Kafka's Java client (the reference client): a JDK and Maven build tests/compat/java, fetching
# kafka-clients from Maven Central; rebuilt when its sources change.
if [ -f tests/compat/java/pom.xml ]; then
    if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
        echo "installing a JDK and Maven (Debian packages) for the Java client tests" >&2
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq default-jdk-headless maven >/dev/null
    fi
    stamp=tests/compat/java/target/.moldau-built
    want="$(cat tests/compat/java/pom.xml $(find tests/compat/java/src -type f | sort) | sha256sum | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        build_log="$(mktemp)"
        if ! (cd tests/compat/java && mvn -q -B clean package >"$build_log" 2>&1); then
            cat "$build_log" >&2
            echo "building tests/compat/java with Maven failed (output above)" >&2
            exit 1
        fi
        rm -f "$build_log"
        echo "$want" > "$stamp"
    fi
fi

# One pytest-xdist worker per CPU, at most 4 (every test uses its own topics, groups and brokers, and each
# worker starts brokers, JVMs and node processes of its own); MOLDAU_TEST_WORKERS overrides the count (0 runs
# everything in this one process).
exec "$VENV/bin/python" -m pytest -n "${MOLDAU_TEST_WORKERS:-auto}" --maxprocesses 4 "$@"
