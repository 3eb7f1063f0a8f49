"""The benchmarks run in their tiny (``--quick``) configurations and write a well-formed report.

No timing assertions: speed targets live in the benchmark output, never in unit tests.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from benchmarks import memory, overhead, solvers, throughput
from benchmarks.__main__ import main
from benchmarks.common import Report


def _check_report(report: Report) -> None:
    assert report.rows, f"{report.name} produced no rows"
    for row in report.rows:
        assert set(row) == set(report.columns), (report.name, row)
        for value in row.values():
            if isinstance(value, float):
                assert not math.isnan(value), (report.name, row)
    for target in report.targets.values():
        assert target["met"] in (True, False, None) and isinstance(target["detail"], str)
    json.dumps(report.as_dict())
    assert report.markdown().startswith(f"## {report.name}")


def test_solvers_quick_converges_and_compares():
    report = solvers.run(quick=True)
    _check_report(report)
    ours = [r for r in report.rows if r["library"] == "ours"]
    assert {r["solver"] for r in ours} == {"picard", "anderson", "broyden"}
    for row in ours:
        assert row["f_calls"] >= 1 and row["time_ms"] > 0
        assert 0 < row["f_ms"] and row["loop_over_f"] >= 1  # a solve includes its f calls
        # Anderson reaches the tolerance on the contractive maps (residual recomputed)
        if row["solver"] == "anderson" and not row["problem"].startswith("spectrum"):
            assert row["converged"] and row["residual"] < row["tol"], row
    for problem in {r["problem"] for r in ours}:  # some solver of ours solves every problem
        assert any(r["converged"] for r in ours if r["problem"] == problem), problem
    floor = [r for r in report.rows if r["library"] == "floor"]  # the bare loop, plain iteration
    assert [r["problem"] for r in floor] == list(dict.fromkeys(r["problem"] for r in ours))
    assert all(r["solver"] == "picard" and r["loop_over_f"] >= 1 for r in floor)
    assert next(r for r in floor if r["problem"].startswith("tanh"))["converged"]
    if not solvers.peer_available():
        assert any("torchdeq is not installed" in note for note in report.notes)
        pytest.skip("torchdeq not installed (pip install -e '.[benchmarks]'): comparison skipped")
    assert {r["library"] for r in report.rows} == {"ours", "torchdeq", "floor"}
    assert all(r["f_calls"] >= 1 for r in report.rows)


def test_memory_implicit_is_flat_and_unrolled_grows():
    report = memory.run(quick=True)
    _check_report(report)
    implicit = [r["implicit_bytes"] for r in report.rows]
    unrolled = [r["unrolled_bytes"] for r in report.rows]
    assert all(r["grads_ok"] for r in report.rows)
    assert max(implicit) <= 1.1 * min(implicit)
    assert all(a < b for a, b in zip(unrolled, unrolled[1:]))


def test_overhead_quick_ratios_are_finite():
    report = overhead.run(quick=True)
    _check_report(report)
    measures = ["train K=2", "eval K=8", "eval K=32"]
    assert [(r["model"], r["measure"]) for r in report.rows] == [
        (model, measure) for model in ("cpu", "paper") for measure in measures]
    for row in report.rows:
        assert row["eqt/baseline time"] > 0 and row["FLOP bound"] > 1 and row["finite"]


@pytest.mark.slow
def test_throughput_quick_runs_every_label():
    report = throughput.run(quick=True)
    _check_report(report)
    assert report.rows[-1]["label"] == "grid (estimate)"
    assert all(r["finite loss"] for r in report.rows[:-1])


def test_cli_writes_markdown_and_json(tmp_path):
    assert main(["--only", "memory", "--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["quick"] is True and data["machine"]["threads"] >= 1
    assert [b["name"] for b in data["benchmarks"]] == ["memory"]
    assert "## memory" in (tmp_path / "results.md").read_text()


def test_cli_rejects_unknown_benchmark():
    with pytest.raises(SystemExit):
        main(["--only", "memroy"])


def test_dispatch_counts_fewer_kernels_with_the_gathered_clip_and_per_member_in_ensembles():
    from benchmarks import dispatch

    report = dispatch.run(quick=True)
    _check_report(report)
    rows = {(r["label"], r["measure"], r["members"]): r for r in report.rows}
    members = dispatch.QUICK["members"]
    for label in ("baseline", "eqt", "aux-only", "compute-matched"):
        for width in (1, members):
            ours = rows[(label, "training step", width)]["kernels"]
            reference = rows[(label, "training step, per-parameter clip", width)]["kernels"]
            assert ours < reference, (label, width)
        single = rows[(label, "training step", 1)]["kernels per member"]
        assert rows[(label, "training step", members)]["kernels per member"] < single


def test_dispatch_attributes_an_eqt_steps_kernels_to_every_part_of_the_step():
    from benchmarks import dispatch

    label, config = dispatch._configs(quick=True)[0]
    step = dispatch._step(config, 1)
    step()
    step()
    sites = dispatch.kernels_by_site(step)
    assert label == "eqt" and sum(sites.values()) == dispatch._counts(step)["kernels"]
    for name in ("energy terms (forward)", "refinement loop and solver",
                 "backbone and heads (forward)", "other (loss, optimizer)"):
        assert sites[name] > 0, sites
    assert max(sites, key=sites.get).startswith("autograd engine")


def test_dispatch_counts_do_not_depend_on_width_batch_or_length():
    import dataclasses

    from benchmarks import dispatch

    label, config = dispatch._configs(quick=True)[0]  # eqt: the loop's counts included
    counts = []
    for width, batch, length in ((16, 2, 8), (32, 4, 16)):
        sized = dataclasses.replace(config, width=width, batch_size=batch, length=length)
        step = dispatch._step(sized, 1)
        step()
        step()
        counts.append(dispatch._counts(step))
    assert label == "eqt" and counts[0] == counts[1]


def test_step_time_sorts_every_operator_into_a_kind_and_rates_the_matrix_products():
    from benchmarks import step_time

    assert step_time.kind_of("aten::addmm") == "matmul"
    assert step_time.kind_of("aten::gelu_backward") == "gelu"
    assert step_time.kind_of("aten::mul") == "other"
    x = torch.randn(64, 64, requires_grad=True)

    def step():  # 2 * 64^3 FLOPs of matrix product, and some element-wise work
        (torch.nn.functional.gelu(x @ x) * 2).sum().backward()

    row = step_time.breakdown(step, 3)
    assert row["matmul ms"] > 0 and row["gelu ms"] > 0 and row["other ms"] > 0
    assert row["attention ms"] == 0 and row["optimizer ms"] == 0
    assert row["matmul GFLOP/s"] > 0 and row["step ms"] > 0 and row["ops"] >= 6
    report = step_time.run(quick=True)
    _check_report(report)
    assert {r["label"] for r in report.rows} == {"baseline", "eqt", "aux-only", "compute-matched"}
    assert all(0 < r["matmul share"] < 1 for r in report.rows)
