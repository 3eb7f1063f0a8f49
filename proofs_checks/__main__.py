"""``python -m proofs_checks [--quick] [--plots DIR] [--only NAME] [--markdown FILE]``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from proofs_checks import CHECKS, load, table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m proofs_checks", description="Numerical checks of the paper's claims."
    )
    parser.add_argument("--quick", action="store_true", help="small instances (CI, < 2 minutes)")
    parser.add_argument("--plots", type=Path, default=None, help="write figures (PNG) here")
    parser.add_argument(
        "--only",
        action="append",
        choices=CHECKS,
        default=None,
        help="run only this check (repeatable); default: all",
    )
    parser.add_argument("--markdown", type=Path, default=None, help="also write the table here")
    args = parser.parse_args(argv)
    if args.plots is not None:
        args.plots.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.set_num_threads(1)  # the checks are small: one thread avoids OpenMP overhead
    records, timings = [], []
    start = time.perf_counter()
    for name in args.only or CHECKS:
        began = time.perf_counter()
        records += load(name).run(quick=args.quick, plots=args.plots)
        timings.append(f"{name} {time.perf_counter() - began:.1f}s")
    print(table(records))
    failed = sum(not r.passed for r in records)
    elapsed = time.perf_counter() - start
    print(f"\n{len(records)} records, {failed} failed, {elapsed:.1f}s ({', '.join(timings)})")
    if args.markdown is not None:
        args.markdown.write_text(table(records, markdown=True) + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
