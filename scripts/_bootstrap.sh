# Sourced by scripts/demo and scripts/test: make .venv from pyproject.toml if needed.
# Idempotent: the install runs again only when pyproject.toml changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
python="${PYTHON:-python3}"
venv="$root/.venv"
stamp="$venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)-${1:-run}"
if [ ! -x "$venv/bin/python" ]; then
  "$python" -m venv "$venv"
fi
pip_install() {
  # pip's notes about this machine's local package mirrors are noise here.
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check "$@" 2>&1 \
    | grep -v "^WARNING: Location '" >&2 || true
  return "${PIPESTATUS[0]}"
}
if [ ! -f "$stamp" ]; then
  pip_install --upgrade pip
  if [ "${1:-run}" = dev ]; then
    pip_install -e ".[dev]"
  else
    pip_install -e .
  fi
  touch "$stamp"
fi
