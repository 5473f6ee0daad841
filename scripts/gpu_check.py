"""Check on a real GPU that unetbench's memory estimates hold.

Profiles five U-Net configurations x checkpointing policies x precisions (fp32, bf16) x memory
formats (contiguous, channels_last) with :func:`unetbench.profiler.profile` and compares each
row's fake-tensor estimate (``est_peak_mem_train_bytes``) with the peak the device allocated
(``peak_mem_train_bytes``); the reserved peak is reported beside it (gpu-check.sh runs with
``expandable_segments``). Then (``gpu_check_device.py``): the allocator's history of the steps
of the policies with a CUDA gap set against the fake step (``gap-allocations.txt``); three
training steps of the largest patch ``plan`` returns for 11 GiB, under a memory fraction of
11 GiB; step times of every policy over 8 alternating rounds. Prints one report, and writes it
as ``gpu-check.txt`` with every record column (and the ratios) as ``gpu-check.csv`` under
``--out``.

Run it through ``scripts/gpu-check.sh``, which picks the Python and its dependencies.

Exit status: 0 every row ok and its estimate within the tolerance (2%) of its allocated
peak, and every planned patch trained; 1 some row off by more than the tolerance, not measured
(status other than ok), or a planned patch out of memory; 2 bad arguments (one line on
stderr).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    import pandas as pd

#: Configurations checked: name -> UNetConfig keyword arguments.
CONFIGS: dict[str, dict[str, Any]] = {
    "default": {},
    "attention_resizeconv": {"attention": True, "up_mode": "resizeconv_linear"},
    "add_merge": {"merge_mode": "add"},
    "planar": {"planar_blocks": (0,)},
    "2d": {"dim": 2},
}
PRECISIONS = ("fp32", "bf16")
DEFAULT_TOLERANCE = 0.02
MEMORY_FORMATS = ("contiguous", "channels_last")
#: Results folder of a full run on a CUDA device: results/gpu-check of this checkout, wherever
#: the script is run from (one H100 run is committed there).
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "results" / "gpu-check"
#: Results folder of a --quick or CPU run, which must not overwrite the committed GPU results
#: (not tracked by git).
QUICK_OUT = DEFAULT_OUT.with_name("gpu-check-quick")


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one run measures: patch shape per dimensionality, policies and step counts."""

    shapes: dict[int, tuple[int, ...]]
    policies: tuple[str, ...]
    warmup: int
    rounds: int
    max_seconds: float | None
    memory_formats: tuple[str, ...]
    budget: str  # what plan sizes the patches for that must train under it
    time_rounds: int  # alternating rounds of the step-time comparison


#: GPU-sized patches (peaks of 0.2 to 3 GiB): a few minutes on one H100; timing stops at 3 s
#: a step kind, so slow steps cannot run past 6 minutes.
FULL = Plan(
    shapes={3: (64, 128, 128), 2: (512, 512)},
    policies=("none", "blocks", "top_units", "lean", "cheap", "auto"),
    warmup=2,
    rounds=3,
    max_seconds=1.0,
    memory_formats=MEMORY_FORMATS,
    budget="11GiB",
    time_rounds=8,
)
#: Tiny patches: a smoke test of the whole check (seconds per configuration on a CPU).
QUICK = Plan(
    shapes={3: (4, 16, 16), 2: (32, 32)},
    policies=("none", "auto"),
    warmup=1,
    rounds=1,
    max_seconds=None,
    memory_formats=("contiguous",),
    budget="24MiB",
    time_rounds=2,
)

#: Printed table: (header, record column, format).
TABLE_COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("config", "config", "s"),
    ("precision", "precision", "s"),
    ("format", "memory_format", "s"),
    ("checkpointing", "checkpointing", "s"),
    ("chosen", "checkpointing_chosen", "s"),
    ("est MiB", "est_mib", ".1f"),
    ("alloc MiB", "alloc_mib", ".1f"),
    ("reserved MiB", "reserved_mib", ".1f"),
    ("alloc/est", "alloc_est_ratio", ".4f"),
    ("reserved/est", "reserved_est_ratio", ".4f"),
    ("step ms", "train_step_ms", ".1f"),
    ("status", "status", "s"),
)


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument on one line (no usage block) and exits 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.exit(2)


def _tolerance(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = _Parser(
        prog="gpu_check.py",
        description="Profile U-Net configurations x checkpointing policies x precisions and "
        "check the fake-tensor memory estimate against the allocated peak.",
    )
    parser.add_argument("--device", default="cuda", help="cpu, cuda or cuda:N (default cuda)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="tiny patches, policies none,auto, one timed round (a smoke test, CPU-friendly)",
    )
    parser.add_argument(
        "--out",
        default=None,
        help="folder for gpu-check.csv and gpu-check.txt (default results/gpu-check on a "
        "CUDA device, results/gpu-check-quick for --quick or a CPU run)",
    )
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated subset of {','.join(CONFIGS)} (default all)",
    )
    parser.add_argument(
        "--tolerance",
        type=_tolerance,
        default=DEFAULT_TOLERANCE,
        help="largest allowed |alloc/est - 1| (default 0.02)",
    )
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    unknown = [n for n in names if n not in CONFIGS]
    if not names or unknown:
        parser.error(
            f"argument --configs: unknown {', '.join(map(repr, unknown)) or 'empty list'}; "
            f"choose from {','.join(CONFIGS)}"
        )
    args.configs = list(dict.fromkeys(names))
    return args


def _usage_error(message: str) -> NoReturn:
    sys.stderr.write(f"gpu_check.py: error: {message}\n")
    sys.exit(2)


#: Record columns add_ratios reads.
_MEASURED = (
    "checkpointing_chosen",
    "est_peak_mem_train_bytes",
    "peak_mem_train_bytes",
    "peak_reserved_train_bytes",
    "train_step_s",
)


def add_ratios(df: pd.DataFrame) -> pd.DataFrame:
    """The record plus MiB columns, the two ratios to the estimate and the step in ms."""
    mib = float(2**20)
    out = df.copy()
    est = out["est_peak_mem_train_bytes"].astype(float)
    alloc = out["peak_mem_train_bytes"].astype(float)
    reserved = out["peak_reserved_train_bytes"].astype(float)
    out["est_mib"] = est / mib
    out["alloc_mib"] = alloc / mib
    out["reserved_mib"] = reserved / mib
    out["alloc_est_ratio"] = alloc / est
    out["reserved_est_ratio"] = reserved / est
    out["train_step_ms"] = out["train_step_s"].astype(float) * 1e3
    return out


def failures(df: pd.DataFrame, tolerance: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``(rows off by more than tolerance, rows not measured)``; ratios from add_ratios."""
    ok = df["status"] == "ok"
    ratio = df["alloc_est_ratio"]
    off = ok & ~((ratio - 1).abs() <= tolerance)  # NaN ratios count as off
    return df[off], df[~ok]


def _cell(value: Any, fmt: str) -> str:
    if fmt == "s":
        return (
            "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)
        )
    try:
        number = float(value)
    except (TypeError, ValueError):
        return ""
    return "" if math.isnan(number) else format(number, fmt)


def format_table(df: pd.DataFrame) -> str:
    """The rows as a fixed-width text table (text left-aligned, numbers right-aligned)."""
    headers = [h for h, _, _ in TABLE_COLUMNS]
    cells = [
        [_cell(row.get(col), fmt) for _, col, fmt in TABLE_COLUMNS] for row in df.to_dict("records")
    ]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    right = [fmt != "s" for _, _, fmt in TABLE_COLUMNS]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.rjust(w) if r else v.ljust(w) for v, w, r in zip(values, widths, right, strict=True)
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _describe_rows(df: pd.DataFrame) -> list[str]:
    def num(value: Any, fmt: str) -> str:
        return _cell(value, fmt) or "-"

    lines = []
    for row in df.to_dict("records"):
        what = f"{row['config']} {row['precision']} {row['checkpointing']}"
        chosen = _cell(row.get("checkpointing_chosen"), "s")
        if chosen and chosen != row["checkpointing"]:
            what += f" (chose {chosen})"
        lines.append(
            f"  {what}: est {num(row['est_mib'], '.1f')} MiB, alloc "
            f"{num(row['alloc_mib'], '.1f')} MiB, alloc/est {num(row['alloc_est_ratio'], '.4f')}"
            f", status {row['status']}"
            + (f", reason {row['reason']}" if _cell(row.get("reason"), "s") else "")
        )
    return lines


def run(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    import pandas as pd
    import torch

    from unetbench import UnetbenchError, UNetConfig
    from unetbench.profiler import profile
    from unetbench.profiler.devices import resolve_device

    plan = QUICK if args.quick else FULL
    try:
        dev = resolve_device(args.device)
    except UnetbenchError as exc:
        _usage_error(f"argument --device: {exc}")
    full_gpu_run = dev.type == "cuda" and not args.quick
    out_dir = Path(args.out) if args.out else DEFAULT_OUT if full_gpu_run else QUICK_OUT
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _usage_error(f"argument --out: cannot create {out_dir}: {exc.strerror or exc}")
    configs = {name: UNetConfig(**CONFIGS[name]) for name in args.configs}
    for name, cfg in configs.items():
        try:
            cfg.check_input_shape(plan.shapes[cfg.dim])
        except UnetbenchError as exc:  # a plan that does not fit a config is this file's bug
            raise SystemExit(f"gpu_check.py: config {name}: {exc}") from None

    import unetbench

    if dev.type == "cpu" and args.quick:
        # The tiny steps are dispatch-bound: one thread is as fast, and far faster than two
        # when other processes share the cores (OpenMP threads then wait on each other).
        torch.set_num_threads(1)
    device_name = (
        torch.cuda.get_device_name(dev)
        if dev.type == "cuda"
        else f"cpu, {torch.get_num_threads()} thread(s)"
    )
    header = (
        f"unetbench gpu-check ({'quick' if args.quick else 'full'}): device {dev} "
        f"({device_name}), torch {torch.__version__}, unetbench {unetbench.__version__} "
        f"from {Path(unetbench.__file__).parent}"
    )
    print(header, flush=True)
    frames = []
    for i, (name, cfg) in enumerate(configs.items(), 1):
        shape = plan.shapes[cfg.dim]
        t0 = time.perf_counter()
        try:
            df = profile(
                cfg,
                shape,
                batch_size=1,
                checkpointing=list(plan.policies),
                device=dev,
                precision=PRECISIONS,
                memory_format=plan.memory_formats,
                timing=True,
                warmup=plan.warmup,
                rounds=plan.rounds,
                max_seconds=plan.max_seconds,
                count_flops=False,
            )
        except Exception as exc:  # profile keeps measurement failures in rows; not this one
            reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            logging.getLogger("gpu_check").error("config %s failed: %s", name, reason)
            df = pd.DataFrame(
                [
                    {"checkpointing": p, "precision": q, "memory_format": f, "status": "error",
                     "reason": reason}
                    for f in plan.memory_formats
                    for q in PRECISIONS
                    for p in plan.policies
                ]
            ).reindex(columns=["checkpointing", "precision", "memory_format", "status", "reason",
                               *_MEASURED])  # fmt: skip
        df.insert(0, "config", name)
        df.insert(1, "patch", "x".join(map(str, shape)))
        frames.append(df)
        print(
            f"[{i}/{len(configs)}] {name} {'x'.join(map(str, shape))}: {len(df)} rows in "
            f"{time.perf_counter() - t0:.1f} s",
            flush=True,
        )
    records = add_ratios(pd.concat(frames, ignore_index=True))
    off, failed = failures(records, args.tolerance)
    records["within_tolerance"] = ~records.index.isin(off.index) & (records["status"] == "ok")

    elapsed = time.perf_counter() - start
    lines = [header, "", format_table(records), ""]
    if len(off):
        lines.append(f"estimate off the allocated peak by more than {args.tolerance:.0%}:")
        lines.extend(_describe_rows(off))
    if len(failed):
        lines.append("rows not measured (status other than ok):")
        lines.extend(_describe_rows(failed))
    device_lines, trained = _device_checks(plan, configs, dev, out_dir)
    lines.extend(device_lines)
    verdict = "FAIL" if len(off) or len(failed) or not trained else "PASS"
    lines.append(
        f"{verdict}: {len(records) - len(off) - len(failed)}/{len(records)} rows ok and within "
        f"{args.tolerance:.0%}; elapsed {elapsed:.1f} s"
    )
    text = "\n".join(lines) + "\n"
    print("\n" + text, end="", flush=True)
    records.to_csv(out_dir / "gpu-check.csv", index=False)
    (out_dir / "gpu-check.txt").write_text(text)
    print(f"wrote {out_dir / 'gpu-check.csv'} and {out_dir / 'gpu-check.txt'}", flush=True)
    return 1 if verdict == "FAIL" else 0


def _device_checks(
    plan: Plan, configs: dict[str, Any], dev: Any, out_dir: Path
) -> tuple[list[str], bool]:
    """The checks of gpu_check_device.py: report lines, and whether every planned patch
    trained."""
    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import gpu_check_device as device

    from unetbench import UNetConfig

    lines = []
    reserved = torch.cuda.memory.get_allocator_backend() if dev.type == "cuda" else ""
    if dev.type == "cuda":
        import os

        lines.append(
            f"allocator: {reserved}, PYTORCH_CUDA_ALLOC_CONF="
            f"{os.environ.get('PYTORCH_CUDA_ALLOC_CONF', '')!r}"
        )
        gap = {n: c for n, c in configs.items() if n in ("default", "attention_resizeconv")}
        lines.append("blocks alive at the CUDA peak that the fake step lacks "
                     "(detail in gap-allocations.txt):")  # fmt: skip
        lines.extend(device.gap_allocations(gap, lambda c: plan.shapes[c.dim], dev,
                                            out_dir / "gap-allocations.txt"))  # fmt: skip
    default = UNetConfig() if not configs else next(iter(configs.values()))
    policies = ("none", "blocks", "top_units", "lean", "cheap", "auto")
    name = next(iter(configs), "default")
    lines.append(f"largest planned patch for {plan.budget} (config {name}), 3 training "
                 "steps under that memory cap:")  # fmt: skip
    train_lines, trained = device.planned_patches_train(default, plan.budget, dev, policies)
    lines.extend(train_lines)
    lines.append(f"step time, median of {plan.time_rounds} alternating rounds (spread):")
    for precision in PRECISIONS:
        lines.extend(device.step_times(default, plan.shapes[default.dim], dev,
                                       policies[:-1], plan.time_rounds, precision))  # fmt: skip
    return lines, trained


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)  # before importing torch: a bad argument fails fast
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
