#!/usr/bin/env bash
# ansible-test wants the collection at .../ansible_collections/nimbus/compute: copy the tracked
# files (and new untracked ones) there and run sanity from that copy; the checkout never moves.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# Outside the checkout: inside it, ansible-test would ask our git for the file list and skip all.
DEST="${NIMBUS_SANITY_DIR:-/tmp/nimbus-sanity}/ansible_collections/nimbus/compute"
rm -rf "$DEST"; mkdir -p "$DEST"
SANITY_VENV="$ROOT/.venv-sanity"
if [ ! -x "$SANITY_VENV/bin/ansible-test" ]; then
  python3 -m venv "$SANITY_VENV"
  "$SANITY_VENV/bin/pip" install -q "$(grep -E '^ansible-core==' "$ROOT/requirements-dev.txt")"
fi
# ansible-test bootstraps pip in each test venv with a get-pip script from a host this machine
# cannot reach. Stand in for it: ensurepip, then pip installs the version ansible-test asks for from
# PyPI (the flags --no-setuptools / --no-wheel belong to get-pip itself, not to pip).
PIP_VERSION=$(grep -ohE "pip='[0-9.]+'" "$SANITY_VENV"/lib/python3*/site-packages/ansible_test/_internal/python_requirements.py | head -1 | tr -dc '0-9.')
PIP_VERSION=${PIP_VERSION:-24.2}
GET_PIP="$HOME/.ansible/test/cache/get_pip_${PIP_VERSION//./_}.py"
if [ ! -f "$GET_PIP" ]; then
  mkdir -p "$(dirname "$GET_PIP")"
  cat > "$GET_PIP" <<'PYEOF'
import subprocess
import sys

args = [a for a in sys.argv[1:] if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"], stdout=subprocess.DEVNULL)
subprocess.check_call([sys.executable, "-m", "pip", "install", *args])
PYEOF
fi
cd "$ROOT"
git ls-files -z --cached --others --exclude-standard | rsync -a --from0 --files-from=- ./ "$DEST/"
cd "$DEST"
PY=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# Its own venv: --venv needs a download from a host we cannot reach, so ansible-test installs
# its pinned sanity requirements (pylint, yamllint, voluptuous ...) into .venv-sanity instead.
exec "$SANITY_VENV/bin/ansible-test" sanity --requirements --python "$PY" --color no "$@"
