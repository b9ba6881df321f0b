"""`python -m diffdac` is the same program as `diffdac` (torchrun needs the module form)."""

import sys

from diffdac.cli import main

sys.exit(main())
