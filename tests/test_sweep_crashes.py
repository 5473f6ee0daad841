"""A crash inside a trial is never a result; every row's budget columns are the study's; the
fake evaluators the sweep tests use behave like the real one.

The crash tests run the real :class:`TorchEvaluator` (real data, model, training and profile)
with one bug injected into its training, so the error travels the path a real bug takes.
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import tomllib
from optuna.trial import TrialState
from test_sweep_mechanics import FAKE_SPEC, FakeEvaluator, fake_spec, load

from unetbench import ConfigError
from unetbench.cli.main import main
from unetbench.sweep import StudySpec, TorchEvaluator, load_study_spec, run_sweep
from unetbench.sweep.evaluator import Evaluator
from unetbench.sweep.record import row_of
from unetbench.sweep.space import build_config
from unetbench.units import GIB

SMOKE = Path(__file__).parent.parent / "studies" / "smoke.toml"


class BuggyEvaluator(TorchEvaluator):
    """The real evaluator, whose training raises a KeyError the first ``crashes`` times."""

    def __init__(self, crashes: int) -> None:
        self.crashes = crashes

    def train(
        self, spec: StudySpec, config: Any, data: Any, checkpointing: str, **kwargs: Any
    ) -> dict[str, Any]:
        if self.crashes > 0:
            self.crashes -= 1
            channels = {"in": config.in_channels}
            return {"out": channels["out"]}  # the bug: a KeyError from real code
        return super().train(spec, config, data, checkpointing, **kwargs)


def _smoke(n_trials: int, **changes: Any) -> StudySpec:
    raw = tomllib.loads(SMOKE.read_text())
    raw.update(n_trials=n_trials, **changes)
    raw.pop("confirm")
    return StudySpec.from_dict(raw, str(SMOKE))


def test_a_crash_fails_its_trial_with_type_message_and_traceback_and_the_cli_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    spec_path = tmp_path / "smoke.toml"
    raw = SMOKE.read_text().replace("n_trials = 3", "n_trials = 2")
    spec_path.write_text(raw[: raw.index("[confirm]")])
    monkeypatch.setattr("unetbench.sweep.runner.TorchEvaluator", lambda: BuggyEvaluator(1))
    code = main(["sweep", str(spec_path), "--results-dir", str(tmp_path), "--no-progress"])
    out = capsys.readouterr()
    assert code == 1
    assert "1 trial(s) crashed" in out.err and "trials.parquet" in out.err
    frame = pd.read_parquet(tmp_path / "smoke" / "trials.parquet")
    crashed = frame[frame["trial_state"] == "FAIL"]
    assert len(crashed) == 1
    row = crashed.iloc[0]
    assert (row["status"], row["error_type"]) == ("error", "KeyError")
    assert row["reason"] == "KeyError: 'out'"
    assert 'return {"out": channels["out"]}' in row["traceback"]
    assert row["up_mode"] in ("transpose", "resizeconv_nearest")  # the config that crashed
    ok = frame[frame["trial_state"] == "COMPLETE"]
    assert len(ok) == 2 and ok["status"].eq("ok").all()  # the sweep went on
    study = load(tmp_path, "smoke")
    assert [t.state for t in study.get_trials()].count(TrialState.FAIL) == 1


def test_the_same_crash_twice_in_a_row_stops_the_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    result = run_sweep(_smoke(3), results_dir=tmp_path, evaluator=BuggyEvaluator(10**6),
                       show_progress=False)  # fmt: skip
    assert (result.n_complete, result.n_crashed) == (0, 2)
    assert any("in a row crashed with the same error (KeyError: 'out')" in r.message
               for r in caplog.records)  # fmt: skip
    frame = pd.read_parquet(tmp_path / "smoke" / "trials.parquet")
    assert frame["trial_state"].tolist() == ["FAIL", "FAIL"]  # exported, nothing lost


def test_budget_columns_are_the_studys_on_every_row(tmp_path: Path) -> None:
    """The profile's own (budget-less) keys never overwrite the spec's; the headroom kept
    free on CUDA is in the row, and the over-budget constraint uses the usable memory."""
    raw = tomllib.loads(FAKE_SPEC)
    raw.update(memory_budget="100MB", memory_headroom="60MB", n_trials=3)
    raw["train"]["device"] = "cuda"
    spec = StudySpec.from_dict(raw, "<fake>")
    run_sweep(spec, results_dir=tmp_path, evaluator=FakeEvaluator(), show_progress=False)
    frame = pd.read_parquet(tmp_path / "fake" / "trials.parquet")
    assert len(frame) == 3
    assert frame["memory_budget_bytes"].eq(100_000_000).all()
    assert frame["memory_headroom_bytes"].eq(60_000_000).all()
    assert frame["memory_usable_bytes"].eq(40_000_000).all()
    for t in load(tmp_path).get_trials():
        row = row_of(t)
        over = (row["est_total_train_bytes"] - 40_000_000) / 40_000_000
        assert t.system_attrs["constraints"][0] == pytest.approx(over)


def test_budget_columns_with_the_real_evaluator(tmp_path: Path) -> None:
    spec = _smoke(2)
    run_sweep(spec, results_dir=tmp_path, show_progress=False)
    frame = pd.read_parquet(tmp_path / "smoke" / "trials.parquet")
    assert frame["memory_budget_bytes"].eq(GIB).all()  # smoke.toml: 1GiB on the CPU
    assert frame["memory_headroom_bytes"].eq(0).all()
    assert frame["memory_usable_bytes"].eq(GIB).all()


def test_fakes_conform_to_the_real_evaluator() -> None:
    """Every evaluator the sweep tests use has the real one's methods and signatures, and
    returns the same keys (a subset of the real profile's columns)."""
    spec = load_study_spec(SMOKE)
    config = build_config(spec, {"up_mode": "transpose", "merge_mode": "concat",
                                 "attention": False})  # fmt: skip
    protocol = {
        name
        for name, _ in inspect.getmembers(Evaluator, inspect.isfunction)
        if not name.startswith("_")
    }
    real = TorchEvaluator()
    data = real.load_data(spec)
    want = _answers(real, spec, config, data)
    for fake in (FakeEvaluator(),):
        for name in protocol:
            assert inspect.signature(getattr(type(fake), name)).parameters.keys() == (
                inspect.signature(getattr(Evaluator, name)).parameters.keys()
            ), name
        got = _answers(fake, spec, config, "data")
        assert got["estimate"] == want["estimate"]
        assert got["choose"] == want["choose"]
        assert got["train"] == want["train"]
        assert got["modes"] == want["modes"]
        assert got["profile"] <= want["profile"], got["profile"] - want["profile"]


def _answers(ev: Any, spec: StudySpec, config: Any, data: Any) -> dict[str, Any]:
    mode, est = ev.choose_checkpointing(spec, config, GIB)
    records = ev.profile(spec, config)
    return {
        "estimate": set(ev.estimate_memory(spec, config, "none")),
        "choose": (isinstance(mode, str), set(est)),
        "train": set(ev.train(spec, config, data, "none", seed=0)),
        "modes": [r["checkpointing"] for r in records],
        "profile": set().union(*(set(r) for r in records)),
    }


def test_an_evaluator_missing_a_method_is_refused_before_anything_is_stored(
    tmp_path: Path,
) -> None:
    class Old:
        """A four-method evaluator of an older unetbench: no choose_checkpointing."""

        load_data = FakeEvaluator.load_data
        estimate_memory = FakeEvaluator.estimate_memory
        train = FakeEvaluator.train
        profile = FakeEvaluator.profile

    with pytest.raises(TypeError, match="choose_checkpointing"):
        run_sweep(fake_spec(n_trials=1), results_dir=tmp_path, evaluator=Old(),  # type: ignore[arg-type]
                  show_progress=False)  # fmt: skip
    assert not (tmp_path / "fake").exists()


def test_a_dice_loss_study_is_budgeted_for_the_step_it_trains() -> None:
    """The sweep's estimate, auto choice and profile use training's loss (soft Dice added)."""
    from unetbench.profiler.memory import estimate_step_bytes

    plain, dice = _smoke(1), _smoke(1, train={**tomllib.loads(SMOKE.read_text())["train"],
                                              "dice_loss": True})  # fmt: skip
    config = build_config(plain, {"up_mode": "transpose", "merge_mode": "concat",
                                  "attention": False})  # fmt: skip
    full = (1, config.in_channels, *plain.patch_shape)
    ev = TorchEvaluator()
    with_dice = ev.estimate_memory(dice, config, "none")
    step = estimate_step_bytes(config, full, "none", "fp32", "cpu", dice_loss=True)
    assert with_dice == {"est_peak_mem_train_bytes": step.peak, "est_total_train_bytes": step.total}
    assert with_dice != ev.estimate_memory(plain, config, "none")  # the Dice loss costs memory
    assert ev.choose_checkpointing(dice, config, GIB)[1]["est_peak_mem_train_bytes"] == (
        estimate_step_bytes(
            config,
            full,
            ev.choose_checkpointing(dice, config, GIB)[0],
            "fp32",
            "cpu",
            dice_loss=True,
        ).peak
    )
    (record,) = [r for r in ev.profile(dice, config) if r["checkpointing"] == "none"]
    assert record["dice_loss"] is True


def test_memory_format_is_a_sweep_dimension_like_precision(tmp_path: Path) -> None:
    """Searched memory formats are distinct configs, trained, estimated and recorded in
    their format."""
    from unetbench.profiler.memory import estimate_step_bytes

    raw = tomllib.loads(FAKE_SPEC)
    raw.update(n_trials=4, search={"start_filts": [4, 8],
                                   "memory_format": ["contiguous", "channels_last"]})  # fmt: skip
    spec = StudySpec.from_dict(raw, "<fake>")
    seen: list[tuple[int, str]] = []

    class Recording(FakeEvaluator):
        def train(self, spec: StudySpec, config: Any, *args: Any, **kw: Any) -> dict[str, Any]:
            seen.append((config.start_filts, spec.memory_format))
            return super().train(spec, config, *args, **kw)

    run_sweep(spec, results_dir=tmp_path, evaluator=Recording(), show_progress=False)
    frame = pd.read_parquet(tmp_path / "fake" / "trials.parquet")
    got = sorted(zip(frame["start_filts"], frame["memory_format"], strict=True))
    assert got == sorted(seen) == [(4, "channels_last"), (4, "contiguous"),
                                   (8, "channels_last"), (8, "contiguous")]  # fmt: skip
    assert frame["config_key"].nunique() == 4
    # The real evaluator estimates and trains the step in the trial's format.
    smoke = _smoke(1, train={**tomllib.loads(SMOKE.read_text())["train"],
                             "memory_format": "channels_last"})  # fmt: skip
    config = build_config(smoke, {"up_mode": "transpose", "merge_mode": "concat",
                                  "attention": False})  # fmt: skip
    full = (1, config.in_channels, *smoke.patch_shape)
    step = estimate_step_bytes(config, full, "none", "fp32", "cpu", memory_format="channels_last")
    assert TorchEvaluator().estimate_memory(smoke, config, "none")["est_total_train_bytes"] == (
        step.total
    )
    ev = TorchEvaluator()
    assert ev.train(smoke, config, ev.load_data(smoke), "none", seed=0)["status"] == "ok"
    with pytest.raises(ConfigError, match=r"train\.memory_format must be one of"):
        _smoke(1, train={**tomllib.loads(SMOKE.read_text())["train"], "memory_format": "nhwc"})
