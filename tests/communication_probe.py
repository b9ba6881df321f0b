"""Run `diffdac train ARGS` as one rank and write the bytes its communicator handed to send to OUT/rank<r>.json.

Launched by tests/test_communication.py under torchrun: it is `diffdac train` with the
communicator kept, so the test can compare what moved with what progress.csv reports.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from diffdac.cli import build_parser, config_from_args
from diffdac.network.distributed import connect
from diffdac.run.prepare import prepare
from diffdac.run.training import run


def main(out: str, argv: list[str]) -> None:
    prepared = prepare(config_from_args(build_parser().parse_args(argv)))
    with connect(prepared.config, prepared.method.communication()) as comm:
        run(prepared, comm)
        Path(out, f"rank{comm.rank}.json").write_text(json.dumps({"bytes_sent": comm.bytes_sent}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
