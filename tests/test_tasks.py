"""The parity tasks: generator correctness against a plain-Python reference, determinism."""

from __future__ import annotations

import itertools

import pytest
import torch

from ablations import tasks
from eqtheory.registry import UnknownNameError


def reference_parity(bits: list[int]) -> list[int]:
    out, running = [], 0
    for bit in bits:
        running ^= bit
        out.append(running)
    return out


def test_cumulative_parity_matches_python_on_every_sequence_of_length_6():
    sequences = [list(s) for s in itertools.product([0, 1], repeat=6)]
    got = tasks.cumulative_parity(torch.tensor(sequences))
    assert got.tolist() == [reference_parity(s) for s in sequences]


def test_hand_worked_example():
    assert tasks.cumulative_parity(torch.tensor([[1, 1, 0, 1, 0]])).tolist() == [[1, 0, 0, 1, 1]]


@pytest.mark.parametrize("name", ["parity", "parity_final"])
def test_sampled_batches_are_bits_with_reference_targets(name):
    task = tasks.get(name)
    batch = task.sample(64, 13, tasks.generator(0, "x"))
    assert batch.inputs.shape == batch.targets.shape == (64, 13)
    assert batch.inputs.dtype == torch.int64
    assert set(batch.inputs.unique().tolist()) <= {0, 1}
    assert batch.targets.tolist() == [reference_parity(row) for row in batch.inputs.tolist()]
    # the final target is the parity of the whole sequence
    assert batch.targets[:, -1].tolist() == [sum(row) % 2 for row in batch.inputs.tolist()]


def test_scored_positions():
    assert tasks.get("parity").scored(5).tolist() == [True] * 5
    assert tasks.get("parity_final").scored(5).tolist() == [False, False, False, False, True]


def test_datasets_are_fixed_by_the_seed_and_splits_differ():
    task = tasks.get("parity")
    a_train, a_test = tasks.datasets(task, length=20, seed=3, train_size=100, test_size=50)
    b_train, b_test = tasks.datasets(task, length=20, seed=3, train_size=100, test_size=50)
    c_train, _ = tasks.datasets(task, length=20, seed=4, train_size=100, test_size=50)
    assert torch.equal(a_train.inputs, b_train.inputs) and torch.equal(a_test.inputs, b_test.inputs)
    assert not torch.equal(a_train.inputs[:50], a_test.inputs)
    assert not torch.equal(a_train.inputs, c_train.inputs)
    assert a_train.inputs.shape == (100, 20) and a_test.inputs.shape == (50, 20)


def test_derive_seed_is_stable():
    assert tasks.derive_seed(0, "a") == tasks.derive_seed(0, "a")
    assert tasks.derive_seed(0, "a") != tasks.derive_seed(1, "a")
    assert 0 <= tasks.derive_seed(123, "train", 7) < 2**63


def test_unknown_task_names_the_valid_ones():
    with pytest.raises(UnknownNameError, match="did you mean 'parity'"):
        tasks.get("parityy")
    assert tasks.names() == ["parity", "parity_final"]
