"""Parity with elektronn3 0.1.1's UNet, the reference implementation, used as a test oracle.

For a table of option combinations that covers every option value: equal parameter counts,
identical state-dict keys and shapes, equal outputs after loading the reference's (perturbed)
weights in eval and train mode, and forward_gradcp gradients equal to the reference's forward.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from skips import ELEKTRONN3_INSTALL, require
from torch import nn

from unetbench import UNet

reference = require("elektronn3.models.unet", ELEKTRONN3_INSTALL)

CASES = [
    # (kwargs, spatial input shape)
    (dict(), (8, 16, 16)),
    (dict(up_mode="resizeconv_nearest", normalization="group"), (8, 16, 16)),
    (dict(up_mode="resizeconv_linear", attention=True), (8, 16, 16)),
    (dict(up_mode="resizeconv_nearest1", activation="leaky", normalization="instance"), (8, 8, 8)),
    (dict(up_mode="resizeconv_linear1", activation="prelu", full_norm=False), (8, 8, 8)),
    (dict(merge_mode="add", activation="rrelu", normalization="group4"), (8, 16, 16)),
    (dict(merge_mode="add", attention=True, normalization="none", activation="silu"), (8, 16, 16)),
    (dict(planar_blocks=(0,), activation="lin"), (2, 16, 16)),
    (dict(planar_blocks=(0, 1), attention=True, up_mode="resizeconv_linear"), (2, 16, 16)),
    (dict(conv_mode="valid", n_blocks=2), (18, 20, 22)),
    (dict(conv_mode="valid", attention=True, full_norm=False), (44, 44, 48)),
    (dict(conv_mode="valid", planar_blocks=(0,), up_mode="resizeconv_nearest"), (20, 44, 44)),
    (dict(dim=2), (32, 32)),
    (dict(dim=2, attention=True, up_mode="resizeconv_linear", normalization="group8"), (32, 32)),
    (dict(dim=2, conv_mode="valid", merge_mode="add", activation="prelu"), (44, 48)),
    (dict(n_blocks=1, normalization="batch"), (6, 6, 6)),
    (dict(n_blocks=4, activation=nn.ELU()), (8, 16, 16)),
    (dict(in_channels=3, out_channels=5, start_filts=16), (8, 8, 8)),
]
IDS = [",".join(f"{k}={v}" for k, v in kw.items()) or "default" for kw, _ in CASES]


def _pair(kwargs: dict) -> tuple[nn.Module, UNet]:
    kwargs = {"start_filts": 8, **kwargs}
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = reference.UNet(**copy.deepcopy(kwargs))
    ours = UNet(**kwargs)
    # Perturb every float entry, so norms are not identities and biases are not zero.
    state = ref.state_dict()
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for key, value in state.items():
            if not value.is_floating_point():
                continue
            if key.endswith("running_var"):
                value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
            else:
                value.copy_(torch.randn(value.shape, generator=gen) * 0.3)
    ref.load_state_dict(state)
    ours.load_state_dict(state)  # the reference's checkpoint loads unchanged
    return ref, ours


@pytest.mark.parametrize(("kwargs", "shape"), CASES, ids=IDS)
def test_parameters_and_state_dict_layout(kwargs: dict, shape: tuple[int, ...]) -> None:
    ref, ours = _pair(kwargs)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in ref.parameters())
    ref_layout = [(k, tuple(v.shape)) for k, v in ref.state_dict().items()]
    our_layout = [(k, tuple(v.shape)) for k, v in ours.state_dict().items()]
    assert sorted(our_layout) == sorted(ref_layout)


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize(("kwargs", "shape"), CASES, ids=IDS)
def test_outputs_match(kwargs: dict, shape: tuple[int, ...], mode: str) -> None:
    ref, ours = _pair(kwargs)
    ref.train(mode == "train")
    ours.train(mode == "train")
    x = torch.randn(2, ours.config.in_channels, *shape)
    torch.manual_seed(2)
    expected = ref(x)
    torch.manual_seed(2)
    actual = ours(x)
    assert actual.shape == expected.shape
    assert tuple(actual.shape[2:]) == ours.config.output_shape(shape)
    assert torch.allclose(actual, expected, atol=1e-5, rtol=1e-5)
    if mode == "train":  # one BatchNorm update each, so the statistics agree too
        ref_buffers = dict(ref.named_buffers())
        for name, buf in ours.named_buffers():
            assert torch.allclose(buf.float(), ref_buffers[name].float(), atol=1e-6), name


@pytest.mark.parametrize(("kwargs", "shape"), CASES[:9], ids=IDS[:9])
def test_checkpointed_gradients_match_reference_forward(kwargs: dict, shape: tuple) -> None:
    ref, ours = _pair(kwargs)
    x = torch.randn(2, 1, *shape)
    torch.manual_seed(3)
    ref(x).square().mean().backward()
    torch.manual_seed(3)
    ours.forward_gradcp(x).square().mean().backward()
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        expected = ref_params[name].grad
        assert p.grad is not None and expected is not None, name
        assert torch.allclose(p.grad, expected, atol=1e-5, rtol=1e-4), name


def test_reference_reentrant_checkpointing_trap() -> None:
    """Documents why unetbench does not checkpoint like the reference does.

    With an input that does not require grad, the reference's re-entrant checkpointing trains
    only conv_final; with one that does, it updates BatchNorm statistics twice per step.
    unetbench trains every block and updates the statistics once in both cases.
    """
    for requires_grad in (False, True):
        ref, ours = _pair({})
        x = torch.randn(2, 1, 8, 16, 16, requires_grad=requires_grad)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref.forward_gradcp(x).sum().backward()
        ours.forward_gradcp(x).sum().backward()
        ref_trained = {n for n, p in ref.named_parameters() if p.grad is not None}
        ref_updates = int(ref.state_dict()["down_convs.0.norm0.num_batches_tracked"])
        if requires_grad:
            assert len(ref_trained) == len(list(ref.parameters()))
            assert ref_updates == 2
        else:
            assert ref_trained == {"conv_final.weight", "conv_final.bias"}
            assert ref_updates == 1
        assert all(p.grad is not None for p in ours.parameters())
        assert int(ours.state_dict()["down_convs.0.norm0.num_batches_tracked"]) == 1
