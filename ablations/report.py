"""``python -m ablations.report --out DIR``: the Markdown report and plots, from the database only.

Writes ``DIR/report.md`` and ``DIR/plots/*.png`` from ``DIR/results.sqlite``:

- accuracy (per-token, %) vs length per series, mean with a 95% t-interval over seeds
  (n = 1: the value, no interval);
- each series minus the baseline per length, paired by seed: mean difference, its 95% interval,
  a paired t-test and a Wilcoxon signed-rank test (with n <= 5 no two-sided Wilcoxon p can be
  below 0.05, which the report says);
- the gain of refinement by difficulty bucket: EqT at K (its eval rule) minus the same model at
  K = 0, paired by seed;
- convergence traces (mean residual and energy per solver step), steps-taken histograms and
  solver statuses;
- parameters, function evaluations and FLOPs per token of every series;
- the paper's Table 2 beside our numbers;
- diagnostics of refinement (`section_diagnostics`, from the EqT runs' ``diagnostics`` blocks):
  displacement, prediction flips against K = 0, per-term gradient norms at ``z0`` and ``z*``,
  the energy's AUROC for wrong tokens, accuracy against the step budget K.

A *series* (`Series`: label, variant tag, rule, K) is one label and evaluation rule:
``baseline``, ``aux-only``, ``compute-matched``, ``eqt steps=8`` (a trained EqT evaluated with
its rule), ``eqt steps=0`` (the K = 0 control: the same EqT weights, no refinement). With
several variants of a label in one database, series carry the fields that tell them apart
(``eqt[energy=bidir+mask] steps=8``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations.config import EXECUTION_FIELDS
from ablations.environment import describe as describe_kernels
from ablations.store import Row, Store, UnreadableStore
from eqtheory import stopping
from eqtheory.stopping import Steps

PAPER_LENGTHS = (8, 16, 32, 48, 64, 96, 128, 192, 256)
PAPER_TABLE2 = {  # per-token accuracy (%), the paper's Table 2 (one run per cell)
    "standard": (100.00, 100.00, 99.94, 98.09, 88.15, 77.19, 64.64, 51.86, 55.79),
    "EqT": (100.00, 99.99, 99.85, 96.56, 92.81, 77.68, 67.04, 59.93, 56.59),
}
BASELINE, EQT = "baseline", "eqt"
K0 = "steps=0"
SMALL_N_WILCOXON = 5  # two-sided exact Wilcoxon: min p = 2 / 2^n > 0.05 for n <= 5


@dataclass(frozen=True)
class Cell:
    """Values over seeds of one (series, length)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return sum(self.values) / self.n

    @property
    def sd(self) -> float | None:
        if self.n < 2:
            return None
        return math.sqrt(sum((v - self.mean) ** 2 for v in self.values) / (self.n - 1))

    @property
    def ci(self) -> float | None:
        """Half-width of the 95% t-interval of the mean (None for n < 2)."""
        from scipy import stats

        sd = self.sd
        if sd is None:
            return None
        return float(stats.t.ppf(0.975, self.n - 1) * sd / math.sqrt(self.n))

    def text(self, *, spread: str = "ci") -> str:
        """``mean ± ci (sd s, n=k)``, or ``mean ± sd (n=k)`` with ``spread="sd"``."""
        if self.n < 2:
            return f"{self.mean:.2f} (n=1)"
        if spread == "sd":
            return f"{self.mean:.2f} ± {self.sd:.2f} (n={self.n})"
        return f"{self.mean:.2f} ± {self.ci:.2f} (sd {self.sd:.2f}, n={self.n})"


# -- series ------------------------------------------------------------------------------------


PER_CELL_FIELDS = frozenset({"task", "length", "seed"}) | EXECUTION_FIELDS


def _identity(row: Row) -> dict[str, Any]:
    """What makes a run's series: its config without task, length, seed and execution fields
    (and without ``layers`` for compute-matched runs, whose depth is set per length)."""
    values = {k: v for k, v in row.config.as_dict().items() if k not in PER_CELL_FIELDS}
    variant = values.pop("variant")
    values.update({f"variant.{k}": v for k, v in variant.items()})
    if row.label == "compute-matched":
        values.pop("layers")
    return values


def _variant_names(rows: list[Row]) -> dict[str, str]:
    """run hash -> the fields that tell its series apart from the others of its label."""
    by_label: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
    for row in rows:
        by_label[row.label][row.hash] = _identity(row)
    names = {}
    for identities in by_label.values():
        varying = sorted(
            key for key in next(iter(identities.values()))
            if len({repr(v.get(key)) for v in identities.values()}) > 1
        )
        for run_hash, fields in identities.items():
            names[run_hash] = ",".join(
                f"{key.removeprefix('variant.')}={fields.get(key)}" for key in varying
            )
    return names


@dataclass(frozen=True)
class Series:
    """One series of the report: the runs of one label and variant and, for EqT, one
    evaluation rule.

    Attributes:
        label: ``baseline``, ``eqt``, ``aux-only``, ``compute-matched`` or ``rnn``.
        tag: the fields that tell this variant apart from the others of its label
            (``energy=bidir+mask``; empty when the label has one variant).
        rule: the evaluation stopping rule of an EqT series (``steps=0`` is the K = 0 control:
            the same weights, no refinement); None for the controls, evaluated once.
        k: the step count of a rule that is a plain step budget (``steps=K``), else None.
    """

    label: str
    tag: str = ""
    rule: str | None = None
    k: int | None = None

    @classmethod
    def of(cls, row: Row, rule: str, tag: str) -> Series:
        """The series of `row` evaluated with `rule` (controls keep no rule)."""
        if row.label != EQT:
            return cls(row.label, tag)
        parsed = stopping.parse(rule)
        return cls(row.label, tag, rule, parsed.k if isinstance(parsed, Steps) else None)

    @property
    def run(self) -> str:
        """The trained model's name: ``label`` or ``label[tag]``."""
        return f"{self.label}[{self.tag}]" if self.tag else self.label

    @property
    def refines(self) -> bool:
        """An EqT series evaluated with refinement (its rule is not the K = 0 control)."""
        return self.label == EQT and self.rule != K0

    def control(self) -> Series:
        """The same EqT model at K = 0."""
        return Series(self.label, self.tag, K0, 0)

    def sort_key(self) -> tuple[int, str, int, str]:
        """Label order, then the run, then the step budget (rules without one last)."""
        order = {BASELINE: 0, EQT: 1, "aux-only": 2, "compute-matched": 3, "rnn": 4}
        budget = 10**9 if self.k is None else self.k
        return (order.get(self.label, 9), self.run, budget, self.rule or "")

    def __str__(self) -> str:
        return f"{self.run} {self.rule}" if self.rule is not None else self.run

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)


@dataclass
class Table:
    """The done rows of one task, indexed: series -> length -> seed -> eval metrics."""

    task: str
    evals: dict[Series, dict[int, dict[int, dict[str, Any]]]]
    rows: dict[Series, dict[int, dict[int, Row]]]  # series -> length -> seed -> row
    primary: list[Series]  # EqT series at their variant's eval rule, one per variant

    @property
    def lengths(self) -> list[int]:
        return sorted({length for by_length in self.evals.values() for length in by_length})

    def cell(self, series: Series, length: int, key: str = "acc") -> Cell | None:
        by_seed = self.evals.get(series, {}).get(length, {})
        values = tuple(100 * ev[key] for _, ev in sorted(by_seed.items()) if key in ev)
        return Cell(values) if values else None

    def series(self) -> list[Series]:
        """Baseline, EqT (per variant, by step budget), aux-only, compute-matched, rnn."""
        return sorted(self.evals, key=Series.sort_key)


def tables(rows: list[Row]) -> list[Table]:
    """One `Table` per task over the done rows."""
    done = [row for row in rows if row.status == "done" and row.metrics]
    tags = _variant_names(done)
    result = []
    for task in sorted({row.task for row in done}):
        evals: dict[Series, dict[int, dict[int, dict[str, Any]]]] = defaultdict(
            lambda: defaultdict(dict)
        )
        by_row: dict[Series, dict[int, dict[int, Row]]] = defaultdict(lambda: defaultdict(dict))
        primary: list[Series] = []
        for row in (r for r in done if r.task == task):
            for stop, metrics in row.metrics["evals"].items():
                series = Series.of(row, stop, tags.get(row.hash, ""))
                evals[series][row.length][row.seed] = metrics
                by_row[series][row.length][row.seed] = row
                if row.label == EQT and stop == row.config.variant.stop_eval:
                    primary.append(series)
        result.append(Table(task, evals, by_row, list(dict.fromkeys(primary))))
    return result


# -- statistics --------------------------------------------------------------------------------


def paired(a: dict[int, float], b: dict[int, float]) -> dict[str, Any]:
    """a - b over the seeds both have: mean, 95% interval, n, paired t and Wilcoxon p."""
    from scipy import stats

    seeds = sorted(set(a) & set(b))
    diffs = [a[s] - b[s] for s in seeds]
    result: dict[str, Any] = {"n": len(diffs), "mean": None, "ci": None, "t_p": None,
                              "w_p": None, "note": ""}
    if not diffs:
        result["note"] = "no common seeds"
        return result
    cell = Cell(tuple(diffs))
    result["mean"], result["ci"] = cell.mean, cell.ci
    if len(diffs) < 2:
        result["note"] = "n=1: no test"
        return result
    if all(d == diffs[0] for d in diffs):
        result["note"] = "identical differences: no test"
        return result
    result["t_p"] = float(stats.ttest_rel(
        [a[s] for s in seeds], [b[s] for s in seeds]).pvalue)
    if any(d != 0 for d in diffs):
        result["w_p"] = float(stats.wilcoxon(diffs).pvalue)
    if len(diffs) <= SMALL_N_WILCOXON:
        result["note"] = f"n={len(diffs)}: Wilcoxon cannot reach p<0.05"
    return result


def _fmt_p(p: float | None) -> str:
    return "–" if p is None else f"{p:.3g}"


def _fmt_diff(result: dict[str, Any]) -> str:
    if result["mean"] is None:
        return "–"
    if result["ci"] is None:
        return f"{result['mean']:+.2f}"
    return f"{result['mean']:+.2f} ± {result['ci']:.2f}"


# -- the one-screen summary ----------------------------------------------------------------------


def summary_table(rows: list[Row]) -> str:
    """Per-token accuracy (%) per series and length: mean ± sd over seeds (n), then the
    accuracy at each evaluated length of runs with ``eval_lengths``."""
    from ablations.report_lengths import summary as summary_lengths  # it imports this module

    lines = []
    for table in tables(rows):
        lengths = table.lengths
        names = table.series()
        width = max(len(str(name)) for name in names)
        lines.append(f"task {table.task}: per-token accuracy %, mean ± sd over seeds (n)")
        lines.append(f"{'series':<{width}}  " + "  ".join(f"{'L=' + str(L):>20}" for L in lengths))
        for name in names:
            cells = [table.cell(name, length) for length in lengths]
            lines.append(f"{name:<{width}}  " + "  ".join(
                f"{(c.text(spread='sd') if c else '–'):>20}" for c in cells))
        lines += summary_lengths(table)
    failed = [row for row in rows if row.status == "failed"]
    if failed:
        lines.append(f"{len(failed)} failed runs (see the report)")
    return "\n".join(lines) if lines else "no finished runs"


# -- plots -------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def plot_accuracy(table: Table, path: Path) -> None:
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for name in table.series():
        lengths = [L for L in table.lengths if table.cell(name, L)]
        cells = [table.cell(name, L) for L in lengths]
        errors = [c.ci or 0.0 for c in cells]
        axis.errorbar(lengths, [c.mean for c in cells], yerr=errors, marker="o", capsize=3,
                      label=str(name))
    if table.task == "parity":
        for name, values in PAPER_TABLE2.items():
            axis.plot(PAPER_LENGTHS, values, linestyle="--", alpha=0.5, label=f"paper {name}")
    axis.set_xscale("log", base=2)
    axis.set_xlabel("sequence length")
    axis.set_ylabel("per-token accuracy (%)")
    axis.set_title(f"{table.task}: mean and 95% CI over seeds")
    axis.legend(fontsize=7)
    _save(figure, path)


def _mean_trace(by_seed: dict[int, dict[str, Any]], key: str) -> list[float]:
    """Per step, the mean over the seeds that have a value there (a fixed-point solve records
    no energy: its steps are None); empty when no step has one."""
    traces = [ev["trace"][key] for ev in by_seed.values() if ev.get("trace", {}).get(key)]
    if not traces:
        return []
    steps = min(len(t) for t in traces)
    values = [[t[i] for t in traces if t[i] is not None] for i in range(steps)]
    if not any(values):
        return []
    return [sum(v) / len(v) if v else math.nan for v in values]


def plot_traces(table: Table, name: Series, path: Path) -> bool:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(9, 3.8))
    drawn = False
    for length in table.lengths:
        by_seed = table.evals[name].get(length, {})
        for axis, key in zip(axes, ("residual", "energy"), strict=True):
            trace = _mean_trace(by_seed, key)
            if trace:
                axis.plot(range(len(trace)), trace, marker=".", label=f"L={length}")
                drawn = True
    for axis, key in zip(axes, ("residual", "energy"), strict=True):
        axis.set_xlabel("solver step")
        axis.set_ylabel(f"mean {key}")
        if key == "residual":
            axis.set_yscale("log")
        axis.legend(fontsize=7)
    figure.suptitle(f"{table.task}, {name}: convergence (mean over seeds)")
    _save(figure, path if drawn else None)
    return drawn


def merged_hist(table: Table, name: Series, length: int) -> dict[int, int]:
    hist: dict[int, int] = defaultdict(int)
    for ev in table.evals[name].get(length, {}).values():
        for k, count in ev.get("steps_hist", {}).items():
            hist[int(k)] += count
    return dict(sorted(hist.items()))


def plot_steps(table: Table, name: Series, path: Path) -> bool:
    import matplotlib.pyplot as plt

    lengths = [L for L in table.lengths if merged_hist(table, name, L)]
    if not lengths:
        return False
    figure, axis = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(lengths)
    for index, length in enumerate(lengths):
        hist = merged_hist(table, name, length)
        total = sum(hist.values())
        axis.bar([k + index * width for k in hist], [v / total for v in hist.values()],
                 width=width, label=f"L={length}")
    axis.set_xlabel("solver steps taken")
    axis.set_ylabel("fraction of samples")
    axis.set_title(f"{table.task}, {name}: steps taken (all seeds)")
    axis.legend(fontsize=7)
    _save(figure, path)
    return True


# -- the report --------------------------------------------------------------------------------


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return lines + [""]


def _distinct(values: list[Any]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for value in values:
        counts[str(value)] += 1
    return ", ".join(f"{value} ({count})" for value, count in sorted(counts.items()))


def _seed_values(table: Table, name: Series, length: int, key: str = "acc") -> dict[int, float]:
    return {seed: 100 * ev[key] for seed, ev in table.evals.get(name, {}).get(length, {}).items()}


def _section_task(table: Table, plots: Path, out: Path) -> list[str]:
    """The Markdown section of one task: every subsection below, in order."""
    return [
        f"## Task `{table.task}`", "",
        *_accuracy(table, plots, out),
        *_against_baseline(table),
        *_gain_by_difficulty(table),
        *_accuracy_by_position(table),
        *_solver_behaviour(table, plots, out),
        *_compute(table),
        *_training_loss(table),
        *(_paper_table(table) if table.task == "parity" else []),
    ]


def _accuracy(table: Table, plots: Path, out: Path) -> list[str]:
    png = plots / f"accuracy_{table.task}.png"
    plot_accuracy(table, png)
    lines = ["### Per-token accuracy (%)", "",
             "Mean ± half-width of the 95% t-interval over seeds (sd: standard deviation over "
             "seeds; n: seeds in the cell; n=1: no interval).", ""]
    lines += _md_table(["series"] + [f"L={L}" for L in table.lengths], [
        [str(series)] + [(c.text() if (c := table.cell(series, L)) else "–")
                         for L in table.lengths]
        for series in table.series()
    ])
    return lines + [f"![accuracy vs length]({png.relative_to(out)})", ""]


def _paired_row(result: dict[str, Any]) -> list[str]:
    """The columns every paired comparison shows: difference, n, both p-values, note."""
    return [_fmt_diff(result), str(result["n"]), _fmt_p(result["t_p"]), _fmt_p(result["w_p"]),
            result["note"]]


def _against_baseline(table: Table) -> list[str]:
    lines = ["### Difference to the baseline (percentage points), paired by seed", ""]
    baseline = Series(BASELINE)
    if baseline not in table.evals:
        return lines + ["No baseline runs (controls off): no paired comparison.", ""]
    body = []
    for series in (s for s in table.series() if s != baseline):
        for length in table.lengths:
            result = paired(_seed_values(table, series, length),
                            _seed_values(table, baseline, length))
            if result["n"]:
                body.append([str(series), str(length), *_paired_row(result)])
    lines += ["Mean difference ± 95% t-interval; p: paired t-test and Wilcoxon "
              "signed-rank (two-sided).", ""]
    return lines + _md_table(["series", "L", "minus baseline", "n", "t-test p", "Wilcoxon p",
                              "note"], body)


def _by_bucket(table: Table, series: Series, length: int, bucket: str) -> dict[int, float]:
    by_seed = table.evals.get(series, {}).get(length, {})
    return {seed: 100 * ev["acc_by_difficulty"][bucket] for seed, ev in by_seed.items()
            if bucket in ev.get("acc_by_difficulty", {})}


def _gain_by_difficulty(table: Table) -> list[str]:
    """EqT at its rule minus the same model at K = 0, per difficulty bucket."""
    lines = ["### Gain of refinement by difficulty bucket (same model: eval rule minus K=0)", "",
             "Percentage points, paired by seed; buckets as defined by the training code "
             "(`acc_by_difficulty`).", ""]
    body = []
    for series in (s for s in table.series() if s.refines):
        for length in table.lengths:
            by_seed = table.evals[series].get(length, {})
            buckets = sorted(
                {b for ev in by_seed.values() for b in ev.get("acc_by_difficulty", {})}
            )
            for bucket in buckets:
                result = paired(_by_bucket(table, series, length, bucket),
                                _by_bucket(table, series.control(), length, bucket))
                if result["n"]:
                    body.append([str(series), str(length), bucket, *_paired_row(result)])
    return lines + _md_table(["series", "L", "bucket", "gain over K=0", "n", "t-test p",
                              "Wilcoxon p", "note"], body)


def _accuracy_by_position(table: Table) -> list[str]:
    lines = ["### Accuracy by position quarter (%), mean over seeds", ""]
    body = []
    for series in table.series():
        for length in table.lengths:
            evs = table.evals[series].get(length, {}).values()
            quarters = [
                [ev["acc_by_position"][q] for ev in evs if q in ev.get("acc_by_position", {})]
                for q in ("q1", "q2", "q3", "q4")
            ]
            if all(quarters):
                body.append(
                    [str(series), str(length)] + [f"{100 * sum(q) / len(q):.2f}" for q in quarters]
                )
    return lines + _md_table(["series", "L", "q1", "q2", "q3", "q4"], body)


def _solver_behaviour(table: Table, plots: Path, out: Path) -> list[str]:
    """Traces and steps plots, mean steps and summed statuses of each refining EqT series."""
    lines = ["### Solver: convergence traces, steps taken, statuses", ""]
    for series in (s for s in table.series() if s.refines):
        trace_png = plots / f"traces_{table.task}_{_slug(str(series))}.png"
        steps_png = plots / f"steps_{table.task}_{_slug(str(series))}.png"
        if plot_traces(table, series, trace_png):
            lines += [f"![traces {series}]({trace_png.relative_to(out)})", ""]
        if plot_steps(table, series, steps_png):
            lines += [f"![steps {series}]({steps_png.relative_to(out)})", ""]
        body = []
        for length in table.lengths:
            evs = list(table.evals[series].get(length, {}).values())
            statuses: dict[str, int] = defaultdict(int)
            for ev in evs:
                for status, count in ev.get("status_counts", {}).items():
                    statuses[status] += count
            steps = [ev["steps_mean"] for ev in evs if "steps_mean" in ev]
            if evs:
                body.append([str(series), str(length),
                             f"{sum(steps) / len(steps):.2f}" if steps else "–",
                             ", ".join(f"{k}: {v}" for k, v in sorted(statuses.items()))])
        lines += _md_table(["series", "L", "mean steps", "solver statuses (summed over seeds)"],
                           body)
    return lines


def _compute(table: Table) -> list[str]:
    lines = ["### Parameters and compute per token", "",
             "Function evaluations (energy value+gradient) and estimated forward FLOPs per "
             "token at test time (`ablations.flops`), mean over seeds.", ""]
    body = []
    for series in table.series():
        for length in table.lengths:
            evs = list(table.evals[series].get(length, {}).values())
            rows = list(table.rows[series].get(length, {}).values())
            if not evs:
                continue
            fevals = [ev["fevals_per_token"] for ev in evs if "fevals_per_token" in ev]
            flops = [ev["flops_per_token"] for ev in evs if "flops_per_token" in ev]
            params = sorted({row.metrics.get("params") for row in rows})
            body.append([str(series), str(length), ", ".join(map(str, params)),
                         str(rows[0].config.layers),
                         f"{sum(fevals) / len(fevals):.2f}" if fevals else "–",
                         f"{sum(flops) / len(flops) / 1e6:.3f}" if flops else "–"])
    return lines + _md_table(["series", "L", "params", "layers", "fevals/token", "MFLOPs/token"],
                             body)


def _training_loss(table: Table) -> list[str]:
    """One line per trained model (an EqT model's rules share its training)."""
    lines = ["### Final training loss (mean over seeds; chance for parity: ln 2 = 0.693)", ""]
    runs: dict[str, Series] = {}  # run -> its first series
    for series in table.series():
        runs.setdefault(series.run, series)
    body = []
    for run, series in runs.items():
        cells = []
        for length in table.lengths:
            rows = list(table.rows[series].get(length, {}).values())
            losses = [row.metrics["train_nll"] for row in rows if "train_nll" in row.metrics]
            cells.append(f"{sum(losses) / len(losses):.3f} (n={len(losses)})" if losses else "–")
        body.append([run, *cells])
    return lines + _md_table(["run", *[f"L={L} NLL" for L in table.lengths]], body)


def _paper_table(table: Table) -> list[str]:
    """The paper's Table 2 beside the baseline, the primary EqT series and the controls."""
    lines = ["### The paper's Table 2 beside ours (per-token accuracy %)", "",
             "Paper: one run per cell, no seeds or intervals reported. Ours: mean ± 95% CI "
             "(sd, n). `eqt steps=0` (the EqT weights evaluated with K = 0) and the other "
             "controls are ours; the paper has none.", ""]
    names = table.series()
    ours = [Series(BASELINE), *table.primary] + [
        s for s in names if s.label == EQT and s.rule == K0
    ] + [s for s in names if s.label in ("aux-only", "compute-matched")]
    standard = dict(zip(PAPER_LENGTHS, PAPER_TABLE2["standard"], strict=True))
    eqt = dict(zip(PAPER_LENGTHS, PAPER_TABLE2["EqT"], strict=True))
    body = []
    for length in sorted(set(PAPER_LENGTHS) | set(table.lengths)):
        paper = (standard.get(length), eqt.get(length))
        cells = [(c.text() if (c := table.cell(s, length)) else "–") for s in ours]
        body.append([str(length), "–" if paper[0] is None else f"{paper[0]:.2f}",
                     "–" if paper[1] is None else f"{paper[1]:.2f}", *cells])
    return lines + _md_table(["L", "paper standard", "paper EqT", *[f"ours {s}" for s in ours]],
                             body)


# -- diagnostics of refinement -------------------------------------------------------------------


def _stat(values: list[float | None], *, scale: float = 1.0, digits: str = ".3g") -> str:
    """``mean ± sd`` of ``scale * values`` over seeds (one value: it alone; none: a dash);
    ``(n=k)`` is appended when only ``k`` of the seeds have a value (None: e.g. an AUROC of a
    run without wrong tokens)."""
    present = [scale * v for v in values if v is not None]
    if not present:
        return "–"
    cell = Cell(tuple(present))
    text = f"{cell.mean:{digits}}" if cell.n < 2 else \
        f"{cell.mean:{digits}} ± {cell.sd:{digits.lstrip('+')}}"  # the sd has no sign
    return text if cell.n == len(values) else f"{text} (n={cell.n})"


def _blocks(table: Table, name: Series, length: int) -> list[dict[str, Any]]:
    """The ``diagnostics`` blocks of one series and length, one per seed."""
    return [ev["diagnostics"] for _, ev in sorted(table.evals[name].get(length, {}).items())
            if "diagnostics" in ev]


def plot_acc_by_k(table: Table, run: str, name: Series, path: Path) -> bool:
    """Accuracy against the step budget K (mean over seeds, sd as error bars), one line per
    length; ``name`` is one of ``run``'s series."""
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    drawn = False
    for length in table.lengths:
        curves = [block["acc_by_k"] for block in _blocks(table, name, length)]
        budgets = sorted({int(k) for curve in curves for k in curve})
        cells = [Cell(tuple(100 * c[str(k)] for c in curves if c.get(str(k)) is not None))
                 for k in budgets]
        if not budgets or not all(cell.n for cell in cells):
            continue
        axis.errorbar([k + 0.5 for k in budgets], [c.mean for c in cells],
                      yerr=[c.sd or 0.0 for c in cells], marker="o", capsize=3, label=f"L={length}")
        drawn = True
    axis.set_xscale("log", base=2)
    axis.set_xlabel("step budget K + 0.5 (K = 0: no refinement)")
    axis.set_ylabel("per-token accuracy (%)")
    axis.set_title(f"{table.task}, {run}: accuracy vs K (mean, sd over seeds)")
    axis.legend(fontsize=7)
    _save(figure, path if drawn else None)
    return drawn


def section_diagnostics(table: Table, plots: Path, out: Path) -> list[str]:
    """The "Diagnostics of refinement" section of one task, from the ``diagnostics`` blocks of
    the EqT series (`ablations.evaluate`); empty when no run has them."""
    names = [s for s in table.series() if s.label == EQT
             and any(_blocks(table, s, length) for length in table.lengths)]
    if not names:
        return []
    lengths = table.lengths
    sizes = sorted({b["diagnostic_sequences"] for name in names for length in lengths
                    for b in _blocks(table, name, length)})
    lines = [f"### Diagnostics of refinement (`{table.task}`)", "",
             "Every EqT run evaluated with each rule against the same weights at K = 0 "
             "(`ablations.evaluate`, `eqtheory.diagnostics`); mean ± sd over seeds (n: seeds). "
             "Per-token energies and gradient norms are measured on the first "
             f"{' or '.join(map(str, sizes))} test sequences of each run, the rest on the "
             "whole test set.", ""]
    lines += _diagnostics_motion(table, names)
    lines += _diagnostics_gradients(table, names)
    lines += _diagnostics_detector(table, names)
    lines += _diagnostics_budget(table, names, plots, out)
    return lines


def _block_rows(
    table: Table, names: list[Series], columns: Callable[[list[dict[str, Any]]], list[str]]
) -> list[list[str]]:
    """One row per series and length that has diagnostics blocks: the series, L, the number
    of blocks (seeds) and ``columns(blocks)``."""
    return [[str(name), str(length), str(len(blocks)), *columns(blocks)]
            for name in names for length in table.lengths
            if (blocks := _blocks(table, name, length))]


def _motion_columns(blocks: list[dict[str, Any]]) -> list[str]:
    flips = [b["flips"] for b in blocks]
    return [
        _stat([b["displacement"]["mean"] for b in blocks], scale=100),
        _stat([b["displacement"]["q90"] for b in blocks], scale=100),
        _stat([f["changed"] for f in flips], scale=100),
        _stat([f["wrong_to_right"] for f in flips], scale=100),
        _stat([f["right_to_wrong"] for f in flips], scale=100),
        _stat([f["wrong_to_right"] - f["right_to_wrong"] for f in flips], scale=100,
              digits="+.3f"),
    ]


def _diagnostics_motion(table: Table, names: list[Series]) -> list[str]:
    """Displacement of the latents and prediction flips against K = 0."""
    lines = ["**How far the latents move and which predictions change.** Displacement: "
             "`||z* - z0|| / ||z0||` per position (%, mean and 90th percentile over positions "
             "and ERMs). Flips: scored tokens whose correctness changed from K = 0 to the rule "
             "(% of all scored tokens); net = wrong→right minus right→wrong, the accuracy "
             "change in points.", ""]
    return lines + _md_table(
        ["series", "L", "n", "displacement % (mean)", "displacement % (q90)", "changed %",
         "wrong→right %", "right→wrong %", "net (points)"],
        _block_rows(table, names, _motion_columns),
    )


def _diagnostics_gradients(table: Table, names: list[Series]) -> list[str]:
    """Per-term gradient norms of the objective at z0 and at z*."""
    lines = ["**What drives the motion.** Mean over positions of `||grad_{z_t} w_i E_i||` per "
             "term of the objective `L + anchor`, at the proposal z0 → at the refined z*; "
             "`total` is the whole objective's gradient (the step direction; terms can "
             "cancel).", ""]
    terms = list(dict.fromkeys(
        label for name in names for length in table.lengths
        for b in _blocks(table, name, length) for label in b["grad_norm"]["z0"]
    ))

    def columns(blocks: list[dict[str, Any]]) -> list[str]:
        return [f"{_stat([b['grad_norm']['z0'].get(t) for b in blocks], digits='.2g')} → "
                f"{_stat([b['grad_norm']['z_star'].get(t) for b in blocks], digits='.2g')}"
                for t in terms]

    return lines + _md_table(["series", "L", "n", *terms], _block_rows(table, names, columns))


def _diagnostics_detector(table: Table, names: list[Series]) -> list[str]:
    """AUROC of the learned energy (and of confidence) for wrong tokens."""
    lines = ["**The energy as an error detector** (the calibration the paper's Theorem 4 "
             "needs: energy tracking the excess loss). AUROC of the per-token learned energy "
             "`L` at z* (causal increments, summed over ERMs; no prior) for predicting a wrong "
             "token; 0.5 = no signal. Beside it the same for the model's own confidence "
             "`1 - max p`, and the mean per-token energy of right and wrong tokens.", ""]

    def columns(blocks: list[dict[str, Any]]) -> list[str]:
        return [_stat([b["energy_auroc"] for b in blocks]),
                _stat([b["confidence_auroc"] for b in blocks]),
                _stat([b["energy_mean"]["right"] for b in blocks]),
                _stat([b["energy_mean"]["wrong"] for b in blocks])]

    return lines + _md_table(["series", "L", "n", "energy AUROC", "confidence AUROC",
                              "energy (right)", "energy (wrong)"],
                             _block_rows(table, names, columns))


def _diagnostics_budget(table: Table, names: list[Series], plots: Path, out: Path) -> list[str]:
    """Accuracy against the step budget K, a table and a plot per run."""
    lengths = table.lengths
    lines = ["**Accuracy against the step budget K** (%, `steps=K` for K = 0, 1, 2, 4, ..., "
             "the largest budget among the run's rules).", ""]
    runs: dict[str, Series] = {}  # run (series without its rule) -> its first series with blocks
    for name in names:
        runs.setdefault(name.run, name)
    for run, name in runs.items():
        budgets = sorted({int(k) for length in lengths for b in _blocks(table, name, length)
                          for k in b["acc_by_k"]})
        rows = _block_rows(table, [name], lambda blocks, budgets=budgets: [
            _stat([b["acc_by_k"].get(str(k)) for b in blocks], scale=100, digits=".2f")
            for k in budgets
        ])
        lines += _md_table(["run", "L", "n", *[f"K={k}" for k in budgets]],
                           [[run, *row[1:]] for row in rows])
        png = plots / f"acc_by_k_{table.task}_{_slug(run)}.png"
        if plot_acc_by_k(table, run, name, png):
            lines += [f"![accuracy vs K {run}]({png.relative_to(out)})", ""]
    return lines


def build_report(rows: list[Row], out: Path) -> str:
    """The report's Markdown (plots are written under ``out/plots``)."""
    from ablations.report_lengths import section as section_lengths  # it imports this module

    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    done = [row for row in rows if row.status == "done"]
    lines = ["# Parity ablations: report", "",
             f"Generated from `{out / 'results.sqlite'}` (the database only).", ""]
    counts = {s: sum(r.status == s for r in rows) for s in ("done", "failed", "running", "pending")}
    train_s = sum((row.timings or {}).get("total_s", 0.0) for row in done)
    starts = [row.started_at for row in done if row.started_at]
    ends = [row.finished_at for row in done if row.finished_at]
    span = (max(ends) - min(starts)) if starts and ends else 0.0
    lines += ["## Runs", "",
              f"- runs: {len(rows)} ({', '.join(f'{k} {v}' for k, v in counts.items())})",
              f"- seeds: {sorted({row.seed for row in done})}",
              f"- lengths: {sorted({row.length for row in done})}",
              f"- devices: {_distinct([row.device for row in done])}",
              f"- hosts: {_distinct([row.host for row in done])}",
              f"- versions: {_distinct([_version_text(row.versions) for row in done])}",
              f"- kernels: {_distinct([describe_kernels(row.environment) for row in done])}"
              " (what decides the kernels: bitwise repeats need the same; docs/reliability.md)",
              f"- git commits: {_distinct([row.git_commit for row in done])}",
              f"- wall time: {train_s:.1f} s summed over runs (train + eval), "
              f"{span:.1f} s from the first start to the last finish",
              ""]
    lines += ["Run configurations (distinct values per label):", ""]
    body = []
    for label in sorted({row.label for row in done}):
        configs = [row.config for row in done if row.label == label]
        keys = ("layers", "width", "heads", "train_steps", "batch_size", "lr", "train_size",
                "test_size")
        body.append([label] + [", ".join(sorted({str(getattr(c, k)) for c in configs}))
                               for k in keys]
                    + ["; ".join(sorted({c.variant.to_string() for c in configs}))])
    lines += _md_table(["label", "layers", "width", "heads", "steps", "batch", "lr", "train",
                        "test", "variant"], body)
    for table in tables(rows):
        lines += _section_task(table, plots, out)
        lines += section_diagnostics(table, plots, out)
        lines += section_lengths(table, plots, out)
    failed = [row for row in rows if row.status == "failed"]
    if failed:
        lines += ["## Failed runs", ""]
        lines += _md_table(["hash", "label", "task", "L", "seed", "attempts", "error"], [
            [row.hash, row.label, row.task, str(row.length), str(row.seed), str(row.attempts),
             (row.error or "").strip().splitlines()[-1].replace("|", "/") if row.error else ""]
            for row in failed
        ])
    return "\n".join(lines)


def _version_text(versions: dict[str, str] | None) -> str:
    if not versions:
        return "unknown"
    return " ".join(f"{k} {v}" for k, v in sorted(versions.items()))


def write_report(out: str | Path) -> Path:
    """Write ``out/report.md`` and its plots from ``out/results.sqlite``; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    out = Path(out)
    database = out / "results.sqlite"
    if not database.exists():
        raise FileNotFoundError(f"no results database at {database}")
    with Store(database) as store:
        rows = store.rows()
    path = out / "report.md"
    path.write_text(build_report(rows, out))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m ablations.report",
        description="Write DIR/report.md and DIR/plots/*.png from DIR/results.sqlite; or export "
                    "the results as CSV (--csv); or compare two databases (--compare A B).",
    )
    parser.add_argument("--out", default=None,
                        help="the sweep's output directory (needed unless --compare)")
    parser.add_argument("--csv", nargs="?", const="", default=None, metavar="FILE",
                        help="write one CSV line per run x evaluation rule x length to FILE "
                             "(default: DIR/results.csv; '-': stdout) instead of the report")
    parser.add_argument("--compare", nargs=2, default=None, metavar=("A", "B"),
                        help="compare two databases (files or output directories) of the same "
                             "grid cell by cell: B - A with its interval; prints Markdown")
    args = parser.parse_args(argv)
    if args.compare is None and args.out is None:
        parser.error("--out DIR is needed (or --compare A B)")
    try:
        if args.compare is not None:
            from ablations import compare

            print(compare.main(*args.compare))
            return 0
        if args.csv is not None:
            from ablations import export

            with Store(Path(args.out) / "results.sqlite", readonly=True) as store:
                rows = store.rows()
            destination = args.csv or Path(args.out) / "results.csv"
            count = export.write_csv(rows, destination)
            if destination != "-":
                print(f"csv: {destination} ({count} lines)")
            return 0
        path = write_report(args.out)
        with Store(Path(args.out) / "results.sqlite") as store:
            print(summary_table(store.rows()))
    except FileNotFoundError as error:
        parser.error(str(error))
    except UnreadableStore as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"report: {path}")
    return 0


def _save(figure, path: Path | None) -> None:
    """Lay out, write ``figure`` as a PNG at ``path`` (if given) and free it."""
    import matplotlib.pyplot as plt

    figure.tight_layout()
    if path is not None:
        figure.savefig(path, dpi=110)
    plt.close(figure)


if __name__ == "__main__":
    sys.exit(main())
