"""``--compile`` (`ablations.compile`): compiled blocks and refinement step equal eager.

The model-level tests use the ``aot_eager`` backend: the same dynamo/AOTAutograd graphs
(value, pull-back and the pull-back's backward, i.e. the double backward of unrolled training)
run by eager kernels, so the wrapping is checked in seconds and to float64 rounding (the
default suite keeps the unrolled training step; the other backward modes and the evaluation
path are ``slow``). The ``slow`` run test uses ``inductor`` (generated C++ kernels; minutes
of compilation on 2 cores) through `ablations.train.train_run` with ``compile=True``.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ablations import compile as compiling
from ablations.config import RunConfig
from ablations.train import train_run
from eqtheory.energies import LogCosh
from eqtheory.variants import VariantSpec, build

SIZES = dict(vocab=2, width=8, layers=1, heads=2, max_len=6)


def _pair(spec: VariantSpec) -> tuple[torch.nn.Module, torch.nn.Module]:
    """Two float64 copies of one model, the second compiled with ``aot_eager``."""
    torch.manual_seed(0)
    eager = build(spec, **SIZES).double()
    compiled = build(spec, **SIZES).double()
    compiled.load_state_dict(eager.state_dict())
    return eager, compiling.compile_model(compiled, backend="aot_eager")


def _loss_and_grads(model: torch.nn.Module, tokens: torch.Tensor, mask: torch.Tensor):
    model.zero_grad(set_to_none=True)
    out = model(tokens, context={"mask": mask}, with_energy=True)
    loss = out.logits.logsumexp(-1).mean() + 0.3 * out.energy.mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), out.logits.detach(), grads


@pytest.mark.parametrize("backward", [
    "unrolled", pytest.param("implicit", marks=pytest.mark.slow),
    pytest.param("phantom", marks=pytest.mark.slow),
])
def test_compiled_training_step_equals_eager(backward):
    """Loss, logits and every parameter gradient of a train step (K = 2, the paper's energy)."""
    spec = VariantSpec(backward=backward)
    eager, compiled = _pair(spec)
    objective = compiled.erms[0].objective
    compiled_forward, calls = objective.forward, []

    def spy(z, context=None):  # the solve must evaluate the compiled objective
        calls.append(tuple(z.shape))
        return compiled_forward(z, context)

    objective.forward = spy
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 2, (3, 6), generator=gen)
    mask = torch.rand(3, 6, generator=gen) < 0.3
    loss_e, logits_e, grads_e = _loss_and_grads(eager.train(), tokens, mask)
    loss_c, logits_c, grads_c = _loss_and_grads(compiled.train(), tokens, mask)
    assert calls and all(shape == (3, 6, 8) for shape in calls)  # (B, T, d) per evaluation
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(logits_c, logits_e, rtol=1e-10, atol=1e-12)
    assert grads_c.keys() == grads_e.keys() and any("erms" in name for name in grads_e)
    for name, grad in grads_e.items():
        torch.testing.assert_close(grads_c[name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.slow
def test_compiled_evaluation_equals_eager():
    """A no-grad evaluation forward at K = 8 (the solver's create_graph=False path)."""
    eager, compiled = _pair(VariantSpec())
    tokens = torch.randint(0, 2, (4, 5), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = eager.eval()(tokens, stop="steps=8", with_energy=False)
        got = compiled.eval()(tokens, stop="steps=8", with_energy=False)
    torch.testing.assert_close(got.logits, want.logits, rtol=1e-10, atol=1e-12)
    assert torch.equal(got.solutions[0].steps, want.solutions[0].steps)


def test_compiled_energy_keeps_state_dict_and_rejects_non_tensor_context():
    energy = LogCosh(dim=4).double()
    keys = list(energy.state_dict())
    compiling.compile_energy(energy, backend="aot_eager")
    assert list(energy.state_dict()) == keys
    with pytest.raises(TypeError, match="context holds tensors only; 'scale' is a float"):
        energy(torch.zeros(2, 4, dtype=torch.float64), {"scale": 0.5})


def test_unknown_backend_lists_the_valid_ones():
    with pytest.raises(ValueError, match="inductr.*inductor"):
        compiling.compile_model(torch.nn.Linear(2, 2), backend="inductr")


def test_train_run_compile_flag_goes_through_compile_model(tmp_path, monkeypatch):
    """``compile=True`` hands the run's model to `compile_model` on CPU (here a spy that
    compiles nothing: that the compiled model equals eager is the model-level tests' and the
    ``slow`` inductor run's job), and ``compile=False`` does not."""
    calls = []

    def spy(model, *, backend="inductor"):
        calls.append((type(model).__name__, backend))
        return model

    monkeypatch.setattr(compiling, "compile_model", spy)
    config = RunConfig(
        length=6, layers=1, width=8, heads=2, train_size=8, test_size=8, train_steps=1,
        batch_size=8, warmup_steps=1, eval_stops=("steps=1",), checkpoint_every=0,
    )
    train_run(config, workdir=tmp_path / "eager")
    assert calls == []
    result = train_run(dataclasses.replace(config, compile=True), workdir=tmp_path / "compiled")
    assert calls == [("EqT", "inductor")] and result.metrics["steps"] == 1


@pytest.mark.slow
def test_inductor_training_run_matches_eager(tmp_path):
    """The real ``--compile`` (inductor, float32) over a few training steps and an evaluation."""
    config = RunConfig(
        length=8, layers=1, width=16, heads=2, train_size=32, test_size=8, train_steps=4,
        batch_size=8, warmup_steps=1, eval_stops=("steps=4",), checkpoint_every=0,
    )
    eager = train_run(config, workdir=tmp_path / "eager")
    compiled = train_run(dataclasses.replace(config, compile=True), workdir=tmp_path / "compiled")
    assert compiled.metrics["train_loss"] == pytest.approx(eager.metrics["train_loss"], rel=1e-4)
    for stop, evaluation in eager.metrics["evals"].items():
        got = compiled.metrics["evals"][stop]
        assert got["acc"] == pytest.approx(evaluation["acc"], abs=1e-6)
        assert got["acc_by_position"] == pytest.approx(evaluation["acc_by_position"], abs=1e-6)


@pytest.mark.slow
def test_compile_benchmark_quick_reports_every_measure():
    from benchmarks import compile as benchmark

    report = benchmark.run(quick=True)
    assert [(r["model"], r["measure"]) for r in report.rows] == [
        ("baseline", "train"), ("eqt", "train K=2"), ("eqt", "eval K=8")]
    assert all(r["eager ms"] > 0 and r["compiled ms"] > 0 for r in report.rows)


def test_the_runner_compile_flag_sets_the_execution_field_and_keeps_the_hashes(tmp_path):
    from ablations.run import build_parser, plan

    argv = ["--out", str(tmp_path / "out"), "--dry-run", "--lengths", "8"]
    plain = plan(build_parser().parse_args(argv)).runs
    compiled = plan(build_parser().parse_args([*argv, "--compile"])).runs
    assert [config.compile for _, config in plain] == [False] * len(plain)
    assert [config.compile for _, config in compiled] == [True] * len(compiled)
    assert [c.hash() for _, c in compiled] == [c.hash() for _, c in plain]
