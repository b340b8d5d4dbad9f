"""Nightly-size fuzz of NIR input: perturbed graphs in memory and damaged files, every case
imported, simulated in float and (where it imports) quantized and run on the integer reference.
Every outcome must be a result or one of n2c's typed one-line errors; anything else fails.

    .venv/bin/python benchmarks/fuzz_nir.py                  # 5,000+ cases (scale 6: 3,600 + 1,800)
    .venv/bin/python benchmarks/fuzz_nir.py --scale 1        # the CI size (600 + 300)

It runs the two fuzz tests of tests/contracts/test_bad_nir.py with more examples and prints
how many cases ran and how each stage ended (``stage: ok`` or ``stage: ErrorType``).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--scale", type=float, default=6.0, help="times the CI's number of examples (default: 6)")
    args = parser.parse_args()
    os.environ["N2C_FUZZ_SCALE"] = str(args.scale)
    sys.path.insert(0, str(ROOT))
    from tests.contracts import test_bad_nir as fuzz  # reads N2C_FUZZ_SCALE at import

    start = time.perf_counter()
    with warnings.catch_warnings(), tempfile.TemporaryDirectory() as tmp:
        warnings.simplefilter("ignore")
        fuzz.test_fuzz_perturbed_graphs_raise_only_typed_errors()
        graphs = sum(v for k, v in fuzz.OUTCOMES.items() if k.startswith("import_nir: "))
        fuzz.test_fuzz_damaged_files_raise_only_typed_errors(fuzz_dir=Path(tmp))
    cases = sum(v for k, v in fuzz.OUTCOMES.items() if k.startswith("import_nir: "))
    print(f"{cases:,} cases ({graphs:,} perturbed graphs, {cases - graphs:,} damaged files) in "
          f"{time.perf_counter() - start:.0f} s; 0 untyped outcomes (an untyped one fails the run)")
    print("| stage: outcome | count |\n|---|---|")
    for key, count in sorted(fuzz.OUTCOMES.items()):
        print(f"| {key} | {count:,} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
