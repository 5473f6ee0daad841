"""``unetbench plan``: the largest patch or batch whose training step fits a memory budget."""

from __future__ import annotations

import argparse
from typing import Any

from unetbench.cli import _common as _cli
from unetbench.units import parse_bytes

_SHOWN = (
    "vary", "checkpointing", "checkpointing_chosen", "precision", "batch_size",
    "input_shape", "memory_format", "fits", "est_peak_mem_train_bytes", "gap_margin_bytes",
    "total_bytes", "headroom_bytes", "budget_bytes",
)  # fmt: skip


def add_parser(subparsers: Any) -> None:
    """Register the ``plan`` subcommand."""
    p = subparsers.add_parser(
        "plan",
        help="largest patch shape / batch size that fits a memory budget (fake-tensor estimate)",
        description="Size patches and batches for a GPU memory budget without allocating.",
    )
    _cli.add_config_arguments(p)
    p.add_argument(
        "--budget", required=True, help="memory budget(s), e.g. 11GiB, 8GB, 512MiB or 11GiB,24GiB"
    )
    p.add_argument("--shape", help="reference shape: aspect ratio kept, batch grown at it")
    p.add_argument("--batch", type=int, default=1, help="batch size while the shape grows")
    p.add_argument("--fixed-depth", type=int, help="keep the first axis at this size")
    p.add_argument("--vary", default="shape,batch", help="shape and/or batch (default both)")
    p.add_argument(
        "--checkpointing",
        default="none,blocks",
        help="policies, or auto: the largest size any policy reaches (default none,blocks)",
    )
    p.add_argument(
        "--precision", default="fp32", help="fp32, bf16 and/or fp16 (autocast; default fp32)"
    )
    p.add_argument(
        "--memory-format",
        default="contiguous",
        help="contiguous and/or channels_last (weights and input; default contiguous)",
    )
    p.add_argument(
        "--dice-loss", action="store_true", help="the step's loss adds soft Dice (as training)"
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where training will run: cuda keeps a 512 MiB headroom free, and a margin for "
        "policies with a known CUDA gap (default cpu)",
    )
    p.add_argument("--headroom", default=None, help="bytes of the budget kept free, e.g. 1GiB")
    p.add_argument(
        "--optimizer", default="adam", help="adam, sgd-momentum or sgd (optimizer state size)"
    )
    p.add_argument("--out", help="write the rows to FILE.csv, .parquet or .json")


def run(args: argparse.Namespace) -> int:
    """Plan, print the table, optionally write it; 1 if nothing fits."""
    from unetbench.model.training import parse_memory_formats
    from unetbench.precision import parse_precisions
    from unetbench.profiler import plan

    out = _cli.check_out(args.out)
    config = _cli.config_from_args(args)
    frame = plan(
        config,
        [parse_bytes(b, "--budget") for b in _cli.parse_list(args.budget, "--budget")],
        _cli.parse_shape(args.shape),
        batch_size=args.batch,
        fixed_depth=args.fixed_depth,
        vary=_cli.parse_list(args.vary, "--vary"),
        checkpointing=_cli.parse_list(args.checkpointing, "--checkpointing"),
        optimizer=args.optimizer,
        precision=parse_precisions(args.precision),
        device=args.device,
        memory_format=parse_memory_formats(args.memory_format),
        dice_loss=args.dice_loss,
        memory_headroom=None
        if args.headroom is None
        else parse_bytes(args.headroom, "--headroom", allow_zero=True),
    )
    print(
        f"U-Net {config.to_json()}; total = estimated step peak + optimizer state + batch, "
        "which must fit the budget less the headroom"
    )
    print(_cli.readable(frame, _SHOWN))
    for note in dict.fromkeys(n for n in frame["note"] if n):
        print(f"note: {note}")
    if out is not None:
        _cli.write_frame(frame, out)
        print(f"wrote {len(frame)} rows to {out}")
    return 0 if frame["fits"].any() else 1
