"""``unetbench profile``: memory, operation counts and speed of one U-Net configuration."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from unetbench.cli import _common as _cli
from unetbench.units import parse_bytes

_SHOWN = (
    "checkpointing", "checkpointing_chosen", "precision", "memory_format", "status",
    "params", "fwd_macs",
    "train_flops", "peak_mem_train_bytes", "est_peak_mem_train_bytes",
    "peak_reserved_train_bytes", "opt_state_bytes", "peak_mem_infer_bytes", "train_step_s",
    "train_step_iqr_s", "infer_s", "train_voxels_per_s",
)  # fmt: skip


def add_parser(subparsers: Any) -> None:
    """Register the ``profile`` subcommand."""
    p = subparsers.add_parser(
        "profile",
        help="measure memory, FLOPs and speed of a U-Net, with and without checkpointing",
        description="Profile a U-Net config: one record per checkpointing policy.",
    )
    _cli.add_config_arguments(p)
    p.add_argument("--shape", default="32,64,64", help="spatial input D,H,W (or H,W in 2D)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument(
        "--checkpointing",
        default="none,blocks",
        help="comma-separated policies: none, blocks, top_units, lean, ..., or auto (the one "
        "the estimates choose for the shape, precision and --budget; default none,blocks)",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        help="comma-separated: fp32, bf16, fp16 (autocast mixed precision; default fp32)",
    )
    p.add_argument(
        "--memory-format",
        default="contiguous",
        help="comma-separated: contiguous, channels_last (weights and input; default contiguous)",
    )
    p.add_argument(
        "--dice-loss", action="store_true", help="the training step adds soft Dice (as training)"
    )
    p.add_argument("--budget", default=None, help="memory budget for auto, e.g. 11GiB")
    p.add_argument(
        "--headroom",
        default=None,
        help="bytes of the budget kept free (default 512MiB on CUDA, 0 on CPU)",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default 1)")
    p.add_argument("--rounds", type=int, default=5, help="timed steps at most, >= 1 (default 5)")
    p.add_argument("--max-seconds", type=float, default=None, help="time budget per step kind")
    p.add_argument("--no-timing", action="store_true", help="skip timing (memory and FLOPs only)")
    p.add_argument("--out", help="write the records to FILE.csv, .parquet or .json")


def run(args: argparse.Namespace) -> int:
    """Profile, print the table, optionally write the records; 1 if no row succeeded."""
    from tqdm import tqdm

    from unetbench.model.training import parse_memory_formats
    from unetbench.precision import parse_precisions
    from unetbench.profiler import planned_steps, profile
    from unetbench.profiler.load import under_load
    from unetbench.profiler.timing import check_timing_args

    check_timing_args(args.warmup, args.rounds, args.max_seconds, cli=True)
    out = _cli.check_out(args.out)
    config = _cli.config_from_args(args)
    shape = _cli.parse_shape(args.shape)
    assert shape is not None
    policies = _cli.parse_list(args.checkpointing, "--checkpointing")
    _cli.validate_profile_args(config, shape, args.batch, args.device, policies)
    precisions = parse_precisions(args.precision)
    formats = parse_memory_formats(args.memory_format)
    if args.budget is not None:
        parse_bytes(args.budget, "--budget")
    total = planned_steps(
        len(policies),
        warmup=args.warmup,
        rounds=args.rounds,
        n_precisions=len(precisions) * len(formats),
    )
    with tqdm(total=total, desc="profiling", unit="step", file=sys.stderr, leave=False) as bar:
        frame = profile(
            config,
            shape,
            batch_size=args.batch,
            checkpointing=policies,
            device=args.device,
            warmup=args.warmup,
            rounds=args.rounds,
            max_seconds=args.max_seconds,
            timing=not args.no_timing,
            progress=bar.update,
            precision=precisions,
            memory_budget=args.budget,
            memory_headroom=args.headroom,
            memory_format=formats,
            dice_loss=args.dice_loss,
        )
    first = frame.iloc[0]
    print(
        f"U-Net {config.to_json()}\ninput {first['batch_size']}x{config.in_channels}x"
        f"{first['input_shape']} -> output {first['output_shape']} on {first['device']} "
        f"({first['device_name']})"
    )
    print(_cli.readable(frame, _SHOWN))
    for _, row in frame[frame["status"] != "ok"].iterrows():
        print(f"{row['checkpointing']}/{row['precision']}: {row['status']}: {row['reason']}")
    for _, row in frame.iterrows():
        if under_load(row):
            print(
                f"warning: {row['checkpointing']}/{row['precision']}: timed under load "
                f"({row['timing_note']}); its times are not a result"
            )
    if out is not None:
        _cli.write_frame(frame, out)
        print(f"wrote {len(frame)} records to {out}")
    return 0 if (frame["status"] == "ok").any() else 1
