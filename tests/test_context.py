"""Context keys (`eqtheory.context`): one registration reaches training's draws and the
contract laws' examples; a member's draws are its single run's."""

from __future__ import annotations

import pytest
import torch

from ablations import tasks
from ablations.train import draw_context
from eqtheory import context
from eqtheory.energies.mask import random_mask
from eqtheory.testing import contracts


def test_training_draws_each_members_mask_from_its_own_seed():
    inputs = torch.randint(0, 2, (2, 4, 6), generator=torch.Generator().manual_seed(0))
    drawn = draw_context(inputs, [3, 7], step=5)
    assert set(drawn) == {"mask"} and drawn["mask"].shape == (8, 6)
    for index, seed in enumerate((3, 7)):
        generator = torch.Generator().manual_seed(tasks.derive_seed(seed, "mask", 5))
        expected = random_mask(inputs[index], context.MASK_RATE, generator=generator)
        assert torch.equal(drawn["mask"][4 * index : 4 * (index + 1)], expected)


@pytest.fixture
def noise_key():
    key = context.register(context.ContextKey(
        "noise", "[B, T] float: a test key",
        example=lambda batch, length, vocab: torch.ones(batch, length),
        draw=lambda tokens, generator: torch.rand(tokens.shape, generator=generator),
    ))
    yield key
    del context.CONTEXT_KEYS[key.name]


def test_a_registered_key_reaches_training_and_the_contract_examples(noise_key):
    inputs = torch.zeros(1, 2, 3, dtype=torch.long)
    assert set(draw_context(inputs, [0], step=0)) == {"mask", "noise"}
    _, _, example = contracts.energy_example("bidir")
    assert torch.equal(example["noise"], torch.ones(contracts.B, contracts.T))
    with pytest.raises(ValueError, match="already registered"):
        context.register(noise_key)
