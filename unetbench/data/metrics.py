"""Overlap metrics of the foreground class, from pooled voxel counts.

Why pooled counts: validation runs tile by tile, and Dice averaged over tiles would weight a
nearly empty tile as much as a full one. Summing true/false positives and false negatives over
every validated voxel first gives the Dice of the whole held-out set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["OverlapCounts", "dice_iou"]


@dataclass
class OverlapCounts:
    """Running true-positive, false-positive and false-negative voxel counts of one class."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    def update(self, pred: np.ndarray, target: np.ndarray) -> None:
        """Add the counts of boolean arrays ``pred`` and ``target`` of the same shape."""
        if pred.shape != target.shape:
            raise ValueError(f"pred shape {pred.shape} != target shape {target.shape}")
        pred = pred.astype(bool, copy=False)
        target = target.astype(bool, copy=False)
        self.tp += int(np.count_nonzero(pred & target))
        self.fp += int(np.count_nonzero(pred & ~target))
        self.fn += int(np.count_nonzero(~pred & target))

    @property
    def dice(self) -> float:
        """2·TP / (2·TP + FP + FN); 1.0 when both prediction and target are empty."""
        denom = 2 * self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else 2 * self.tp / denom

    @property
    def iou(self) -> float:
        """TP / (TP + FP + FN) (Jaccard index); 1.0 when both are empty."""
        denom = self.tp + self.fp + self.fn
        return 1.0 if denom == 0 else self.tp / denom


def dice_iou(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Dice and IoU of two boolean (or 0/1) masks."""
    counts = OverlapCounts()
    counts.update(pred, target)
    return counts.dice, counts.iou
