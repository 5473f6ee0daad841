"""``plan``: the largest patch shape or batch size whose training step fits a memory budget.

Every candidate is sized with the fake-tensor estimate (nothing is allocated), so a 40 GiB GPU
can be planned on a laptop. A step fits when its estimated peak (parameters, gradients,
activations) plus the optimizer state and the input batch stays within the budget.
Memory grows about linearly with voxels and batch, so a linear fit of two cheap estimates
predicts the answer and a few more estimates confirm it.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from unetbench._errors import UsageError
from unetbench.model.policies import get_policy, policy_names
from unetbench.precision import check_precision
from unetbench.profiler import _step
from unetbench.profiler.auto import AUTO, choose_policy
from unetbench.profiler.memory import (
    OPT_STATE_FACTOR,
    StepBytes,
    batch_peak_bytes,
    default_headroom_bytes,
    estimate_train_memory,
    step_extra_bytes,
)
from unetbench.shapes import fmt_shape
from unetbench.units import parse_bytes

__all__ = ["PLAN_COLUMNS", "plan"]

PLAN_COLUMNS = (
    "vary", "checkpointing", "checkpointing_chosen", "precision", "batch_size", "input_shape",
    "voxels", "fits", "est_peak_mem_train_bytes", "opt_state_bytes", "batch_bytes",
    "total_bytes", "headroom_bytes", "budget_bytes",
)  # fmt: skip

_MAX_AXIS = 8192


def _largest_fitting(n: int, fits: Callable[[int], bool], guess: int) -> int:
    """Largest index in ``range(n)`` with ``fits`` true (monotone), -1 if none; gallops from
    ``guess`` so a good guess costs only a few calls."""
    guess = min(max(guess, 0), n - 1)
    if fits(guess):
        lo, step = guess, 1
        while lo + step < n and fits(lo + step):
            lo, step = lo + step, step * 2
        hi = min(lo + step, n)  # first index known (or assumed at n) not to fit
    else:
        hi, step = guess, 1
        while hi - step >= 0 and not fits(hi - step):
            hi, step = hi - step, step * 2
        lo = hi - step
        if lo < 0:
            if not fits(0):
                return -1
            lo = 0
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


def _shape_candidates(
    cfg: Any, shape: tuple[int, ...], fixed_depth: int | None
) -> list[tuple[int, ...]]:
    """Legal shapes along the ray of ``shape``'s aspect ratio, smallest first.

    Each axis starts at twice its smallest legal size, so the bottleneck keeps more than one
    voxel (batch norm cannot train on one value per channel).
    """
    axes = range(cfg.dim)
    legal = [cfg.valid_input_sizes(range(1, _MAX_AXIS + 1), axis=a) for a in axes]
    legal = [[s for s in sizes if s >= 2 * sizes[0]] or sizes for sizes in legal]
    scaled = [a for a in axes if not (fixed_depth is not None and a == 0)]
    ref = max(shape[a] for a in scaled)
    lead = max(scaled, key=lambda a: shape[a])
    out: list[tuple[int, ...]] = []
    for k in legal[lead]:
        cand = []
        for a in axes:
            if fixed_depth is not None and a == 0:
                cand.append(fixed_depth)
                continue
            i = bisect.bisect_right(legal[a], k * shape[a] / ref) - 1
            cand.append(legal[a][max(i, 0)])
        if not out or tuple(cand) != out[-1]:
            out.append(tuple(cand))
    return out


def plan(
    config: Any,
    budget: int | str,
    shape: tuple[int, ...] | list[int] | None = None,
    *,
    batch_size: int = 1,
    fixed_depth: int | None = None,
    vary: str | Iterable[str] = ("shape", "batch"),
    checkpointing: str | Iterable[str] = ("none", "blocks"),
    optimizer: str = "adam",
    precision: str = "fp32",
    device: str = "cpu",
    memory_headroom: int | str | None = None,
) -> pd.DataFrame:
    """Find what fits ``budget``: one row per (vary, checkpointing) with the answer.

    Args:
        config: A UNetConfig or a unetbench UNet.
        budget: Bytes, or a size string such as "11GiB".
        shape: Reference spatial shape: its aspect ratio is kept when the shape grows, and
            it is the shape whose batch grows. Default: a cube of 64 per axis.
        batch_size: Batch size while the shape grows.
        fixed_depth: Keep the first axis at this size (anisotropic stacks); others grow.
        vary: "shape" (largest patch at ``batch_size``) and/or "batch" (largest batch at
            ``shape``).
        checkpointing: Policy names to plan for; "auto" finds the largest size that any
            policy reaches and names the one it would train with (the fewest training FLOPs
            among those that fit) in ``checkpointing_chosen``.
        optimizer: "adam" (2 state tensors per parameter), "sgd-momentum" (1) or "sgd" (0).
        precision: "fp32", "bf16" or "fp16" (autocast mixed precision).
        device: where the step will run: sets the default headroom, and "cuda" sizes mixed
            precision by CUDA's autocast rules.
        memory_headroom: Bytes of the budget kept free for the CUDA context and the caching
            allocator's fragmentation; default 512 MiB on CUDA, 0 on CPU.

    Returns:
        A DataFrame with PLAN_COLUMNS; ``fits`` is False (and the smallest candidate shown)
        when not even the smallest legal shape or a batch of one fits.

    Raises:
        ConfigError: Illegal config, shape or fixed depth.
        UsageError: Unknown policy, vary or optimizer, malformed budget.
    """
    cfg = _step.config_of(config)
    budget_bytes = parse_bytes(budget, "budget")
    ref = tuple(shape) if shape is not None else (64,) * cfg.dim
    _step.resolve_shape(cfg, ref, batch_size)  # validate
    if fixed_depth is not None:
        if cfg.dim != 3:
            raise UsageError("fixed_depth needs a 3D config (dim=3)")
        ref = (fixed_depth, *ref[1:])
        _step.resolve_shape(cfg, ref, batch_size)
    varies = (vary,) if isinstance(vary, str) else tuple(vary)
    for v in varies:
        if v not in ("shape", "batch"):
            raise UsageError(f"vary must be 'shape' and/or 'batch', got {v!r}")
    if optimizer not in OPT_STATE_FACTOR:
        raise UsageError(f"optimizer must be one of {', '.join(OPT_STATE_FACTOR)}")
    check_precision(precision)
    names = (checkpointing,) if isinstance(checkpointing, str) else tuple(checkpointing)
    for name in names:
        if name != AUTO:
            get_policy(name)
    headroom = (
        default_headroom_bytes(device)
        if memory_headroom is None
        else parse_bytes(memory_headroom, "memory_headroom", allow_zero=True)
    )
    if headroom >= budget_bytes:
        raise UsageError(
            f"the headroom ({headroom} B) leaves nothing of the budget ({budget_bytes} B)"
        )
    usable = budget_bytes - headroom

    estimates: dict[tuple[str, int, tuple[int, ...]], int] = {}
    by_batch: dict[tuple[str, tuple[int, ...]], Callable[[int], int] | None] = {}

    def estimate(name: str, batch: int, spatial: tuple[int, ...], vary_batch: bool) -> int:
        key = (name, batch, spatial)
        if key in estimates:  # the reference shape at the batch size is probed twice
            return estimates[key]
        if vary_batch and batch > 2:
            # Every batch size from the steps at batches 1 and 2: no fake step per candidate.
            if (name, spatial) not in by_batch:
                by_batch[name, spatial] = batch_peak_bytes(cfg, spatial, name, precision, device)
            scaled = by_batch[name, spatial]
            if scaled is not None:
                estimates[key] = scaled(batch)
                return estimates[key]
        estimates[key] = estimate_train_memory(cfg, spatial, batch, name, precision, device)
        return estimates[key]

    def row(v: str, name: str, batch: int, spatial: tuple[int, ...]) -> dict[str, Any]:
        full = (batch, cfg.in_channels, *spatial)
        candidates = policy_names() if name == AUTO else (name,)
        # auto fits where its leanest policy fits; which one it trains with is chosen below
        sized = {n: estimate(n, batch, spatial, v == "batch") for n in candidates}
        chosen = min(candidates, key=lambda n: sized[n])
        step = StepBytes(sized[chosen], *step_extra_bytes(cfg, full, optimizer))
        return {
            "vary": v, "checkpointing": name, "checkpointing_chosen": chosen,
            "precision": precision, "batch_size": batch,
            "input_shape": fmt_shape(spatial), "voxels": batch * math.prod(spatial),
            "fits": step.total <= usable, "est_peak_mem_train_bytes": step.peak,
            "opt_state_bytes": step.opt_state, "batch_bytes": step.batch,
            "total_bytes": step.total, "headroom_bytes": headroom, "budget_bytes": budget_bytes,
        }  # fmt: skip

    rows = []
    for v in varies:
        for name in names:
            found = _plan_one(v, name, cfg, ref, batch_size, fixed_depth, row)
            if name == AUTO and found["fits"]:
                _name_auto_choice(found, cfg, precision, usable, optimizer, device)
            rows.append(found)
    return pd.DataFrame(rows, columns=list(PLAN_COLUMNS))


def _name_auto_choice(
    found: dict[str, Any], cfg: Any, precision: str, usable: int, optimizer: str, device: str
) -> None:
    """At the size ``auto`` reaches, the policy it trains with: fewest FLOPs that fit."""
    spatial = tuple(int(s) for s in found["input_shape"].split("x"))
    full = (found["batch_size"], cfg.in_channels, *spatial)
    choice = choose_policy(cfg, full, precision, usable, optimizer, device=device)
    found["checkpointing_chosen"] = choice.name
    found["est_peak_mem_train_bytes"] = choice.est_peak_bytes[choice.name]
    found["total_bytes"] = choice.total_bytes[choice.name]


def _plan_one(
    v: str,
    name: str,
    cfg: Any,
    ref: tuple[int, ...],
    batch_size: int,
    fixed_depth: int | None,
    row: Callable[[str, str, int, tuple[int, ...]], dict[str, Any]],
) -> dict[str, Any]:
    cache: dict[int, dict[str, Any]] = {}
    if v == "shape":
        cands = _shape_candidates(cfg, ref, fixed_depth)

        def at(i: int) -> dict[str, Any]:
            if i not in cache:
                cache[i] = row(v, name, batch_size, cands[i])
            return cache[i]

        n = len(cands)
        size = [math.prod(c) for c in cands]
        start = cands.index(ref) if ref in cands else 0
        # Activations grow with voxels times batch, so the reference shape at twice the
        # batch stands in for twice the voxels; its estimate is shared with the batch search.
        a, b = at(start), row(v, name, 2 * batch_size, cands[start])
        xa, xb = size[start], 2 * size[start]
    else:
        n = 1 << 20

        def at(i: int) -> dict[str, Any]:
            if i not in cache:
                cache[i] = row(v, name, i + 1, ref)
            return cache[i]

        size = None
        (a, b), (xa, xb) = (at(0), at(1)), (1, 2)
    # A linear fit of total bytes over voxels (or batch) through two probes predicts the answer.
    slope = (b["total_bytes"] - a["total_bytes"]) / max(xb - xa, 1)
    budget = a["budget_bytes"]
    x_fit = xa + (budget - a["total_bytes"]) / slope if slope > 0 else xb
    guess = bisect.bisect_right(size, x_fit) - 1 if size else int(x_fit) - 1
    best = _largest_fitting(n, lambda i: bool(at(i)["fits"]), guess)
    return at(max(best, 0))
