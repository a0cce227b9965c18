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
if [ ! -f "$stamp" ]; then
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
  if [ "${1:-run}" = dev ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[dev]" >&2
  else
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e . >&2
  fi
  touch "$stamp"
fi
