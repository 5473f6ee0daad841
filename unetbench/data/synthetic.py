"""A built-in synthetic 3D segmentation task: neurite-like tubes and blobs in noise.

Why synthetic: a sweep needs a task that any user can run without downloading data, that is
hard enough for accuracy to separate architectures (thin tubes need fine detail, noise needs
context, dim distractor blobs need intensity judgement) yet learnable within a short per-trial
budget. Everything is drawn from ``numpy.random.default_rng(seed)``, so one seed gives one
volume, bit for bit, on every machine.

Geometry lives in physical units of one xy voxel. ``anisotropy`` is the z voxel size in those
units (e.g. 2.0 means z sections twice as thick as the xy pixel size, as in SBEM), so the same
structures look squashed along z when ``anisotropy > 1``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["make_synthetic_volume"]

# Intensities before standardisation: background 0, labelled structures 1, distractors below.
_DISTRACTOR_INTENSITY = 0.45
_EDGE_WIDTH = 0.6  # soft edge of the rendered intensity (physical units)


def make_synthetic_volume(
    shape: tuple[int, int, int],
    seed: int,
    *,
    anisotropy: float = 1.0,
    foreground_fraction: float = 0.1,
    noise: float = 0.4,
    blob_share: float = 0.25,
    n_distractors: int = 4,
    radius_range: tuple[float, float] = (1.5, 4.0),
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one volume: ``(raw float32 (Z, Y, X) standardised, label int64 (Z, Y, X) in {0,1})``.

    Tubes (smooth persistent random walks with smoothly varying radius) and ellipsoidal blobs
    are added until the labelled share of voxels reaches ``foreground_fraction`` (the class
    balance); ``blob_share`` of that target comes from blobs. ``n_distractors`` dim, unlabelled
    blobs and a smooth bias field make plain thresholding insufficient. ``noise`` is the
    standard deviation of (slightly correlated) Gaussian noise relative to the object contrast.
    """
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    zz = np.arange(nz, dtype=np.float32) * np.float32(anisotropy)
    yy = np.arange(ny, dtype=np.float32)
    xx = np.arange(nx, dtype=np.float32)
    extent = np.array([nz * anisotropy, ny, nx], dtype=np.float64)
    # Signed distance to the nearest labelled surface (negative inside), capped for speed.
    dist = np.full(shape, 8.0, dtype=np.float32)
    distractor = np.full(shape, 8.0, dtype=np.float32)
    target = foreground_fraction * dist.size

    def fg_voxels() -> float:
        return float(np.count_nonzero(dist < 0))

    blob_target = blob_share * target
    guard = 0
    while fg_voxels() < blob_target and guard < 200:
        centre = rng.uniform(0, extent)
        radii = rng.uniform(4.0, 8.0, size=3)
        _paint_ellipsoid(dist, (zz, yy, xx), centre, radii)
        guard += 1
    while fg_voxels() < target and guard < 400:
        _paint_tube(dist, (zz, yy, xx), extent, rng, radius_range)
        guard += 1
    for _ in range(n_distractors):
        centre = rng.uniform(0, extent)
        _paint_ellipsoid(distractor, (zz, yy, xx), centre, rng.uniform(3.0, 6.0, size=3))

    label = (dist < 0).astype(np.int64)
    obj = 1.0 / (1.0 + np.exp(np.clip(dist / _EDGE_WIDTH, -30, 30)))
    dis = 1.0 / (1.0 + np.exp(np.clip(distractor / _EDGE_WIDTH, -30, 30)))
    raw = np.maximum(obj, _DISTRACTOR_INTENSITY * dis) + _bias_field(shape, rng)
    raw = raw + noise * _correlated_noise(shape, rng)
    raw = (raw - raw.mean()) / (raw.std() + 1e-6)
    return raw.astype(np.float32), label


def _paint_ellipsoid(
    dist: np.ndarray,
    grids: tuple[np.ndarray, np.ndarray, np.ndarray],
    centre: np.ndarray,
    radii: np.ndarray,
) -> None:
    """Lower ``dist`` with an approximate signed distance to an axis-aligned ellipsoid."""
    sl, sub = _local_grid(grids, centre, float(radii.max()) + 2.0)
    if sl is None:
        return
    dz, dy, dx = (g - c for g, c in zip(sub, centre, strict=True))
    r_mean = float(radii.mean())
    d = np.sqrt((dz / radii[0]) ** 2 + (dy / radii[1]) ** 2 + (dx / radii[2]) ** 2)
    np.minimum(dist[sl], ((d - 1.0) * r_mean).astype(np.float32), out=dist[sl])


def _paint_tube(
    dist: np.ndarray,
    grids: tuple[np.ndarray, np.ndarray, np.ndarray],
    extent: np.ndarray,
    rng: np.random.Generator,
    radius_range: tuple[float, float],
) -> None:
    """Lower ``dist`` along one smooth random curve of varying radius crossing the volume."""
    start = rng.uniform(0.15, 0.85, size=3) * extent
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    r_lo, r_hi = radius_range
    log_r = np.log(rng.uniform(r_lo, r_hi))
    points: list[tuple[np.ndarray, float]] = []
    for sign in (1.0, -1.0):
        pos, heading, lr = start.copy(), sign * direction, log_r
        for _ in range(int(3 * extent.max())):
            radius = float(np.exp(lr))
            points.append((pos.copy(), radius))
            # Persistent random walk: small turns keep the curve smooth, as in neurites.
            heading = heading + rng.normal(scale=0.12, size=3)
            heading /= np.linalg.norm(heading)
            pos = pos + heading * min(1.0, radius / 2)
            lr = float(np.clip(lr + rng.normal(scale=0.05), np.log(r_lo), np.log(r_hi)))
            if np.any(pos < -r_hi) or np.any(pos > extent + r_hi):
                break
    for centre, radius in points:
        sl, sub = _local_grid(grids, centre, radius + 2.0)
        if sl is None:
            continue
        dz, dy, dx = (g - c for g, c in zip(sub, centre, strict=True))
        d = np.sqrt(dz**2 + dy**2 + dx**2) - radius
        np.minimum(dist[sl], d.astype(np.float32), out=dist[sl])


def _local_grid(
    grids: tuple[np.ndarray, np.ndarray, np.ndarray], centre: np.ndarray, reach: float
) -> tuple[tuple[slice, slice, slice] | None, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Index box around ``centre`` (physical units) and its broadcastable coordinate grids."""
    slices = []
    subs = []
    for axis, (g, c) in enumerate(zip(grids, centre, strict=True)):
        lo = int(np.searchsorted(g, c - reach, side="left"))
        hi = int(np.searchsorted(g, c + reach, side="right"))
        if lo >= hi:
            return None, grids
        slices.append(slice(lo, hi))
        shape = [1, 1, 1]
        shape[axis] = hi - lo
        subs.append(g[lo:hi].reshape(shape))
    return (slices[0], slices[1], slices[2]), (subs[0], subs[1], subs[2])


def _bias_field(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth, low-frequency intensity drift (uneven staining/illumination), amplitude ~0.2."""
    field = np.zeros(shape, dtype=np.float32)
    axes = [np.linspace(0, np.pi, n, dtype=np.float32) for n in shape]
    for _ in range(3):
        freq = rng.uniform(0.5, 2.0, size=3)
        phase = rng.uniform(0, 2 * np.pi, size=3)
        term = np.ones(shape, dtype=np.float32)
        for axis, (a, f, p) in enumerate(zip(axes, freq, phase, strict=True)):
            s = [1, 1, 1]
            s[axis] = a.size
            term = term * np.cos(f * a + p).reshape(s)
        field += np.float32(rng.uniform(0.03, 0.08)) * term
    return field


def _correlated_noise(shape: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """Unit-variance Gaussian noise with a little spatial correlation (a 3-tap blur in xy)."""
    n = rng.standard_normal(size=shape, dtype=np.float32)
    n = (n + 0.5 * np.roll(n, 1, axis=1) + 0.5 * np.roll(n, 1, axis=2)) / np.float32(np.sqrt(1.5))
    return n
