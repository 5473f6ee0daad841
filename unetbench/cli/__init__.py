"""The `unetbench` command line: one small module per subcommand."""

from __future__ import annotations
