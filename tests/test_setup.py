"""A newcomer's set-up: tested versions, imports from any folder, one-line mistakes about
where a sweep writes, sizes echoed in binary units, and a checkout the documented commands
leave clean. Every command runs as a real process."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from unetbench._versions import TESTED_MAJORS, require_tested
from unetbench.units import binary_size, parse_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
CLI = [sys.executable, "-m", "unetbench.cli.main"]


def _constraints() -> dict[str, str]:
    """The pins of constraints.txt that apply to this Python."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            (spec,) = req.specifier
            assert spec.operator == "==", f"constraints.txt: {line!r} is not NAME==VERSION"
            assert str(req.marker) == 'python_version >= "3.11"', line
            if req.marker.evaluate():
                pins[canonicalize_name(req.name)] = spec.version
    return pins


def _requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    reqs = [Requirement(r) for r in project["dependencies"]]
    reqs += [Requirement(r) for name in ("test", "postgres", "grpc") for r in extras[name]]
    return [r for r in reqs if r.name != "unetbench" and (r.marker is None or r.marker.evaluate())]


# ----------------------------------------------------------------------------- versions


def test_the_environment_holds_exactly_the_constrained_versions() -> None:
    """What the tests run with is what constraints.txt pins (scripts/setup.sh installs it)."""
    pins = _constraints()
    if sys.version_info < (3, 11):
        pytest.skip("constraints.txt pins versions for Python >= 3.11 only")
    assert "torch" not in pins and "unetbench" not in pins
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    wrong = {name: (v, installed.get(name)) for name, v in pins.items() if installed.get(name) != v}
    assert not wrong, f"pinned vs installed: {wrong}"
    for req in _requirements():  # every dependency is pinned
        assert canonicalize_name(req.name) in pins or req.name == "torch", req.name


def test_pyproject_allows_the_tested_versions_and_bounds_optuna_and_torch() -> None:
    pins = _constraints()
    if sys.version_info < (3, 11):
        pytest.skip("constraints.txt pins versions for Python >= 3.11 only")
    reqs = {canonicalize_name(r.name): r for r in _requirements()}
    for name, req in reqs.items():
        version = pins.get(name) or metadata.version(name)
        assert req.specifier.contains(version, prereleases=True), f"{req} excludes {version}"
    optuna = reqs["optuna"].specifier
    majors = TESTED_MAJORS["optuna"]
    assert all(optuna.contains(f"{m}.0.0") and optuna.contains(f"{m}.99") for m in majors)
    assert not optuna.contains(f"{max(majors) + 1}.0.0")
    assert not optuna.contains(f"{min(majors) - 1}.99")
    assert int(pins["optuna"].split(".")[0]) in majors
    torch = reqs["torch"].specifier
    assert not torch.contains("3.0.0") and torch.contains(metadata.version("torch").split("+")[0])


def _fake_optuna(folder: Path, version: str) -> dict[str, str]:
    """An environment whose `optuna` distribution says ``version`` (found first)."""
    dist = folder / f"optuna-{version}.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: optuna\nVersion: {version}\n")
    env = dict(os.environ)
    env["PYTHONPATH"] = f"{folder}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def test_an_untested_optuna_major_is_one_line_at_sweep_start(tmp_path: Path) -> None:
    env = _fake_optuna(tmp_path / "site", "6.0.0")
    results = tmp_path / "results"
    proc = subprocess.run(
        [*CLI, "sweep", str(ROOT / "studies/smoke.toml"), "--results-dir", str(results)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "unetbench sweep: error: optuna 6.0.0 is installed, but unetbench is tested with optuna "
        "5.x only (it uses Optuna's internals); install a tested version: "
        "pip install 'optuna>=5,<6'"
    ]
    assert not results.exists()
    server = subprocess.run(
        [*CLI, "storage-server", "--storage", f"sqlite:///{tmp_path / 'proxy.db'}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert server.returncode == 2 and server.stderr.splitlines() == [
        proc.stderr.splitlines()[0].replace("unetbench sweep:", "unetbench storage-server:")
    ]
    assert not (tmp_path / "proxy.db").exists()
    # `import unetbench` stays light and works; the library's sweep entry point refuses.
    probe = (
        "import unetbench\n"
        "try:\n    unetbench.run_sweep\nexcept unetbench.UsageError as e:\n    print(e)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True
    )
    assert out.stdout.startswith("optuna 6.0.0 is installed, but unetbench is tested with")


def test_require_tested_reads_the_installed_version() -> None:
    require_tested("optuna")  # the tests run on a tested major
    with pytest.raises(Exception, match=r"optuna 4\.9\.0 is installed.*'optuna>=5,<6'"):
        require_tested("optuna", "4.9.0")


# ----------------------------------------------------------------------------- imports


@pytest.mark.parametrize("where", ["parent", "elsewhere"])
def test_imports_from_the_folder_above_a_checkout_named_unetbench(
    tmp_path: Path, where: str
) -> None:
    """A folder named ``unetbench`` without ``__init__.py`` next to a script (the checkout,
    seen from its parent) must not shadow the package as an empty namespace package."""
    parent = tmp_path / "work"
    parent.mkdir()
    (parent / "unetbench").symlink_to(ROOT)  # a checkout named unetbench, seen from above
    script = parent / "first_look.py"
    script.write_text(
        "import unetbench\n"
        "from unetbench import UNetConfig\n"
        "print(unetbench.__file__, UNetConfig(n_blocks=2).n_blocks)\n"
    )
    cwd = parent if where == "parent" else tmp_path
    out = subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    path, blocks = out.stdout.split()
    assert Path(path).resolve() == ROOT / "unetbench" / "__init__.py" and blocks == "2"


# ----------------------------------------------------------------------------- mistakes


def _sweep(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*CLI, "sweep", str(ROOT / "studies/smoke.toml"), "--no-progress", *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot create files in (root can write anywhere but in /sys)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read-only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    sys_dir = Path("/sys/kernel")
    try:
        (sys_dir / "unetbench-probe").touch()
    except OSError:
        return sys_dir
    pytest.skip("running as root, and even /sys is writable here")


#: case -> (arguments, given the unwritable folder; what the one line says)
PLACE_MISTAKES = {
    "results-dir is a file": (["--results-dir", "notes.txt"], "notes.txt is a file, not a folder"),
    "results-dir under a file": (["--results-dir", "notes.txt/sub"], "notes.txt is a file, not"),
    "results-dir unwritable": (["--results-dir", "{ro}/results"], "no permission to write in"),
    "journal in a missing folder": (["--storage", "missing/s.journal"],
                                    "the folder missing does not exist"),
    "sqlite in a missing folder": (["--storage", "sqlite:///missing/s.db"],
                                   "the folder missing does not exist"),
    "journal under a file": (["--storage", "notes.txt/s.journal"], "is a file, not a folder"),
    "journal is a folder": (["--storage", "a.journal"], "a.journal is a folder"),
    "journal unwritable": (["--storage", "{ro}/s.journal"], "no permission to write"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(PLACE_MISTAKES))
def test_place_mistakes_are_one_line_exit_2_and_create_nothing(tmp_path: Path, case: str) -> None:
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.journal").mkdir()
    args, expected = PLACE_MISTAKES[case]
    if any("{ro}" in a for a in args):
        ro = _unwritable(tmp_path)
        args = [a.format(ro=ro) for a in args]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc = _sweep(tmp_path, *args)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("unetbench sweep: error: --"), proc.stderr
    assert expected in lines[0]
    assert proc.stdout == ""
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


# ----------------------------------------------------------------------------- sizes


@pytest.mark.parametrize(
    ("text", "size", "echo"),
    [
        ("11 GB", 11 * 10**9,
         "11 GB = 10.24 GiB (GB counts 10^9 bytes, GiB 2^30: write 11GiB if you meant that)"),
        ("512MB", 512 * 10**6,
         "512MB = 488.28 MiB (MB counts 10^6 bytes, MiB 2^20: write 512MiB if you meant that)"),
        ("1.5TB", 15 * 10**11,
         "1.5TB = 1.36 TiB (TB counts 10^12 bytes, TiB 2^40: write 1.5TiB if you meant that)"),
        ("11GiB", 11 * 2**30, None),
        ("4096", 4096, None),
    ],
)  # fmt: skip
def test_decimal_sizes_are_echoed_in_binary_units(
    caplog: pytest.LogCaptureFixture, text: str, size: int, echo: str | None
) -> None:
    name = f"--budget of {text!r}"  # echoed once per name and text, in this process
    with caplog.at_level(logging.INFO, logger="unetbench.units"):
        assert parse_bytes(text, name) == size
        assert parse_bytes(text, name) == size
    said = [r.getMessage() for r in caplog.records if r.name == "unetbench.units"]
    assert said == ([f"{name}: {echo}"] if echo else [])


def test_binary_size() -> None:
    assert [binary_size(n) for n in (512, 2048, 11 * 10**9, 2**40)] == [
        "512 B", "2.00 KiB", "10.24 GiB", "1.00 TiB"
    ]  # fmt: skip


def test_the_command_line_echoes_a_decimal_budget(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "plan", "--budget", "50 MB", "--set", "n_blocks=2", "--set", "start_filts=4",
         "--shape", "8,32,32", "--vary", "batch", "--checkpointing", "none"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "--budget: 50 MB = 47.68 MiB (MB counts 10^6 bytes" in proc.stderr


# ----------------------------------------------------------------------------- clean checkout


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout


@pytest.fixture
def git_checkout() -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")


def test_gpu_check_quick_cpu_run_writes_only_ignored_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, git_checkout: None, one_thread: None
) -> None:
    """`gpu-check.sh --quick --device cpu` (the documented CPU run) without --out leaves the
    committed H100 results alone and writes where git ignores it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "scripts/gpu_check.py")
    assert spec is not None and spec.loader is not None
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "gpu_check", gpu_check)  # its dataclasses look it up
    spec.loader.exec_module(gpu_check)
    assert gpu_check.DEFAULT_OUT == ROOT / "results" / "gpu-check"
    assert gpu_check.QUICK_OUT == ROOT / "results" / "gpu-check-quick"
    committed = _git("ls-files", "results/gpu-check").split()
    assert committed  # the H100 run
    stamps = {f: (ROOT / f).stat().st_mtime_ns for f in committed}
    out = tmp_path / "gpu-check-quick"  # QUICK_OUT itself, moved out of the shared checkout
    monkeypatch.setattr(gpu_check, "QUICK_OUT", out)
    assert gpu_check.main(["--device", "cpu", "--quick", "--configs", "2d"]) == 0
    written = sorted(p.name for p in out.iterdir())
    assert written == ["gpu-check.csv", "gpu-check.txt"]
    assert {f: (ROOT / f).stat().st_mtime_ns for f in committed} == stamps
    ignored = [f"results/gpu-check-quick/{name}" for name in written]
    assert _git("check-ignore", *ignored).split() == ignored


def test_the_smoke_study_writes_only_ignored_files(tmp_path: Path, git_checkout: None) -> None:
    """Every file the README's first-look commands make under results/smoke is ignored by git
    (and none is tracked), so `git status` stays clean. Run in a copy: the checkout is shared
    with other processes."""
    import shutil

    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    for command in (["sweep", "studies/smoke.toml", "--no-progress"],
                    ["report", "results/smoke", "--no-plots"]):  # fmt: skip
        proc = subprocess.run([*CLI, *command], cwd=tmp_path, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
    made = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "results").rglob("*"))
    files = [f for f in made if (tmp_path / f).is_file()]
    assert "results/smoke/trials.parquet" in files and "results/smoke/study.db" in files
    assert _git("ls-files", "results/smoke") == ""
    assert _git("check-ignore", *files).split() == files
