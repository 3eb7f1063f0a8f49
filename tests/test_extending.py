"""docs/extending.md's claim, checked: a term, a solver and a rule, one temporary module each,
are picked up by the registries, the contract laws, the strategies and the docs table with no
other edit (in a fresh interpreter, so nothing leaks into this one)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import eqtheory as eqt
from eqtheory.testing import contracts

DOCS = Path(__file__).resolve().parent.parent / "docs"
NEW = {"energies": "huber_smooth", "solvers": "bb", "stopping": "gradrel"}

SCRIPT = """
import json, sys
from hypothesis import find
from eqtheory import plugins
from eqtheory.docs_table import render
from eqtheory.testing import contracts, strategies

loaded = [plugins.load_file(path) for path in sys.argv[2:]]
new = json.loads(sys.argv[1])
laws = {family: contracts.check(family, name) for family, name in new.items()}
covered = {(family, name) for family, name, _ in contracts.cases()}
drawn = find(strategies.stop_specs(1), lambda spec: spec.startswith("gradrel"))
table = render()
exec(open(sys.argv[2].replace("huber_smooth.py", "usage.py")).read())
print(json.dumps({
    "sha256": [p.sha256 for p in loaded],
    "laws": laws,
    "covered": all((f, n) in covered for f, n in new.items()),
    "table": all(f"| `{name}` |" in table for name in new.values()),
    "drawn": drawn,
    "bb": [sol.counts(), int(sol.steps.max()), float((sol.z - energy.minimiser(4)).abs().max())],
    "gd": [gd.counts(), int(gd.steps.max())],
    "rel": [rel.counts(), int(rel.steps.max())],
    "smooth": smooth.spec(),
}))
"""


def test_three_new_components_from_temporary_modules_pass_their_contracts(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), flags=re.S)
    term, solver, rule, usage = blocks
    paths = []
    for filename, text in [("huber_smooth.py", term), ("bb.py", solver), ("gradrel.py", rule),
                           ("usage.py", usage)]:
        (tmp_path / filename).write_text(text)
        paths.append(str(tmp_path / filename))
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(NEW), *paths[:3]],
        capture_output=True, text=True, check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(result)  # the counts docs/extending.md quotes
    assert all(len(h) == 64 for h in result["sha256"])
    for family in NEW:
        assert result["laws"][family] == [law.__name__ for law in contracts.LAWS[family]]
    assert result["covered"] and result["table"]
    assert result["drawn"].startswith("gradrel")
    assert result["bb"][0] == {"converged": 4} and result["bb"][1] == 72
    assert result["bb"][2] < 1e-8
    assert result["gd"] == [{"converged": 4}, 2265]
    assert result["rel"][0] == {"converged": 4}
    assert result["smooth"] == "huber_smooth=0.5+anchor=1"
    assert not set(NEW.values()) & {*eqt.energies.names(), *eqt.solvers.names(),
                                    *eqt.stopping.names()}  # nothing leaked into this process
