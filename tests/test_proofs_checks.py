"""``python -m proofs_checks --quick`` passes and covers every claim (1-9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proofs_checks import CHECKS, load

ROOT = Path(__file__).resolve().parents[1]


def test_quick_run_passes_and_every_claim_has_a_record(tmp_path):
    table = tmp_path / "table.md"
    result = subprocess.run(
        [sys.executable, "-m", "proofs_checks", "--quick", "--markdown", str(table)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    rows = table.read_text().splitlines()[2:]
    claims = {row.split(" | ")[0].lstrip("| ") for row in rows}
    expected = {load(name).CLAIM for name in CHECKS}
    assert len(expected) == 9 and expected <= claims
    assert all("| PASS |" in row for row in rows)


def test_unknown_check_is_rejected_with_the_valid_names():
    result = subprocess.run(
        [sys.executable, "-m", "proofs_checks", "--only", "linear_convergance"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0 and "linear_convergence" in result.stderr
