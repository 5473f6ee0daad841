"""Checkpointing policies compute what the plain forward computes, and the registry."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch

from unetbench import UNet, UsageError
from unetbench.model import (
    CheckpointPolicy,
    get_policy,
    policy_names,
    register_policy,
    unregister_policy,
)
from unetbench.profiler import _step

pytestmark = pytest.mark.usefixtures("one_thread")


CASES: list[tuple[dict[str, Any], tuple[int, ...]]] = [
    (dict(n_blocks=1, start_filts=4), (2, 1, 8, 8, 8)),
    (dict(n_blocks=3, start_filts=4), (2, 1, 8, 16, 16)),
    (dict(n_blocks=2, start_filts=4, planar_blocks=(0,), attention=True), (2, 1, 4, 8, 8)),
    (dict(n_blocks=2, start_filts=4, merge_mode="add"), (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, up_mode="resizeconv_nearest"), (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, conv_mode="valid"), (2, 1, 20, 20, 20)),
    (dict(n_blocks=3, start_filts=4, dim=2, normalization="instance"), (2, 1, 16, 16)),
    # In-place activations of `lean`: LeakyReLU, on a bare convolution output (no norm),
    # identity, and activations it leaves out of place (PReLU, SiLU, RReLU with its random slopes).
    (dict(n_blocks=2, start_filts=4, activation="leaky", normalization="none"), (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, activation="lin", full_norm=False), (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, activation="prelu", attention=True), (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, activation="silu", up_mode="resizeconv_linear1"),
     (2, 1, 8, 8, 8)),
    (dict(n_blocks=2, start_filts=4, activation="rrelu", normalization="group2"), (2, 1, 8, 8, 8)),
]  # fmt: skip


def _step_result(model: UNet, name: str, x: torch.Tensor) -> tuple[torch.Tensor, dict, dict]:
    torch.manual_seed(1)  # the same random RReLU slopes in both forwards
    out = get_policy(name).forward(model, x)
    out.square().mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.detach(), grads, copy.deepcopy(model.state_dict())


@pytest.mark.parametrize("name", ["blocks", "top_units", "lean", "cheap"])
@pytest.mark.parametrize(("kwargs", "shape"), CASES)
def test_policy_matches_plain_forward(kwargs: dict[str, Any], shape: tuple, name: str) -> None:
    torch.manual_seed(0)
    plain_model = UNet(**kwargs)
    policy_model = copy.deepcopy(plain_model)
    x = torch.randn(shape)
    out, grads, state = _step_result(plain_model, "none", x)
    out_p, grads_p, state_p = _step_result(policy_model, name, x)
    torch.testing.assert_close(out_p, out, rtol=1e-5, atol=1e-6)
    assert grads_p.keys() == grads.keys() == {n for n, _ in plain_model.named_parameters()}
    for key in grads:
        torch.testing.assert_close(grads_p[key], grads[key], rtol=1e-4, atol=1e-6)
    for key in state:  # BatchNorm statistics moved exactly once
        torch.testing.assert_close(state_p[key], state[key], rtol=1e-5, atol=1e-6)


def test_builtin_policies_are_registered() -> None:
    assert policy_names()[:5] == ("none", "blocks", "top_units", "lean", "cheap")


def test_unknown_policy_names_the_known_ones() -> None:
    with pytest.raises(UsageError, match=r"unknown checkpointing policy 'everything'.*blocks"):
        get_policy("everything")


def test_a_registered_policy_is_profiled_like_the_builtins() -> None:
    from unetbench.profiler import estimate_train_memory

    register_policy(CheckpointPolicy("test_plain", "same as none", lambda m, x: m(x)))
    try:
        cfg = _step.config_of(UNet(n_blocks=2, start_filts=4))
        assert estimate_train_memory(cfg, (8, 8, 8), checkpointing="test_plain") == (
            estimate_train_memory(cfg, (8, 8, 8), checkpointing="none")
        )
    finally:
        unregister_policy("test_plain")
    assert "test_plain" not in policy_names()


def test_a_policy_refuses_a_model_that_is_not_a_unet() -> None:
    with pytest.raises(TypeError, match="run a unetbench UNet, not Sequential"):
        get_policy("lean").forward(torch.nn.Sequential(), torch.zeros(1, 1, 8, 8, 8))
