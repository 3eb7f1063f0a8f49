"""Benchmarks: ``python -m benchmarks [--out DIR] [--only NAME] [--quick]``.

One file per benchmark; each exposes ``run(*, quick: bool) -> Report`` (see `benchmarks.common`).
Speed targets live here, in the benchmark output, never in unit tests.
"""
