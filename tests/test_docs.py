"""Docs that are derived from code stay current, and their worked examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import eqtheory as eqt
from eqtheory.docs_table import FAMILIES, render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_components_table_is_current():
    committed = (DOCS / "components.md").read_text()
    assert committed == render(), "docs/components.md is stale: run `make docs`"


@pytest.mark.parametrize(
    ("family", "page"),
    [
        ("solvers", "solvers.md"),
        ("stopping", "stopping.md"),
        ("backward", "backward.md"),
        ("energies", "energies.md"),
    ],
)
def test_every_registered_component_is_documented_on_its_family_page(family, page):
    text = (DOCS / page).read_text()
    registry = next(r for f, _, r, _ in FAMILIES if f == family)
    missing = [name for name in registry.names() if f"`{name}" not in text]
    assert not missing, f"{page} does not mention {missing}"


def test_the_solver_worked_example_runs_as_written(tmp_path):
    text = (DOCS / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    solver_file, usage = blocks[0], blocks[1]
    script = (
        "import types, sys\n"
        "module = types.ModuleType('eqtheory.solvers.bb')\n"
        f"exec(compile({solver_file!r}, 'bb.py', 'exec'), module.__dict__)\n"
        f"{usage}\n"
        "print(sol.counts(), int(sol.steps.max()))\n"
        "print(float((sol.z - energy.minimiser(4)).abs().max()))\n"
        "print('bb' in eqt.solvers.names())\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    counts, error, registered = out.stdout.strip().splitlines()
    assert counts.startswith("{'converged': 4}")
    assert int(counts.split()[-1]) < 500
    assert float(error) < 1e-8
    assert registered == "True"
    assert "bb" not in eqt.solvers.names()  # the example did not leak into this process


def test_the_compaction_example_in_solvers_md_runs_and_converges():
    text = (DOCS / "solvers.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(block, "solvers.md", "exec"), scope)
    assert scope["sol"].counts() == {"converged": 256}
    assert len(set(scope["sol"].steps.tolist())) > 10  # spread-out difficulty, as it says
