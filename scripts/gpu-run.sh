#!/usr/bin/env bash
# The device run behind the GPU figures in docs/benchmarks.md: gpu-check, then the default U-Net
# in fp32 and bf16 at the two documented patch sizes with the largest cube for 11 GiB, into $OUT (or
# results/gpu-check). Needs a CUDA machine; `bash scripts/gpu-run.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-results/gpu-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
bash scripts/gpu-check.sh --out "$out" 2>&1 | tee "$out/gpu-check.log"
rc=${PIPESTATUS[0]}
PYTHONPATH=. "$PY" - "$out" <<'PY' 2>&1 | tee "$out/default-unet.log"
import sys, time
import torch
from unetbench import UNetConfig
from unetbench.profiler import plan, profile

out = sys.argv[1]
cfg = UNetConfig()
frames = []
for shape in ((32, 64, 64), (64, 128, 128)):
    t = time.perf_counter()
    f = profile(cfg, shape, checkpointing=("none", "auto"), device="cuda",
                precision=("fp32", "bf16"), count_flops=False, warmup=2, rounds=10)
    frames.append(f)
    cols = ["input_shape", "precision", "checkpointing", "checkpointing_chosen",
            "est_peak_mem_train_bytes", "peak_mem_train_bytes", "peak_reserved_train_bytes",
            "train_step_s", "train_step_iqr_s", "status"]
    print(f[cols].to_string(index=False), f"({time.perf_counter() - t:.1f} s)")
import pandas as pd
pd.concat(frames).to_csv(f"{out}/default-unet.csv", index=False)
for prec in ("fp32", "bf16"):
    p = plan(cfg, "11GiB", vary="shape", checkpointing=("none", "auto"), precision=prec,
             device="cuda", shape=(64, 64, 64))
    print(p[["checkpointing", "checkpointing_chosen", "precision", "input_shape",
             "total_bytes", "headroom_bytes"]].to_string(index=False))
print(torch.cuda.get_device_name(0), torch.__version__)
PY
exit "$rc"
