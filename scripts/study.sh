#!/usr/bin/env bash
# Sets up .venv (first run only), runs the quick study and writes its report under results/quick/.
# Any argument replaces the study file, e.g. `bash scripts/study.sh studies/smoke.toml`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
study=${1:-studies/quick.toml}
name=$(basename "$study" .toml)
.venv/bin/unetbench sweep "$study"
.venv/bin/unetbench report "results/$name"
