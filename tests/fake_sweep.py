"""A sweep process with the fake evaluator, for tests that kill, stop or interrupt it.

Run as ``python tests/fake_sweep.py --n N --storage URL --results DIR [...]``: it calls
:func:`unetbench.run_sweep` with :class:`test_sweep_mechanics.FakeEvaluator` (a training takes
``--delay`` seconds and leaves a marker file) and exits as ``unetbench sweep`` does: one line
and 2 for a mistake, 75 when the storage stayed away past the grace period, 128 + the signal
when interrupted. ``--rungs 2,4,8`` (with ``--eta``, ``--artifacts``) makes it a study with
successive-halving rungs; ``--promote-delay`` is then how long a promotion trains, and each
promotion leaves a marker file ``promote-<pid>-<ns>``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))  # spawned workers unpickle FakeEvaluator

from test_sweep_mechanics import FAKE_SPEC, FakeEvaluator

from unetbench.cli.main import guarded
from unetbench.sweep import StudySpec, run_sweep
from unetbench.sweep.spec import tomllib

# Every config is legal and trains (FakeEvaluator's outcomes depend on start_filts 8 and 64
# and normalization "none"), so every trial is one a kill or an outage can land in.
ALL_TRAIN = {
    "up_mode": ["transpose"],
    "merge_mode": ["concat", "add"],
    "normalization": ["batch"],
    "start_filts": [4, 6, 10, 12, 14, 16, 18, 20],
    "attention": [False],
}


def fake_spec(
    n_trials: int, confirm: bool = False, rungs: list[int] | None = None, eta: int | None = None
) -> StudySpec:
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=n_trials, search=ALL_TRAIN)
    if confirm:
        raw["confirm"] = {"top": 2, "repeats": 2}
    if rungs:
        raw["train"]["steps"] = rungs
    if eta is not None:
        raw["train"]["eta"] = eta
    return StudySpec.from_dict(raw, source="<fake>")


class PromotingEvaluator(FakeEvaluator):
    """FakeEvaluator whose promotions (runs that continue from a stored state) take
    ``promote_delay`` seconds and leave a marker file ``promote-<pid>-<ns>``."""

    def __init__(self, promote_delay: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.promote_delay = promote_delay

    def train(self, spec: StudySpec, config: Any, data: Any, checkpointing: str, *,
              seed: int, resume: bytes | None = None, keep_state: bool = False,
              ) -> dict[str, Any]:  # fmt: skip
        if resume is not None:
            if self.marker_dir is not None:
                Path(self.marker_dir, f"promote-{os.getpid()}-{time.monotonic_ns()}").touch()
            time.sleep(self.promote_delay)
        return super().train(spec, config, data, checkpointing, seed=seed, resume=resume,
                             keep_state=keep_state)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--storage", default=None)
    p.add_argument("--results", required=True)
    p.add_argument("--delay", type=float, default=2.0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--heartbeat", type=int, default=None)
    p.add_argument("--grace", type=int, default=None)
    p.add_argument("--markers", default=None)
    p.add_argument("--confirm", action="store_true")
    p.add_argument("--rungs", default=None, help="e.g. 2,4,8: a study with rungs")
    p.add_argument("--eta", type=int, default=None)
    p.add_argument("--artifacts", default=None)
    p.add_argument("--promote-delay", type=float, default=None)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("optuna").setLevel(logging.WARNING)

    rungs = [int(s) for s in args.rungs.split(",")] if args.rungs else None
    evaluator = (
        FakeEvaluator(delay=args.delay, marker_dir=args.markers)
        if args.promote_delay is None
        else PromotingEvaluator(args.promote_delay, delay=args.delay, marker_dir=args.markers)
    )

    def sweep() -> int:
        run_sweep(
            fake_spec(args.n, args.confirm, rungs, args.eta),
            workers=args.workers,
            storage=args.storage,
            results_dir=args.results,
            evaluator=evaluator,
            show_progress=False,
            heartbeat_interval=args.heartbeat,
            grace_period=args.grace,
            artifacts=args.artifacts,
        )
        return 0

    return guarded("sweep", sweep)


if __name__ == "__main__":
    raise SystemExit(main())
