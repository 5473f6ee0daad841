#!/usr/bin/env bash
# Fills the wheel folder that scripts/gpu-check.sh installs from on a GPU machine without
# network. Run it on a networked machine, then copy the folder along with the checkout:
#
#   scripts/gpu-wheels.sh [PYTHON_VERSION] [EXTRA_REQUIREMENT...]
#
# PYTHON_VERSION is the GPU machine's Python, X.Y (default 3.11; see `python3 --version`
# there). The wheels are for CPython X.Y on Linux x86_64 (manylinux), whatever this machine
# is: numpy and pandas with pandas' dependencies (python-dateutil, six, pytz, tzdata), which is
# all the check needs beside torch. EXTRA_REQUIREMENT adds more, e.g. 'numpy<2' to match the
# GPU machine's torch, or fvcore tqdm for `unetbench profile` with FLOP counts. Packages
# published only as source (fvcore, iopath) are built here into pure-Python wheels.
#
# Folder: $UNETBENCH_WHEELS, default wheels/gpu of this checkout. Needs pip on this machine
# ($PYTHON, default python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
pyver="${1:-3.11}"
if [ "$#" -gt 0 ]; then shift; fi
if ! [[ "$pyver" =~ ^3\.[0-9]+$ ]]; then
  echo "gpu-wheels: PYTHON_VERSION must look like 3.11, got '$pyver'" >&2
  exit 2
fi
dest="${UNETBENCH_WHEELS:-$root/wheels/gpu}"
mkdir -p "$dest"
cp="cp${pyver/./}"

# Wheels for the GPU machine's Python and platform, whatever this machine is.
download_wheels() {
  "$PY" -m pip download --disable-pip-version-check --dest "$dest" --only-binary=:all: \
    --implementation cp --python-version "$pyver" --abi "$cp" --abi abi3 --abi none \
    --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux_2_28_x86_64 --platform any "$@"
}

core=("numpy>=1.24" "pandas>=2.0" python-dateutil six pytz tzdata)
# Extras resolved together with the core, so that e.g. 'numpy<2' holds for pandas too.
if ! download_wheels "${core[@]}" "$@"; then
  [ "$#" -gt 0 ] || exit 1
  download_wheels "${core[@]}"
  for req in "$@"; do
    if ! download_wheels "${core[@]}" "$req"; then
      # Published only as source (or a dependency is): fetch it alone, built into a wheel below.
      echo "gpu-wheels: no wheels for all of $req; fetching $req alone (source allowed):" \
        "name its dependencies too" >&2
      "$PY" -m pip download --disable-pip-version-check --dest "$dest" --no-deps "$req"
    fi
  done
fi
shopt -s nullglob
for sdist in "$dest"/*.tar.gz "$dest"/*.zip; do
  "$PY" -m pip wheel --disable-pip-version-check --no-deps --wheel-dir "$dest" "$sdist"
  rm -f "$sdist"
done
echo "gpu-wheels: $(find "$dest" -maxdepth 1 -name '*.whl' | wc -l) wheels for Python" \
  "$pyver in $dest ($(du -sh "$dest" | cut -f1))"
