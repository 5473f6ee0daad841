"""The device checks of gpu_check.py beyond the estimate table (issue: exact on the GPU).

* :func:`gap_allocations`: the allocator's own record of one training step
  (``torch.cuda.memory._record_memory_history``, the live blocks at the step's peak) set
  against the live storages at the peak of the fake step, so the blocks the estimate misses
  are named with the Python frames that allocated them.
* :func:`planned_patches_train`: the largest patch ``plan`` returns for a budget trains three
  steps under ``torch.cuda.set_per_process_memory_fraction(budget)`` without running out.
* :func:`step_times`: step time of every policy, median of alternating rounds with spread.

Each returns text lines for the report and whether it passed. On the CPU (``--quick``) the
allocator history is skipped; the other two run, so their logic is tested without a GPU.
"""

from __future__ import annotations

import functools
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from unetbench.profiler import _step
from unetbench.profiler._live import LivePeak

#: Policies whose CUDA peak the H100 run found above the estimate.
GAP_POLICIES = ("lean", "cheap", "top_units")
_BLOCK = 512  # the caching allocator rounds every block up to this many bytes


class _PeakSet(LivePeak):
    """LivePeak that also keeps, at the peak, each live storage's bytes and the op that made
    it."""

    def __init__(self) -> None:
        super().__init__()
        self._op = ""
        self._alive: dict[int, tuple[int, str]] = {}
        self.at_peak: list[tuple[int, str]] = []

    def track(self, t: torch.Tensor) -> None:
        st = t.untyped_storage()
        known = st in self._sizes
        super().track(t)
        if not known:
            self._alive[id(st)] = (int(st.nbytes()), self._op)
            if self.live == self.peak:
                self.at_peak = list(self._alive.values())

    def reset_alive(self) -> None:
        self._alive.clear()
        self.at_peak = []

    def _free(self, nbytes: int, key: int, _ref: object = None) -> None:
        super()._free(nbytes, key, _ref)
        self._alive.pop(key, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self._op = str(func)
        return super().__torch_dispatch__(func, types, args, kwargs)


def fake_peak_storages(
    cfg: Any, full: tuple[int, ...], policy: str, precision: str, cuda: bool
) -> list[tuple[int, str]]:
    """``(bytes, op)`` of the storages made during a fake training step that are alive at
    its peak (the model's parameters, made before, are left out as on the device)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    from unetbench.model import get_policy
    from unetbench.model.training import deterministic_training
    from unetbench.precision import cuda_rules_on_cpu

    with FakeTensorMode():
        model = _step.build_model(cfg)
        model.train()
        x, target = _step.make_batch(cfg, full)
        tracker = _PeakSet()
        tracker.track_module(model)  # counted, so a view of a weight is not a new storage,
        tracker.reset_alive()  # but not listed: on the device they predate the step too
        rules = cuda_rules_on_cpu() if cuda else _null()
        with deterministic_training(), rules, tracker:
            _step.train_step(model, get_policy(policy), x, target, precision=precision)
    return tracker.at_peak


class _null:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def unmatched(
    device_blocks: Iterable[tuple[int, str]], fake: Iterable[tuple[int, str]]
) -> list[tuple[int, str]]:
    """Device blocks alive at the peak that no fake storage of the same rounded size
    accounts for, largest first: what the estimate misses."""
    sizes = Counter(-(-n // _BLOCK) * _BLOCK for n, _ in fake)
    missed = []
    for n, where in sorted(device_blocks, key=lambda b: -b[0]):
        size = -(-n // _BLOCK) * _BLOCK
        if sizes[size] > 0:
            sizes[size] -= 1
        else:
            missed.append((n, where))
    return missed


def device_peak_blocks(step: Callable[[], None], device: torch.device) -> list[tuple[int, str]]:
    """``(bytes, frames)`` of the blocks allocated during ``step`` and alive at its peak, from
    the allocator's history."""
    torch.cuda.synchronize(device)
    torch.cuda.memory._record_memory_history(max_entries=500_000, stacks="python")
    try:
        step()
        torch.cuda.synchronize(device)
        snap = torch.cuda.memory._snapshot()
    finally:
        torch.cuda.memory._record_memory_history(enabled=None)
    events = snap["device_traces"][device.index or 0]
    alive: dict[int, tuple[int, str]] = {}
    live = peak = 0
    at_peak: list[tuple[int, str]] = []
    for ev in events:
        if ev["action"] == "alloc":
            frames = [f for f in ev.get("frames", []) if f["filename"].endswith(".py")]
            where = " < ".join(
                f"{Path(f['filename']).name}:{f['line']} {f['name']}" for f in frames[:3]
            )
            alive[ev["addr"]] = (ev["size"], where)
            live += ev["size"]
            if live > peak:
                peak, at_peak = live, list(alive.values())
        elif ev["action"] in ("free_requested", "free") and ev["addr"] in alive:
            live -= alive.pop(ev["addr"])[0]
    return at_peak


def gap_allocations(
    configs: dict[str, Any], shape_of: Callable[[Any], tuple[int, ...]], device: torch.device,
    out: Path,
) -> list[str]:  # fmt: skip
    """For each gap policy and config: the blocks alive at the CUDA peak that the fake step
    does not have, written to ``out`` and summarised in the returned lines."""
    from unetbench.model import get_policy

    lines, report = [], ["# blocks alive at the CUDA peak that the fake step lacks", ""]
    for name, cfg in configs.items():
        full = _step.resolve_shape(cfg, shape_of(cfg), 1)
        model = _step.build_model(cfg, device)
        x, target = _step.make_batch(cfg, full, device)
        for policy in GAP_POLICIES:
            for precision in ("fp32", "bf16"):
                step = functools.partial(
                    _step.train_step, model, get_policy(policy), x, target, precision=precision
                )
                step()  # warm-up: cuDNN's algorithm search is not the step's memory
                blocks = device_peak_blocks(step, device)
                fake = fake_peak_storages(cfg, full, policy, precision, cuda=True)
                missed = unmatched(blocks, fake)
                mib = sum(n for n, _ in missed) / 2**20
                head = (f"{name} {precision} {policy}: {len(missed)} device block(s) "
                        f"({mib:.1f} MiB) not in the fake step")  # fmt: skip
                lines.append("  " + head)
                report.append(head)
                report.extend(f"    {n / 2**20:9.2f} MiB  {where}" for n, where in missed[:12])
        del model, x, target, step
        torch.cuda.empty_cache()
    out.write_text("\n".join(report) + "\n")
    return lines


def planned_patches_train(
    cfg: Any, budget: str, device: torch.device, policies: tuple[str, ...]
) -> tuple[list[str], bool]:
    """The largest patch ``plan`` returns for ``budget`` (CUDA plan, the device's memory
    capped at the budget) trains three Adam steps per policy without running out of memory."""
    from unetbench.model import get_policy
    from unetbench.oom import is_oom
    from unetbench.profiler import plan
    from unetbench.units import parse_bytes

    frame = plan(cfg, budget, vary="shape", checkpointing=policies, device=device.type,
                 precision=("fp32", "bf16"))  # fmt: skip
    cap = parse_bytes(budget)
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        torch.cuda.set_per_process_memory_fraction(min(1.0, cap / total), device)
    lines, ok = [], True
    try:
        for row in frame.itertuples():
            spatial = tuple(int(s) for s in row.input_shape.split("x"))
            full = (row.batch_size, cfg.in_channels, *spatial)
            status = "ok"
            model = opt = x = target = None
            try:
                model = _step.build_model(cfg, device)
                opt = torch.optim.Adam(model.parameters())
                x, target = _step.make_batch(cfg, full, device)
                policy = get_policy(row.checkpointing_chosen)
                for _ in range(3):
                    _step.train_step(model, policy, x, target, opt, row.precision)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
            except Exception as exc:  # an OOM fails the check; anything else too
                status = "OOM" if is_oom(exc) else f"error {type(exc).__name__}"
                ok = False
            finally:
                del model, opt, x, target
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            lines.append(
                f"  {budget} {row.precision} {row.checkpointing_chosen}: {row.input_shape} "
                f"(planned total {row.total_bytes / 2**30:.2f} GiB): 3 steps {status}"
            )
    finally:
        if device.type == "cuda":
            torch.cuda.set_per_process_memory_fraction(1.0, device)
    return lines, ok


def step_times(
    cfg: Any, shape: tuple[int, ...], device: torch.device, policies: tuple[str, ...],
    rounds: int = 8, precision: str = "fp32",
) -> list[str]:  # fmt: skip
    """Median step time of each policy over ``rounds`` alternating rounds (one step of every
    policy per round, so drifts hit all alike), with the spread, as ratios to the first."""
    from unetbench.model import get_policy

    model = _step.build_model(cfg, device)
    opt = torch.optim.Adam(model.parameters())
    x, target = _step.make_batch(cfg, _step.resolve_shape(cfg, shape, 1), device)
    times: dict[str, list[float]] = {p: [] for p in policies}

    def once(p: str) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        _step.train_step(model, get_policy(p), x, target, opt, precision)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - t0

    for p in policies:  # warm-up
        once(p)
    for r in range(rounds):
        order = policies if r % 2 == 0 else tuple(reversed(policies))
        for p in order:
            times[p].append(once(p))
    base = statistics.median(times[policies[0]])
    lines = []
    for p in policies:
        med = statistics.median(times[p])
        ratios = sorted(t / base for t in times[p])
        lines.append(
            f"  {precision} {p}: median {med * 1e3:.1f} ms, x{med / base:.3f} of "
            f"{policies[0]} (rounds x{ratios[0]:.3f}..x{ratios[-1]:.3f})"
        )
    return lines


__all__ = [
    "GAP_POLICIES",
    "device_peak_blocks",
    "fake_peak_storages",
    "gap_allocations",
    "planned_patches_train",
    "step_times",
    "unmatched",
]
