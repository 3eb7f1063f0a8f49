"""Two databases of the same grid, cell by cell: ``python -m ablations.report --compare A B``.

A and B are results files (or the directories holding ``results.sqlite``), typically the same
preset at the same commit on two machines. For every (task, series, length) cell present in
either, the table gives A and B (per-token accuracy %, mean ± 95% t-interval over seeds) and
B - A:

- paired by seed over the seeds both have (the same config and data on both sides), the mean
  difference with its 95% t-interval and the paired t-test's p;
- how many of those seeds agree bitwise (on one machine and commit every seed does; across
  machines whose kernels differ, see docs/reliability.md, expect none and an interval that
  covers 0).

The header says what decided each side's kernels (`ablations.environment`) and which runs are in
one database only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ablations import environment
from ablations.report import Cell, paired, tables
from ablations.store import Row, Store


def database_path(where: str | Path) -> Path:
    """A results file, or the directory that holds ``results.sqlite``."""
    path = Path(where)
    return path / "results.sqlite" if path.is_dir() else path


def _cell_text(values: dict[int, float]) -> str:
    if not values:
        return "–"
    cell = Cell(tuple(values[seed] for seed in sorted(values)))
    return cell.text(spread="ci") if cell.n > 1 else f"{cell.mean:.2f} (n=1)"


def cells(rows: list[Row]) -> dict[tuple[str, str, int], dict[int, float]]:
    """(task, series, length) -> seed -> per-token accuracy % over the done rows."""
    found: dict[tuple[str, str, int], dict[int, float]] = {}
    for table in tables(rows):
        for series, by_length in table.evals.items():
            for length, by_seed in by_length.items():
                found[(table.task, str(series), length)] = {
                    seed: 100 * ev["acc"] for seed, ev in by_seed.items() if "acc" in ev
                }
    return found


def compare(rows_a: list[Row], rows_b: list[Row]) -> list[dict[str, Any]]:
    """One dict per cell: ``task, series, length, a, b`` (seed -> value), ``diff`` (the
    `ablations.report.paired` result of B - A) and ``identical`` (seeds equal bitwise)."""
    a, b = cells(rows_a), cells(rows_b)
    result = []
    for key in sorted(set(a) | set(b)):
        values_a, values_b = a.get(key, {}), b.get(key, {})
        common = sorted(set(values_a) & set(values_b))
        result.append({
            "task": key[0], "series": key[1], "length": key[2], "a": values_a, "b": values_b,
            "diff": paired(values_b, values_a),
            "identical": sum(values_a[s] == values_b[s] for s in common), "common": len(common),
        })
    return result


def _side(name: str, path: Path, rows: list[Row]) -> list[str]:
    done = [row for row in rows if row.status == "done"]
    kernels = sorted({environment.describe(row.environment) for row in done})
    commits = sorted({str(row.git_commit) for row in done})
    hosts = sorted({str(row.host) for row in done})
    return [f"- {name}: `{path}`: {len(done)} done runs; hosts {', '.join(hosts) or '–'}; "
            f"commits {', '.join(commits) or '–'}",
            *[f"  - kernels: {text}" for text in kernels]]


def render(path_a: Path, rows_a: list[Row], path_b: Path, rows_b: list[Row]) -> str:
    """The comparison as Markdown."""
    done_a = {row.hash for row in rows_a if row.status == "done"}
    done_b = {row.hash for row in rows_b if row.status == "done"}
    lines = ["# Comparison of two result databases", "",
             *_side("A", path_a, rows_a), *_side("B", path_b, rows_b),
             f"- runs done in both: {len(done_a & done_b)}; only in A: {len(done_a - done_b)};"
             f" only in B: {len(done_b - done_a)}", ""]
    kernels_a = {environment.describe(row.environment) for row in rows_a if row.status == "done"}
    kernels_b = {environment.describe(row.environment) for row in rows_b if row.status == "done"}
    if kernels_a == kernels_b and len(kernels_a) == 1:
        lines += ["Both sides ran with the same kernel environment: at the same commit, every "
                  "seed should agree bitwise.", ""]
    else:
        lines += ["The kernel environments differ: expect statistical, not bitwise, agreement "
                  "(docs/reliability.md).", ""]
    rows = compare(rows_a, rows_b)
    header = ["task", "series", "L", "A: acc %", "B: acc %", "B - A (paired by seed)", "t p",
              "seeds equal bitwise"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for cell in rows:
        diff = cell["diff"]
        if diff["mean"] is None:
            diff_text = "–"
        elif diff["ci"] is None:
            diff_text = f"{diff['mean']:+.2f} (n={diff['n']})"
        else:
            diff_text = f"{diff['mean']:+.2f} ± {diff['ci']:.2f} (n={diff['n']})"
        p = "–" if diff["t_p"] is None else f"{diff['t_p']:.3g}"
        lines.append("| " + " | ".join([
            cell["task"], cell["series"], str(cell["length"]), _cell_text(cell["a"]),
            _cell_text(cell["b"]), diff_text, p, f"{cell['identical']}/{cell['common']}",
        ]) + " |")
    equal = sum(c["common"] > 0 and c["identical"] == c["common"] for c in rows)
    excluding = sum(
        d["ci"] is not None and abs(d["mean"]) > d["ci"] for d in (c["diff"] for c in rows)
    )
    lines += ["", f"{equal} of {len(rows)} cells agree bitwise on every common seed; "
              f"{excluding} have a 95% interval of B - A that excludes 0."]
    return "\n".join(lines)


def main(first: str | Path, second: str | Path) -> str:
    """Read both databases (read-only) and return the comparison's Markdown."""
    path_a, path_b = database_path(first), database_path(second)
    with Store(path_a, readonly=True) as store:
        rows_a = store.rows()
    with Store(path_b, readonly=True) as store:
        rows_b = store.rows()
    return render(path_a, rows_a, path_b, rows_b)
