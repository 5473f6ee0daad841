"""Operation counts: exact against hand-computed convolution counts; default-config pins."""

from __future__ import annotations

import pytest
import torch

from unetbench import UNet, UNetConfig
from unetbench.profiler.flops import count_fwd_macs, count_torch_flops, format_unsupported

pytestmark = pytest.mark.usefixtures("one_thread")


def _convs_one_level(n: int, vox: int, cin: int, f: int, cout: int) -> list[int]:
    """MACs of n_blocks=1: conv3 Cin->F, conv3 F->F, final conv1 F->Cout (same padding)."""
    return [n * vox * f * cin * 27, n * vox * f * f * 27, n * vox * cout * f]


def _convs_two_levels(n: int, vox: int, cin: int, f: int, cout: int) -> list[int]:
    """MACs of n_blocks=2 (3D, transposed up-convolution, concat merge), in forward order."""
    low = vox // 8  # after one 2x2x2 max-pool
    return [
        n * vox * f * cin * 27,  # down 0: conv1
        n * vox * f * f * 27,  # down 0: conv2
        n * low * 2 * f * f * 27,  # down 1: conv1
        n * low * 2 * f * 2 * f * 27,  # down 1: conv2
        n * low * 2 * f * f * 8,  # up 0: 2x2x2 transposed conv, 2F -> F on the coarse grid
        n * vox * f * 2 * f * 27,  # up 0: conv1 on the concatenation
        n * vox * f * f * 27,  # up 0: conv2
        n * vox * cout * f,  # final 1x1x1
    ]


CASES = [
    # (config kwargs, full input shape, hand-computed conv MACs)
    (dict(n_blocks=1, start_filts=4), (1, 1, 8, 8, 8), _convs_one_level(1, 512, 1, 4, 2)),
    (dict(n_blocks=1, start_filts=3, in_channels=2, out_channels=5), (2, 2, 4, 8, 8),
     _convs_one_level(2, 256, 2, 3, 5)),
    (dict(n_blocks=2, start_filts=4), (1, 1, 8, 8, 8), _convs_two_levels(1, 512, 1, 4, 2)),
    (dict(n_blocks=2, start_filts=2, in_channels=3), (2, 3, 8, 16, 8),
     _convs_two_levels(2, 1024, 3, 2, 2)),
]  # fmt: skip


@pytest.mark.parametrize(("kwargs", "shape", "macs"), CASES)
def test_torch_flops_equal_hand_count(kwargs: dict, shape: tuple, macs: list[int]) -> None:
    cfg = UNetConfig(**kwargs)
    fwd, train = count_torch_flops(cfg, shape)
    assert fwd == 2 * sum(macs)
    # Backward: a weight gradient for every conv, an input gradient for all but the first
    # (the network input needs none).
    assert train == fwd + 2 * (2 * sum(macs) - macs[0])
    # Per-block checkpointing recomputes every block's forward once (all but the final conv).
    _, train_blocks = count_torch_flops(cfg, shape, checkpointing="blocks")
    assert train_blocks == train + 2 * sum(macs[:-1])


@pytest.mark.parametrize(("kwargs", "shape", "macs"), CASES)
def test_fvcore_macs_equal_hand_count_without_norms(
    kwargs: dict, shape: tuple, macs: list[int]
) -> None:
    torch.manual_seed(0)
    model = UNet(**kwargs, normalization="none")
    total, unsupported = count_fwd_macs(model, torch.randn(shape))
    assert total == sum(macs)
    if kwargs["n_blocks"] > 1:
        assert "aten::max_pool3d" in unsupported


def test_fvcore_lists_what_it_skips_in_an_attention_net() -> None:
    model = UNet(n_blocks=2, start_filts=4, attention=True, up_mode="resizeconv_linear")
    _, unsupported = count_fwd_macs(model, torch.randn(1, 1, 8, 8, 8))
    names = {item.split("=")[0] for item in unsupported.split(";")}
    assert {"aten::max_pool3d", "aten::upsample_trilinear3d", "aten::sigmoid", "aten::mul"} <= names


def test_fvcore_leaves_the_model_untouched() -> None:
    model = UNet(n_blocks=2, start_filts=4)
    model.eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    count_fwd_macs(model, torch.randn(2, 1, 8, 8, 8))
    assert not model.training
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_format_unsupported_is_sorted_and_counted() -> None:
    assert format_unsupported({"b": 2, "a": 1}) == "a=1;b=2"
    assert format_unsupported({}) == ""


def test_default_config_counts_regression_pin() -> None:
    """Default config at 1x1x32x64x64. The parameter count is elektronn3 0.1.1's default UNet's
    (test_model, test_parity); the MAC and FLOP totals are regression pins of this code's
    counts (the README quotes them), and train = 3 fwd - 2 first-conv MACs is by hand."""
    model = UNet()
    assert sum(p.numel() for p in model.parameters()) == 1_356_866
    macs, _ = count_fwd_macs(model, torch.randn(1, 1, 32, 64, 64))
    assert macs == 24_666_177_536
    fwd, train = count_torch_flops(UNetConfig(), (32, 64, 64))
    assert train == 146_968_412_160
    first_conv_macs = 32 * 1 * 27 * 32 * 64 * 64  # its input needs no gradient
    assert train == 3 * fwd - 2 * first_conv_macs
