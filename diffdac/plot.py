"""`diffdac plot`: learning curves and a results table of one or many run directories."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `diffdac plot`."""
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories of `diffdac train`")


def main(args: argparse.Namespace) -> int:
    """Run `diffdac plot`; returns the exit status."""
    raise NotImplementedError("diffdac plot is not written yet")
