"""Causal chains: the scan, the cells, the chain solvers (contract over the registry), the
``chain`` energy's causal field, implicit gradients by the reverse scan, and the ERM's routing."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import eqtheory as eqt
from eqtheory.chain import CELLS, linear_recurrence, reverse_linear_recurrence
from eqtheory.chain.cells import ChainCell, GRUCell
from eqtheory.chain.problem import solve_chain
from eqtheory.variants import build

CHAIN_SOLVERS = [n for n, cls in eqt.solvers.REGISTRY.items() if "chain" in cls.solves]
F64 = torch.float64


def chain(B=3, T=24, d=5, seed=0, cell="gru"):
    """A random float64 chain: (cell, h, s0) and the exact solution by the recurrence."""
    torch.manual_seed(seed)
    module = CELLS.build(cell, dim=d).double()
    h = torch.randn(B, T, d, dtype=F64)
    s0 = 0.5 * torch.tanh(torch.randn(d, dtype=F64))
    state, states = s0.expand(B, d), []
    for t in range(T):
        state = module(state, h[:, t])
        states.append(state)
    return module, h, s0, torch.stack(states, dim=1)


@settings(max_examples=15, deadline=None)
@given(T=st.integers(1, 40), d=st.integers(1, 5), diagonal=st.booleans(), seed=st.integers(0, 999))
def test_scan_equals_the_sequential_recurrence_and_the_dense_solve(T, d, diagonal, seed):
    gen = torch.Generator().manual_seed(seed)
    B = 2
    J = torch.randn((B, T, d) if diagonal else (B, T, d, d), generator=gen, dtype=F64) * 0.5
    c = torch.randn(B, T, d, generator=gen, dtype=F64)
    x0 = torch.randn(B, d, generator=gen, dtype=F64)
    scanned = linear_recurrence(J, c, x0, method="scan")
    assert torch.allclose(scanned, linear_recurrence(J, c, x0, method="sequential"), atol=1e-10)
    dense = torch.diag_embed(J) if diagonal else J
    # reverse: (I - N)^T w = v with N[t, t-1] = J_t
    n = T * d
    system = torch.eye(n, dtype=F64).repeat(B, 1, 1)
    for t in range(1, T):
        system[:, t * d : (t + 1) * d, (t - 1) * d : t * d] -= dense[:, t]
    v = torch.randn(B, T, d, generator=gen, dtype=F64)
    expected = torch.linalg.solve(system.transpose(1, 2), v.reshape(B, n, 1)).reshape(B, T, d)
    for method in ("scan", "sequential"):
        assert torch.allclose(reverse_linear_recurrence(J, v, method=method), expected, atol=1e-9)


@pytest.mark.parametrize("name", CELLS.names())
def test_cells_analytic_jacobians_match_autograd_and_stay_in_range(name):
    cell = CELLS.build(name, dim=6).double()
    s, h = torch.rand(7, 6, dtype=F64) * 2 - 1, 3 * torch.randn(7, 6, dtype=F64)
    dense = ChainCell.jacobian(cell, s, h)
    assert torch.allclose(cell.jacobian(s, h), dense, atol=1e-12)
    diagonal = torch.diagonal(dense, dim1=-2, dim2=-1)
    assert torch.allclose(cell.jacobian_diagonal(s, h), diagonal, atol=1e-12)
    assert (cell(s, h).abs() <= 1).all()


@pytest.mark.parametrize("name", CHAIN_SOLVERS)
@pytest.mark.parametrize("cell", ["gru", "tanh"])
def test_every_chain_solver_reaches_the_recurrence(name, cell):
    module, h, s0, exact = chain(cell=cell)
    with torch.no_grad():
        sol = solve_chain(module, h, s0, solver=name, stop="grad<1e-11|steps=200")
    assert sol.counts() == {"converged": 3}, sol.messages()
    assert sol.steps.shape == (3,) and sol.status.shape == (3,)
    assert torch.allclose(sol.z, exact, atol=1e-10)
    assert int(sol.steps.max()) <= h.shape[1]  # never worse than Picard's T steps


def test_picard_is_exact_on_the_first_k_positions_after_k_steps_and_needs_t():
    module, h, s0, exact = chain(T=12)
    for k in (1, 5, 11):
        with torch.no_grad():
            sol = solve_chain(module, h, s0, solver="picard", stop=f"steps={k}")
        assert torch.allclose(sol.z[:, :k], exact[:, :k], atol=1e-14)
        assert not torch.allclose(sol.z[:, k:], exact[:, k:], atol=1e-6)
    with torch.no_grad():
        sol = solve_chain(module, h, s0, solver="picard", stop="steps=12")
    assert torch.allclose(sol.z, exact, atol=1e-14)


def test_sequential_is_exact_in_one_step_and_newton_needs_few_at_any_length():
    module, h, s0, exact = chain(T=300, B=2)
    with torch.no_grad():
        one = solve_chain(module, h, s0, solver="sequential", stop="steps=1")
        newton = solve_chain(module, h, s0, solver="newton", stop="grad<1e-9|steps=300")
    assert torch.allclose(one.z, exact, atol=1e-12)
    assert newton.counts() == {"converged": 2} and int(newton.steps.max()) <= 20


def parity_cell() -> GRUCell:
    """A one-unit GRU that computes parity: input ``h = +1`` (bit 0) keeps the state
    (``u ~ 1``), ``h = -1`` (bit 1) replaces it by ``n = tanh(-3 s)``, the opposite saturation."""
    cell = GRUCell(1).double()
    with torch.no_grad():
        cell.input.weight.copy_(torch.tensor([[10.0], [0.0], [0.0]]))
        cell.input.bias.copy_(torch.tensor([0.0, 10.0, 0.0]))
        cell.state.weight.copy_(torch.tensor([[0.0], [0.0], [-3.0]]))
        cell.state.bias.zero_()
    return cell


@pytest.mark.parametrize("length", [256, 1024])
def test_newton_from_the_centre_solves_a_parity_chain_in_few_steps_at_any_length(length):
    cell = parity_cell()
    bits = torch.randint(0, 2, (8, length, 1), generator=torch.Generator().manual_seed(0))
    h, s0 = 1.0 - 2 * bits.double(), torch.tensor([0.99], dtype=torch.float64)
    with torch.no_grad():
        exact = solve_chain(cell, h, s0, solver="sequential", stop="steps=1").z
        assert torch.equal(exact[..., 0] < 0, bits[..., 0].cumsum(1) % 2 == 1)  # it is parity
        for options in ({}, {"backtrack": False}):
            centre = solve_chain(cell, h, s0, solver="newton", stop="grad<1e-8|steps=20",
                                 **options)
            assert centre.counts() == {"converged": 8} and int(centre.steps.max()) <= 5
            assert torch.allclose(centre.z, exact, atol=1e-10)
            # from a saturated start the cell's Jacobians vanish: a wrong sign moves one
            # position per step, so 20 steps do not reach the fixed point
            saturated = solve_chain(cell, h, s0, z0=h.clone(), solver="newton",
                                    stop="grad<1e-8|steps=20", **options)
            assert saturated.counts().get("converged", 0) < 8
        # the clamp is what keeps the centre's exploding Jacobian products usable
        plain = solve_chain(cell, h, s0, solver="newton", clip=False, backtrack=False,
                            stop="grad<1e-8|steps=20")
    assert set(plain.counts()) <= {"diverged", "nonfinite"}


@pytest.mark.parametrize("name", CHAIN_SOLVERS)
def test_nan_in_one_sequence_marks_only_that_sequence(name):
    module, h, s0, exact = chain()
    h = h.clone()
    h[1, 4, 0] = float("nan")
    with torch.no_grad():
        sol = solve_chain(module, h, s0, solver=name, stop="grad<1e-10|steps=100")
    assert sol.status.tolist()[1] == eqt.Status.NONFINITE
    assert (sol.status[[0, 2]] == eqt.Status.CONVERGED).all()
    assert torch.allclose(sol.z[[0, 2]], exact[[0, 2]], atol=1e-9)


@pytest.mark.parametrize(
    ("solver", "options"),
    [("sequential", {}), ("picard", {}), ("newton", {"backtrack": False}),
     ("quasi_newton", {"backtrack": False})],
)
def test_chain_solves_are_causal_for_a_fixed_budget(solver, options):
    """Changing h at position t changes no iterate before t (fixed budget, no backtracking:
    a half step decided on the whole sequence's residual would read the future)."""
    module, h, s0, _ = chain(T=16)
    later = h.clone()
    later[:, 9:] += 1.0
    with torch.no_grad():
        a = solve_chain(module, h, s0, solver=solver, stop="steps=3", **options)
        b = solve_chain(module, later, s0, solver=solver, stop="steps=3", **options)
    assert torch.equal(a.z[:, :9], b.z[:, :9])


def _gradients(h, module, **kw):
    h = h.clone().requires_grad_()
    weights = torch.linspace(-1, 1, h.numel(), dtype=F64).reshape(h.shape)
    sol = solve_chain(module, h, module_s0(module, h), **kw)
    params = [*module.parameters()]
    return torch.autograd.grad((sol.z * weights).sum(), [h, *params])


def module_s0(module, h):
    return torch.full((h.shape[-1],), 0.2, dtype=F64)


@pytest.mark.parametrize("solver", CHAIN_SOLVERS)
def test_implicit_gradient_by_reverse_scan_equals_bptt_and_finite_differences(solver):
    module, h, _, _ = chain(T=20)
    bptt = _gradients(h, module, solver="sequential", stop="steps=1", backward="unrolled")
    implicit = _gradients(h, module, solver=solver, stop="grad<1e-13|steps=100",
                          backward="implicit")
    for a, b in zip(bptt, implicit):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
    direction = torch.randn_like(h)
    eps = 1e-6
    weights = torch.linspace(-1, 1, h.numel(), dtype=F64).reshape(h.shape)

    def value(x):
        with torch.no_grad():
            return (solve_chain(module, x, module_s0(module, x), solver="sequential",
                                stop="steps=1").z * weights).sum()

    numeric = (value(h + eps * direction) - value(h - eps * direction)) / (2 * eps)
    assert torch.allclose((bptt[0] * direction).sum(), numeric, rtol=1e-7)


def test_implicit_backward_memory_does_not_grow_with_the_solver_iterations():
    module, h, _, _ = chain(T=32)
    saved = []
    for steps in (3, 30):
        total = []

        def pack(t, total=total):
            total.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            x = h.clone().requires_grad_()
            solve_chain(module, x, module_s0(module, x), solver="picard",
                        stop=f"steps={steps}", backward="implicit")
        saved.append(sum(total))
    assert saved[0] == saved[1] > 0


def test_causal_field_is_the_jacobi_residual_and_full_gradient_couples_the_future():
    term = eqt.energies.parse("chain", dim=4).double()
    full = eqt.energies.parse("chain(gradient=full)", dim=4).double()
    full.load_state_dict(term.state_dict())
    h = torch.randn(2, 8, 4, dtype=F64)
    z = torch.randn(2, 8, 4, dtype=F64, requires_grad=True)
    (causal,) = torch.autograd.grad(term(z, {"z0": h}).sum(), z)
    (exact,) = torch.autograd.grad(full(z, {"z0": h}).sum(), z)
    assert torch.allclose(causal, term.field(z, {"z0": h}), atol=1e-14)
    assert torch.allclose(term(z, {"z0": h}), full(z, {"z0": h}), atol=1e-14)  # same value
    # the causal gradient at t reads no position after t; the full one does
    moved = z.detach().clone()
    moved[:, 5:] += 1.0
    (causal_moved,) = torch.autograd.grad(term(moved.requires_grad_(), {"z0": h}).sum(), moved)
    assert torch.equal(causal_moved[:, :5], causal[:, :5])
    assert not torch.allclose(exact[:, :7], causal[:, :7])  # terms t+1 act on position t


def test_causal_gradient_descent_with_step_one_is_picard():
    term = eqt.energies.parse("chain", dim=3).double()
    h = torch.randn(2, 6, 3, dtype=F64)
    with torch.no_grad():
        gd = eqt.minimize(term, h.clone(), context={"z0": h}, solver="gd", step_size=1.0,
                          stop="steps=4")
        picard = solve_chain(term.cell, h, term.s0.double(), z0=h.clone(), solver="picard",
                             stop="steps=4")
    assert torch.allclose(gd.z, picard.z, atol=1e-14)


def test_unrolled_gradient_through_causal_descent_matches_finite_differences():
    """Second-order graphs follow the causal field (the custom autograd rule)."""
    term = eqt.energies.parse("chain", dim=3).double()
    h = torch.randn(2, 5, 3, dtype=F64, requires_grad=True)

    def loss(x):
        sol = eqt.minimize(term, x.clone(), context={"z0": x}, solver="gd", step_size=0.5,
                           stop="steps=3")
        return (sol.z ** 2).sum()

    (analytic,) = torch.autograd.grad(loss(h), h)
    direction = torch.randn_like(h)
    eps = 1e-6
    with torch.enable_grad():
        numeric = (loss(h + eps * direction) - loss(h - eps * direction)) / (2 * eps)
    assert torch.allclose((analytic * direction).sum(), numeric, rtol=1e-7)


def test_model_routes_chain_energies_per_sequence():
    tokens = torch.randint(0, 2, (4, 10))
    fixed = build(energy="chain", solver="newton", gamma=float("inf"), alpha=1.0,
                  stop="grad<1e-5|steps=50", backward="implicit", width=8, heads=2)
    out = fixed(tokens)
    assert out.solutions[0].status.shape == (4,) and out.logits.shape == (4, 10, 2)
    k0 = fixed(tokens, stop="steps=0")
    assert k0.solutions[0].steps.tolist() == [0, 0, 0, 0]
    assert torch.equal(k0.solutions[0].z, k0.proposals[0])  # K = 0 is the proposal, not the start
    composed = build(energy="chain+bidir", solver="gd", gamma=1.0, stop="steps=2", width=8,
                     heads=2)
    assert composed(tokens).solutions[0].status.shape == (4,)
    per_token = build(energy="bidir", solver="gd", stop="steps=2", width=8, heads=2)
    assert per_token(tokens).solutions[0].status.shape == (4, 10)  # per position: [B, T]


@pytest.mark.parametrize(
    "fields",
    [dict(energy="chain+bidir", solver="newton", gamma=float("inf")),
     dict(energy="chain", solver="sequential", gamma=1.0),
     dict(energy="bidir", solver="quasi_newton", gamma=float("inf"))],
)
def test_chain_solvers_without_a_chain_alone_fail_when_built(fields):
    with pytest.raises(ValueError, match="solves causal chains"):
        build(**fields, width=8, heads=2)


def test_chain_eqt_is_causal_in_its_tokens():
    model = build(energy="chain", solver="sequential", gamma=float("inf"), stop="steps=1",
                  width=8, heads=2).double().eval()
    tokens = torch.randint(0, 2, (2, 12))
    changed = tokens.clone()
    changed[:, 7] = 1 - changed[:, 7]
    with torch.no_grad():
        a, b = model(tokens).logits, model(changed).logits
    assert torch.allclose(a[:, :7], b[:, :7], atol=1e-12)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("name", CELLS.names())
def test_matrix_free_transposed_jacobian_and_both_adjoints_agree_with_the_dense_ones(name):
    from eqtheory.chain import ChainProblem

    cell = CELLS.build(name, dim=5).double()
    s, h = torch.rand(2, 6, 5, dtype=F64) * 2 - 1, torch.randn(2, 6, 5, dtype=F64)
    w = torch.randn(2, 5, dtype=F64)
    dense = cell.jacobian(s, h)
    product = cell.transposed_jacobian(s, h)
    for t in range(6):
        expected = (dense[:, t].transpose(-1, -2) @ w.unsqueeze(-1)).squeeze(-1)
        assert torch.allclose(product(w, t), expected, atol=1e-13)
    s0 = torch.zeros(5, dtype=F64)
    v = torch.randn(2, 6, 5, dtype=F64)
    loop = ChainProblem(cell, h, s0, adjoint="sequential").solve_adjoint(s, v)
    scan = ChainProblem(cell, h, s0, adjoint="scan").solve_adjoint(s, v)
    assert torch.allclose(loop, scan, atol=1e-12)
