"""Length generalisation in the report: accuracy at the evaluated lengths of each series.

A run with ``eval_lengths`` stores ``metrics["evals_by_length"] = {length: {rule: eval}}``
(`ablations.train`); a series (as in `ablations.report.Table`: label, variant and, for EqT, the
evaluation rule) trained at length ``L`` gets one cell per evaluated length ``L'``: per-token
accuracy over seeds, mean and 95% t-interval.
"""

from __future__ import annotations

from pathlib import Path

from ablations import report
from ablations.report import K0, Cell, Series, Table


def cells(table: Table) -> dict[tuple[Series, int], dict[int, Cell]]:
    """``(series, trained length) -> {evaluated length: Cell}`` over the runs that have
    ``evals_by_length``."""
    out: dict[tuple[str, int], dict[int, Cell]] = {}
    for name, by_length in table.rows.items():
        rule = name.rule or K0  # controls are evaluated once, with steps=0
        for length, by_seed in by_length.items():
            values: dict[int, list[float]] = {}
            for _, row in sorted(by_seed.items()):
                for other, evals in (row.metrics or {}).get("evals_by_length", {}).items():
                    if rule in evals and evals[rule].get("acc") is not None:
                        values.setdefault(int(other), []).append(100 * evals[rule]["acc"])
            if values:
                out[(name, length)] = {L: Cell(tuple(v)) for L, v in sorted(values.items())}
    return out


def summary(table: Table) -> list[str]:
    """Plain-text lines: per series and trained length, accuracy at each evaluated length."""
    found = cells(table)
    if not found:
        return []
    lengths = sorted({L for by_length in found.values() for L in by_length})
    width = max(len(f"{name} (train L={length})") for name, length in found)
    lines = [f"task {table.task}: length generalisation, per-token accuracy %, mean ± sd (n)",
             f"{'series':<{width}}  " + "  ".join(f"{'L=' + str(L):>20}" for L in lengths)]
    for (name, length), by_length in found.items():
        texts = [by_length[L].text(spread="sd") if L in by_length else "–" for L in lengths]
        label = f"{name} (train L={length})"
        lines.append(f"{label:<{width}}  " + "  ".join(f"{t:>20}" for t in texts))
    return lines


def section(table: Table, plots: Path, out: Path) -> list[str]:
    """The report's Markdown section (a table and a plot), empty without evaluated lengths."""
    found = cells(table)
    if not found:
        return []
    lengths = sorted({L for by_length in found.values() for L in by_length})
    lines = [f"### Length generalisation ({table.task})", "",
             "Per-token accuracy % at each evaluated length (mean ± 95% CI, sd, n seeds) of "
             "models trained at one length; every length's test set is drawn afresh.", ""]
    body = [[str(name), str(length)] + [by_length[L].text() if L in by_length else "–"
                                   for L in lengths]
            for (name, length), by_length in found.items()]
    lines += report._md_table(["series", "trained at"] + [f"L={L}" for L in lengths], body)
    path = plots / f"lengths-{report._slug(table.task)}.png"
    plot(found, table.task, path)
    lines += ["", f"![length generalisation]({path.relative_to(out)})", ""]
    return lines


def plot(found: dict[tuple[Series, int], dict[int, Cell]], task: str, path: Path) -> None:
    """Accuracy against evaluated length, one line per (series, trained length)."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for (name, length), by_length in found.items():
        xs = sorted(by_length)
        axis.errorbar(xs, [by_length[L].mean for L in xs],
                      yerr=[by_length[L].ci or 0.0 for L in xs], marker="o", capsize=3,
                      label=f"{name} (L={length})")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("evaluated length")
    axis.set_ylabel("per-token accuracy (%)")
    axis.set_title(f"{task}: length generalisation, mean and 95% CI over seeds")
    axis.legend(fontsize=7)
    report._save(figure, path)
