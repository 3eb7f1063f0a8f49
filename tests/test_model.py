"""The model layer: causal backbone, ERM at K = 0, EqT placements, spec validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eqtheory.backward import Unrolled
from eqtheory.energies import LogCosh
from eqtheory.model import ERM, Backbone, EqT
from eqtheory.registry import UnknownNameError, UnknownOptionError
from eqtheory.solvers import GradientDescent
from eqtheory.spec import SpecError
from eqtheory.variants import VariantSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")


SIZE = {"vocab": 2, "width": 16, "layers": 2, "heads": 2, "max_len": 12}


def make(spec: VariantSpec, seed: int = 0) -> EqT:
    torch.manual_seed(seed)
    return build(spec, **SIZE)


def tokens(batch: int = 4, length: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 2, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_backbone_shapes_and_positions():
    model = Backbone(vocab=2, width=8, layers=1, heads=2, max_len=6)
    out = model(torch.zeros(3, 6, dtype=torch.long))
    assert out.z.shape == (3, 6, 8) and out.logits.shape == (3, 6, 2)
    # identical tokens at different positions get different latents (positions are added)
    assert not torch.allclose(out.z[:, 0], out.z[:, 1])
    with pytest.raises(ValueError, match="exceeds max_len"):
        model(torch.zeros(1, 7, dtype=torch.long))


@pytest.mark.parametrize(
    "spec",
    [
        VariantSpec(kind="baseline"),
        VariantSpec(stop_eval="steps=6"),
        VariantSpec(energy="bidir+mask+confidence+0.1*memory+consist", placement="every"),
    ],
    ids=["baseline", "eqt-last", "eqt-every"],
)
@pytest.mark.parametrize("t", [0, 5, 11])
def test_changing_token_t_leaves_earlier_outputs_unchanged(spec, t):
    model = make(spec).eval()
    x = tokens()
    y = x.clone()
    y[:, t] = 1 - y[:, t]
    with torch.no_grad():
        a, b = model(x, with_energy=False).logits, model(y, with_energy=False).logits
    torch.testing.assert_close(a[:, :t], b[:, :t], rtol=0, atol=1e-5)
    assert not torch.allclose(a[:, t], b[:, t])


def test_erm_with_zero_steps_returns_the_proposal_exactly():
    erm = ERM(
        LogCosh(dim=20), gamma=1.0, solver=GradientDescent(), stop_train="steps=2",
        stop_eval="steps=8", backward=Unrolled(), width=4, layernorm=True,
    )
    z0 = torch.randn(3, 5, 4, requires_grad=True)
    z, solution = erm(z0, {}, stop="steps=0")
    assert torch.equal(solution.z, z0)
    torch.testing.assert_close(z, erm.norm(z0), rtol=0, atol=0)
    assert solution.steps.tolist() == [[0] * 5] * 3  # per position: [B, T] solves
    assert solution.status.shape == solution.fevals.shape == (3, 5)
    assert solution.trace["energy"].shape == (1, 3, 5)
    z_refined, refined = erm(z0, {})  # train mode: stop_train
    assert refined.steps.tolist() == [[2] * 5] * 3
    assert not torch.allclose(refined.z, z0)


def test_train_and_eval_rules_are_separate():
    model = make(VariantSpec(energy="mask", stop_train="steps=1", stop_eval="steps=3"))
    x = tokens()
    # the ERM solves each position separately: steps [B, T]
    assert torch.equal(model.train()(x).solutions[0].steps, torch.full(x.shape, 1))
    evaluated = model.eval()(x, with_energy=False).solutions[0]
    assert torch.equal(evaluated.steps, torch.full(x.shape, 3))
    overridden = model(x, stop="steps=5", with_energy=False).solutions[0]
    assert torch.equal(overridden.steps, torch.full(x.shape, 5))


def test_eqt_at_k0_without_layernorm_is_the_baseline_forward():
    model = make(VariantSpec(layernorm=False)).eval()
    x = tokens()
    with torch.no_grad():
        refined = model(x, stop="steps=0", with_energy=False).logits
        baseline = model.backbone(x).logits
        assert torch.equal(refined, baseline)
        assert not torch.allclose(model(x, stop="steps=4", with_energy=False).logits, baseline)


def test_aux_losses_only_never_refines_but_returns_the_energy():
    model = make(VariantSpec(aux_losses_only=True)).train()
    x = tokens()
    out = model(x)
    assert not model.refines and out.solutions == []
    assert torch.equal(out.logits, model.backbone(x).logits)
    assert out.energy.shape == (4,) and torch.isfinite(out.energy).all()


def test_placements_and_parameters():
    baseline = make(VariantSpec(kind="baseline"))
    last = make(VariantSpec(placement="last"))
    every = make(VariantSpec(placement="every"))
    assert len(baseline.erms) == 0 and len(last.erms) == 1 and len(every.erms) == SIZE["layers"]
    # every block's ERM owns its own energy network
    a, b = (list(erm.energy.parameters()) for erm in every.erms)
    assert a and all(p is not q for p, q in zip(a, b))
    counts = [sum(p.numel() for p in m.parameters()) for m in (baseline, last, every)]
    assert counts == sorted(set(counts))


def test_training_loss_reaches_energy_and_backbone_parameters():
    model = make(VariantSpec()).train()
    x = tokens()
    out = model(x, context={"mask": torch.rand(x.shape) < 0.5})
    (out.logits.square().mean() + out.energy.mean()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name


def test_confidence_borrows_the_models_readout():
    model = make(VariantSpec(energy="confidence"))
    assert list(model.erms[0].energy.parameters()) == []  # the head is the backbone's


def test_memory_bank_moves_only_on_update():
    model = make(VariantSpec(energy="memory")).train()
    bank = model.erms[0].energy.bank.clone()
    out = model(tokens())
    assert torch.equal(model.erms[0].energy.bank, bank)
    model.update_memories([z.detach() for z in out.latents])
    assert not torch.equal(model.erms[0].energy.bank, bank)


def test_gamma_is_set_on_every_erm():
    model = make(VariantSpec(placement="every", gamma=1.0, gamma_start=10.0))
    assert [float(erm.anchor.gamma) for erm in model.erms] == [10.0, 10.0]
    model.set_gamma(2.0)
    assert [float(erm.anchor.gamma) for erm in model.erms] == [2.0, 2.0]


def test_build_accepts_keyword_fields():
    model = build(energy="mask+0.5*bidir", solver="gd(momentum=0.5)", stop="steps=3", **SIZE)
    erm = model.erms[0]
    assert erm.stop_train.spec() == erm.stop_eval.spec() == "steps=3"
    assert erm.solver.momentum == 0.5
    with pytest.raises(UnknownOptionError, match="energyy"):
        build(energyy="mask", **SIZE)
    with pytest.raises(TypeError, match="not both"):
        build(VariantSpec(), energy="mask", **SIZE)


@pytest.mark.parametrize(
    ("fields", "error", "match"),
    [
        ({"solver": "gdd"}, UnknownNameError, "did you mean 'gd'"),
        ({"solver": "gd(momentm=0.5)"}, UnknownOptionError, "did you mean 'momentum'"),
        ({"solver": "gd(step_size=0.5)"}, ValueError, "alpha"),
        ({"energy": "bidr+mask"}, UnknownNameError, "did you mean 'bidir'"),
        ({"energy": "mask(hiden=3)"}, UnknownOptionError, "hidden"),
        ({"energy": "mask+"}, SpecError, "expected"),
        ({"stop_train": "stepz=2"}, UnknownNameError, "did you mean 'steps'"),
        ({"stop_eval": "residual<"}, SpecError, "value"),
        ({"backward": "implicitt"}, UnknownNameError, "did you mean 'implicit'"),
        ({"placement": "first"}, ValueError, "valid: every, last"),
        ({"kind": "eqtt"}, ValueError, "did you mean 'eqt'"),
        ({"gamma": 0.0}, ValueError, "gamma must be > 0"),
        ({"gamma_start": -1.0}, ValueError, "gamma_start"),
        ({"gamma": float("inf"), "gamma_start": 10.0}, ValueError, "finite gamma"),
        ({"anneal_fraction": 0.0}, ValueError, "anneal_fraction"),
        ({"alpha": 0.0}, ValueError, "alpha"),
        ({"beta": -0.1}, ValueError, "beta"),
        ({"kind": "baseline", "aux_losses_only": True}, ValueError, "aux_losses_only needs"),
    ],
)
def test_bad_variant_values_give_clear_errors(fields, error, match):
    with pytest.raises(error, match=match):
        VariantSpec(**fields)


def test_bad_sizes_give_clear_errors():
    with pytest.raises(ValueError, match="multiple of heads"):
        build(VariantSpec(), **{**SIZE, "width": 15, "heads": 4})
    with pytest.raises(ValueError, match="placement 'every' needs layers >= 1"):
        build(VariantSpec(placement="every"), **{**SIZE, "layers": 0})


def test_spec_round_trip_still_holds_with_component_options():
    spec = dataclasses.replace(VariantSpec(), solver="gd(momentum=0.9)", energy="bidir=8+mask")
    assert VariantSpec.parse(spec.to_string()) == spec
    make(spec)  # and it builds


@pytest.mark.parametrize(
    ("solver", "stop"),
    [("anderson", "steps=6"), ("broyden", "steps=6"), ("ttt", "steps=6"),
     ("gd", "residual<1e-3|steps=40"), ("gd", "stable=2|steps=40")],
)
def test_refinement_is_causal_for_every_solver_and_rule(solver, stop):
    """Flipping the last bit changes no earlier position's logits (solves are per position)."""
    model = make(VariantSpec(energy="bidir+mask+confidence", solver=solver, stop_eval=stop)).eval()
    x = tokens()
    flipped = x.clone()
    flipped[:, -1] = 1 - flipped[:, -1]
    with torch.no_grad():
        a = model(x, with_energy=False).logits
        b = model(flipped, with_energy=False).logits
    assert torch.equal(a[:, :-1], b[:, :-1])
