"""Results out of the database as CSV: one line per run x evaluation rule x evaluated length.

    python -m ablations.report --out runs/cpu --csv            # -> runs/cpu/results.csv
    python -m ablations.report --out runs/cpu --csv - > all.csv

Columns, in order: the run (``hash``, ``label``, ``status``, ``attempts``), its config fields
(``task``, ``length`` (the trained length), ``seed``, ..., the variant's as ``variant.energy``,
``variant.solver``, ...), what training gave (``params``, ``train_loss``, ``train_nll``,
``trained_steps``, and any other scalar the run's metrics hold, e.g. ``masked_sequences``),
the evaluation (``rule``, ``eval_length``), then the metrics of that
evaluation: scalars as they are, dicts of scalars one level deep as ``acc_by_position.q1``, ...;
per-step traces and step histograms are left out (they are lists or open-ended dicts). Last, how
it ran: ``train_s``, ``eval_s``, ``total_s``, ``device``, ``host``, ``git_commit`` and the
kernel environment (``env.cpu_capability``, ``env.threads``, ...).

Runs whose metrics hold ``evals_by_length`` (``{length: {rule: eval}}``) give one line per
length in it (and their own length from ``evals`` if it is not among them); the others give
their own length. Only done runs have lines. `pandas.read_csv` reads the file as it is.
"""

from __future__ import annotations

import csv
import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ablations.store import Row

SKIPPED_METRICS = frozenset({"trace", "steps_hist", "diagnostics"})
RUN_COLUMNS = ("hash", "label", "status", "attempts")
RUN_METRICS = {"params": "params", "train_loss": "train_loss", "train_nll": "train_nll",
               "steps": "trained_steps"}  # metrics key -> column
PER_EVAL_KEYS = ("evals", "evals_by_length")
EVAL_COLUMNS = ("rule", "eval_length")
TAIL_COLUMNS = ("train_s", "eval_s", "total_s", "device", "host", "git_commit")


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def _flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalars as they are; dicts of scalars one level deep as ``key.sub``; the rest left out."""
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SKIPPED_METRICS:
            continue
        if _scalar(value):
            flat[prefix + str(key)] = value
        elif isinstance(value, dict) and all(_scalar(v) for v in value.values()):
            flat.update({f"{prefix}{key}.{sub}": v for sub, v in value.items()})
    return flat


def _config_fields(row: Row) -> dict[str, Any]:
    fields = row.config.as_dict()
    variant = fields.pop("variant")
    flat = {k: (v if _scalar(v) else ",".join(map(str, v))) for k, v in fields.items()}
    flat.update({f"variant.{k}": (v if _scalar(v) else str(v)) for k, v in variant.items()})
    return flat


def evaluations(row: Row) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(rule, evaluated length, eval metrics) of a done row."""
    metrics = row.metrics or {}
    by_length = metrics.get("evals_by_length") or {}
    lengths = {int(length): evals for length, evals in by_length.items()}
    if row.length not in lengths:
        lengths[row.length] = metrics.get("evals", {})
    for length in sorted(lengths):
        for rule, evaluation in lengths[length].items():
            yield rule, length, evaluation


def records(rows: list[Row]) -> tuple[list[str], list[dict[str, Any]]]:
    """(columns, one dict per run x rule x length) over the done rows."""
    lines: list[dict[str, Any]] = []
    config_columns: dict[str, None] = {}
    metric_columns: dict[str, None] = {}
    env_columns: dict[str, None] = {}
    run_metric_columns: dict[str, None] = {}
    for row in rows:
        if row.status != "done" or not row.metrics:
            continue
        config = _config_fields(row)
        config_columns.update(dict.fromkeys(config))
        env = {f"env.{k}": v for k, v in _flatten(row.environment or {}).items()}
        env_columns.update(dict.fromkeys(env))
        run = {"hash": row.hash, "label": row.label, "status": row.status,
               "attempts": row.attempts}
        trained = {RUN_METRICS[k]: row.metrics.get(k) for k in RUN_METRICS}
        extra = _flatten({k: v for k, v in row.metrics.items()
                          if k not in RUN_METRICS and k not in PER_EVAL_KEYS})
        trained.update(extra)
        run_metric_columns.update(dict.fromkeys(extra))
        tail = {**{k: (row.timings or {}).get(k) for k in TAIL_COLUMNS[:3]},
                "device": row.device, "host": row.host, "git_commit": row.git_commit}
        for rule, length, evaluation in evaluations(row):
            metrics = _flatten(evaluation)
            metric_columns.update(dict.fromkeys(metrics))
            lines.append({**run, **config, **trained, "rule": rule, "eval_length": length,
                          **metrics, **tail, **env})
    columns = [*RUN_COLUMNS, *config_columns, *RUN_METRICS.values(), *run_metric_columns,
               *EVAL_COLUMNS,
               *metric_columns, *TAIL_COLUMNS, *env_columns]
    return columns, lines


def to_csv(rows: list[Row]) -> str:
    """The CSV text (header and one line per run x rule x length)."""
    columns, lines = records(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()


def write_csv(rows: list[Row], destination: str | Path) -> int:
    """Write the CSV to `destination` (``-``: stdout); returns the number of lines written."""
    text = to_csv(rows)
    if str(destination) == "-":
        sys.stdout.write(text)
    else:
        Path(destination).write_text(text)
    return text.count("\n") - 1
