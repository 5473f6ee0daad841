"""A run continued from its TrainState is the run trained straight through (exactly on CPU)."""

from __future__ import annotations

import pytest

from unetbench import UsageError
from unetbench.config import UNetConfig
from unetbench.data import make_dataset
from unetbench.train import TrainState, train_and_evaluate

DATA = {"kind": "synthetic", "seed": 0, "shape": [16, 48, 48], "noise": 0.4, "n_train": 1,
        "n_val": 1}  # fmt: skip
KW = {"patch_shape": (8, 32, 32), "batch_size": 1, "lr": 3e-3, "seed": 1000}


def test_continued_run_equals_straight_run() -> None:
    data = make_dataset(DATA)
    cfg = UNetConfig(n_blocks=2, start_filts=4)
    straight = train_and_evaluate(cfg, data, steps=16, **KW)  # type: ignore[arg-type]
    first = train_and_evaluate(cfg, data, steps=6, keep_state=True, **KW)  # type: ignore[arg-type]
    assert first.state is not None and first.state.steps_done == 6
    state = TrainState.from_bytes(first.state.to_bytes())  # as stored and read back
    second = train_and_evaluate(cfg, data, steps=16, resume=state, **KW)  # type: ignore[arg-type]
    assert second.to_dict() | {"train_s": 0} == straight.to_dict() | {"train_s": 0}
    assert second.steps_done == 16 and "state" not in second.to_dict()


def test_a_state_of_another_seed_or_a_later_step_is_refused() -> None:
    data = make_dataset(DATA)
    cfg = UNetConfig(n_blocks=2, start_filts=4)
    state = train_and_evaluate(cfg, data, steps=2, keep_state=True, **KW).state  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="seed must match and the steps grow"):
        train_and_evaluate(cfg, data, steps=2, resume=state, **KW)  # type: ignore[arg-type]
    with pytest.raises(UsageError, match="seed must match"):
        train_and_evaluate(cfg, data, steps=4, resume=state, **{**KW, "seed": 1})  # type: ignore[arg-type]
