"""The report renders byte for byte as it did before its series became typed records
(`ablations.report.Series`): ``tests/data/report_golden.md`` was rendered from the fixture
database (`report_fixture`) by the report code of commit f5877a1."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import pytest
from report_fixture import fill, pinned_rows

from ablations.report import EQT, K0, Series, build_report, summary_table

GOLDEN = Path(__file__).resolve().parent / "data" / "report_golden.md"


def test_the_report_of_the_fixture_database_is_unchanged(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    out = Path("fixture")
    out.mkdir()
    fill(out / "results.sqlite")
    rows = pinned_rows(out / "results.sqlite")
    text = build_report(rows, out) + "\n<<summary>>\n" + summary_table(rows) + "\n"
    assert text == GOLDEN.read_text()


@pytest.mark.parametrize(
    ("series", "text", "refines"),
    [
        (Series("baseline"), "baseline", False),
        (Series(EQT, "energy=bidir+mask", "steps=8", 8), "eqt[energy=bidir+mask] steps=8", True),
        (Series(EQT, "", K0, 0), "eqt steps=0", False),
        (Series("aux-only", "eval_lengths=[8, 32]"), "aux-only[eval_lengths=[8, 32]]", False),
    ],
)
def test_a_series_is_a_record_not_a_string_to_split(series, text, refines):
    """A tag with a space (a list-valued field) stays in the run's name: the rule and the run
    are fields, not parts of a string."""
    assert str(series) == text and f"{series:>40}" == f"{text:>40}"
    assert series.refines is refines
    if series.label == EQT:
        assert series.control() == Series(EQT, series.tag, K0, 0)
        assert series.run == text.rsplit(" ", 1)[0]
