#!/usr/bin/env bash
# Runs plot.py with matplotlib from a local venv, creating it on first use:
#
#   crates/bench/plot.sh -o docs/img/fanout sweep-wsgate.json="wsgate embedded" ...
#
# The venv lives in target/plotenv at the repository root (ignored by git, like the rest
# of target/). PLOTENV=DIR overrides where; PYTHON=python3.x picks the interpreter.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PLOTENV:-$ROOT/target/plotenv}"
PY="${PYTHON:-python3}"

if ! "$VENV/bin/python" -c 'import matplotlib' >/dev/null 2>&1; then
  echo "plot.sh: creating $VENV with matplotlib" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check 'matplotlib>=3.8,<4' >&2
fi

exec "$VENV/bin/python" "$HERE/plot.py" "$@"
