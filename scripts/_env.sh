# Sourced by scripts/demo.sh and scripts/test.sh: create .venv once and install DiscVBR into it.
# torch comes first and pinned: `pip install torch==2.13.0` takes the CPU build (a local file on
# the project's machines); letting another package pull torch could download a multi-GB CUDA build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
EXTRAS="${1:-}"
STAMP=".venv/.discvbr-installed${EXTRAS:+-$EXTRAS}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
if [ ! -f "$STAMP" ] || [ pyproject.toml -nt "$STAMP" ] || [ requirements/constraints.txt -nt "$STAMP" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -c requirements/constraints.txt -e ".${EXTRAS:+[$EXTRAS]}"
  touch "$STAMP"
fi
export MPLBACKEND=Agg
