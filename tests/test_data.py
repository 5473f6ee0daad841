"""Tests of unetbench.data: synthetic volumes, loaders, patches, tiling, metrics, specs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skips import require

from unetbench import ConfigError, UsageError
from unetbench.data import (
    DataSpec,
    OverlapCounts,
    PatchSampler,
    SegmentationData,
    Volume,
    dice_iou,
    load_hdf5,
    load_npy,
    load_npz,
    make_dataset,
    make_synthetic_volume,
    predict_volume,
    split_volume,
    tile_starts,
)

#: h5py is a dependency of unetbench; a checkout installs it with its test extras.
H5PY_INSTALL = ".venv/bin/python -m pip install -e '.[test]'"
SMALL = {"kind": "synthetic", "seed": 3, "shape": [12, 32, 32], "n_train": 1, "n_val": 1}


# --- metrics, against counts worked out by hand ---------------------------------------------

METRIC_CASES = [
    # pred, target, dice, iou
    ([1, 1, 0, 0], [1, 0, 1, 0], 2 * 1 / (2 * 1 + 1 + 1), 1 / 3),  # tp=1 fp=1 fn=1
    ([1, 1, 1, 0], [1, 1, 0, 0], 4 / 5, 2 / 3),  # tp=2 fp=1 fn=0
    ([1, 1, 0, 0], [1, 1, 0, 0], 1.0, 1.0),
    ([0, 0, 0, 0], [1, 1, 0, 0], 0.0, 0.0),
    ([0, 0, 0, 0], [0, 0, 0, 0], 1.0, 1.0),  # both empty: defined as perfect
]


@pytest.mark.parametrize(("pred", "target", "dice", "iou"), METRIC_CASES)
def test_dice_iou_hand_computed(
    pred: list[int], target: list[int], dice: float, iou: float
) -> None:
    d, i = dice_iou(np.array(pred), np.array(target))
    assert d == pytest.approx(dice)
    assert i == pytest.approx(iou)


def test_overlap_counts_pool_over_tiles() -> None:
    # Tile 1: tp=1 fn=1; tile 2: fp=2. Pooled: tp=1 fp=2 fn=1 -> dice 2/5, not mean of tiles.
    counts = OverlapCounts()
    counts.update(np.array([[1, 0]]), np.array([[1, 1]]))
    counts.update(np.array([[1, 1]]), np.array([[0, 0]]))
    assert (counts.tp, counts.fp, counts.fn) == (1, 2, 1)
    assert counts.dice == pytest.approx(2 / 5)
    assert counts.iou == pytest.approx(1 / 4)


def test_dice_iou_shape_mismatch() -> None:
    with pytest.raises(ValueError, match="shape"):
        dice_iou(np.zeros((2, 2)), np.zeros((2, 3)))


# --- synthetic data -------------------------------------------------------------------------


def test_synthetic_is_deterministic_and_seed_dependent() -> None:
    a_raw, a_lab = make_synthetic_volume((12, 32, 32), 5)
    b_raw, b_lab = make_synthetic_volume((12, 32, 32), 5)
    c_raw, _ = make_synthetic_volume((12, 32, 32), 6)
    np.testing.assert_array_equal(a_raw, b_raw)
    np.testing.assert_array_equal(a_lab, b_lab)
    assert not np.array_equal(a_raw, c_raw)
    assert a_raw.dtype == np.float32 and a_lab.dtype == np.int64
    assert set(np.unique(a_lab)) <= {0, 1}
    assert abs(float(a_raw.mean())) < 1e-3 and float(a_raw.std()) == pytest.approx(1, abs=1e-3)


@pytest.mark.parametrize("fraction", [0.05, 0.2])
def test_synthetic_class_balance(fraction: float) -> None:
    _, lab = make_synthetic_volume((16, 48, 48), 0, foreground_fraction=fraction)
    assert fraction <= lab.mean() < fraction * 1.6


def test_synthetic_foreground_is_brighter() -> None:
    raw, lab = make_synthetic_volume((16, 48, 48), 1, noise=0.2)
    assert raw[lab == 1].mean() > raw[lab == 0].mean() + 1.0


def test_anisotropy_squashes_structures_along_z() -> None:
    """With coarse z, labels change faster from slice to slice than along y."""

    def z_vs_y_change(lab: np.ndarray) -> float:
        dz = np.mean(lab[1:] != lab[:-1])
        dy = np.mean(lab[:, 1:] != lab[:, :-1])
        return float(dz / dy)

    _, iso = make_synthetic_volume((24, 48, 48), 2, anisotropy=1.0)
    _, aniso = make_synthetic_volume((24, 48, 48), 2, anisotropy=4.0)
    assert z_vs_y_change(aniso) > 2 * z_vs_y_change(iso)


# --- volumes and loaders --------------------------------------------------------------------


def _arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = rng.normal(size=(8, 10, 12)).astype(np.float32) * 5 + 3
    return raw, (raw > 3).astype(np.uint8)


def test_volume_adds_axes_and_standardises() -> None:
    raw, lab = _arrays()
    v = Volume.from_arrays(raw, lab)
    assert v.raw.shape == (1, 8, 10, 12) and v.label.shape == (8, 10, 12)
    assert abs(float(v.raw.mean())) < 1e-4
    v2 = Volume.from_arrays(raw[0], lab[0])  # 2D image -> one z slice
    assert v2.raw.shape == (1, 1, 10, 12) and v2.spatial_shape == (1, 10, 12)


@pytest.mark.parametrize(
    ("raw_shape", "label_shape", "match"),
    [((8, 10, 12), (8, 10, 11), "does not match"), ((4,), (4,), "2D or 3D")],
)
def test_volume_rejects_bad_shapes(raw_shape: tuple, label_shape: tuple, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        Volume.from_arrays(np.zeros(raw_shape), np.zeros(label_shape, dtype=int))


def test_volume_rejects_bad_labels_and_nan() -> None:
    with pytest.raises(ConfigError, match="integer class"):
        Volume.from_arrays(np.zeros((2, 4, 4)), np.full((2, 4, 4), 0.5))
    with pytest.raises(ConfigError, match="negative"):
        Volume.from_arrays(np.zeros((2, 4, 4)), np.full((2, 4, 4), -1))
    with pytest.raises(ConfigError, match="NaN"):
        Volume.from_arrays(np.full((2, 4, 4), np.nan), np.zeros((2, 4, 4), dtype=int))


def test_load_hdf5(tmp_path: Path) -> None:
    h5py = require("h5py", H5PY_INSTALL)
    raw, lab = _arrays()
    path = tmp_path / "vol.h5"
    with h5py.File(path, "w") as f:
        f["em/raw"] = raw
        f["em/seg"] = lab
    v = load_hdf5(path, raw="em/raw", label="em/seg")
    np.testing.assert_array_equal(v.label, lab)
    assert v.raw.shape == (1, *raw.shape)
    with pytest.raises(ConfigError, match=r"no dataset 'nope'.*em/raw"):
        load_hdf5(path, raw="nope", label="em/seg")


def test_load_npy_and_npz(tmp_path: Path) -> None:
    raw, lab = _arrays()
    np.save(tmp_path / "raw.npy", raw)
    np.save(tmp_path / "lab.npy", lab)
    np.savez(tmp_path / "vol.npz", image=raw, mask=lab)
    a = load_npy(tmp_path / "raw.npy", tmp_path / "lab.npy")
    b = load_npz(tmp_path / "vol.npz", raw="image", label="mask")
    np.testing.assert_array_equal(a.raw, b.raw)
    np.testing.assert_array_equal(a.label, lab)
    with pytest.raises(ConfigError, match=r"no array 'raw'.*image"):
        load_npz(tmp_path / "vol.npz")
    with pytest.raises(UsageError, match=r"\.npy"):
        load_npy(tmp_path / "vol.npz", tmp_path / "lab.npy")
    with pytest.raises(ConfigError, match="not found"):
        load_npy(tmp_path / "missing.npy", tmp_path / "lab.npy")


def test_split_volume_holds_out_the_end() -> None:
    raw, lab = _arrays()
    train, val = split_volume(Volume.from_arrays(raw, lab, standardize=False), 0.25, axis=0)
    assert train.spatial_shape == (6, 10, 12) and val.spatial_shape == (2, 10, 12)
    np.testing.assert_array_equal(val.label, lab[6:])
    with pytest.raises(ConfigError, match="val_fraction"):
        split_volume(train, 0.01)


# --- specs ----------------------------------------------------------------------------------


def test_make_dataset_synthetic() -> None:
    data = make_dataset(SMALL)
    again = make_dataset(DataSpec.from_dict(SMALL))
    assert len(data.train) == 1 and len(data.val) == 1
    assert data.train[0].spatial_shape == (12, 32, 32)
    np.testing.assert_array_equal(data.val[0].raw, again.val[0].raw)
    assert not np.array_equal(data.train[0].label, data.val[0].label)
    assert data.summary()["data_val_shapes"] == "12x32x32"
    assert DataSpec.from_dict(SMALL).to_dict()["shape"] == [12, 32, 32]


def test_make_dataset_files(tmp_path: Path) -> None:
    h5py = require("h5py", H5PY_INSTALL)
    raw, lab = _arrays()
    with h5py.File(tmp_path / "a.h5", "w") as f:
        f["raw"], f["label"] = raw, lab
    np.save(tmp_path / "r.npy", raw)
    np.save(tmp_path / "l.npy", lab)
    np.savez(tmp_path / "v.npz", raw=raw, label=lab)
    h5 = make_dataset({"kind": "hdf5", "path": "a.h5", "val_fraction": 0.5}, root=tmp_path)
    assert h5.train[0].spatial_shape == (4, 10, 12) and h5.val[0].spatial_shape == (4, 10, 12)
    npy = make_dataset(
        {"kind": "npy", "raw": "r.npy", "label": "l.npy", "val_raw": "r.npy", "val_label": "l.npy"},
        root=tmp_path,
    )
    assert npy.val[0].spatial_shape == (8, 10, 12)
    npz = make_dataset(
        {"kind": "npz", "path": [str(tmp_path / "v.npz")], "split_axis": 2, "val_fraction": 0.25}
    )
    assert npz.val[0].spatial_shape == (8, 10, 3)


@pytest.mark.parametrize(
    ("table", "match"),
    [
        ({"kind": "zarr"}, r"data.kind='zarr'.*synthetic \| hdf5"),
        ({"kind": "synthetic", "path": "x.h5"}, "data.path: unknown key.*anisotropy"),
        ({"kind": "synthetic", "shape": [4, 64, 64]}, r"data.shape=\[4, 64, 64\]"),
        ({"kind": "synthetic", "shape": [32, 64]}, "data.shape"),
        ({"kind": "synthetic", "anisotropy": 100}, "data.anisotropy=100.0.*0.25..16"),
        ({"kind": "synthetic", "foreground_fraction": 0.9}, "foreground_fraction"),
        ({"kind": "synthetic", "n_val": 0}, "data.n_val=0"),
        ({"kind": "synthetic", "seed": "zero"}, "data.seed='zero'.*integer"),
        ({"kind": "synthetic", "noise": True}, "data.noise=True.*number"),
        ({"kind": "hdf5"}, "data.path"),
        ({"kind": "hdf5", "path": "a.h5", "val_fraction": 1.5}, "val_fraction=1.5"),
        ({"kind": "npy", "raw": "a.h5", "label": "b.npy"}, "data.raw='a.h5'.*npy"),
        ({"kind": "npy", "raw": "a.npy", "label": "b.npy", "val_raw": "c.npy"}, "val_label"),
    ],
)
def test_bad_specs_name_field_value_and_allowed(table: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        make_dataset(table)


def test_segmentation_data_needs_both_splits() -> None:
    v = Volume.from_arrays(*_arrays())
    with pytest.raises(ConfigError, match="validation"):
        SegmentationData([v], [])


# --- patches and tiling ---------------------------------------------------------------------


def _ramp_volume(shape: tuple[int, int, int]) -> Volume:
    """Raw equals the flat voxel index, label the same index: patches can be traced back."""
    idx = np.arange(np.prod(shape)).reshape(shape)
    return Volume.from_arrays(idx.astype(np.float32), idx, standardize=False)


@pytest.mark.parametrize(
    ("patch", "out"),
    [((4, 6, 6), (4, 6, 6)), ((6, 8, 8), (2, 4, 4)), ((8, 8), (8, 8)), ((8, 8), (4, 4))],
)
def test_patch_sampler_shapes_and_centre_crop(patch: tuple, out: tuple) -> None:
    vol = _ramp_volume((6, 12, 12))
    sampler = PatchSampler([vol], patch, out, rng=np.random.default_rng(0), flips=False)
    x, y = sampler.sample(3)
    assert x.shape == (3, 1, *patch) and y.shape == (3, *out)
    assert x.dtype == np.float32 and y.dtype == np.int64
    margin = tuple((p - o) // 2 for p, o in zip(patch, out, strict=True))
    centre = x[(slice(None), 0, *(slice(m, m + o) for m, o in zip(margin, out, strict=True)))]
    np.testing.assert_array_equal(centre, y)  # target = centre crop of the same window


def test_patch_sampler_flips_raw_and_label_together() -> None:
    vol = _ramp_volume((6, 12, 12))
    sampler = PatchSampler([vol], (4, 6, 6), rng=np.random.default_rng(1))
    flipped = {ax: False for ax in range(3)}
    for _ in range(20):
        x, y = sampler.sample(1)
        np.testing.assert_array_equal(x[0, 0], y[0])
        for ax in range(3):
            if np.all(np.diff(y[0], axis=ax) < 0):
                flipped[ax] = True
    assert all(flipped.values())  # every axis was flipped at least once in 20 draws


def test_patch_sampler_is_seeded_and_pads_small_volumes() -> None:
    vol = _ramp_volume((2, 5, 5))
    a = PatchSampler([vol], (4, 8, 8), rng=np.random.default_rng(7)).sample(2)
    b = PatchSampler([vol], (4, 8, 8), rng=np.random.default_rng(7)).sample(2)
    np.testing.assert_array_equal(a[0], b[0])
    assert a[0].shape == (2, 1, 4, 8, 8)


@pytest.mark.parametrize(
    ("size", "tile", "starts"), [(10, 4, [0, 4, 6]), (8, 4, [0, 4]), (3, 4, [0])]
)
def test_tile_starts(size: int, tile: int, starts: list[int]) -> None:
    assert tile_starts(size, tile) == starts


@pytest.mark.parametrize(
    ("shape", "patch", "out"),
    [
        ((7, 13, 11), (4, 6, 6), (4, 6, 6)),
        ((7, 13, 11), (6, 8, 8), (2, 4, 4)),
        ((3, 5, 5), (4, 8, 8), (4, 8, 8)),  # volume smaller than the patch
        ((3, 13, 11), (6, 6), (6, 6)),  # 2D
        ((3, 13, 11), (8, 8), (4, 4)),  # 2D valid
    ],
)
def test_predict_volume_reassembles_identity(shape: tuple, patch: tuple, out: tuple) -> None:
    """A 'network' that returns the centre crop of its input must reproduce the volume."""
    vol = _ramp_volume(shape)
    margin = [(p - o) // 2 for p, o in zip(patch, out, strict=True)]

    def centre(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[2:] == patch
        box = tuple(slice(m, m + o) for m, o in zip(margin, out, strict=True))
        return batch[(slice(None), 0, *box)].astype(np.int64)

    pred = predict_volume(centre, vol, patch, out)
    np.testing.assert_array_equal(pred, vol.label)
