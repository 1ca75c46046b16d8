"""``python -m benchmarks``: the benchmark runner (see benchmarks/runner.py, docs/performance.md)."""

from __future__ import annotations

import sys

from benchmarks.runner import main

if __name__ == "__main__":
    sys.exit(main())
