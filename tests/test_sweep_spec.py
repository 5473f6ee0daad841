"""Study specs: the shipped studies load; every malformed spec fails with one clear line."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from unetbench import ConfigError
from unetbench.sweep import StudySpec, load_study_spec
from unetbench.sweep.spec import parse_bytes, tomllib

STUDIES = Path(__file__).parent.parent / "studies"
GOOD = tomllib.loads((STUDIES / "smoke.toml").read_text())


@pytest.mark.parametrize("name", ["smoke", "quick", "anisotropic", "gpu"])
def test_shipped_studies_load(name: str) -> None:
    spec = load_study_spec(STUDIES / f"{name}.toml")
    assert spec.name == name
    assert {"up_mode", "merge_mode", "normalization", "attention"} <= set(spec.search) or (
        name == "smoke"
    )
    assert spec.n_trials >= 1 and spec.objectives


def test_smoke_study_spec_round_trip() -> None:
    spec = load_study_spec(STUDIES / "smoke.toml")
    assert spec.patch_shape == tuple(GOOD["train"]["patch_shape"])
    assert spec.memory_budget_bytes == 2**30
    assert spec.directions == ["maximize", "minimize"]
    again = StudySpec.from_dict(GOOD, source="other")
    assert again.fingerprint() == spec.fingerprint()
    changed = copy.deepcopy(GOOD)
    changed["n_trials"] = 99  # more trials do not change what a trial measures
    assert StudySpec.from_dict(changed).fingerprint() == spec.fingerprint()
    changed["train"]["lr"] = 0.1
    assert StudySpec.from_dict(changed).fingerprint() != spec.fingerprint()


def _set(path: str, value: Any) -> dict[str, Any]:
    raw = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    table = raw
    for key in parents:
        table = table.setdefault(key, {})
    if value is _DELETE:
        del table[last]
    else:
        table[last] = value
    return raw


_DELETE = object()
BAD = [
    ("colour", "blue", "unknown key colour"),
    ("name", _DELETE, "missing required key 'name'"),
    ("name", "a b", "name must be"),
    ("n_trials", 0, "n_trials must be an integer >= 1"),
    ("search.depth", [2, 3], "search.depth cannot be searched"),
    ("search.in_channels", [1], "in_channels cannot be searched"),
    ("search.up_mode", ["transpose", "bilinear"], 'up_mode choice "bilinear" is never legal'),
    ("search.normalization", ["batch", "group7"], 'normalization choice "group7" is never leg'),
    ("search.attention", [], "must be a non-empty list"),
    ("search.attention", [True, True], "lists a choice twice"),
    ("search.planar_blocks", [0, 1], "planar_blocks choices are lists"),
    ("search.planar_blocks", [[], [5]], "planar_blocks choice \\[5\\] is never legal"),
    ("fixed.colour", 3, "fixed.colour is not a UNetConfig field"),
    ("fixed.attention", True, "attention is both fixed and searched"),
    ("fixed.normalization", "group7", "no searched combination is a legal UNetConfig"),
    ("fixed.n_blocks", 5, "patch_shape 8x32x32 is illegal for the fixed config"),
    ("fixed.dim", 2, "has 3 axes but dim=2"),
    ("train.patch_shape", [8, 32], "has 2 axes but dim=3"),
    ("train.patch_shape", "8x32x32", "patch_shape must be"),
    ("train.epochs", 3, "unknown key train.epochs"),
    ("train.steps", _DELETE, "train.steps must be an integer"),
    ("train.seconds", -1, "train.seconds must be a positive number"),
    ("train.dice_loss", "yes", "train.dice_loss must be true or false"),
    ("objectives.accuracy", "maximize", "objectives.accuracy is not a record column"),
    ("objectives.val_dice", "up", "objectives.val_dice must be 'maximize' or 'minimize'"),
    ("objectives", {}, "must name at least one"),
    ("memory_budget", "lots", "memory_budget must be a positive size"),
    ("memory_budget", "8 parsecs", "memory_budget must be a positive size"),
    ("sampler.name", "cmaes", "sampler.name='cmaes'; choose one of"),
    ("sampler.n_startup_trials", 3, "unknown key sampler \\(nsga2\\).n_startup_trials"),
    ("profile.checkpointing", ["none", "all"], "checkpointing mode 'all' unknown"),
    ("profile.checkpointing", [], "non-empty list of distinct mode names"),
    ("profile.options", {"repeat": 3}, "unknown key profile.options.repeat"),
    ("data.kind", "tiff", "data.kind='tiff'"),
    ("data.colour", 3, "data.colour: unknown key"),
    ("train.device", "gpu", "train.device: unknown device 'gpu'; use cpu, cuda or cuda:N"),
    ("objectives.train_voxels_per_s", "maximize", "needs profile.options.timing = true"),
    (
        "profile.options",
        {"measure_memory": False},
        "objectives.peak_mem_train_bytes needs profile.options.measure_memory = true, but it "
        "is false; optimise est_peak_mem_train_bytes",
    ),
    ("memory_headroom", "1GiB", "must be larger than the headroom kept free on cpu"),
    ("memory_headroom", "2GiB", "must be larger than the headroom"),
    ("profile.options", {"rounds": 0}, "profile.options.rounds must be an integer >= 1"),
    ("profile.options", {"max_seconds": -1}, "profile.options.max_seconds must be a number > 0"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD, ids=[f"{p}={v}" for p, v, _ in BAD])
def test_malformed_spec_is_a_config_error(path: str, value: Any, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        StudySpec.from_dict(_set(path, value), source="bad.toml")
    assert "\n" not in str(info.value) and str(info.value).startswith("bad.toml: ")


def test_patch_illegal_for_one_searched_choice_names_it() -> None:
    raw = _set("search.planar_blocks", [[], [0]])
    raw["train"]["patch_shape"] = [9, 32, 32]  # legal only when block 0 is planar
    with pytest.raises(ConfigError, match=r"9x32x32 is illegal for planar_blocks=\[\]"):
        StudySpec.from_dict(raw, source="bad.toml")


def test_combinations_illegal_only_together_are_allowed() -> None:
    raw = _set("search.up_mode", ["transpose", "resizeconv_linear"])
    assert StudySpec.from_dict(raw).search["merge_mode"] == ("concat", "add")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("8GiB", 8 * 2**30), ("512 MiB", 512 * 2**20), ("2GB", 2 * 10**9), (1024, 1024)],
)
def test_parse_bytes(text: Any, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such study spec"):
        load_study_spec(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match=r"a study spec is a \.toml file"):
        load_study_spec(tmp_path / "spec.json")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = 'x\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_study_spec(broken)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("name = 'x'\n[search]\nup_mode = ['sideways']\n", "missing required key"),
        ("bogus = 1\n" + (STUDIES / "smoke.toml").read_text(), "unknown key bogus"),
    ],
)
def test_cli_malformed_spec_one_line_exit_2(tmp_path: Path, text: str, message: str) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(text)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "unetbench.cli.main",
            "sweep",
            str(spec),
            "--results-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("unetbench sweep:")
    assert not (tmp_path / "x").exists() and not (tmp_path / "smoke").exists()


def test_cuda_study_without_cuda_is_refused_before_any_trial(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from unetbench import UsageError
    from unetbench.sweep import run_sweep

    with pytest.raises(UsageError, match="no CUDA GPU is available"):
        run_sweep(STUDIES / "gpu.toml", results_dir=tmp_path, show_progress=False)
    assert not (tmp_path / "gpu").exists()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"train": {"precision": "fp8"}}, r"train.precision must be one of \['fp32', 'bf16'"),
        ({"search": {"precision": ["fp32", "int8"]}}, r"search.precision choice must be one of"),
        ({"profile": {"checkpointing": ["auto", "none"]}}, r"'auto' chooses among all"),
        ({"memory_headroom": "lots"}, r"memory_headroom must be a positive size"),
    ],
)
def test_precision_auto_and_headroom_mistakes(change: dict[str, Any], match: str) -> None:
    raw = _smoke_raw()
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    with pytest.raises(ConfigError, match=match):
        StudySpec.from_dict(raw, "<test>")


def test_precision_auto_and_headroom_are_read() -> None:
    raw = _smoke_raw()
    raw["train"] = {**raw["train"], "precision": "bf16"}
    raw["search"] = {**raw["search"], "precision": ["fp32", "bf16"]}
    raw["profile"] = {**raw["profile"], "checkpointing": "auto"}
    raw["memory_headroom"] = 0
    spec = StudySpec.from_dict(raw, "<test>")
    assert (spec.precision, spec.checkpointing, spec.memory_headroom_bytes) == (
        "bf16",
        ("auto",),
        0,
    )
    plain = StudySpec.from_dict(_smoke_raw(), "<test>")
    assert plain.precision == "fp32" and plain.memory_headroom_bytes is None


def _smoke_raw() -> dict[str, Any]:
    return copy.deepcopy(GOOD)
