#!/usr/bin/env bash
# Creates .venv and installs unetbench with its test tools. Idempotent: a second run is quick.
# torch is installed first and pinned here (not in pyproject): on the project's machines
# `torch==2.13.0` is a local CPU wheel, while an unpinned `torch` pulls a multi-GB CUDA build.
# Everything else comes at the versions in constraints.txt, those the tests pass with
# (UNETBENCH_CONSTRAINTS= installs the newest versions pyproject.toml allows instead).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
constraints=${UNETBENCH_CONSTRAINTS-constraints.txt}
pin=()
if [ -n "$constraints" ]; then
  pin=(-c "$constraints")
fi
stamp=.venv/.unetbench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ] ||
  { [ -n "$constraints" ] && [ "$constraints" -nt "$stamp" ]; }; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "${pin[@]}" "torch==${UNETBENCH_TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q "${pin[@]}" -e ".[test]"
  # The reference U-Net, used by the tests as an oracle only (its own deps are not needed).
  .venv/bin/python -m pip install -q "${pin[@]}" --no-deps elektronn3==0.1.1 colorlog
  touch "$stamp"
fi
