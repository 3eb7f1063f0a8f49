"""One row of the proofs_checks table: a measured number against the bound a claim gives."""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

_RELATIONS = {"<=": operator.le, ">=": operator.ge, "<": operator.lt, ">": operator.gt}


@dataclass(frozen=True)
class Record:
    """A check's outcome.

    Attributes:
        claim: the paper's claim (``"2 Thm. 2"``); check: what was measured.
        measured: the number measured; relation: ``<=``, ``>=``, ``<``, ``>``; bound: the number
            the claim (or its corrected version) gives; passed: ``measured relation bound``.
        note: the instance, the reference used, or why the record matters.
    """

    claim: str
    check: str
    measured: float
    relation: str
    bound: float
    passed: bool
    note: str = ""


def compare(
    claim: str, check: str, measured: float, relation: str, bound: float, note: str = ""
) -> Record:
    """A `Record` whose ``passed`` is ``measured <relation> bound`` (NaN never passes)."""
    if relation not in _RELATIONS:
        raise ValueError(f"unknown relation {relation!r}; valid: {', '.join(_RELATIONS)}")
    measured, bound = float(measured), float(bound)
    passed = not (math.isnan(measured) or math.isnan(bound)) and _RELATIONS[relation](
        measured, bound
    )
    return Record(claim, check, measured, relation, bound, bool(passed), note)


def table(records: list[Record], *, markdown: bool = False) -> str:
    """Render records as one plain-text (or Markdown) table."""
    header = ("claim", "check", "measured", "rel", "bound", "pass", "note")
    rows = [
        (
            r.claim,
            r.check,
            f"{r.measured:.4g}",
            r.relation,
            f"{r.bound:.4g}",
            "PASS" if r.passed else "FAIL",
            r.note,
        )
        for r in records
    ]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
        return "\n".join(lines)
    widths = [
        max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
        for i, h in enumerate(header)
    ]
    widths[-1] = len(header[-1])
    fmt = "  ".join(f"{{:<{w}}}" for w in widths)
    lines = [fmt.format(*header), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*row[:-1], "") + row[-1] for row in rows]
    return "\n".join(lines)
