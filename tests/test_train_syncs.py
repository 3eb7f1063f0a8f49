"""A training step with a step-budget rule makes no host synchronisation (one run and a seed
ensemble; baseline and EqT): positions are weighted, not gathered, the rejected-sequence count
stays on the device, and the refinement loop runs its budget without reading values back."""

from __future__ import annotations

import dataclasses
from collections import Counter

import pytest
import torch

from ablations.train import make_optimizer, train_runs, training_step
from eqtheory.context import MASK_RATE
from eqtheory.energies.mask import random_mask
from eqtheory.model.ensemble import stack
from eqtheory.testing.syncs import count_syncs
from eqtheory.variants import VariantSpec, build
from tests.test_ensemble import SMALL

pytestmark = pytest.mark.usefixtures("one_thread")

SPECS = {
    "baseline": VariantSpec(kind="baseline"),
    "eqt": VariantSpec(stop_train="steps=2"),
    "eqt-every": VariantSpec(stop_train="steps=3", placement="every"),
}


def _no_sync_steps(label: str, members: int, device: torch.device) -> None:
    """Two training steps of `label` (``members`` stacked seeds) on `device`, each with no
    host synchronisation; on CUDA the driver's sync-debug mode counts the ones made in C++."""
    spec = SPECS[label]
    models = []
    for seed in range(members):
        torch.manual_seed(seed)
        models.append(build(spec, vocab=2, width=16, layers=2, heads=2, max_len=8).to(device))
    model = models[0] if members == 1 else stack(models)
    optimizer = make_optimizer(model, SMALL, device=device, members=members)
    inputs = torch.randint(0, 2, (members, 4, 8), device=device)  # (M, B, T)
    targets = inputs.cumsum(dim=2) % 2
    scored = torch.arange(8, device=device) == 7  # parity_final: one scored position
    with_energy = spec.kind == "eqt"
    mask = random_mask(inputs.flatten(0, 1), MASK_RATE) if with_energy else None
    context = {} if mask is None else {"mask": mask}
    model.train()
    for step in range(2):  # the second step runs with optimizer state
        with count_syncs() as syncs:
            loss, nll, keep, _, _ = training_step(
                model, optimizer, inputs, targets, context, scored=scored, beta=0.1,
                grad_clip=0.5, with_energy=with_energy,
            )
        assert syncs.sites == [], f"step {step}: {syncs.sites}"
    assert loss.shape == nll.shape == (members,) and keep.shape == (members, 4)
    assert torch.isfinite(loss).all()


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("label", sorted(SPECS))
def test_a_training_step_with_a_step_budget_makes_no_host_sync(label, members):
    _no_sync_steps(label, members, torch.device("cpu"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("label", sorted(SPECS))
def test_on_cuda_a_training_step_with_a_step_budget_makes_no_host_sync(label, members):
    _no_sync_steps(label, members, torch.device("cuda"))


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("label", ["baseline", "eqt"])
def test_the_training_loop_reads_back_only_at_log_steps(label, members, tmp_path):
    # 20 and 40 steps both log 10 times (every train_steps // 10) and checkpoint once at the
    # end, and evaluate alike: any difference in host reads comes from the steps in between
    counts = []
    for steps in (20, 40):
        configs = [dataclasses.replace(
            SMALL, variant=SPECS[label], seed=seed, train_steps=steps, checkpoint_every=0,
            train_size=64, test_size=32, eval_stops=("steps=0",),
        ) for seed in range(members)]
        with count_syncs() as syncs:
            results = train_runs(configs, workdirs=[tmp_path / f"{steps}-{c.seed}"
                                                    for c in configs])
        assert all(r.metrics["steps"] == steps for r in results)
        counts.append(Counter(syncs.sites))
    assert counts[0] == counts[1]
