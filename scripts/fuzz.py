"""The fuzz suite's long run: tests/test_fuzz.py with many more inputs, from fresh random seeds.

    python scripts/fuzz.py [--examples 10000] [--fixed]

Each of the five targets (readers and parsers, data check vs training, the config loader,
dataset_info.json, the `data check` command) gets ``--examples`` inputs; hypothesis prints how many it
ran and how many it rejected. ``--fixed`` keeps CI's deterministic inputs instead of random ones.
Exits with pytest's status: 0 when no input produced a traceback or an unlocated problem.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import pytest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=10_000, help="inputs per target")
    parser.add_argument("--fixed", action="store_true", help="CI's deterministic inputs, not random ones")
    args = parser.parse_args()
    os.environ["PREFKIT_FUZZ_EXAMPLES"] = str(args.examples)
    if not args.fixed:
        os.environ["PREFKIT_FUZZ_RANDOM"] = "1"
    tests = Path(__file__).resolve().parent.parent / "tests" / "test_fuzz.py"
    return pytest.main([str(tests), "-q", "-p", "no:cacheprovider", "--hypothesis-show-statistics"])


if __name__ == "__main__":
    sys.exit(main())
