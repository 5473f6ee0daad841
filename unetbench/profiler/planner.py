"""``plan``: the largest patch shape or batch size whose training step fits a memory budget.

Every candidate is sized with the fake-tensor estimate (nothing is allocated), so a 40 GiB GPU
can be planned on a laptop. A step fits when its estimated peak (parameters, gradients,
activations) plus the optimizer state and the input batch stays within the budget.
In 'same' mode one fake step per (policy, precision, memory format) gives the exact estimate
at every batch and shape (:func:`~unetbench.profiler.memory.scaled_peak_bytes`), so a plan
for several budgets, policies and precisions costs a handful of fake steps; in 'valid' mode
each candidate is traced, and a linear fit of two estimates predicts the answer.

On CUDA, ``lean``, ``cheap`` and ``top_units`` allocate more than the fake step shows (the
device check measured up to 11.5%, 22.8% and 34.1% over, docs/benchmarks.md): until that gap
is modelled, a CUDA plan for them keeps :data:`CUDA_GAP_MARGIN` of the estimate free
(``gap_margin_bytes``) and says so in ``note``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterable
from typing import Any

import pandas as pd

from unetbench._errors import UsageError
from unetbench.device_names import device_type
from unetbench.model.policies import get_policy, policy_names
from unetbench.model.training import parse_memory_formats
from unetbench.precision import parse_precisions
from unetbench.profiler import _step
from unetbench.profiler.auto import AUTO
from unetbench.profiler.memory import (
    OPT_STATE_FACTOR,
    StepBytes,
    _legal_sizes,
    batch_peak_bytes,
    default_headroom_bytes,
    estimate_train_memory,
    scaled_peak_bytes,
    step_extra_bytes,
)
from unetbench.shapes import fmt_shape
from unetbench.units import parse_bytes

__all__ = ["CUDA_GAP_MARGIN", "PLAN_COLUMNS", "gap_note", "plan"]

PLAN_COLUMNS = (
    "vary", "checkpointing", "checkpointing_chosen", "precision", "memory_format", "dice_loss",
    "batch_size", "input_shape", "voxels", "fits", "est_peak_mem_train_bytes",
    "gap_margin_bytes", "opt_state_bytes", "batch_bytes", "total_bytes", "headroom_bytes",
    "budget_bytes", "note",
)  # fmt: skip

#: Fraction of the estimated peak a CUDA plan keeps free for a policy whose allocated peak
#: the device check found above the estimate: the largest excess measured over its rows
#: (five configs x fp32/bf16, docs/benchmarks.md), rounded up to the next percent.
CUDA_GAP_MARGIN = {"lean": 0.12, "cheap": 0.23, "top_units": 0.35}

_MAX_AXIS = 8192


def gap_margin_bytes(policy: str, est_peak: int, device: str) -> int:
    """Bytes a plan keeps free beside ``est_peak`` for ``policy``'s known CUDA gap."""
    if device_type(device) != "cuda" or policy not in CUDA_GAP_MARGIN:
        return 0
    return math.ceil(est_peak * CUDA_GAP_MARGIN[policy])


def gap_note(policy: str) -> str:
    """The one line a CUDA plan with ``policy`` carries about its known gap."""
    return (
        f"{policy}: CUDA allocates up to {CUDA_GAP_MARGIN[policy]:.0%} more than the estimate "
        f"(measured); that margin of the estimate is kept free"
    )


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
    legal = [_legal_sizes(cfg, a) for a in axes]
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
    budget: int | str | Iterable[int | str],
    shape: tuple[int, ...] | list[int] | None = None,
    *,
    batch_size: int = 1,
    fixed_depth: int | None = None,
    vary: str | Iterable[str] = ("shape", "batch"),
    checkpointing: str | Iterable[str] = ("none", "blocks"),
    optimizer: str = "adam",
    precision: str | Iterable[str] = "fp32",
    device: str = "cpu",
    memory_headroom: int | str | None = None,
    memory_format: str | Iterable[str] = "contiguous",
    dice_loss: bool = False,
) -> pd.DataFrame:
    """Find what fits ``budget``: one row per (budget, precision, memory format, vary,
    checkpointing) with the answer.

    Args:
        config: A UNetConfig or a unetbench UNet.
        budget: Bytes, or a size string such as "11GiB"; or several (one set of rows each).
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
        precision: "fp32", "bf16" or "fp16" (autocast mixed precision), or several.
        device: where the step will run: sets the default headroom, and "cuda" sizes mixed
            precision by CUDA's autocast rules and keeps :data:`CUDA_GAP_MARGIN` free for
            the policies with a known CUDA gap.
        memory_headroom: Bytes of the budget kept free for the CUDA context and the caching
            allocator's fragmentation; default 512 MiB on CUDA, 0 on CPU.
        memory_format: "contiguous" and/or "channels_last" (weights and input layout).
        dice_loss: The training step adds the soft Dice loss (as training with it does).

    Returns:
        A DataFrame with PLAN_COLUMNS; ``fits`` is False (and the smallest candidate shown)
        when not even the smallest legal shape or a batch of one fits.

    Raises:
        ConfigError: Illegal config, shape or fixed depth.
        UsageError: Unknown policy, vary, optimizer, precision or memory format, malformed
            budget.
    """
    cfg = _step.config_of(config)
    budgets = (
        [budget] if isinstance(budget, (int, str)) else list(budget)
    )  # a str is iterable, so it is taken first
    budgets_bytes = [parse_bytes(b, "budget") for b in budgets]
    if not budgets_bytes:
        raise UsageError("no budget given; pass a size such as 11GiB")
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
    precisions = parse_precisions(precision)
    formats = parse_memory_formats(memory_format)
    names = (checkpointing,) if isinstance(checkpointing, str) else tuple(checkpointing)
    for name in names:
        if name != AUTO:
            get_policy(name)
    headroom = (
        default_headroom_bytes(device)
        if memory_headroom is None
        else parse_bytes(memory_headroom, "memory_headroom", allow_zero=True)
    )
    for budget_bytes in budgets_bytes:
        if headroom >= budget_bytes:
            raise UsageError(
                f"the headroom ({headroom} B) leaves nothing of the budget ({budget_bytes} B)"
            )
    rows = []
    for budget_bytes in budgets_bytes:
        for prec in precisions:
            for fmt in formats:
                step = _Sizer(cfg, ref, prec, fmt, device, optimizer, bool(dice_loss))
                for v in varies:
                    for name in names:
                        rows.append(
                            _plan_row(step, v, name, ref, batch_size, fixed_depth,
                                      budget_bytes, headroom)
                        )  # fmt: skip
    return pd.DataFrame(rows, columns=list(PLAN_COLUMNS))


class _Sizer:
    """Step bytes of one (config, precision, memory format, loss) at any batch and shape:
    from :func:`scaled_peak_bytes` where it applies, else one fake step per size."""

    def __init__(
        self,
        cfg: Any,
        ref: tuple[int, ...],
        precision: str,
        memory_format: str,
        device: str,
        optimizer: str,
        dice_loss: bool,
    ) -> None:
        self.cfg, self.ref, self.precision, self.memory_format = cfg, ref, precision, memory_format
        self.device, self.optimizer, self.dice_loss = device, optimizer, dice_loss
        self._scaled: dict[str, Callable[[int, tuple[int, ...]], int] | None] = {}
        self._by_batch: dict[tuple[str, tuple[int, ...]], Callable[[int], int] | None] = {}
        self._cache: dict[tuple[str, int, tuple[int, ...]], int] = {}

    def _options(self) -> dict[str, Any]:
        return {"dice_loss": self.dice_loss, "memory_format": self.memory_format}

    def peak(self, name: str, batch: int, spatial: tuple[int, ...]) -> int:
        key = (name, batch, spatial)
        if key in self._cache:
            return self._cache[key]
        if name not in self._scaled:
            self._scaled[name] = scaled_peak_bytes(
                self.cfg, self.ref, name, self.precision, self.device, **self._options()
            )
        scaled = self._scaled[name]
        if scaled is not None:
            value = scaled(batch, spatial)
        elif batch > 2:
            # Every batch size from the steps at batches 1 and 2 of this shape.
            if (name, spatial) not in self._by_batch:
                self._by_batch[name, spatial] = batch_peak_bytes(
                    self.cfg, spatial, name, self.precision, self.device, **self._options()
                )
            by_batch = self._by_batch[name, spatial]
            value = by_batch(batch) if by_batch is not None else self._traced(name, batch, spatial)
        else:
            value = self._traced(name, batch, spatial)
        self._cache[key] = value
        return value

    def _traced(self, name: str, batch: int, spatial: tuple[int, ...]) -> int:
        return estimate_train_memory(
            self.cfg, spatial, batch, name, self.precision, self.device, **self._options()
        )

    def row(
        self,
        v: str,
        name: str,
        batch: int,
        spatial: tuple[int, ...],
        budget_bytes: int,
        headroom: int,
    ) -> dict[str, Any]:
        full = (batch, self.cfg.in_channels, *spatial)
        candidates = policy_names() if name == AUTO else (name,)
        # auto fits where its leanest policy (margin included) fits; which one it trains
        # with is chosen once the size is known (_name_auto_choice)
        sized = {n: self.peak(n, batch, spatial) for n in candidates}
        margin = {n: gap_margin_bytes(n, sized[n], self.device) for n in candidates}
        chosen = min(candidates, key=lambda n: sized[n] + margin[n])
        step = StepBytes(sized[chosen], *step_extra_bytes(self.cfg, full, self.optimizer))
        total = step.total + margin[chosen]
        return {
            "vary": v, "checkpointing": name, "checkpointing_chosen": chosen,
            "precision": self.precision, "memory_format": self.memory_format,
            "dice_loss": self.dice_loss, "batch_size": batch,
            "input_shape": fmt_shape(spatial), "voxels": batch * math.prod(spatial),
            "fits": total <= budget_bytes - headroom, "est_peak_mem_train_bytes": step.peak,
            "gap_margin_bytes": margin[chosen], "opt_state_bytes": step.opt_state,
            "batch_bytes": step.batch, "total_bytes": total, "headroom_bytes": headroom,
            "budget_bytes": budget_bytes, "note": gap_note(chosen) if margin[chosen] else "",
        }  # fmt: skip


def _plan_row(
    sizer: _Sizer,
    v: str,
    name: str,
    ref: tuple[int, ...],
    batch_size: int,
    fixed_depth: int | None,
    budget_bytes: int,
    headroom: int,
) -> dict[str, Any]:
    def row(v: str, name: str, batch: int, spatial: tuple[int, ...]) -> dict[str, Any]:
        return sizer.row(v, name, batch, spatial, budget_bytes, headroom)

    found = _plan_one(v, name, sizer.cfg, ref, batch_size, fixed_depth, row)
    if name == AUTO and found["fits"]:
        _name_auto_choice(found, sizer, budget_bytes - headroom)
    return found


def _name_auto_choice(found: dict[str, Any], sizer: _Sizer, usable: int) -> None:
    """At the size ``auto`` reaches, the policy it trains with: as
    :func:`~unetbench.profiler.auto.choose_policy`, the fewest training FLOPs among those
    that fit (with their CUDA gap margins), ties broken by memory."""
    from unetbench.profiler import flops

    spatial = tuple(int(s) for s in found["input_shape"].split("x"))
    cfg, names = sizer.cfg, policy_names()
    full = (found["batch_size"], cfg.in_channels, *spatial)
    extra = sum(step_extra_bytes(cfg, full, sizer.optimizer))
    peaks = {n: sizer.peak(n, full[0], spatial) for n in names}
    margins = {n: gap_margin_bytes(n, peaks[n], sizer.device) for n in names}
    fitting = [n for n in names if peaks[n] + margins[n] + extra <= usable]
    counted = {n: flops.count_torch_flops(cfg, full, 1, n)[1] for n in fitting}
    name = min(fitting, key=lambda n: (counted[n], peaks[n], names.index(n)))
    found["checkpointing_chosen"] = name
    found["est_peak_mem_train_bytes"] = peaks[name]
    found["gap_margin_bytes"] = margins[name]
    found["total_bytes"] = peaks[name] + extra + margins[name]
    found["note"] = gap_note(name) if margins[name] else ""


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
