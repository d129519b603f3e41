#!/usr/bin/env bash
# Creates /work/main/.venv-nova (or $NOVA_VENV) with OpenStack Nova from PyPI, only for the
# equivalence tests and the scheduler benchmark: Nova is never a dependency of the collection.
# Idempotent: returns at once when the pinned version is already importable.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${NOVA_VENV:-$ROOT/.venv-nova}"
NOVA_VERSION="34.0.0"
STAMP="$VENV/.nova-$NOVA_VERSION"

if [ -f "$STAMP" ] && "$VENV/bin/python" -c "import nova.scheduler.filters" 2>/dev/null; then
    exit 0
fi
test -x "$VENV/bin/python" || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q "nova==$NOVA_VERSION"
"$VENV/bin/python" -c "import nova.scheduler.filters, nova.scheduler.weights"
touch "$STAMP"
