# Shared by scripts/serve.sh and scripts/test.sh: create .venv with Python >= 3.11 and (re)install the
# project when pyproject.toml changed since the last install.
VENV="${MOLDAU_VENV:-.venv}"

ensure_venv() {
    local extra="${1:-}"
    local py="${PYTHON:-python3}"
    if ! "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        echo "Moldau needs Python 3.11 or newer; '$py' is $("$py" --version 2>&1). Set PYTHON=/path/to/python3.11" >&2
        exit 2
    fi
    [ -x "$VENV/bin/python" ] || "$py" -m venv "$VENV"
    local stamp="$VENV/.moldau-installed${extra:+-$extra}"
    local want
    want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null
        "$VENV/bin/python" -m pip install -q -e ".${extra:+[$extra]}"
        echo "$want" > "$stamp"
    fi
}
