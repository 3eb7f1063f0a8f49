"""Docs that are derived from code stay current, and their worked examples run."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from eqtheory.docs_table import FAMILIES, render

DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_every_row_of_the_components_table_is_current():
    """Each committed row is what the component's docstring and signature give now, and names
    only registered components; a component added since the last ``make docs`` has no row
    yet (its file is the only edit it needs), and `render` gives one for every name."""
    committed = (DOCS / "components.md").read_text()
    current = render()
    assert committed.split("\n## ")[0] == current.split("\n## ")[0], "header is stale"
    for line in committed.splitlines():
        if line.startswith("| `"):
            assert line in current, f"stale row in docs/components.md (run `make docs`): {line}"
    for family, _, registry, _ in FAMILIES:
        for name in registry.names():
            assert f"| `{name}` |" in current, f"render() has no row for {family} {name!r}"


def test_the_compaction_example_in_solvers_md_runs_and_converges():
    text = (DOCS / "solvers.md").read_text()
    (block,) = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    scope: dict = {}
    exec(compile(block, "solvers.md", "exec"), scope)
    assert scope["sol"].counts() == {"converged": 256}
    assert len(set(scope["sol"].steps.tolist())) > 10  # spread-out difficulty, as it says


def test_the_table_lists_a_plugin_s_components(tmp_path):
    plugin = tmp_path / "my_rule.py"
    plugin.write_text(
        '"""A plugin rule."""\n'
        "from eqtheory.stopping.registry import STOPPING\n"
        "from eqtheory.stopping.steps import Steps\n\n\n"
        '@STOPPING.register("my_steps")\n'
        "class MySteps(Steps):\n"
        '    """Fires when ``k >= K`` (a plugin copy of ``steps``)."""\n\n'
        '    name = "my_steps"\n'
    )
    out = subprocess.run([sys.executable, "-m", "eqtheory.docs_table", "--plugin", str(plugin)],
                         capture_output=True, text=True, check=True).stdout
    assert "| `my_steps` | Fires when ``k >= K`` (a plugin copy of ``steps``). |" in out
