"""Does successive halving give the full run's answer? Figures for docs/benchmarks.md.

Compares a study with rungs (e.g. studies/rungs-cpu.toml, eta = 3) with its reference
(studies/rungs-cpu-full.toml, eta = 1: every config trained to the top rung, its Dice recorded
at every rung) from their results folders (trials.parquet, runs.parquet):

    python scripts/rung_evidence.py /tmp/rungs-results/rungs-cpu /tmp/rungs-results/rungs-cpu-full

Prints (a) the training steps of the rung run as a fraction of the full run's (steps each run
trained: ``steps_done - resumed_steps``); (b) the rung run's best config and front against the
full run's at the top rung, with the full run's rank of each; (c) Kendall's tau-b
(scipy.stats.kendalltau) between the Dice at each rung and at the top rung over the full run's
configs, with the report's percentile bootstrap 95% interval
(``unetbench.report.rungs.bootstrap_tau``: configs resampled, 2000 resamples, seed 0);
and the configs whose rank moves most between the first and the top rung.

Seed noise at the top rung, for judging (b): train given configs of the study with further
seeds (``--seeds``), as the sweep trains them, and print their Dice:

    python scripts/rung_evidence.py --spec studies/rungs-cpu-full.toml \
        --config transpose/add/batch/False --steps 320 --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import kendalltau

OBJECTIVES = (("val_dice", "maximize"), ("peak_mem_train_bytes", "minimize"))
FACTORS = ("up_mode", "merge_mode", "normalization", "attention")


def ladder(folder: Path) -> pd.DataFrame:
    """One row per (config, rung) a config finished: Dice and memory of that rung's trial."""
    t = pd.read_parquet(folder / "trials.parquet")
    done = t[
        (t["trial_state"] == "COMPLETE")
        & t["role"].isin(["search", "promote"])
        & t["feasible"].fillna(False).astype(bool)
    ].copy()
    done["rung"] = done["rung"].fillna(0).astype(int)
    done["config"] = done[list(FACTORS)].astype(str).agg("/".join, axis=1)
    return done.sort_values("trial_number").drop_duplicates(["config_key", "rung"])[
        ["trial_number", "config_key", "config", "rung", "train_steps", "val_dice",
         "peak_mem_train_bytes"]
    ]  # fmt: skip


def steps_trained(folder: Path) -> int:
    runs = pd.read_parquet(folder / "runs.parquet")
    return int((runs["steps_done"] - runs["resumed_steps"].fillna(0)).sum())


def front(frame: pd.DataFrame) -> set[str]:
    """Configs no other config beats in both objectives (non-dominated)."""
    signs = np.array([1.0 if d == "maximize" else -1.0 for _, d in OBJECTIVES])
    values = frame[[c for c, _ in OBJECTIVES]].to_numpy(float) * signs
    keep = set()
    for i, row in enumerate(values):
        dominated = np.any(np.all(values >= row, axis=1) & np.any(values > row, axis=1))
        if not dominated:
            keep.add(frame["config"].iloc[i])
    return keep


def tau_with_interval(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Kendall's tau-b and the report's bootstrap 95% interval (unetbench.report.rungs)."""
    from unetbench.report.rungs import RESAMPLES, SEED, bootstrap_tau

    assert (RESAMPLES, SEED) == (2000, 0)  # as the module docstring says
    low, high, _ = bootstrap_tau(x, y)
    return float(kendalltau(x, y).statistic), low, high


def seed_dice(spec_path: str, config: str, steps: int, seeds: list[int]) -> None:
    """Train ``config`` (``up_mode/merge_mode/normalization/attention``) of the study for
    ``steps`` steps with each seed, as the sweep's evaluator does, and print its Dice."""
    import torch

    from unetbench import load_study_spec
    from unetbench.config import UNetConfig
    from unetbench.data import make_dataset
    from unetbench.train import train_and_evaluate

    spec = load_study_spec(spec_path)
    torch.set_num_threads(spec.threads or 1)
    up, merge, norm, attention = config.split("/")
    net = UNetConfig(**spec.fixed, up_mode=up, merge_mode=merge, normalization=norm,
                     attention=attention == "True")  # fmt: skip
    data = make_dataset(spec.data)
    for seed in seeds:
        result = train_and_evaluate(net, data, patch_shape=spec.patch_shape,
                                    batch_size=spec.batch_size, steps=steps, lr=spec.lr,
                                    dice_loss=spec.dice_loss, seed=seed)  # fmt: skip
        print(f"{config} {steps} steps seed {seed}: Dice {result.val_dice:.4f}", flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rungs", type=Path, nargs="?",
                   help="results folder of the study with rungs (eta > 1)")  # fmt: skip
    p.add_argument("full", type=Path, nargs="?", help="results folder of the reference (eta = 1)")
    p.add_argument("--spec", help="seed noise: the study whose configs to train")
    p.add_argument("--config", help="seed noise: up_mode/merge_mode/normalization/attention")
    p.add_argument("--steps", type=int, help="seed noise: training steps")
    p.add_argument("--seeds", type=int, nargs="+", help="seed noise: training seeds")
    args = p.parse_args(argv)
    if args.spec:
        seed_dice(args.spec, args.config, args.steps, args.seeds)
        return 0
    if args.rungs is None or args.full is None:
        p.error("give the two results folders, or --spec, --config, --steps and --seeds")
    spec = json.loads((args.full / "study.json").read_text())["spec"]
    rungs = [int(s) for s in spec["rungs"]]
    top = len(rungs) - 1

    rung_steps, full_steps = steps_trained(args.rungs), steps_trained(args.full)
    print(f"(a) training steps: rung run {rung_steps}, full run {full_steps}: "
          f"{rung_steps / full_steps:.1%}")  # fmt: skip

    full, short = ladder(args.full), ladder(args.rungs)
    counts = {k: int((short["rung"] == k).sum()) for k in range(top + 1)}
    print(f"    configs per rung in the rung run: {counts}")
    wide = full.pivot(index="config", columns="rung", values="val_dice")
    mem = full[full["rung"] == top].set_index("config")["peak_mem_train_bytes"]
    at_top = full[full["rung"] == top].sort_values("val_dice", ascending=False)
    full_rank = {c: i + 1 for i, c in enumerate(at_top["config"])}
    short_top = short[short["rung"] == top].sort_values("val_dice", ascending=False)
    best = short_top["config"].iloc[0]
    print(f"(b) full run's best at {rungs[top]} steps: {at_top['config'].iloc[0]} "
          f"Dice {at_top['val_dice'].iloc[0]:.4f}")  # fmt: skip
    print(f"    rung run's best: {best}, its Dice {short_top['val_dice'].iloc[0]:.4f}, "
          f"rank {full_rank[best]} of {len(at_top)} in the full run")  # fmt: skip
    full_front, short_front = front(at_top), front(short_top)
    print(f"    full run's front at the top rung: {sorted(full_front)}")
    print(f"    rung run's front (configs at the top rung: {sorted(short_top['config'])}): "
          f"{sorted(short_front)}")  # fmt: skip
    print(f"    of the full front, the rung run reached the top rung with "
          f"{len(full_front & set(short_top['config']))} of {len(full_front)}")  # fmt: skip
    print("    the full run's top-rung table (rank, config, Dice, peak MiB, rung-run top?):")
    for c in at_top["config"]:
        mark = "yes" if c in set(short_top["config"]) else ""
        front_mark = "front" if c in full_front else ""
        print(f"      {full_rank[c]:2d} {c:45s} {wide.loc[c, top]:.4f} "
              f"{mem[c] / 2**20:7.2f} {front_mark:5s} {mark}")  # fmt: skip

    print("(c) Kendall tau-b of each rung's Dice with the top rung's, full run, "
          "bootstrap 95% (the report's: 2000 resamples of the configs, seed 0):")  # fmt: skip
    # Configs in the order of their first trial, as the report orders them, so the bootstrap
    # draws the same resamples and the intervals are the report's.
    first = full[full["rung"] == 0].set_index("config")["trial_number"]
    complete = wide.dropna().sort_index(key=lambda index: index.map(first))
    for k in range(top):
        tau, low, high = tau_with_interval(complete[k].to_numpy(), complete[top].to_numpy())
        print(f"    {rungs[k]:4d} vs {rungs[top]} steps: tau = {tau:.2f} [{low:.2f}, {high:.2f}] "
              f"over {len(complete)} configs")  # fmt: skip
    for k in range(top - 1):
        tau, low, high = tau_with_interval(complete[k].to_numpy(), complete[k + 1].to_numpy())
        print(f"    {rungs[k]:4d} vs {rungs[k + 1]} steps: tau = {tau:.2f} [{low:.2f}, {high:.2f}]")
    ranks = complete.rank(ascending=False, method="min")
    moved = (ranks[0] - ranks[top]).sort_values(key=abs, ascending=False)
    print(f"    largest rank changes from {rungs[0]} to {rungs[top]} steps:")
    for c in moved.head(5).index:
        dice = " -> ".join(f"{complete.loc[c, k]:.3f}" for k in range(top + 1))
        print(f"      {c:45s} rank {int(ranks.loc[c, 0]):2d} -> {int(ranks.loc[c, top]):2d} "
              f"(Dice {dice})")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
