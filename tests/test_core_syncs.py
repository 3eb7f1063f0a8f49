"""Host synchronisations: the counter finds them, and a pure step budget (``steps=K``) makes the
loop read nothing back to the host, whatever K (issue 11, item 2), which also lets
`torch.func.vmap` run a solve over a stack of problems."""

from __future__ import annotations

import warnings

import pytest
import torch

import eqtheory as eqt
from eqtheory import stopping
from eqtheory.testing.syncs import count_syncs

BUDGET_SOLVERS = ["gd", "picard", "anderson", "broyden", "ttt", "diffusion"]


def _energy(weight: torch.Tensor | float = 1.0):
    """``E(z) = w/2 ||z - 1||^2 + sum log cosh z`` per sample: smooth, strongly convex."""
    return lambda z: 0.5 * weight * ((z - 1) ** 2).sum(1) + torch.log(torch.cosh(z)).sum(1)


def test_the_counter_counts_reads_and_shape_dependent_ops_only():
    x = torch.tensor([1.0, -2.0, 3.0])
    with count_syncs() as quiet:
        y = torch.where(x > 0, x, 0.0).sum() + x.abs().max()
    with count_syncs() as loud:
        bool(y > 0)
        int(y)
        y.item()
        x.tolist()
        x.nonzero()
        torch.nonzero(x)
        x[x > 0]
        x[torch.tensor([0, 2])]  # an integer gather has a known size: not counted
    assert quiet.count == 0
    assert loud.sites == [
        "Tensor.__bool__", "Tensor.__int__", "Tensor.item", "Tensor.tolist", "Tensor.nonzero",
        "torch.nonzero", "Tensor[mask]",
    ]


def test_only_the_debug_modes_sync_reports_count_as_cuda_syncs():
    """The first `set_sync_debug_mode` of a process warns that the mode is a prototype; that
    notice (which mentions synchronisation) is no sync: it made the first CUDA test on an H200
    count one."""
    from eqtheory.testing.syncs import is_sync_warning

    assert is_sync_warning("called a synchronizing CUDA operation")
    notice = ("Synchronization debug mode is a prototype feature and does not yet detect all "
              "synchronizing operations")
    assert not is_sync_warning(notice)
    with pytest.warns(UserWarning, match="prototype feature"):  # passed on, not counted
        with count_syncs() as syncs:
            warnings.warn(notice, UserWarning, stacklevel=1)
            warnings.warn("called a synchronizing CUDA operation", UserWarning, stacklevel=1)
    (site,) = syncs.sites
    assert site.startswith("cuda (test_core_syncs.py:")


def test_the_counter_removes_its_patches():
    before = {name: name in vars(torch.Tensor) for name in ("__bool__", "item", "__getitem__")}
    with count_syncs():
        pass
    assert {name: name in vars(torch.Tensor) for name in before} == before
    assert bool(torch.tensor(True)) and torch.nonzero(torch.tensor([0, 1])).tolist() == [[1]]


@pytest.mark.parametrize(
    ("spec", "early", "budget"),
    [("steps=8", False, 8), ("steps=8|steps=32", False, 8), ("steps=4&steps=6", False, 6),
     ("residual<1e-4|steps=8", True, 8), ("adaptive(low=2,high=8)", True, 8),
     ("(residual<1e-4|steps=10)&steps=4", True, 10)],
)
def test_rules_declare_whether_they_stop_before_their_budget(spec, early, budget):
    rule = stopping.parse(spec)
    assert (rule.stops_early, rule.budget()) == (early, budget)


@pytest.mark.parametrize("solver", BUDGET_SOLVERS)
@pytest.mark.parametrize("graph", [False, True], ids=["no-graph", "graph"])
def test_a_step_budget_solve_reads_nothing_back_whatever_k(solver, graph):
    """Zero host syncs for the whole solve at K = 1 and K = 8 (so none per step), with and
    without a recorded graph (a parameter the energy closes over)."""
    weight = torch.nn.Parameter(torch.tensor(2.0)) if graph else 2.0
    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    counts = {}
    for k in (1, 8):
        with count_syncs() as syncs:
            solution = eqt.minimize(_energy(weight), z0, solver=solver, stop=f"steps={k}")
        counts[k] = syncs.sites
        assert solution.trace["active"].shape == (k + 1, 5)
        assert solution.z.requires_grad == graph
    assert counts == {1: [], 8: []}


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
@pytest.mark.parametrize("solver", BUDGET_SOLVERS)
def test_on_cuda_a_step_budget_solve_reads_nothing_back(solver):
    """The same on CUDA, where the driver's sync-debug mode also counts syncs made in C++."""
    weight = torch.nn.Parameter(torch.tensor(2.0, device="cuda"))
    z0 = torch.randn(5, 3, device="cuda")
    eqt.minimize(_energy(weight), z0, solver=solver, stop="steps=2")  # warm-up: lazy inits
    with count_syncs() as syncs:
        solution = eqt.minimize(_energy(weight), z0, solver=solver, stop="steps=8")
    assert syncs.sites == [] and solution.z.is_cuda


@pytest.mark.parametrize("solver", ["picard", "anderson"])
def test_a_step_budget_fixed_point_with_args_reads_nothing_back(solver):
    """Per-sample args would let the loop compact the batch; a budget runs the full batch."""
    scale = torch.linspace(0.1, 0.9, 6)[:, None]
    with count_syncs() as syncs:
        solution = eqt.fixed_point(lambda z, s: s * z + 1, torch.zeros(6, 2), args=(scale,),
                                   solver=solver, stop="steps=8")
    assert syncs.count == 0 and solution.steps.tolist() == [8] * 6


def test_a_tolerance_rule_reads_back_once_per_step():
    """The contrast: with a rule that may stop early the loop asks how many samples still run
    before every step, so the counter sees the loop's reads grow with K."""
    z0 = torch.randn(5, 3, generator=torch.Generator().manual_seed(0))
    counts = []
    for k in (2, 8):
        with count_syncs() as syncs:
            eqt.minimize(_energy(), z0, stop=f"residual<1e-30|steps={k}")
        counts.append(syncs.count)
    assert 0 < counts[0] < counts[1]


def test_a_budget_runs_every_step_after_every_sample_was_rejected():
    """Rejected samples stay frozen at their last finite iterate with status NONFINITE; the
    budget path does not look whether any sample still runs, so the trace has K + 1 rows."""
    z0 = torch.ones(3, 2)
    solution = eqt.fixed_point(lambda z: z * float("nan"), z0, solver="picard", stop="steps=5")
    assert torch.equal(solution.z, z0)
    assert solution.counts() == {"nonfinite": 3} and solution.steps.tolist() == [0, 0, 0]
    assert solution.trace["active"].shape == (6, 3) and not solution.trace["active"][1:].any()
    assert solution.batch_fevals == 3 * 6


@pytest.mark.parametrize("solver", ["picard", "anderson", "broyden"])
def test_vmap_runs_a_step_budget_fixed_point_over_a_stack_of_problems(solver):
    """``torch.func.vmap`` over N problems (each its own contraction ``f_i``) equals solving
    them one by one, bitwise."""
    generator = torch.Generator().manual_seed(1)
    n_problems, batch, dim = 3, 4, 5
    A = 0.3 * torch.randn(n_problems, dim, dim, generator=generator, dtype=torch.float64)
    b = torch.randn(n_problems, batch, dim, generator=generator, dtype=torch.float64)
    z0 = torch.zeros(n_problems, batch, dim, dtype=torch.float64)

    def solve(A_i, b_i, z0_i):
        return eqt.fixed_point(lambda z: torch.tanh(z @ A_i) + b_i, z0_i, solver=solver,
                               stop="steps=4").z

    stacked = torch.func.vmap(solve)(A, b, z0)
    one_by_one = torch.stack([solve(A[i], b[i], z0[i]) for i in range(n_problems)])
    assert torch.equal(stacked, one_by_one)


@pytest.mark.parametrize("solver", ["gd", "picard", "anderson"])
def test_vmap_runs_a_step_budget_minimize_over_a_stack_of_problems(solver):
    """``vmap(minimize)`` over N energies ``w_i/2 ||z - b_i||^2 + sum log cosh z`` equals the N
    solves one by one (up to the rounding of batched kernels), values and the gradient with
    respect to the stacked weights ``w``, which the vmapped solve records through every step
    with no host sync."""
    generator = torch.Generator().manual_seed(2)
    n_problems, batch, dim = 3, 4, 5
    w = (torch.rand(n_problems, generator=generator, dtype=torch.float64) + 0.5).requires_grad_()
    b = torch.randn(n_problems, batch, dim, generator=generator, dtype=torch.float64)
    z0 = torch.randn(n_problems, batch, dim, generator=generator, dtype=torch.float64)

    def solve(w_i, b_i, z0_i):
        energy = lambda z: 0.5 * w_i * ((z - b_i) ** 2).sum(1) + torch.log(torch.cosh(z)).sum(1)  # noqa: E731
        return eqt.minimize(energy, z0_i, solver=solver, stop="steps=4").z

    with count_syncs() as syncs:
        stacked = torch.func.vmap(solve)(w, b, z0)
    one_by_one = torch.stack([solve(w[i], b[i], z0[i]) for i in range(n_problems)])
    (grad_stacked,) = torch.autograd.grad(stacked.square().sum(), w)
    (grad_one_by_one,) = torch.autograd.grad(one_by_one.square().sum(), w)
    assert syncs.count == 0
    torch.testing.assert_close(stacked, one_by_one, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad_stacked, grad_one_by_one, rtol=1e-12, atol=1e-12)
