"""Whether a study's data suits its patch shape and its configs, checked before any trial.

Patches larger than a volume are served from a mirror-padded copy, which is right for a
small volume among larger ones but not when the patch exceeds every training volume: then
no patch holds real data alone (a 3D patch on 2D data, axes in the wrong order). Channels
and classes are checked against the fixed config fields, as training would check them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from unetbench._errors import ConfigError

if TYPE_CHECKING:
    from unetbench.data import SegmentationData
    from unetbench.sweep.spec import StudySpec

__all__ = ["check_data"]


def check_data(spec: StudySpec, data: SegmentationData) -> None:
    """Raise ConfigError naming the key, the value and what the data allows."""
    from unetbench.config import UNetConfig

    patch = spec.patch_shape
    shapes = [v.spatial_shape[-len(patch) :] for v in data.train]
    largest = tuple(max(s[i] for s in shapes) for i in range(len(patch)))
    if any(p > n for p, n in zip(patch, largest, strict=True)):
        shown = "x".join(map(str, largest))
        raise ConfigError(
            f"train.patch_shape {list(patch)} does not fit the data: the largest training "
            f"volume is {shown} (allowed: at most {list(largest)})"
        )
    defaults = UNetConfig()
    data.check_model(
        spec.fixed.get("in_channels", defaults.in_channels),
        spec.fixed.get("out_channels", defaults.out_channels),
        "fixed.",
    )
