#!/usr/bin/env python3
"""drover's benchmark runner (the code is in scripts/benchlib/; `bench.py --help`).

Normally started by scripts/bench.sh, which also prepares the venv and the build.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
