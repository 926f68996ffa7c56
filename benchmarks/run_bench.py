#!/usr/bin/env python
"""Run the benchmark suite from a checkout: same as ``sharedcompute bench [options]``.

    python benchmarks/run_bench.py --quick
    python benchmarks/run_bench.py --json bench-results/latest.json --plot bench-results/latest.png
"""
import sys

from sharedcompute.bench import main

if __name__ == "__main__":
    sys.exit(main())
