"""Input/output shape arithmetic, checked against hand-derived sizes and against real models."""

from __future__ import annotations

import pytest
import torch

from unetbench import ConfigError, UNet, UNetConfig


@pytest.mark.parametrize(("n_blocks", "shrink"), [(1, 4), (2, 16), (3, 40), (4, 88)])
def test_valid_mode_shrink_is_6_times_2_to_the_n_minus_8(n_blocks: int, shrink: int) -> None:
    cfg = UNetConfig(n_blocks=n_blocks, conv_mode="valid")
    size = cfg.valid_input_sizes(range(shrink + 1, shrink + 200))[0]
    assert shrink == 6 * 2**n_blocks - 8
    assert cfg.output_shape((size, size, size)) == (size - shrink,) * 3


def test_valid_input_sizes_for_three_blocks() -> None:
    cfg = UNetConfig(conv_mode="valid")
    sizes = cfg.valid_input_sizes(range(1, 100))
    assert sizes == list(range(44, 100, 4))
    assert [cfg.output_shape((s, s, s))[0] for s in (44, 48, 84)] == [4, 8, 44]


def test_same_mode_needs_divisibility_by_pooling() -> None:
    cfg = UNetConfig(n_blocks=4)
    assert cfg.valid_input_sizes(range(1, 33)) == [8, 16, 24, 32]
    assert cfg.output_shape((8, 16, 24)) == (8, 16, 24)


def test_planar_blocks_leave_depth_alone() -> None:
    cfg = UNetConfig(planar_blocks=(0, 1))
    assert cfg.output_shape((5, 64, 64)) == (5, 64, 64)
    assert cfg.valid_input_sizes(range(1, 8), axis=0) == list(range(1, 8))
    valid = UNetConfig(planar_blocks=(0,), conv_mode="valid")
    # Depth only passes through blocks 1 and 2 (one pooling): shrink 4 + 2 * (4 + 4) = 20.
    assert valid.output_shape((20, 60, 60)) == (4, 20, 20)


@pytest.mark.parametrize(
    ("kwargs", "shape", "message"),
    [
        ({}, (33, 64, 64), r"D=33 .*odd.*nearest legal: 32 or 36"),
        (dict(conv_mode="valid"), (45, 64, 66), r"D=45 .*nearest legal: 44 or 48.*W=66 .*64 or 68"),
        (dict(conv_mode="valid"), (40, 44, 44), r"D=40 .*shrink.*nearest legal: 44"),
        ({}, (64, 64), r"3 positive integer spatial sizes \(D, H, W\)"),
        (dict(dim=2), (0, 64), r"2 positive integer"),
        (dict(attention=True, planar_blocks=(0, 1)), (1, 64, 64), r"attention gate.*>= 2"),
    ],
)
def test_illegal_shapes_suggest_nearest_legal_sizes(
    kwargs: dict, shape: tuple[int, ...], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**kwargs).check_input_shape(shape)


def test_bad_axis() -> None:
    with pytest.raises(ConfigError, match="axis=3"):
        UNetConfig().valid_input_sizes(range(8), axis=3)


SHAPE_CASES = [
    (dict(n_blocks=2), (8, 12, 16)),
    (dict(conv_mode="valid"), (44, 48, 52)),
    (dict(conv_mode="valid", n_blocks=2, planar_blocks=(0,)), (7, 20, 22)),
    (dict(conv_mode="valid", attention=True, up_mode="resizeconv_linear"), (44, 44, 48)),
    (dict(planar_blocks=(0,), attention=True, n_blocks=2), (2, 8, 8)),
    (dict(dim=2, conv_mode="valid", n_blocks=2), (18, 22)),
    (dict(dim=2, n_blocks=4), (16, 24)),
]


@pytest.mark.parametrize(("kwargs", "shape"), SHAPE_CASES)
def test_predicted_output_shape_matches_the_model(kwargs: dict, shape: tuple[int, ...]) -> None:
    cfg = UNetConfig(start_filts=4, normalization="none", **kwargs)
    model = UNet.from_config(cfg).eval()
    with torch.no_grad():
        out = model(torch.zeros(1, 1, *shape))
    assert tuple(out.shape[2:]) == cfg.output_shape(shape)


def test_valid_tiles_agree_with_a_larger_input() -> None:
    """Sizes from valid_input_sizes give exactly the matching region of a larger input's output."""
    cfg = UNetConfig(dim=2, n_blocks=2, start_filts=4, conv_mode="valid", normalization="none")
    torch.manual_seed(0)
    model = UNet.from_config(cfg).eval()
    big = torch.randn(1, 1, 30, 30)
    sizes = cfg.valid_input_sizes(range(18, 31))
    assert sizes == [18, 20, 22, 24, 26, 28, 30]
    with torch.no_grad():
        full = model(big)
        tile = model(big[..., 4:26, 6:30])  # offsets that are multiples of the pooling period
    assert full.shape[-2:] == (14, 14)
    assert torch.allclose(tile, full[..., 4:10, 6:14], atol=1e-6)
