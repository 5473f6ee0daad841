"""A lean live-tensor tracker: the peak bytes of tensor storages alive during a step.

A dispatch mode that keeps one number: bytes of storages alive, each counted once (views
share their storage) and released through a weak reference when the storage dies. It installs
no module hooks, so it does not prolong any tensor's life (torch's ``MemTracker`` does, see
``memory.py``), and it is cheap enough to size a step on fake tensors in a few milliseconds.
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.weak import WeakIdKeyDictionary

__all__ = ["LivePeak"]


class LivePeak(TorchDispatchMode):
    """Dispatch mode recording the peak bytes of live tensor storages (``.peak``)."""

    def __init__(self, trace: bool = False, classify: Callable[[int], int] | None = None) -> None:
        super().__init__()
        self.live = 0
        self.peak = 0
        #: With ``trace``, the live bytes after each new storage: the peak is their maximum.
        self.trace: list[int] | None = [] if trace else None
        #: With ``classify`` (storage bytes -> class index), the live bytes of each class
        #: after each new storage (with ``trace``).
        self.classify = classify
        self.class_trace: list[tuple[tuple[int, int], ...]] = []
        self._by_class: dict[int, int] = {}
        self._sizes: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self._refs: dict[int, weakref.ref[Any]] = {}

    def track(self, t: torch.Tensor) -> None:
        """Count ``t``'s storage if it is not counted yet."""
        st = t.untyped_storage()
        if st in self._sizes:
            return
        nbytes = int(st.nbytes())
        self._sizes[st] = nbytes
        key = id(st)
        self._refs[key] = weakref.ref(st, functools.partial(self._free, nbytes, key))
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        if self.classify is not None:
            c = self.classify(nbytes)
            self._by_class[c] = self._by_class.get(c, 0) + nbytes
        if self.trace is not None:
            self.trace.append(self.live)
            if self.classify is not None:
                self.class_trace.append(tuple(sorted(self._by_class.items())))

    def track_module(self, model: nn.Module) -> None:
        """Count a model's parameters and buffers (created before tracking started)."""
        for t in [*model.parameters(), *model.buffers()]:
            self.track(t)

    def _free(self, nbytes: int, key: int, _ref: object = None) -> None:
        self.live -= nbytes
        if self.classify is not None:
            self._by_class[self.classify(nbytes)] -= nbytes
        self._refs.pop(key, None)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.track(t)
        return out
