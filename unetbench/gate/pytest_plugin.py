"""pytest plugin that gates a U-Net's cost against a committed baseline (fixtures added later)."""

from __future__ import annotations
