"""UNet: structure, gradient checkpointing, BatchNorm statistics, TorchScript, weight init."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from unetbench import UNet, UNetConfig

SMALL = dict(start_filts=4, n_blocks=3)


def test_default_model_size_and_state_dict_layout() -> None:
    """1,356,866 parameters in 86 state-dict entries: elektronn3 0.1.1's default UNet's numbers
    (counted with elektronn3; test_parity compares the layouts whenever it is installed)."""
    model = UNet()
    assert sum(p.numel() for p in model.parameters()) == 1_356_866
    keys = list(model.state_dict())
    assert len(keys) == 86
    for key in (
        "down_convs.0.conv1.weight",
        "down_convs.0.norm0.running_mean",
        "up_convs.0.upconv.weight",
        "conv_final.weight",
    ):
        assert key in keys


def test_config_round_trip_through_the_model() -> None:
    cfg = UNetConfig(n_blocks=2, start_filts=8, attention=True, planar_blocks=(0,))
    model = UNet.from_config(cfg)
    assert model.config == cfg
    assert UNet(**cfg.to_dict()).config == cfg


def test_weight_init_is_xavier_normal_with_zero_bias() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(16, 32, 3)
    UNet.weight_init(conv)
    assert torch.count_nonzero(conv.bias) == 0
    fan_in, fan_out = 16 * 27, 32 * 27
    expected_std = (2.0 / (fan_in + fan_out)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.05)
    norm = nn.BatchNorm3d(4)
    UNet.weight_init(norm)  # other layers are left alone
    assert torch.all(norm.weight == 1)
    model = UNet(**SMALL)
    assert all(
        torch.count_nonzero(m.bias) == 0 for m in model.modules() if isinstance(m, nn.Conv3d)
    )


def test_activation_modules_are_not_shared() -> None:
    model = UNet(activation=nn.PReLU(), **SMALL)
    block = model.down_convs[0]
    assert block.act1 is not block.act2
    prelu_params = sum(
        p.numel() for m in model.modules() if isinstance(m, nn.PReLU) for p in m.parameters()
    )
    assert prelu_params == 3 * 2 + 2 * 3  # one slope per activation: 2 per encoder, 3 per decoder


GRADCP_CASES = [
    dict(),
    dict(attention=True, up_mode="resizeconv_linear"),
    dict(merge_mode="add", activation="prelu", normalization="group4", full_norm=False),
    dict(activation="rrelu", planar_blocks=(0,)),
    dict(normalization="instance", up_mode="resizeconv_nearest1", activation="leaky"),
    dict(dim=2, activation="silu", normalization="none"),
]


def _input(cfg: UNetConfig, requires_grad: bool) -> torch.Tensor:
    shape = (2, 1, 16, 16) if cfg.dim == 2 else (2, 1, 8, 16, 16)
    return torch.randn(shape, requires_grad=requires_grad)


@pytest.mark.parametrize("requires_grad", [False, True])
@pytest.mark.parametrize("kwargs", GRADCP_CASES)
def test_forward_gradcp_equals_forward(kwargs: dict, requires_grad: bool) -> None:
    torch.manual_seed(0)
    plain = UNet(**SMALL, **kwargs).train()
    ckpt = copy.deepcopy(plain)
    x = _input(plain.config, requires_grad)
    x2 = x.detach().clone().requires_grad_(requires_grad)
    torch.manual_seed(1)
    out = plain(x)
    out.square().mean().backward()
    torch.manual_seed(1)
    out_cp = ckpt.forward_gradcp(x2)
    out_cp.square().mean().backward()
    assert torch.allclose(out, out_cp, atol=1e-6)
    for (name, p), p_cp in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert p.grad is not None and p_cp.grad is not None, name
        assert torch.allclose(p.grad, p_cp.grad, atol=1e-6, rtol=1e-4), name
    if requires_grad:
        assert x.grad is not None and x2.grad is not None
        assert torch.allclose(x.grad, x2.grad, atol=1e-6)


def test_forward_gradcp_updates_batchnorm_statistics_once() -> None:
    torch.manual_seed(0)
    plain = UNet(**SMALL, attention=True).train()
    ckpt = copy.deepcopy(plain)
    x = torch.randn(2, 1, 8, 16, 16)
    for _ in range(2):
        plain(x).sum().backward()
        ckpt.forward_gradcp(x).sum().backward()
    buffers = dict(ckpt.named_buffers())
    for name, buf in plain.named_buffers():
        assert torch.equal(buf, buffers[name]), name
    assert int(buffers["down_convs.0.norm0.num_batches_tracked"]) == 2
    assert int(buffers["up_convs.0.attention.w.1.num_batches_tracked"]) == 2


def test_forward_gradcp_in_eval_mode_leaves_statistics_alone() -> None:
    model = UNet(**SMALL).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.forward_gradcp(torch.randn(1, 1, 8, 16, 16)).sum().backward()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


SCRIPT_CASES = [
    (dict(), (1, 1, 8, 16, 16)),
    (dict(attention=True, up_mode="resizeconv_linear", conv_mode="valid"), (1, 1, 44, 44, 44)),
    (dict(dim=2, merge_mode="add", activation="prelu", normalization="group2"), (1, 1, 16, 16)),
    (
        dict(planar_blocks=(0,), up_mode="resizeconv_nearest", activation=nn.SiLU()),
        (1, 1, 4, 16, 16),
    ),
    (
        dict(up_mode="resizeconv_linear1", normalization="instance", activation="lin"),
        (1, 1, 8, 8, 8),
    ),
]


@pytest.mark.parametrize(("kwargs", "shape"), SCRIPT_CASES)
def test_torchscript(kwargs: dict, shape: tuple[int, ...]) -> None:
    model = UNet(**SMALL, **kwargs).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(shape)
    with torch.no_grad():
        assert torch.allclose(scripted(x), model(x), atol=1e-6)
