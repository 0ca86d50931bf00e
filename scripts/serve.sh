#!/usr/bin/env bash
# Start Moldau on localhost:9092 with a durable data directory, installing it into .venv first if needed.
# Extra arguments go to `moldau serve` (see `moldau serve --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/_venv.sh
# A PostgreSQL storage URL among the arguments needs the driver (the project's postgresql extra).
case " $* " in
    *postgres://*|*postgresql://*) ensure_venv postgresql ;;
    *) ensure_venv ;;
esac
exec "$VENV/bin/moldau" serve "$@"
