"""Isolated learners: no communication at all (the same numbers as --topology none)."""

from __future__ import annotations

from diffdac.network.methods.base import Method


class Isolated(Method):
    name = "isolated"
    summary = "no communication: every learner on its own task alone, as --topology none"
