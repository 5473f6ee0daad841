"""Entry point of the `unetbench` command: dispatches to one module per subcommand.

Each subcommand module exposes ``add_parser(subparsers)`` and ``run(args) -> int``.
User mistakes (:class:`~unetbench.UnetbenchError`) end with one line on stderr and exit code 2
(75 for a storage that stayed unreachable, see :class:`~unetbench.sweep.retry.StorageUnreachable`);
SIGINT or SIGTERM with one line and 128 + the signal's number.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
from collections.abc import Callable, Sequence

from unetbench._errors import UnetbenchError

SUBCOMMANDS = ("profile", "plan", "sweep", "report", "compare", "storage-server")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors are one line and exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        sys.stderr.write(f"Run '{self.prog} --help' for the allowed arguments.\n")
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="unetbench",
        description="Choose a U-Net: profile, plan, sweep, report and gate U-Net architectures.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in SUBCOMMANDS:
        module = importlib.import_module(f"unetbench.cli.{name.replace('-', '_')}")
        module.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    module = importlib.import_module(f"unetbench.cli.{args.command.replace('-', '_')}")
    return guarded(args.command, lambda: int(module.run(args)))


def guarded(command: str, run: Callable[[], int]) -> int:
    """Run a subcommand; a user mistake, a lost storage or a signal becomes one line on
    stderr and its exit status, never a traceback."""
    try:
        return run()
    except UnetbenchError as exc:
        sys.stderr.write(f"unetbench {command}: error: {exc}\n")
        return exc.exit_code
    except KeyboardInterrupt as exc:
        for s in (signal.SIGINT, signal.SIGTERM):  # the command ends: a second one waits
            signal.signal(s, signal.SIG_IGN)
        signum = getattr(exc, "signum", signal.SIGINT)
        sys.stderr.write(f"unetbench {command}: interrupted ({signal.Signals(signum).name})\n")
        return 128 + int(signum)


if __name__ == "__main__":
    raise SystemExit(main())
