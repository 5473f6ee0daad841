"""Several GPUs on one machine: what a worker on ``cuda:1`` does acts on ``cuda:1`` only.

On the CPU the torch.cuda calls are replaced by recorders, so the test checks which device
each synchronise, cache release and peak reset is aimed at; the ``gpu`` test checks on a
machine with two GPUs that a profile on the second leaves the first untouched.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from unetbench import devices
from unetbench.profiler import memory
from unetbench.sweep.evaluator import free_memory


class _FakeCuda:
    """Records every device-directed torch.cuda call as (name, device index)."""

    def __init__(self, current: int = 0) -> None:
        self.current = current
        self.calls: list[tuple[str, int | None]] = []

    def _index(self, device: Any) -> int | None:
        return None if device is None else torch.device(device).index

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        cuda = torch.cuda
        monkeypatch.setattr(cuda, "is_available", lambda: True)
        monkeypatch.setattr(cuda, "device_count", lambda: 2)
        monkeypatch.setattr(cuda, "current_device", lambda: self.current)
        for name in ("synchronize", "reset_peak_memory_stats"):
            monkeypatch.setattr(cuda, name, self._recorder(name))
        for name in ("memory_allocated", "memory_reserved", "max_memory_allocated",
                     "max_memory_reserved"):  # fmt: skip
            monkeypatch.setattr(cuda, name, self._recorder(name, 0))
        monkeypatch.setattr(
            cuda, "empty_cache", lambda: self.calls.append(("empty_cache", self.current))
        )
        monkeypatch.setattr(cuda, "set_device", self._set_device)
        monkeypatch.setattr(cuda, "device", self._device)

    def _recorder(self, name: str, result: Any = None) -> Any:
        def record(device: Any = None) -> Any:
            self.calls.append((name, self._index(device)))
            return result

        return record

    def _set_device(self, device: Any) -> None:
        self.current = torch.device(device).index
        self.calls.append(("set_device", self.current))

    @contextlib.contextmanager
    def _device(self, device: Any) -> Iterator[None]:
        before, self.current = self.current, torch.device(device).index
        try:
            yield
        finally:
            self.current = before


def test_free_memory_acts_on_the_given_or_current_device_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = _FakeCuda(current=0)
    fake.install(monkeypatch)
    free_memory(torch.device("cuda", 1))
    assert fake.calls == [("synchronize", 1), ("empty_cache", 1), ("reset_peak_memory_stats", 1)]
    assert fake.current == 0  # the current device is restored after emptying the cache

    fake.calls.clear()
    devices.make_current("cuda:1")  # what a worker on cuda:1 does first
    free_memory()
    assert fake.calls == [
        ("set_device", 1),
        ("synchronize", 1),
        ("empty_cache", 1),
        ("reset_peak_memory_stats", 1),
    ]


def test_peak_measurement_and_release_aim_at_their_device(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCuda(current=0)
    fake.install(monkeypatch)
    model = torch.nn.Linear(2, 2)
    memory.cuda_peak_bytes(lambda: None, model, torch.device("cuda", 1))
    from unetbench.profiler.devices import release

    release(torch.device("cuda", 1))
    assert fake.calls and all(index == 1 for _, index in fake.calls), fake.calls
    assert fake.current == 0


def test_cpu_device_touches_no_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = _FakeCuda(current=0)
    fake.install(monkeypatch)
    assert devices.make_current("cpu") == torch.device("cpu")
    devices.empty_cache(torch.device("cpu"))
    with devices.on_device(torch.device("cpu")):
        pass
    free_memory("cpu")
    assert fake.calls == []


@pytest.mark.gpu
@pytest.mark.skipif(
    not torch.cuda.is_available() or torch.cuda.device_count() < 2, reason="needs two CUDA GPUs"
)
def test_a_worker_on_the_second_gpu_leaves_the_first_untouched() -> None:
    """In a fresh process (no context yet): profile and train on cuda:1, then free memory;
    cuda:0 must hold no allocator memory (a context made there would show in nvidia-smi)."""
    code = textwrap.dedent(
        """
        import torch
        from unetbench import UNetConfig
        from unetbench.devices import make_current
        from unetbench.profiler import profile
        from unetbench.sweep.evaluator import free_memory

        make_current("cuda:1")
        cfg = UNetConfig(n_blocks=2, start_filts=4)
        profile(cfg, (8, 16, 16), device="cuda:1", rounds=1, count_flops=False,
                checkpointing=("none", "cheap"))
        free_memory()
        assert torch.cuda.memory_reserved(0) == 0, torch.cuda.memory_reserved(0)
        assert torch.cuda.max_memory_allocated(0) == 0
        print("ok")
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False
    )
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-2000:]
