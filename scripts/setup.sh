#!/usr/bin/env bash
# Creates .venv and installs unetbench with its test tools. Idempotent: a second run is quick.
# torch is installed first and pinned here (not in pyproject): on the project's machines
# `torch==2.13.0` is a local CPU wheel, while an unpinned `torch` pulls a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.unetbench-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/setup.sh -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q "torch==${UNETBENCH_TORCH_VERSION:-2.13.0}"
  .venv/bin/python -m pip install -q -e ".[test]"
  # The reference U-Net, used by the tests as an oracle only (its own deps are not needed).
  .venv/bin/python -m pip install -q --no-deps elektronn3==0.1.1 colorlog
  touch "$stamp"
fi
