#!/usr/bin/env bash
# Sets up .venv (first run only) and runs the checks: ruff, mypy and the default pytest suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m bench` for the benchmarks.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check unetbench tests
.venv/bin/ruff format --check unetbench tests
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
