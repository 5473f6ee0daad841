"""The examples in README.md and docs/*.md run, so the documentation cannot drift from the code.

Every fenced block of a Markdown file is an example of one kind:

* ```` ```python ````: executed, the blocks of one file in document order in one namespace.
* ```` ```console ````: lines starting with ``$ `` are commands (a trailing backslash continues
  one on the next line); the lines after a command are its sample output, not compared unless
  the block is marked ``output``. Each command runs with ``bash -c`` and the venv's
  ``unetbench`` and ``python`` first on ``PATH``, and must exit 0 (or the status marked).
* ```` ```bash ```` / ```` ```sh ````: must be marked ``file PATH`` (a script shown in full,
  written and syntax-checked with ``bash -n``) or skipped.
* ```` ```toml ````, ```` ```text ```` and others: shown only, unless marked ``file PATH``.

All blocks of one file share one sandbox directory, the working directory of both Python and
console blocks: it holds a copy of ``studies/`` and ``results/smoke/``, a finished run of
``unetbench sweep studies/smoke.toml`` made once per session (the same command the docs show),
and ``.venv``, a link to the test's own virtual environment.

A block is marked by an HTML comment on the line just before its fence, words separated by
spaces or semicolons::

    <!-- doc-test: skip gpu -->         not run: needs a GPU (or: server, minutes)
    <!-- doc-test: slow -->             run only under ``-m slow``
    <!-- doc-test: postgres -->         run against a throwaway server (marker postgres): the
                                        placeholder URL below is replaced; without its
                                        password, the password is in ``$HOME/.pgpass``
    <!-- doc-test: exit 2 -->           every command of the block must exit 2
    <!-- doc-test: output -->           every sample output line must appear in the output
    <!-- doc-test: file my.toml -->     the block is written to my.toml (in the sandbox)

Postgres blocks run on their own (only the postgres blocks of a file, in order, in a fresh
sandbox), so they must not depend on other blocks.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
VENV_BIN = Path(sys.executable).parent
SKIP_REASONS = {"gpu", "server", "minutes"}
MAX_SKIPS = 9
#: What a postgres block writes for the database; replaced by the test server's URL. Without
#: ``:PASSWORD`` the block's commands run with ``HOME`` holding a ``.pgpass`` for the server.
PG_PLACEHOLDER = re.compile(
    r"postgresql\+psycopg2://unetbench(:PASSWORD)?@db-host(:5432)?/unetbench"
)
COMMAND_TIMEOUT_S = 300

_FENCE = re.compile(r"^(`{3,})\s*([\w+-]*)\s*$")
_MARK = re.compile(r"^\s*<!--\s*doc-test:(.*?)-->\s*$")


@dataclasses.dataclass(frozen=True)
class Block:
    """One fenced block: where it is, its language, its text and its doc-test marks."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    skip: str | None = None
    slow: bool = False
    postgres: bool = False
    exit_status: int = 0
    output: bool = False
    file: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def _parse_mark(words: list[str], where: str) -> dict[str, Any]:
    marks: dict[str, Any] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if word in {"skip", "exit", "file"}:
            if i + 1 >= len(words):
                raise ValueError(f"{where}: doc-test mark {word!r} needs a value")
            value = words[i + 1]
            if word == "skip":
                marks["skip"] = value
            elif word == "exit":
                marks["exit_status"] = int(value)
            else:
                marks["file"] = value
            i += 2
            continue
        if word in {"slow", "postgres", "output"}:
            marks[word] = True
        else:
            raise ValueError(f"{where}: unknown doc-test mark {word!r}")
        i += 1
    return marks


def parse_blocks(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, with the marks on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        ticks, lang, start = fence.group(1), fence.group(2), i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != ticks:
            body.append(lines[i])
            i += 1
        if i == len(lines):
            raise ValueError(f"{path}:{start + 1}: fence never closed")
        i += 1
        marks: dict[str, Any] = {}
        mark = _MARK.match(lines[start - 1]) if start > 0 else None
        if mark:
            words = mark.group(1).replace(";", " ").split()
            marks = _parse_mark(words, f"{path}:{start}")
        text = "\n".join(body) + "\n"
        blocks.append(Block(path, start + 1, lang, text, **marks))
    return blocks


ALL_BLOCKS = {path.name: parse_blocks(path) for path in DOC_FILES}


def commands(block: Block) -> list[tuple[str, list[str]]]:
    """``(command, sample output lines)`` of a console block."""
    result: list[tuple[str, list[str]]] = []
    lines = block.text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.startswith("$ "):
            if not result:
                raise AssertionError(f"{block.where}: console text before the first `$ ` command")
            result[-1][1].append(line)
            i += 1
            continue
        command = line[2:]
        while command.endswith("\\") and i + 1 < len(lines):
            i += 1
            command = command[:-1] + " " + lines[i].strip()
        result.append((command, []))
        i += 1
    return result


# ----------------------------------------------------------------------------- running


@pytest.fixture(scope="session")
def smoke_results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``results/smoke``: one run of the smoke study, shared by every file's sandbox."""
    work = tmp_path_factory.mktemp("smoke")
    shutil.copytree(ROOT / "studies", work / "studies")
    _run_command("unetbench sweep studies/smoke.toml --no-progress", work, "smoke fixture", 0)
    return work / "results" / "smoke"


def _sandbox(tmp_path: Path, smoke: Path | None) -> Path:
    shutil.copytree(ROOT / "studies", tmp_path / "studies")
    (tmp_path / "results").mkdir()
    if smoke is not None:
        shutil.copytree(smoke, tmp_path / "results" / "smoke")
    (tmp_path / ".venv").symlink_to(VENV_BIN.parent)
    return tmp_path


def _env(home: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["VIRTUAL_ENV"] = str(VENV_BIN.parent)
    env["MPLBACKEND"] = "Agg"
    env.pop("PYTEST_ADDOPTS", None)
    if home is not None:
        env["HOME"] = str(home)
    return env


def _pg_home(cwd: Path, pg_url: str) -> tuple[Path, str]:
    """A home folder whose ``.pgpass`` holds ``pg_url``'s password, and the URL without it."""
    from sqlalchemy.engine import make_url

    url = make_url(pg_url)
    home = cwd / "home"
    home.mkdir(exist_ok=True)
    pgpass = home / ".pgpass"
    fields = [url.host, str(url.port), url.database, url.username, url.password]
    pgpass.write_text(":".join(str(f).replace("\\", "\\\\").replace(":", "\\:") for f in fields))
    pgpass.chmod(0o600)
    bare = url.set(password=None).render_as_string(hide_password=False)
    return home, bare


def _run_command(
    command: str, cwd: Path, where: str, expected: int, home: Path | None = None
) -> str:
    proc = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == expected, (
        f"{where}: `{command}` exited {proc.returncode}, expected {expected}:\n{output[-4000:]}"
    )
    return output


def _squash(text: str) -> str:
    return " ".join(text.split())


def _run_console(block: Block, cwd: Path, home: Path | None = None) -> None:
    for command, sample in commands(block):
        output = _run_command(command, cwd, block.where, block.exit_status, home)
        if block.output:
            for line in sample:
                if line.strip():
                    assert _squash(line) in _squash(output), (
                        f"{block.where}: `{command}` did not print {line.strip()!r}:\n{output}"
                    )


def _write_file(block: Block, cwd: Path) -> None:
    assert block.file is not None
    target = cwd / block.file
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(block.text, encoding="utf-8")
    if block.lang in {"bash", "sh"}:
        _run_command(f"bash -n {shlex.quote(str(target))}", cwd, block.where, 0)
    elif block.lang == "toml":
        tomllib.loads(block.text)
    elif block.lang == "python":
        compile(block.text, block.where, "exec")


def _run_blocks(blocks: list[Block], cwd: Path, pg_url: str | None = None) -> None:
    namespace: dict[str, Any] = {"__name__": "__doc_test__"}
    old = Path.cwd()
    os.chdir(cwd)
    home, bare = _pg_home(cwd, pg_url) if pg_url is not None else (None, "")

    def database(match: re.Match[str]) -> str:
        return pg_url if match.group(1) else bare

    try:
        for block in blocks:
            if pg_url is not None:
                block = dataclasses.replace(block, text=PG_PLACEHOLDER.sub(database, block.text))
            if block.file is not None:
                _write_file(block, cwd)
            elif block.lang == "python":
                exec(compile(block.text, block.where, "exec"), namespace)
            elif block.lang == "console":
                _run_console(block, cwd, home)
    finally:
        os.chdir(old)


def _runnable(block: Block) -> bool:
    return block.skip is None and (block.file is not None or block.lang in {"python", "console"})


def _selected(name: str, kind: str) -> list[Block]:
    blocks = [b for b in ALL_BLOCKS[name] if _runnable(b)]
    if kind == "postgres":
        return [b for b in blocks if b.postgres]
    blocks = [b for b in blocks if not b.postgres]
    return blocks if kind == "slow" else [b for b in blocks if not b.slow]


def _files_with(kind: str) -> list[str]:
    return [name for name, blocks in ALL_BLOCKS.items() if any(getattr(b, kind) for b in blocks)]


@pytest.fixture
def quiet_torch() -> Iterator[None]:
    """One torch thread while the examples run: the test machine's cores are shared."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", list(ALL_BLOCKS))
def test_examples_run(name: str, tmp_path: Path, smoke_results: Path, quiet_torch: None) -> None:
    _run_blocks(_selected(name, "default"), _sandbox(tmp_path, smoke_results))


@pytest.mark.slow
@pytest.mark.parametrize("name", _files_with("slow"))
def test_slow_examples_run(
    name: str, tmp_path: Path, smoke_results: Path, quiet_torch: None
) -> None:
    _run_blocks(_selected(name, "slow"), _sandbox(tmp_path, smoke_results))


@pytest.mark.postgres
@pytest.mark.parametrize("name", _files_with("postgres"))
def test_postgres_examples_run(name: str, tmp_path: Path, pg_url: str) -> None:
    _run_blocks(_selected(name, "postgres"), _sandbox(tmp_path, None), pg_url=pg_url)


# ----------------------------------------------------------------------------- structure


def test_skips_are_few_and_say_why() -> None:
    skipped = [b for blocks in ALL_BLOCKS.values() for b in blocks if b.skip is not None]
    for block in skipped:
        assert block.skip in SKIP_REASONS, (
            f"{block.where}: skip reason {block.skip!r}; allowed: {sorted(SKIP_REASONS)}"
        )
    assert len(skipped) <= MAX_SKIPS, [b.where for b in skipped]


def test_every_shell_block_is_run_or_a_file() -> None:
    for blocks in ALL_BLOCKS.values():
        for block in blocks:
            if block.lang in {"bash", "sh", "shell", "shell-session"}:
                assert block.file is not None or block.skip is not None, (
                    f"{block.where}: a {block.lang} block is never run; write it as "
                    "```console with `$ ` prompts, or mark it `file PATH`"
                )
            if block.lang == "console" and block.skip is None:
                assert commands(block), f"{block.where}: console block without a `$ ` command"
            if block.postgres:
                assert PG_PLACEHOLDER.search(block.text), (
                    f"{block.where}: postgres block without the placeholder database URL"
                )


def test_parser_reads_marks() -> None:
    blocks = parse_blocks(ROOT / "README.md")
    assert blocks, "README.md has no fenced blocks"
    sample = Block(ROOT / "README.md", 1, "console", "$ a \\\n    --b\nout\n$ c\n")
    assert commands(sample) == [("a  --b", ["out"]), ("c", [])]
    with pytest.raises(ValueError, match="unknown doc-test mark 'skp'"):
        _parse_mark(["skp", "gpu"], "x")


_LINK = re.compile(r"\]\(([^)#\s]+)(#[^)\s]*)?\)")


@pytest.mark.parametrize("path", DOC_FILES, ids=lambda p: p.name)
def test_relative_links_exist(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    for target, _anchor in _LINK.findall(text):
        if "://" in target or target.startswith("mailto:"):
            continue
        assert (path.parent / target).exists(), f"{path.name}: link to missing {target}"


_COUNTS = re.compile(
    r"all but (\d+) of them: (\d+) are marked `skip`.*? and (\d+) take longer and run with "
    r"`bash scripts/test.sh -m slow tests/test_docs.py`. (\d+) of those in the default run "
    r"starts a throwaway PostgreSQL server"
)


def test_readme_counts_the_examples_exactly() -> None:
    """The README says which examples do not run by default; those numbers are the marks'."""
    text = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = _COUNTS.search(text)
    assert said, "README.md no longer says how many examples tests/test_docs.py runs"
    examples = [
        b
        for blocks in ALL_BLOCKS.values()
        for b in blocks
        if b.lang in {"python", "console"} and b.file is None
    ]
    skipped = [b for b in examples if b.skip is not None]
    slow = [b for b in examples if b.skip is None and b.slow]
    postgres = [b for b in examples if b.skip is None and not b.slow and b.postgres]
    counts = (len(skipped) + len(slow), len(skipped), len(slow), len(postgres))
    assert tuple(int(n) for n in said.groups()) == counts


def test_writing_a_study_shows_every_key() -> None:
    """docs/sweeps.md's study example has every key a study accepts ([data] keys: data.md)."""
    from unetbench.sweep import spec

    block = next(b for b in ALL_BLOCKS["sweeps.md"] if b.file == "studies/my-study.toml")
    shown = tomllib.loads(block.text)
    assert set(shown) == spec._TOP_KEYS
    tables = {"train": spec._TRAIN_KEYS, "storage": spec._STORAGE_KEYS,
              "confirm": spec._CONFIRM_KEYS, "profile": spec._PROFILE_KEYS}  # fmt: skip
    for table, keys in tables.items():
        assert set(shown[table]) == keys, table
