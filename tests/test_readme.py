"""The README says what the code does: its table of methods is the registry, its options table every option."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from diffdac import TrainConfig
from diffdac.network.methods import METHODS

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _table_after(heading: str) -> list[list[str]]:
    """Rows (cells) of the first Markdown table after `heading`, without its header and rule."""
    lines = README[README.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next(i for i in range(start, len(lines)) if not lines[i].startswith("|"))
    return [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[start + 2 : end]]


def test_the_readme_table_of_methods_is_the_registry():
    names = [row[0].strip("`") for row in _table_after("### Methods and network faults")]
    assert names == list(METHODS)


def test_the_readme_options_table_names_every_option():
    table = " ".join(row[0] for row in _table_after("## Options"))
    flags = set(re.findall(r"--([a-z][a-z-]*)", table))
    missing = [f.name for f in dataclasses.fields(TrainConfig) if f.name.replace("_", "-") not in flags]
    assert missing == []
