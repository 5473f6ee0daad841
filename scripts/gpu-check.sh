#!/usr/bin/env bash
# One command that checks on a GPU machine that unetbench's memory estimates hold:
#
#   scripts/gpu-check.sh [--device cuda|cuda:N|cpu] [--quick] [--out DIR] [--configs A,B]
#                        [--tolerance 0.05]
#
# Meant for a machine with no network whose own Python already has a CUDA build of torch.
# Nothing is installed into that Python:
#  * Python: $PYTHON if set, else python3; `import torch` must work there.
#  * unetbench: this checkout, through PYTHONPATH (never pip-installed).
#  * The few dependencies the profiler needs beside torch (numpy, pandas and pandas' own:
#    python-dateutil, six, pytz, tzdata), only where that Python lacks them: from the wheel
#    folder $UNETBENCH_WHEELS (default wheels/gpu, filled on a networked machine by
#    scripts/gpu-wheels.sh) into $UNETBENCH_GPU_DEPS (default .gpu-deps/pyX.Y), which goes on
#    PYTHONPATH. fvcore, tqdm, optuna and pyarrow are not needed: the check counts no FLOPs.
# Then runs scripts/gpu_check.py with the arguments given: a table on stdout, gpu-check.csv and
# gpu-check.txt under --out (default results/gpu-check of this checkout; for --quick or a CPU
# run results/gpu-check-quick, which git ignores, so the committed H100 results stay as they are).
#
# Exit status: that of gpu_check.py (0 pass, 1 an estimate off or a row failed, 2 bad
# arguments), or 3 when the environment is unusable (no torch, missing dependency, no wheel).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"

die() {
  echo "gpu-check: $*" >&2
  exit 3
}

command -v "$PY" >/dev/null 2>&1 || die "no Python '$PY' here; set PYTHON=/path/to/python"
pyver="$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
wheels="${UNETBENCH_WHEELS:-$root/wheels/gpu}"
deps="${UNETBENCH_GPU_DEPS:-$root/.gpu-deps/py$pyver}"
# This checkout first, so that it is what runs even where another unetbench is installed.
export PYTHONPATH="$root:$deps${PYTHONPATH:+:$PYTHONPATH}"

# Prints one line per distribution this Python lacks (dependency order), or "!torch REASON"
# when torch itself does not import. One Python start: importing torch takes seconds.
probe() {
  "$PY" -W ignore - <<'PYEOF'
import importlib
import importlib.util

try:
    import torch  # noqa: F401
except Exception as exc:
    print("!torch " + f"{type(exc).__name__}: {exc}".splitlines()[0])
    raise SystemExit(0) from None


def works(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


missing = [] if works("numpy") else ["numpy"]
if not works("pandas"):
    # pandas' own dependencies, only where pandas itself has to come from the wheels.
    for module, dist in [("six", "six"), ("dateutil", "python-dateutil"), ("pytz", "pytz"),
                         ("tzdata", "tzdata"), ("pandas", "pandas")]:
        if importlib.util.find_spec(module) is None:
            missing.append(dist)
for dist in missing:
    print(dist)
PYEOF
}

# Installs wheels of the given distributions into $deps: with pip where this Python has it,
# else by unpacking the matching wheel files (a wheel is a zip of an importable tree).
install_wheels() {
  [ -d "$wheels" ] || die "missing in $PY: $*; no wheel folder $wheels (fill it on a \
networked machine with: scripts/gpu-wheels.sh $pyver, then copy wheels/ here)"
  mkdir -p "$deps"
  echo "gpu-check: installing $* from $wheels into $deps" >&2
  if "$PY" -m pip --version >/dev/null 2>&1; then
    "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --find-links "$wheels" --target "$deps" --upgrade "$@" >&2 ||
      die "pip could not install $* from $wheels (wheels for Python $pyver there? \
scripts/gpu-wheels.sh $pyver makes them)"
  else
    "$PY" - "$wheels" "$deps" "$@" <<'PYEOF' || exit 3
import re
import sys
import sysconfig
import zipfile
from pathlib import Path

wheels, deps, dists = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
cp = f"cp{sys.version_info[0]}{sys.version_info[1]}"
arch = sysconfig.get_platform().split("-")[-1]


def version_key(path: Path) -> list[int]:
    return [int(p) for p in re.findall(r"\d+", path.name.split("-")[1])]


for dist in dists:
    stem = re.sub(r"[-_.]+", "_", dist).lower()
    found = []
    for wheel in wheels.glob("*.whl"):
        parts = wheel.name[: -len(".whl")].split("-")
        if len(parts) < 5 or parts[0].lower() != stem:
            continue
        tags, plat = parts[-3].split("."), parts[-1]
        if plat != "any" and arch not in plat:
            continue
        if cp not in tags and not any(t.startswith("py3") for t in tags):
            continue
        found.append(wheel)
    if not found:
        sys.exit(f"gpu-check: no wheel of {dist} for {cp} {arch} in {wheels}")
    best = max(found, key=version_key)
    zipfile.ZipFile(best).extractall(deps)
    print(f"gpu-check: unpacked {best.name} (no pip in this Python)", file=sys.stderr)
PYEOF
  fi
}

mapfile -t missing < <(probe)
if [ "${#missing[@]}" -gt 0 ] && [ "${missing[0]:0:7}" = "!torch " ]; then
  die "'import torch' fails in $PY (${missing[0]:7}); set PYTHON to a Python with a CUDA \
build of torch"
fi
if [ "${#missing[@]}" -gt 0 ]; then
  install_wheels "${missing[@]}"
  if ! err="$("$PY" -c 'import numpy, pandas, unetbench.profiler' 2>&1)"; then
    die "the profiler does not import in $PY with PYTHONPATH=$PYTHONPATH: \
$(printf '%s\n' "$err" | tail -n 1)"
  fi
fi

# The allocator as unetbench recommends for training: expandable segments grow a segment in
# place instead of caching one more, so the reserved peak stays near the allocated one
# (fragmentation is what makes a step fail below its allocated peak). A value already set wins.
export PYTORCH_CUDA_ALLOC_CONF="${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}"
exec "$PY" "$root/scripts/gpu_check.py" "$@"
