"""What a trial measures: the memory estimate, training and the profile of one config.

:class:`TorchEvaluator` calls unetbench's profiler and trainer. A sweep takes any object with
the same five methods (see :class:`Evaluator`), so tests of the Optuna mechanics (kill and
resume, workers, duplicates) can pass a cheap deterministic one instead.
"""

from __future__ import annotations

import gc
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from unetbench._errors import ConfigError, UnetbenchError

if TYPE_CHECKING:
    from unetbench.config import UNetConfig
    from unetbench.sweep.spec import StudySpec

__all__ = ["Evaluator", "TorchEvaluator", "check_evaluator", "free_memory"]


class Evaluator(Protocol):
    """The measurements behind one trial. Instances must pickle (worker processes get a copy)."""

    def load_data(self, spec: StudySpec) -> Any:
        """Build the study's data set once per worker process.

        Raises ConfigError (or UsageError) for data the study cannot train on; a sweep calls
        it once before it stores anything.
        """

    def estimate_memory(
        self, spec: StudySpec, config: UNetConfig, checkpointing: str
    ) -> dict[str, int]:
        """A training step's memory, estimated without allocating (should take < 1 s).

        Keys: ``est_peak_mem_train_bytes`` (the profiler's estimate: parameters, gradients,
        activations) and ``est_total_train_bytes`` (plus optimizer state and the batch), which
        is what the study's memory budget is compared with, as ``unetbench plan`` does.
        """

    def train(
        self,
        spec: StudySpec,
        config: UNetConfig,
        data: Any,
        checkpointing: str,
        *,
        seed: int,
        resume: bytes | None = None,
        keep_state: bool = False,
    ) -> dict[str, Any]:
        """Train ``spec.steps`` steps (``spec.seconds`` as a guard) with the trial's
        checkpointing mode; ``seed`` fixes the initial weights and the patches.

        ``resume`` is a state an earlier run of the same config and seed kept (fewer steps):
        the run continues from it. ``keep_state`` asks for the run's own state.

        Returns ``TrainResult.to_dict()`` keys (val_dice, steps_done, status...), and
        ``state`` (bytes) when ``keep_state`` and the run did not diverge.
        """

    def profile(self, spec: StudySpec, config: UNetConfig) -> list[dict[str, Any]]:
        """One profiler record per checkpointing mode in ``spec.checkpointing``."""

    def choose_checkpointing(
        self, spec: StudySpec, config: UNetConfig, budget_bytes: int | None
    ) -> tuple[str, dict[str, int]]:
        """For ``[profile] checkpointing = "auto"``: the policy to train with and its
        :meth:`estimate_memory` keys (see :func:`unetbench.profiler.auto.choose_policy`)."""


class TorchEvaluator:
    """The real measurements: ``unetbench.data``, ``unetbench.train``, ``unetbench.profiler``."""

    def load_data(self, spec: StudySpec) -> Any:
        from unetbench.data import make_dataset
        from unetbench.sweep.datacheck import check_data

        root = Path(spec.source).parent if spec.source.endswith(".toml") else None
        try:
            data = make_dataset(spec.data, root=root)
            check_data(spec, data)
        except (UnetbenchError, OSError) as exc:  # OSError: a file h5py or numpy cannot read
            raise ConfigError(f"{spec.source}: {exc}") from None
        return data

    def estimate_memory(
        self, spec: StudySpec, config: UNetConfig, checkpointing: str
    ) -> dict[str, int]:
        from unetbench.profiler.memory import estimate_step_bytes

        full = (spec.batch_size, config.in_channels, *spec.patch_shape)
        step = estimate_step_bytes(
            config,
            full,
            checkpointing,
            spec.precision,
            spec.device,
            dice_loss=spec.dice_loss,
            memory_format=spec.memory_format,
        )
        return {"est_peak_mem_train_bytes": step.peak, "est_total_train_bytes": step.total}

    def choose_checkpointing(
        self, spec: StudySpec, config: UNetConfig, budget_bytes: int | None
    ) -> tuple[str, dict[str, int]]:
        from unetbench.profiler.auto import choose_policy

        full = (spec.batch_size, config.in_channels, *spec.patch_shape)
        choice = choose_policy(
            config,
            full,
            spec.precision,
            budget_bytes,
            device=spec.device,
            dice_loss=spec.dice_loss,
            memory_format=spec.memory_format,
        )
        return choice.name, {
            "est_peak_mem_train_bytes": choice.est_peak_bytes[choice.name],
            "est_total_train_bytes": choice.total_bytes[choice.name],
        }

    def train(
        self,
        spec: StudySpec,
        config: UNetConfig,
        data: Any,
        checkpointing: str,
        *,
        seed: int,
        resume: bytes | None = None,
        keep_state: bool = False,
    ) -> dict[str, Any]:
        from unetbench.train import TrainState, train_and_evaluate

        result = train_and_evaluate(
            config,
            data,
            patch_shape=spec.patch_shape,
            batch_size=spec.batch_size,
            steps=spec.steps,
            seconds=spec.seconds,
            lr=spec.lr,
            dice_loss=spec.dice_loss,
            seed=seed,
            device=spec.device,
            checkpointing=checkpointing,
            precision=spec.precision,
            memory_format=spec.memory_format,
            resume=None if resume is None else TrainState.from_bytes(resume),
            keep_state=keep_state,
        )
        out = dict(result.to_dict())
        if result.state is not None:
            out["state"] = result.state.to_bytes()
        return out

    def profile(self, spec: StudySpec, config: UNetConfig) -> list[dict[str, Any]]:
        from unetbench.profiler import profile

        frame = profile(
            config,
            spec.patch_shape,
            spec.batch_size,
            checkpointing=spec.checkpointing,
            device=spec.device,
            precision=spec.precision,
            dice_loss=spec.dice_loss,
            memory_format=spec.memory_format,
            **spec.profile_options,
        )
        return [{str(k): v for k, v in r.items()} for r in frame.to_dict(orient="records")]


def check_evaluator(evaluator: object) -> None:
    """Refuse an object that lacks one of :class:`Evaluator`'s methods (e.g. one written for
    an older unetbench), before a sweep stores anything."""
    missing = [
        name
        for name in ("load_data", "estimate_memory", "train", "profile", "choose_checkpointing")
        if not callable(getattr(evaluator, name, None))
    ]
    if missing:
        raise TypeError(
            f"{type(evaluator).__name__} is not an Evaluator: it lacks {', '.join(missing)} "
            "(see unetbench.sweep.evaluator.Evaluator)"
        )


def free_memory(device: Any = None) -> None:
    """Release what one trial allocated, so the next starts from the same baseline.

    On CUDA this waits for, empties the cache of and resets the peak statistics of
    ``device`` only (default: the current device, which a worker sets to its own with
    :func:`unetbench.devices.make_current`), never another worker's GPU.
    """
    gc.collect()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    if not torch.cuda.is_available():
        return
    from unetbench.devices import empty_cache

    dev = torch.device("cuda", torch.cuda.current_device()) if device is None else device
    dev = torch.device(dev)
    if dev.type != "cuda":
        return
    torch.cuda.synchronize(dev)
    empty_cache(dev)
    torch.cuda.reset_peak_memory_stats(dev)


def finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
