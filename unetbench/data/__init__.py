"""Segmentation data for sweep trials: a built-in synthetic task and loaders for user volumes.

``make_dataset(spec)`` turns a study's ``[data]`` table into a :class:`SegmentationData`
(training and held-out validation volumes); :class:`PatchSampler` draws training patches and
:func:`predict_volume` tiles whole volumes for validation.
"""

from __future__ import annotations

from unetbench.data.metrics import OverlapCounts, dice_iou
from unetbench.data.patches import PatchSampler, predict_volume, tile_starts
from unetbench.data.spec import DataSpec, make_dataset
from unetbench.data.synthetic import make_synthetic_volume
from unetbench.data.volumes import (
    SegmentationData,
    Volume,
    load_hdf5,
    load_npy,
    load_npz,
    split_volume,
)

__all__ = [
    "DataSpec",
    "OverlapCounts",
    "PatchSampler",
    "SegmentationData",
    "Volume",
    "dice_iou",
    "load_hdf5",
    "load_npy",
    "load_npz",
    "make_dataset",
    "make_synthetic_volume",
    "predict_volume",
    "split_volume",
    "tile_starts",
]
