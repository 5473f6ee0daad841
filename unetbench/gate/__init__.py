"""Regression gate: compare profile records against a baseline."""

from __future__ import annotations
