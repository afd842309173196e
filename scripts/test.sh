#!/usr/bin/env bash
# The test suite from a fresh clone: set up with the dev extras, lint, then pytest.
# pytest's exit status is passed through unchanged (5 means no test ran, and fails CI).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check .
.venv/bin/mypy src
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
exec .venv/bin/python -m pytest -n 2 -q "$@"
