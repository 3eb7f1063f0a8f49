"""No graph when no gradient is needed (issue 9, item 2): nothing that a solve reads requires a
gradient, so the loop keeps nothing across steps (saved-tensor memory flat in K) and returns a
plain tensor; a closure over a tensor that does require a gradient still gets it."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import eqtheory as eqt

F64 = torch.float64
B, DIM = 8, 64


class SavedTensorMeter:
    """Peak bytes of the tensors autograd saves for backward and keeps alive (a graph kept
    across steps holds a few z-sized tensors per step; one freed after each step holds none)."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def pack(self, tensor: torch.Tensor) -> object:
        size = tensor.numel() * tensor.element_size()
        self.live += size
        self.peak = max(self.peak, self.live)
        return _Saved(self, tensor, size)

    @staticmethod
    def unpack(saved: _Saved) -> torch.Tensor:
        return saved.tensor


class _Saved:
    def __init__(self, meter: SavedTensorMeter, tensor: torch.Tensor, size: int) -> None:
        self.meter, self.tensor, self.size = meter, tensor, size

    def __del__(self) -> None:
        self.meter.live -= self.size


def _solve(kind, backward, steps, z0):
    if kind == "minimize":
        return eqt.minimize(lambda z: 0.5 * (z**2).sum(-1), z0, solver="gd", step_size=1e-4,
                            stop=f"steps={steps}", backward=backward)
    return eqt.fixed_point(lambda z: 0.999 * z + 1e-3, z0, solver="picard",
                           stop=f"steps={steps}", backward=backward)


def _peak_and_grad(kind, backward, steps):
    meter = SavedTensorMeter()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        solution = _solve(kind, backward, steps, torch.ones(B, DIM, dtype=F64))
        requires_grad = solution.z.requires_grad
        del solution
    return meter.peak, requires_grad


@pytest.mark.parametrize("backward", eqt.backward.names())
@pytest.mark.parametrize("kind", ["minimize", "fixed_point"])
def test_nothing_trainable_keeps_no_graph_across_steps(kind, backward):
    short, short_grad = _peak_and_grad(kind, backward, 10)
    long, long_grad = _peak_and_grad(kind, backward, 1000)
    assert not short_grad and not long_grad
    assert long <= 1.2 * short + 1024, (short, long)  # the example: linear in K before


@pytest.mark.parametrize("backward", eqt.backward.names())
def test_grad_mode_off_returns_a_plain_tensor(backward):
    W = nn.Parameter(torch.ones(DIM, dtype=F64))
    with torch.no_grad():
        solution = eqt.minimize(lambda z: (W * z**2).sum(-1), torch.ones(2, DIM, dtype=F64),
                                stop="steps=5", backward=backward)
    assert not solution.z.requires_grad


def test_a_closure_over_a_parameter_still_gets_its_gradient():
    """gd on ``1/2 ||z - w||^2`` from 0 with step 1/2: ``z_K = (1 - 2^-K) w``; the map
    ``z <- z/2 + w`` from 0: ``z_K = 2 (1 - 2^-K) w``."""
    w = nn.Parameter(torch.linspace(-1, 1, DIM, dtype=F64))
    K, factor = 6, 1 - 0.5**6
    energy = eqt.minimize(lambda z: 0.5 * ((z - w) ** 2).sum(-1), torch.zeros(2, DIM, dtype=F64),
                          solver="gd", step_size=0.5, stop=f"steps={K}")
    (grad,) = torch.autograd.grad(energy.z.sum(), w)
    torch.testing.assert_close(grad, torch.full_like(w, 2 * factor), rtol=1e-12, atol=1e-12)
    fixed = eqt.fixed_point(lambda z: 0.5 * z + w, torch.zeros(2, DIM, dtype=F64),
                            solver="picard", stop=f"steps={K}")
    (grad,) = torch.autograd.grad(fixed.z.sum(), w)
    torch.testing.assert_close(grad, torch.full_like(w, 4 * factor), rtol=1e-12, atol=1e-12)


def test_a_learned_step_size_is_differentiated_through_every_step():
    """``E = 1/2 ||z||^2`` (nothing trainable) with gd's learned step ``a``:
    ``z_K = (1 - a)^K z0``, so ``d z_K / d log a = -K a (1 - a)^(K-1) z0``."""
    solver = eqt.solvers.GradientDescent(step_size=0.2, learn_step=True)
    z0 = torch.ones(2, DIM, dtype=F64)
    K = 5
    solution = eqt.minimize(lambda z: 0.5 * (z**2).sum(-1), z0, solver=solver, stop=f"steps={K}")
    (grad,) = torch.autograd.grad(solution.z.sum(), solver.log_step)
    a = 0.2
    expected = -K * a * (1 - a) ** (K - 1) * z0.sum()
    torch.testing.assert_close(grad.to(F64), expected, rtol=1e-6, atol=1e-6)
