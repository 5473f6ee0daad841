"""Tests of unetbench.train: budgets, determinism, divergence, metrics plumbing, learnability."""

from __future__ import annotations

import gc
import math
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from unetbench import ConfigError, UNet, UNetConfig, UsageError, train
from unetbench.data import SegmentationData, Volume, make_dataset
from unetbench.train import TrainResult, evaluate, soft_dice_loss, train_and_evaluate

TINY_DATA = {"kind": "synthetic", "seed": 1, "shape": [12, 32, 32], "n_train": 1, "n_val": 1}
TINY = UNetConfig(n_blocks=2, start_filts=4)
FAST: dict[str, Any] = {"patch_shape": (8, 16, 16), "batch_size": 2, "steps": 3}


@pytest.fixture(scope="module")
def data() -> SegmentationData:
    return make_dataset(TINY_DATA)


@pytest.fixture(scope="module")
def runs(data: SegmentationData) -> dict[str, TrainResult]:
    """Three short runs shared by several tests (training is the slow part of this module)."""
    return {
        "a": train_and_evaluate(TINY, data, **FAST, seed=4),
        "b": train_and_evaluate(TINY, data, **FAST, seed=4),
        "c": train_and_evaluate(TINY, data, **FAST, seed=5),
    }


def test_result_fields_and_to_dict(runs: dict[str, TrainResult]) -> None:
    r = runs["a"]
    assert r.status == "ok" and r.reason == ""
    assert r.steps_done == 3 and r.train_s > 0
    assert 0.0 <= r.val_iou <= r.val_dice <= 1.0
    assert math.isfinite(r.train_loss) and r.train_loss > 0
    assert set(r.to_dict()) == {
        "val_dice", "val_iou", "train_loss", "steps_done", "train_s", "status", "reason",
    }  # fmt: skip


def test_same_seed_same_result_other_seed_differs(runs: dict[str, TrainResult]) -> None:
    a, b, c = runs["a"], runs["b"], runs["c"]
    assert (a.val_dice, a.val_iou, a.train_loss) == (b.val_dice, b.val_iou, b.train_loss)
    assert c.train_loss != a.train_loss
    assert not torch.are_deterministic_algorithms_enabled()  # global setting restored


def test_checkpointed_training_matches_plain_training(
    runs: dict[str, TrainResult], data: SegmentationData
) -> None:
    # The sweep trains a config that fits its budget only with checkpointing that way; the
    # policy changes memory and time, not the result (same gradients, BN statistics once).
    r = train_and_evaluate(TINY, data, **FAST, seed=4, checkpointing="blocks")
    a = runs["a"]
    assert r.status == "ok" and r.steps_done == a.steps_done
    assert r.train_loss == pytest.approx(a.train_loss, rel=1e-5)
    assert r.val_dice == pytest.approx(a.val_dice, abs=1e-3)
    with pytest.raises(UsageError, match="unknown checkpointing policy 'sometimes'"):
        train_and_evaluate(TINY, data, **FAST, checkpointing="sometimes")


def test_absurd_lr_diverges_with_reason(data: SegmentationData) -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=4, normalization="none")
    r = train_and_evaluate(cfg, data, patch_shape=(8, 16, 16), batch_size=2, steps=50, lr=1e30)
    assert r.status == "diverged"
    assert "loss became" in r.reason and "lr=1e+30" in r.reason
    assert r.steps_done < 50
    assert (r.val_dice, r.val_iou) == (0.0, 0.0)


def test_non_finite_weights_after_last_step_count_as_diverged(
    data: SegmentationData, monkeypatch: pytest.MonkeyPatch
) -> None:
    class PoisonedAdam(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            out = super().step(closure)
            with torch.no_grad():
                next(iter(self.param_groups[0]["params"])).fill_(float("nan"))
            return out

    monkeypatch.setattr(torch.optim, "Adam", PoisonedAdam)
    r = train_and_evaluate(TINY, data, **{**FAST, "steps": 1})
    assert r.status == "diverged" and "weights became non-finite" in r.reason


def test_seconds_budget_stops_first(data: SegmentationData) -> None:
    start = time.perf_counter()
    r = train_and_evaluate(TINY, data, **{**FAST, "steps": 10**6}, seconds=0.5)
    assert r.steps_done < 10**6
    assert 0.5 <= r.train_s < 5.0
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize(
    ("cfg", "patch"),
    [
        (UNetConfig(n_blocks=2, start_filts=4, conv_mode="valid"), (20, 28, 28)),
        (UNetConfig(n_blocks=2, start_filts=4, dim=2), (16, 16)),
        (UNetConfig(n_blocks=2, start_filts=4, dim=2, conv_mode="valid"), (28, 28)),
        (UNetConfig(n_blocks=3, start_filts=4, planar_blocks=(0,)), (4, 16, 16)),
    ],
)
def test_valid_2d_and_planar_configs_train(
    cfg: UNetConfig, patch: tuple[int, ...], data: SegmentationData
) -> None:
    r = train_and_evaluate(cfg, data, patch_shape=patch, batch_size=2, steps=2, dice_loss=True)
    assert r.status == "ok" and r.steps_done == 2
    assert 0.0 <= r.val_dice <= 1.0


@pytest.mark.parametrize(
    ("cfg", "kwargs", "error", "match"),
    [
        (TINY, {"patch_shape": (8, 17, 16)}, ConfigError, "not legal"),
        (TINY, {"patch_shape": (16, 16)}, ConfigError, "patch_shape=.*dim=3"),
        (UNetConfig(n_blocks=2, start_filts=4, in_channels=2), {}, ConfigError, "in_channels=2"),
        (UNetConfig(n_blocks=2, start_filts=4, out_channels=1), {}, ConfigError, "out_channels"),
        (TINY, {"device": "tpu"}, UsageError, "unknown device 'tpu'"),
        (TINY, {"steps": 0}, UsageError, "steps=0"),
        (TINY, {"seconds": -1.0}, UsageError, "seconds=-1"),
    ],
)
def test_bad_arguments(
    cfg: UNetConfig, kwargs: dict, error: type, match: str, data: SegmentationData
) -> None:
    with pytest.raises(error, match=match):
        train_and_evaluate(cfg, data, **{**FAST, **kwargs})


def test_no_model_survives_a_trial(data: SegmentationData) -> None:
    gc.collect()
    before = sum(type(o) is UNet for o in gc.get_objects())
    train_and_evaluate(TINY, data, **{**FAST, "steps": 1})
    gc.collect()
    assert sum(type(o) is UNet for o in gc.get_objects()) == before


# --- the step loop does not wait for the device ---------------------------------------------

# Tensor methods that copy a value to the host, i.e. wait for a GPU to finish its queue.
_HOST_READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__array__")


def _count_host_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Patch the host reads to record those made by unetbench.train itself (not by torch's
    optimizer, which reads its CPU step counters); validation is stubbed out, as it reads
    each predicted tile back by design."""
    calls: list[str] = []

    def counted(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def read(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            if sys._getframe(1).f_code.co_filename == train.__file__:
                calls.append(name)
            return original(self, *args, **kwargs)

        return read

    for name in _HOST_READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: (0.5, 0.5))
    return calls


@pytest.mark.parametrize("steps", [20, 23])
def test_step_loop_reads_the_host_once_per_window(
    data: SegmentationData, monkeypatch: pytest.MonkeyPatch, steps: int
) -> None:
    calls = _count_host_reads(monkeypatch)
    r = train_and_evaluate(TINY, data, **{**FAST, "steps": steps}, dice_loss=True)
    monkeypatch.undo()
    assert r.status == "ok" and r.steps_done == steps and math.isfinite(r.train_loss)
    # One read per window of losses and one for the final weight check.
    assert 1 <= len(calls) <= math.ceil(steps / train._READ_EVERY) + 1 < steps, calls


def test_divergence_found_late_still_names_its_step(
    data: SegmentationData, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loss is read every few steps, so the run goes on past the bad step; the result must
    # still say which step diverged and count only the steps before it.
    class PoisonedAdam(torch.optim.Adam):
        def step(self, closure: Any = None) -> Any:
            out = super().step(closure)
            if self.state[self.param_groups[0]["params"][0]]["step"] == 12:
                with torch.no_grad():
                    for p in self.param_groups[0]["params"]:
                        p.fill_(float("nan"))
            return out

    monkeypatch.setattr(torch.optim, "Adam", PoisonedAdam)
    r = train_and_evaluate(TINY, data, **{**FAST, "steps": 30})
    assert (r.status, r.steps_done) == ("diverged", 12)
    assert r.reason == "loss became nan at step 13 (lr=0.001)"
    assert math.isnan(r.train_loss) and (r.val_dice, r.val_iou) == (0.0, 0.0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_step_loop_does_not_synchronise_cuda(
    data: SegmentationData, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Syncs grow by one per window of steps, not per step (setup and the end cancel out)."""
    monkeypatch.setattr(train, "evaluate", lambda *args, **kwargs: (0.5, 0.5))

    def syncs(steps: int) -> int:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                r = train_and_evaluate(TINY, data, **{**FAST, "steps": steps}, device="cuda")
            finally:
                torch.cuda.set_sync_debug_mode("default")
        assert r.status == "ok" and r.steps_done == steps
        return sum("synchronizing" in str(w.message) for w in caught)

    syncs(10)  # warm-up: first-use allocations
    extra = syncs(30) - syncs(10)
    assert 0 <= extra <= math.ceil(20 / train._READ_EVERY) + 1, extra


# --- metric plumbing with a hand-made "network" ---------------------------------------------


class _Threshold(torch.nn.Module):
    """Predicts class 1 where the input exceeds ``level`` (input = label, so level 0.5 is exact)."""

    def __init__(self, level: float) -> None:
        super().__init__()
        self.level = torch.nn.Parameter(torch.tensor(level))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.level - x, x - self.level], dim=1)


def _label_data(label: np.ndarray) -> SegmentationData:
    vol = Volume.from_arrays(label.astype(np.float32), label, standardize=False)
    return SegmentationData([vol], [vol])


def test_evaluate_matches_hand_counts() -> None:
    label = np.zeros((4, 8, 8), dtype=np.int64)
    label[1:3, 2:6, 2:6] = 1  # 32 foreground voxels
    data = _label_data(label)
    assert evaluate(_Threshold(0.5), data, (4, 4, 4), (4, 4, 4)) == (1.0, 1.0)
    # Predicting everything as foreground: tp=32, fp=256-32=224, fn=0.
    dice, iou = evaluate(_Threshold(-1.0), data, (2, 4, 4), (2, 4, 4))
    assert dice == pytest.approx(64 / (64 + 224))
    assert iou == pytest.approx(32 / 256)
    dice2d, _ = evaluate(_Threshold(0.5), data, (4, 4), (4, 4))
    assert dice2d == 1.0


def test_soft_dice_loss_hand_values() -> None:
    target = torch.tensor([[[1, 0], [0, 0]]])  # (B=1, 2, 2), one foreground pixel
    perfect = torch.stack([1 - target, target], dim=1).float() * 100
    assert soft_dice_loss(perfect, target, eps=0.0).item() == pytest.approx(0.0, abs=1e-6)
    wrong = torch.stack([target, 1 - target], dim=1).float() * 100  # fg predicted on 3 pixels
    # inter = 0, sum(p) = 3, sum(t) = 1 -> dice 0 -> loss 1
    assert soft_dice_loss(wrong, target, eps=0.0).item() == pytest.approx(1.0, abs=1e-6)


# --- the learnability claim of the quick study ------------------------------------------------

# The settings recommended for studies/quick.toml. On an idle 2-core CPU, 100 steps take about
# 15-20 s (start_filts=8) to 25-30 s (start_filts=16); on a loaded machine much longer, so the
# test budgets steps, not seconds, and reports the time it took.
QUICK_DATA = {"kind": "synthetic", "seed": 0, "shape": [48, 128, 128], "noise": 0.4}
QUICK_TRAIN: dict[str, Any] = {"patch_shape": (16, 48, 48), "batch_size": 2, "lr": 3e-3}


@pytest.mark.slow
@pytest.mark.parametrize("start_filts", [8, 16])
def test_quick_study_default_unet_reaches_dice_085(start_filts: int) -> None:
    """The quick study's default U-Net must learn the synthetic task within its step budget."""
    cfg = UNetConfig(n_blocks=3, start_filts=start_filts)
    r = train_and_evaluate(cfg, make_dataset(QUICK_DATA), **QUICK_TRAIN, steps=100)
    assert r.status == "ok" and r.steps_done == 100
    assert r.val_dice >= 0.85, f"{r} (train_s={r.train_s:.1f})"
