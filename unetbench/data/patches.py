"""Random training patches with flips, and tiling of whole volumes for validation.

Both halves handle ``conv_mode='valid'`` U-Nets, whose output is smaller than their input:
targets are the centre crop of the input box at the output shape. For ``dim=2`` configs a
patch is a 2D window of one z slice. Patches that would not fit a small volume are served
from a mirror-padded copy, so any patch shape works with any volume.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np

from unetbench.data.volumes import Volume

__all__ = ["PatchSampler", "predict_volume", "tile_starts"]


def _pad(a: np.ndarray, widths: Sequence[tuple[int, int]]) -> np.ndarray:
    """Mirror-pad the trailing ``len(widths)`` axes (``symmetric`` also works for size 1)."""
    if not any(lo or hi for lo, hi in widths):
        return a
    lead = [(0, 0)] * (a.ndim - len(widths))
    return np.pad(a, [*lead, *widths], mode="symmetric")


class PatchSampler:
    """Draws random ``(raw, target)`` batches from training volumes.

    ``patch_shape`` is the network input (3 spatial sizes for ``dim=3``, 2 for ``dim=2``) and
    ``out_shape`` the network output (equal for ``conv_mode='same'``). Each sample picks a
    volume (weighted by size), a position, and flips every spatial axis with probability 1/2.
    """

    def __init__(
        self,
        volumes: Sequence[Volume],
        patch_shape: Sequence[int],
        out_shape: Sequence[int] | None = None,
        *,
        rng: np.random.Generator,
        flips: bool = True,
    ) -> None:
        self.patch_shape = tuple(int(s) for s in patch_shape)
        self.out_shape = tuple(int(s) for s in (out_shape or patch_shape))
        if len(self.patch_shape) not in (2, 3) or len(self.out_shape) != len(self.patch_shape):
            raise ValueError(f"bad patch/out shapes {self.patch_shape} / {self.out_shape}")
        self.dim = len(self.patch_shape)
        self.rng = rng
        self.flips = flips
        need = (1, *self.patch_shape) if self.dim == 2 else self.patch_shape
        self._vols: list[tuple[np.ndarray, np.ndarray]] = []
        for v in volumes:
            widths = [(0, max(0, n - s)) for n, s in zip(need, v.spatial_shape, strict=True)]
            self._vols.append((_pad(v.raw, widths), _pad(v.label, widths)))
        sizes = np.array([lab.size for _, lab in self._vols], dtype=np.float64)
        self._weights = sizes / sizes.sum()

    def sample(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A batch: raw ``(B, C, *patch_shape)`` float32 and target ``(B, *out_shape)`` int64."""
        xs, ys = [], []
        for _ in range(batch_size):
            x, y = self._one()
            xs.append(x)
            ys.append(y)
        return np.stack(xs), np.stack(ys)

    def _one(self) -> tuple[np.ndarray, np.ndarray]:
        raw, label = self._vols[int(self.rng.choice(len(self._vols), p=self._weights))]
        if self.dim == 2:
            z = int(self.rng.integers(label.shape[0]))
            raw, label = raw[:, z], label[z]
        starts = [
            int(self.rng.integers(n - p + 1))
            for n, p in zip(label.shape, self.patch_shape, strict=True)
        ]
        box = tuple(slice(s, s + p) for s, p in zip(starts, self.patch_shape, strict=True))
        crop = tuple(
            slice(s + (p - o) // 2, s + (p - o) // 2 + o)
            for s, p, o in zip(starts, self.patch_shape, self.out_shape, strict=True)
        )
        x, y = raw[(slice(None), *box)], label[crop]
        if self.flips:
            for axis in range(self.dim):
                if self.rng.random() < 0.5:
                    x, y = np.flip(x, axis + 1), np.flip(y, axis)
        return np.ascontiguousarray(x), np.ascontiguousarray(y)


def tile_starts(size: int, tile: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``range(size)``; the last is flush."""
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile + 1, tile))
    if starts[-1] + tile < size:
        starts.append(size - tile)
    return starts


def predict_volume(
    predict: Callable[[np.ndarray], np.ndarray],
    volume: Volume,
    patch_shape: Sequence[int],
    out_shape: Sequence[int] | None = None,
    *,
    batch_size: int = 4,
) -> np.ndarray:
    """Class map ``(Z, Y, X)`` of a whole volume, predicted tile by tile.

    ``predict`` maps a raw batch ``(B, C, *patch_shape)`` to class indices ``(B, *out_shape)``.
    Output tiles of ``out_shape`` cover every voxel; each tile's input box is the output box
    grown by the network's margin, taken from a mirror-padded copy of the volume, so the
    whole volume is evaluated for 'same' and 'valid' networks alike.
    """
    patch = tuple(int(s) for s in patch_shape)
    out = tuple(int(s) for s in (out_shape or patch))
    if len(patch) == 2:
        slices = [
            _predict_nd(predict, volume.raw[:, z], volume.label.shape[1:], patch, out, batch_size)
            for z in range(volume.label.shape[0])
        ]
        return np.stack(slices)
    return _predict_nd(predict, volume.raw, volume.label.shape, patch, out, batch_size)


def _predict_nd(
    predict: Callable[[np.ndarray], np.ndarray],
    raw: np.ndarray,
    shape: tuple[int, ...],
    patch: tuple[int, ...],
    out: tuple[int, ...],
    batch_size: int,
) -> np.ndarray:
    lo = [(p - o) // 2 for p, o in zip(patch, out, strict=True)]
    hi = [p - o - m for p, o, m in zip(patch, out, lo, strict=True)]
    extra = [max(0, o - n) for o, n in zip(out, shape, strict=True)]  # volume smaller than tile
    padded = _pad(raw, [(a, b + e) for a, b, e in zip(lo, hi, extra, strict=True)])
    full = tuple(n + e for n, e in zip(shape, extra, strict=True))
    result = np.zeros(full, dtype=np.int64)
    grid = list(itertools.product(*(tile_starts(n, o) for n, o in zip(full, out, strict=True))))
    for i in range(0, len(grid), batch_size):
        chunk = grid[i : i + batch_size]
        batch = np.stack(
            [
                padded[(slice(None), *(slice(s, s + p) for s, p in zip(st, patch, strict=True)))]
                for st in chunk
            ]
        )
        pred = predict(batch)
        for st, tile in zip(chunk, pred, strict=True):
            result[tuple(slice(s, s + o) for s, o in zip(st, out, strict=True))] = tile
    return result[tuple(slice(0, n) for n in shape)]
