"""UNetConfig: every bad value fails at construction with a message naming field, value, choices."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from unetbench import ConfigError, UNetConfig

BAD_CONFIGS = [
    # (kwargs, regex the message must match)
    (dict(up_mode="upsample"), r"up_mode='upsample'.*'transpose', 'resizeconv_nearest'"),
    (dict(merge_mode="cat"), r"merge_mode='cat'.*'concat', 'add'"),
    (dict(merge_mode="add", up_mode="resizeconv_nearest"), r"merge_mode='add'.*resizeconv_nea"),
    (dict(activation="swish"), r"activation='swish'.*'relu', 'leaky', 'prelu', 'rrelu'"),
    (dict(activation=3), r"activation=3"),
    (dict(normalization="group7"), r"normalization='group7'.*divisible by 7.*start_filts=32"),
    (dict(normalization="group0"), r"normalization='group0'.*G >= 1"),
    (dict(normalization="layer"), r"normalization='layer'.*'batch', 'group'"),
    (dict(n_blocks=0), r"n_blocks=0.*integer >= 1"),
    (dict(n_blocks=2.5), r"n_blocks=2.5"),
    (dict(start_filts=0), r"start_filts=0"),
    (dict(in_channels=True), r"in_channels=True"),
    (dict(planar_blocks=(3,)), r"planar_blocks=\(3,\).*0\.\.2"),
    (dict(planar_blocks=(-1,)), r"planar_blocks=\(-1,\)"),
    (dict(planar_blocks="0"), r"planar_blocks='0'"),
    (dict(dim=2, planar_blocks=(0,)), r"planar_blocks=\(0,\).*dim=2"),
    (dict(dim=1), r"dim=1.*2 or 3"),
    (dict(conv_mode="VALID"), r"conv_mode='VALID'.*'same', 'valid'"),
    (dict(conv_mode="full"), r"conv_mode='full'"),
    (dict(batch_norm=True), r"batch_norm=True.*normalization"),
    (dict(attention="yes"), r"attention='yes'.*True or False"),
    (dict(full_norm=1), r"full_norm=1.*True or False"),
    (dict(attention=True, start_filts=1), r"start_filts=1.*attention"),
]


@pytest.mark.parametrize(("kwargs", "message"), BAD_CONFIGS)
def test_bad_values_fail_when_built(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        UNetConfig(**kwargs)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        UNetConfig(up_mode="upsample")


def test_defaults_match_the_reference_signature() -> None:
    cfg = UNetConfig()
    assert dataclasses.asdict(cfg) == dict(
        in_channels=1,
        out_channels=2,
        n_blocks=3,
        start_filts=32,
        up_mode="transpose",
        merge_mode="concat",
        planar_blocks=(),
        batch_norm="unset",
        attention=False,
        activation="relu",
        normalization="batch",
        full_norm=True,
        dim=3,
        conv_mode="same",
    )


def test_frozen_and_replace_revalidates() -> None:
    cfg = UNetConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.n_blocks = 4  # type: ignore[misc]
    assert dataclasses.replace(cfg, n_blocks=4).n_blocks == 4
    with pytest.raises(ConfigError, match="n_blocks=-1"):
        dataclasses.replace(cfg, n_blocks=-1)


@pytest.mark.parametrize(
    "cfg",
    [
        UNetConfig(),
        UNetConfig(planar_blocks=[1, 0], attention=True, normalization="group16", dim=3),
        UNetConfig(dim=2, up_mode="resizeconv_linear1", activation="silu", conv_mode="valid"),
        UNetConfig(merge_mode="add", normalization=None, full_norm=False),  # type: ignore[arg-type]
    ],
)
def test_json_round_trip(cfg: UNetConfig) -> None:
    assert UNetConfig.from_json(cfg.to_json()) == cfg
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg


def test_normalised_values() -> None:
    cfg = UNetConfig(planar_blocks=[2, 0, 0], normalization=None)  # type: ignore[arg-type]
    assert cfg.planar_blocks == (0, 2)
    assert cfg.normalization == "none"


def test_from_dict_rejects_unknown_fields() -> None:
    with pytest.raises(ConfigError, match=r"unknown UNetConfig field\(s\) 'depth'.*n_blocks"):
        UNetConfig.from_dict({"depth": 3})


def test_from_json_rejects_malformed_text() -> None:
    with pytest.raises(ConfigError, match="malformed"):
        UNetConfig.from_json("{n_blocks: 3")
    with pytest.raises(ConfigError, match="must be an object"):
        UNetConfig.from_json("[1, 2]")


def test_module_activation_accepted_but_not_serialisable() -> None:
    cfg = UNetConfig(activation=torch.nn.ELU())
    with pytest.raises(ConfigError, match=r"nn\.Module instance"):
        cfg.to_json()


def test_field_names_are_the_record_columns() -> None:
    assert UNetConfig.field_names()[:3] == ("in_channels", "out_channels", "n_blocks")
    assert len(UNetConfig.field_names()) == 14
