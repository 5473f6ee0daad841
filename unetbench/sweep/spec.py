"""Study specs: what a sweep searches, how each trial is trained and what it optimises.

A study is one TOML file (every key is in docs/sweeps.md, "Writing a study").
:func:`load_study_spec` reads it with :mod:`tomllib` and validates everything before any
tensor exists: unknown keys, unknown ``UNetConfig`` fields, bad choices, a patch shape that is
illegal for some searched combination, bad objectives or directions and unknown samplers all
raise :class:`~unetbench.ConfigError` with one line naming the file, the key and what is
allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from unetbench._errors import ConfigError, UsageError
from unetbench.budget import AUTO
from unetbench.sweep._checks import (
    as_bool,
    as_int,
    as_modes,
    as_positive,
    as_seconds,
    as_shape,
    as_table,
    no_unknown,
    parse_bytes,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["OBJECTIVES", "SAMPLERS", "StudySpec", "load_study_spec", "parse_bytes"]

#: Record columns a study may optimise, with the direction that makes sense for each.
OBJECTIVES: dict[str, str] = {
    "val_dice": "maximize",
    "val_iou": "maximize",
    "train_loss": "minimize",
    "train_s": "minimize",
    "params": "minimize",
    "fwd_macs": "minimize",
    "fwd_flops": "minimize",
    "train_flops": "minimize",
    "peak_mem_train_bytes": "minimize",
    "est_peak_mem_train_bytes": "minimize",
    "est_total_train_bytes": "minimize",
    "peak_mem_infer_bytes": "minimize",
    "train_step_s": "minimize",
    "infer_s": "minimize",
    "train_voxels_per_s": "maximize",
    "infer_voxels_per_s": "maximize",
}
#: Samplers a study may choose and the options each accepts in its ``[sampler]`` table.
SAMPLERS: dict[str, frozenset[str]] = {
    "nsga2": frozenset({"population_size", "mutation_prob", "crossover_prob"}),
    "tpe": frozenset({"n_startup_trials", "multivariate", "n_ei_candidates"}),
    "random": frozenset(),
    "grid": frozenset(),  # every legal config once, in a seeded random order
}
#: Fields a study may search; the others (channels, dim, batch_norm) can only be fixed.
SEARCHABLE = (
    "up_mode",
    "merge_mode",
    "normalization",
    "attention",
    "planar_blocks",
    "n_blocks",
    "start_filts",
    "activation",
    "full_norm",
    "conv_mode",
    "precision",  # not a UNetConfig field: the training precision (fp32, bf16, fp16)
    "memory_format",  # not a UNetConfig field: contiguous or channels_last
)
_TOP_KEYS = {
    "name",
    "description",
    "n_trials",
    "seed",
    "memory_budget",
    "memory_headroom",
    "search",
    "fixed",
    "data",
    "train",
    "profile",
    "objectives",
    "sampler",
    "confirm",
    "storage",
}
# [storage]: how a shared storage is used; none of it changes a trial's result.
_STORAGE_KEYS = {"heartbeat_interval", "grace_period", "connect_timeout", "artifacts"}
_TRAIN_KEYS = {
    "patch_shape", "batch_size", "steps", "seconds", "lr", "dice_loss", "device", "threads",
    "precision", "repeats", "eta", "memory_format",
}  # fmt: skip
_CONFIRM_KEYS = {"top", "repeats"}
_PROFILE_KEYS = {"checkpointing", "options"}
# Keyword options of unetbench.profiler.profile a study may set (timing effort, what to measure).
_PROFILE_OPTIONS = {"warmup", "rounds", "max_seconds", "timing", "measure_memory", "count_flops"}
# Objectives a profile option must stay on for: (option, columns, what to optimise instead).
_NEEDS = (
    ("timing", ("train_step_s", "infer_s", "train_voxels_per_s", "infer_voxels_per_s"), ""),
    (
        "measure_memory",
        ("peak_mem_train_bytes", "peak_mem_infer_bytes"),
        "est_peak_mem_train_bytes (the estimate)",
    ),
    ("count_flops", ("fwd_macs", "fwd_flops", "train_flops"), ""),
)


@dataclasses.dataclass(frozen=True)
class StudySpec:
    """A validated study. Build with :func:`load_study_spec` or :meth:`from_dict`."""

    name: str
    n_trials: int
    search: dict[str, tuple[Any, ...]]  # field -> choices (planar_blocks as tuples)
    fixed: dict[str, Any]  # field -> value, applied under every searched combination
    data: dict[str, Any]  # passed unchanged to unetbench.data.make_dataset
    patch_shape: tuple[int, ...]
    batch_size: int
    steps: int  # every run trains exactly this many steps (with rungs: the top rung's)
    objectives: tuple[tuple[str, str], ...]  # (record column, "maximize" | "minimize")
    seconds: float | None = None  # a guard: a run stopped by it is "capped", not feasible
    repeats: int = 1  # training seeds per search trial; val_dice is their mean
    confirm_top: int = 0  # configs of the Pareto front confirmed after the search; 0: none
    confirm_repeats: int = 0  # seeds each confirmed config has in total
    lr: float = 1e-3
    dice_loss: bool = False
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads per worker; None: cores // workers
    memory_budget_bytes: int | None = None
    memory_headroom_bytes: int | None = None  # None: 512 MiB on CUDA, 0 on the CPU
    precision: str = "fp32"  # training precision unless searched
    memory_format: str = "contiguous"  # weights' and inputs' layout unless searched
    checkpointing: tuple[str, ...] = ("none", "blocks")  # or ("auto",)
    profile_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    sampler: str = "nsga2"
    sampler_options: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    description: str = ""
    heartbeat_interval: int | None = None  # [storage]; None: the storage's default
    grace_period: int | None = None
    connect_timeout: float | None = None
    artifacts: str | None = None  # [storage] artifacts: where trained states are kept
    rungs: tuple[int, ...] = ()  # [train] steps = [40, 160, 640]: successive-halving rungs
    eta: int = 3  # the best 1/eta of a rung are promoted to the next
    source: str = "<dict>"

    def rung_steps(self, rung: int) -> int:
        """Steps a run trains in total at ``rung`` (0 without rungs: ``steps``)."""
        return self.rungs[rung] if self.rungs else self.steps

    @property
    def top_rung(self) -> int:
        return max(len(self.rungs) - 1, 0)

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return ["maximize" if d == "maximize" else "minimize" for _, d in self.objectives]

    @property
    def objective_names(self) -> list[str]:
        return [n for n, _ in self.objectives]

    def fingerprint(self) -> str:
        """Hash of everything that changes a trial's result (not n_trials or the description).

        A study in storage remembers it, so resuming with an edited spec is refused rather
        than mixing trials trained under different settings.
        """
        d = dataclasses.asdict(self)
        # The confirmation round adds trials but changes none, so it can be added later.
        # How the storage is used changes no result either.
        for key in (
            "n_trials", "description", "source", "confirm_top", "confirm_repeats",
            "heartbeat_interval", "grace_period", "connect_timeout", "artifacts",
        ):  # fmt: skip
            d.pop(key)
        # Fields added later count only when set, so studies run before them still resume.
        for key, default in (
            ("precision", "fp32"),
            ("memory_format", "contiguous"),
            ("memory_headroom_bytes", None),
            ("repeats", 1),
            ("rungs", ()),
            ("eta", 3),
        ):
            if d[key] == default:
                d.pop(key)
        blob = json.dumps(d, sort_keys=True, default=list)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = "<dict>") -> StudySpec:
        """Validate a parsed TOML document; see the module docstring for what is checked."""
        spec = _parse(raw, source)
        from unetbench.sweep.space import validate_space

        validate_space(spec)
        _validate_parts(spec)
        return spec


def load_study_spec(path: str | Path) -> StudySpec:
    """Read and validate ``studies/<name>.toml``."""
    path = Path(path)
    if path.suffix != ".toml":
        raise ConfigError(f"{path}: a study spec is a .toml file")
    try:
        raw = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such study spec") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return StudySpec.from_dict(raw, source=str(path))


def _parse(raw: Mapping[str, Any], src: str) -> StudySpec:
    no_unknown(raw, _TOP_KEYS, src, "")
    for key in ("name", "n_trials", "search", "data", "train", "objectives"):
        if key not in raw:
            raise ConfigError(f"{src}: missing required key {key!r}")
    name = raw["name"]
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name):
        raise ConfigError(f"{src}: name must be letters, digits, '_', '-' or '.', got {name!r}")
    train = as_table(raw, "train", src)
    no_unknown(train, _TRAIN_KEYS, src, "train.")
    profile = as_table(raw, "profile", src) if "profile" in raw else {}
    no_unknown(profile, _PROFILE_KEYS, src, "profile.")
    sampler = dict(as_table(raw, "sampler", src)) if "sampler" in raw else {}
    sampler_name = sampler.pop("name", "nsga2")
    if sampler_name not in SAMPLERS:
        raise ConfigError(f"{src}: sampler.name={sampler_name!r}; choose one of {sorted(SAMPLERS)}")
    no_unknown(sampler, SAMPLERS[sampler_name], src, f"sampler ({sampler_name}).")
    budget = raw.get("memory_budget")
    repeats = as_int(train.get("repeats", 1), f"{src}: train.repeats")
    top, confirm_repeats = _confirm(raw, repeats, src)
    storage = as_table(raw, "storage", src) if "storage" in raw else {}
    no_unknown(storage, _STORAGE_KEYS, src, "storage.")
    rungs = _rungs(train.get("steps"), src)
    return StudySpec(
        name=name,
        description=str(raw.get("description", "")),
        n_trials=as_int(raw["n_trials"], f"{src}: n_trials"),
        seed=as_int(raw.get("seed", 0), f"{src}: seed", low=0),
        search=_search(as_table(raw, "search", src), src),
        fixed=dict(as_table(raw, "fixed", src)) if "fixed" in raw else {},
        data=dict(as_table(raw, "data", src)),
        patch_shape=as_shape(train.get("patch_shape"), src),
        batch_size=as_int(train.get("batch_size", 1), f"{src}: train.batch_size"),
        steps=rungs[-1] if rungs else as_int(train.get("steps"), f"{src}: train.steps"),
        rungs=rungs,
        eta=_eta(train, rungs, src),
        seconds=as_seconds(train.get("seconds"), src),
        repeats=repeats,
        confirm_top=top,
        confirm_repeats=confirm_repeats,
        lr=as_positive(train.get("lr", 1e-3), f"{src}: train.lr"),
        dice_loss=as_bool(train.get("dice_loss", False), f"{src}: train.dice_loss"),
        device=_device(train.get("device", "cpu"), f"{src}: train.device"),
        threads=_threads(train, src),
        memory_budget_bytes=None
        if budget is None
        else parse_bytes(budget, f"{src}: memory_budget"),
        memory_headroom_bytes=_headroom(raw, src),
        precision=_precision(train.get("precision", "fp32"), f"{src}: train.precision"),
        memory_format=_memory_format(
            train.get("memory_format", "contiguous"), f"{src}: train.memory_format"
        ),
        checkpointing=as_modes(profile.get("checkpointing", ["none", "blocks"]), src),
        profile_options=dict(profile.get("options", {})),
        objectives=_objectives(as_table(raw, "objectives", src), src),
        sampler=sampler_name,
        sampler_options=sampler,
        heartbeat_interval=_whole_seconds(storage, "heartbeat_interval", src),
        grace_period=_whole_seconds(storage, "grace_period", src),
        connect_timeout=(
            as_positive(storage["connect_timeout"], f"{src}: storage.connect_timeout")
            if "connect_timeout" in storage
            else None
        ),
        artifacts=_artifacts(storage, src),
        source=src,
    )


def _rungs(value: object, src: str) -> tuple[int, ...]:
    """``[train] steps`` as a list: rungs of successive halving, at least two, increasing."""
    if not isinstance(value, list):
        return ()
    rungs = tuple(as_int(v, f"{src}: train.steps rung") for v in value)
    if len(rungs) < 2 or any(b <= a for a, b in itertools.pairwise(rungs)):
        raise ConfigError(
            f"{src}: train.steps as a list gives successive-halving rungs: at least two step "
            f"counts, each larger than the one before, e.g. [40, 160, 640]; got {value!r}"
        )
    return rungs


def _eta(train: Mapping[str, Any], rungs: tuple[int, ...], src: str) -> int:
    if "eta" not in train:
        return 3
    if not rungs:
        raise ConfigError(f"{src}: train.eta needs rungs (train.steps = [40, 160, 640])")
    return as_int(train["eta"], f"{src}: train.eta", low=1)


def _artifacts(storage: Mapping[str, Any], src: str) -> str | None:
    value = storage.get("artifacts")
    if value is not None and (not isinstance(value, str) or not value.strip()):
        raise ConfigError(f"{src}: storage.artifacts must be a folder path, got {value!r}")
    return value


def _whole_seconds(table: Mapping[str, Any], key: str, src: str) -> int | None:
    return as_int(table[key], f"{src}: storage.{key}") if key in table else None


def _confirm(raw: Mapping[str, Any], repeats: int, src: str) -> tuple[int, int]:
    if "confirm" not in raw:
        return 0, 0
    table = as_table(raw, "confirm", src)
    no_unknown(table, _CONFIRM_KEYS, src, "confirm.")
    for key in sorted(_CONFIRM_KEYS - set(table)):
        raise ConfigError(f"{src}: missing required key confirm.{key}")
    top = as_int(table["top"], f"{src}: confirm.top")
    total = as_int(table["repeats"], f"{src}: confirm.repeats", low=repeats + 1)
    return top, total


def _headroom(raw: Mapping[str, Any], src: str) -> int | None:
    value = raw.get("memory_headroom")
    if value is None:
        return None
    if value in (0, "0"):
        return 0
    return parse_bytes(value, f"{src}: memory_headroom")


def _precision(value: object, where: str) -> str:
    from unetbench.precision import PRECISIONS

    if value not in PRECISIONS:
        raise ConfigError(f"{where} must be one of {list(PRECISIONS)}, got {value!r}")
    return str(value)


def _device(value: object, where: str) -> str:
    from unetbench.device_names import parse_device

    try:
        return parse_device(str(value))
    except UsageError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _memory_format(value: object, where: str) -> str:
    from unetbench.model.training import MEMORY_FORMATS

    if value not in MEMORY_FORMATS:
        raise ConfigError(f"{where} must be one of {list(MEMORY_FORMATS)}, got {value!r}")
    return str(value)


def _threads(train: Mapping[str, Any], src: str) -> int | None:
    return None if "threads" not in train else as_int(train["threads"], f"{src}: train.threads")


def _validate_parts(spec: StudySpec) -> None:
    """Check the [data] table, checkpointing modes and profiler options with their owners."""
    from unetbench.data import DataSpec
    from unetbench.model.policies import policy_names

    src = spec.source
    try:
        DataSpec.from_dict(spec.data)
    except ConfigError as exc:
        raise ConfigError(f"{src}: {exc}") from None
    known = policy_names()
    if AUTO in spec.checkpointing and spec.checkpointing != (AUTO,):
        raise ConfigError(
            f"{src}: profile.checkpointing = 'auto' chooses among all policies; give it alone"
        )
    for mode in spec.checkpointing:
        if mode not in (*known, AUTO):
            raise ConfigError(
                f"{src}: profile.checkpointing mode {mode!r} unknown; modes: {known} or 'auto'"
            )
    for value in spec.search.get("precision", ()):
        _precision(value, f"{src}: search.precision choice")
    for value in spec.search.get("memory_format", ()):
        _memory_format(value, f"{src}: search.memory_format choice")
    bad = sorted(set(spec.profile_options) - _PROFILE_OPTIONS)
    if bad:
        raise ConfigError(
            f"{src}: unknown key profile.options.{bad[0]}; allowed: {sorted(_PROFILE_OPTIONS)}"
        )
    _check_measured(spec)
    _check_budget(spec)
    _check_timing(spec)


def _check_timing(spec: StudySpec) -> None:
    """[profile] options warmup, rounds and max_seconds as the profiler takes them."""
    from unetbench.profiler.timing import check_timing_args

    opts = spec.profile_options
    try:
        check_timing_args(opts.get("warmup", 1), opts.get("rounds", 5), opts.get("max_seconds"))
    except UsageError as exc:
        raise ConfigError(f"{spec.source}: profile.options.{exc}") from None


def _check_measured(spec: StudySpec) -> None:
    """Every objective must be measured by the profile the study runs."""
    for name in spec.objective_names:
        for option, columns, instead in _NEEDS:
            if name in columns and spec.profile_options.get(option, True) is False:
                hint = f"; optimise {instead} instead" if instead else ""
                raise ConfigError(
                    f"{spec.source}: objectives.{name} needs profile.options.{option} = true, "
                    f"but it is false{hint}"
                )


def _check_budget(spec: StudySpec) -> None:
    """A budget must leave something once its headroom is kept free."""
    from unetbench.budget import budget_columns

    cols = budget_columns(spec)
    usable = cols["memory_usable_bytes"]
    if usable is not None and usable <= 0:
        raise ConfigError(
            f"{spec.source}: memory_budget ({cols['memory_budget_bytes']} B) must be larger "
            f"than the headroom kept free on {spec.device} ({cols['memory_headroom_bytes']} B); "
            "raise memory_budget or lower memory_headroom"
        )


def _search(table: Mapping[str, Any], src: str) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for field, choices in table.items():
        if field not in SEARCHABLE:
            raise ConfigError(
                f"{src}: search.{field} cannot be searched; searchable UNetConfig fields are "
                f"{list(SEARCHABLE)} (put other fields under [fixed])"
            )
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"{src}: search.{field} must be a non-empty list of choices")
        if field == "planar_blocks":
            bad = [c for c in choices if not isinstance(c, list)]
            if bad:
                raise ConfigError(
                    f"{src}: search.planar_blocks choices are lists of block indices like "
                    f"[] or [0, 1], got {bad[0]!r}"
                )
            values: list[Any] = [tuple(c) for c in choices]
        else:
            values = list(choices)
            if any(isinstance(c, (list, dict)) for c in values):
                raise ConfigError(f"{src}: search.{field} choices must be plain values: {choices}")
        if len({json.dumps(v, default=list) for v in values}) != len(values):
            raise ConfigError(f"{src}: search.{field} lists a choice twice: {choices}")
        out[field] = tuple(values)
    return out


def _objectives(table: Mapping[str, Any], src: str) -> tuple[tuple[str, str], ...]:
    if not table:
        raise ConfigError(f"{src}: [objectives] must name at least one record column")
    out = []
    for name, direction in table.items():
        if name not in OBJECTIVES:
            raise ConfigError(
                f"{src}: objectives.{name} is not a record column a sweep can optimise; "
                f"choose from {sorted(OBJECTIVES)}"
            )
        if direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"{src}: objectives.{name} must be 'maximize' or 'minimize', got {direction!r}"
            )
        out.append((name, direction))
    return tuple(out)
