#!/usr/bin/env bash
# Sets up .venv (first run only), runs the quick study (two worker processes) and writes its
# report under results/quick/.
# Any argument replaces the study file, e.g. `bash scripts/study.sh studies/smoke.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
study=${1:-studies/quick.toml}
name=$(basename "$study" .toml)
.venv/bin/unetbench sweep "$study" --workers 2   # two processes of one torch thread each
.venv/bin/unetbench report "results/$name"
