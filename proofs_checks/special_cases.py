r"""Claim 6 (Prop. 9, special cases; the paper gives no proofs).

**Paper.** EqT contains as special cases: the standard transformer (``L = 0`` or ``K = 0``); a
DEQ (``L = ||h - f(h)||^2``, no prior); a diffusion LM (denoising energy, ``K -> inf``); test-time
training (energy minimised over weights); a pure EBM, "``gamma -> 0``".

**What is true.** (a) ``K = 0`` returns the proposal bitwise, and so does ``L = 0`` for any K
(``grad Phi(f) = (f - f)/gamma = 0``). (b) With no prior, ``argmin ||h - f(h)||^2`` is the DEQ
fixed point *when one exists* (energy 0 there); when ``f`` has no fixed point the minimiser is
not one. (c) Annealed Langevin with noise to 0 ends as gradient descent and reaches the MAP.
(d) One TTT inner step is one gradient step on the fast weights (chain rule through
``h(theta)``). (e) "No prior" is ``gamma -> infinity``: ``gamma -> 0`` pins ``h* -> f`` (the
*standard transformer*), contradicting the paper, which says ``gamma -> 0`` gives a pure EBM.

**Checks.** One record per relation, each backed by a toolkit solve against a closed form, an
independent solver or autograd. With ``--plots``, a networkx graph of the relations (edge
colour = its check's outcome) is drawn to ``special_cases.png``.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

import eqtheory as eqt
from eqtheory.energies import Anchor, LogCosh, Quadratic, random_spd
from eqtheory.solvers import TestTimeTraining
from eqtheory.testing.strategies import ContractiveMap
from eqtheory.theory import reference_minimiser
from proofs_checks.record import Record, compare

CLAIM = "6 special cases (Prop. 9)"
F64 = torch.float64
EQT, STANDARD, DEQ, DIFFUSION, TTT, EBM = (
    "EqT\nmin L + |h-f|^2/2gamma",
    "standard\ntransformer",
    "DEQ\nh = f(h)",
    "diffusion LM\n(MAP)",
    "test-time\ntraining",
    "pure EBM\n(no prior)",
)


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def _norm(a: torch.Tensor) -> float:
    return float(torch.linalg.vector_norm(a.reshape(a.shape[0], -1), dim=1).max())


def run(*, quick: bool, plots: Path | None) -> list[Record]:
    generator = torch.Generator().manual_seed(9)
    dim, batch = 6, 4
    z0 = torch.randn(batch, dim, generator=generator, dtype=F64)
    energy = LogCosh(
        random_spd(dim, 0.5, 5.0, seed=9),
        torch.randn(dim, generator=generator, dtype=F64),
        torch.randn(dim, generator=generator, dtype=F64),
        weight=1.0,
    )
    edges: list[tuple[str, str, str, Record]] = []

    sol = eqt.minimize(energy + Anchor(gamma=1.0), z0, solver="gd", stop="steps=0")
    edges.append(
        (
            EQT,
            STANDARD,
            "K = 0",
            compare(
                CLAIM, "K=0: max |h - f|", _max_abs(sol.z, z0), "<=", 0.0, "bitwise: refinement off"
            ),
        )
    )
    sol = eqt.minimize(Anchor(gamma=1.0), z0, solver="gd", stop="steps=50")
    edges.append(
        (
            EQT,
            STANDARD,
            "L = 0",
            compare(
                CLAIM,
                "L=0, K=50: max |h - f|",
                _max_abs(sol.z, z0),
                "<=",
                0.0,
                "bitwise: grad of the prior vanishes at f",
            ),
        )
    )
    edges += _gamma_limits(generator)
    edges += _deq(generator)
    ref = reference_minimiser(energy + Anchor(gamma=1.0), z0, {"z0": z0})
    sol = eqt.minimize(
        energy + Anchor(gamma=1.0),
        z0,
        solver="diffusion",
        stop="steps=3000",
        step_size=0.1,
        sigma_max=0.5,
        sigma_min=0.0,
        anneal_steps=300,
        schedule="cosine",
        seed=1,
    )
    edges.append(
        (
            EQT,
            DIFFUSION,
            "noise -> 0",
            compare(
                CLAIM,
                "annealed diffusion (sigma -> 0): ||h - MAP||",
                _norm(sol.z - ref),
                "<=",
                1e-8,
                "cosine schedule 0.5 -> 0 over 300 steps, then GD; MAP from scipy",
            ),
        )
    )
    edges.append((EQT, TTT, "one inner step", _ttt(generator)))
    records = [edge[3] for edge in edges]
    if plots is not None:
        _plot(plots, edges)
    return records


def _gamma_limits(generator: torch.Generator) -> list[tuple[str, str, str, Record]]:
    dim = 6
    matrix = random_spd(dim, 0.5, 5.0, seed=10)
    shift = torch.randn(dim, generator=generator, dtype=F64)
    z0 = 3 + torch.randn(2, dim, generator=generator, dtype=F64)
    argmin = torch.linalg.solve(matrix, shift)
    scale = _norm(z0 - argmin)

    def solve(gamma: float) -> torch.Tensor:
        step = 1 / (5.0 + (0.0 if math.isinf(gamma) else 1 / gamma))
        return eqt.minimize(
            Quadratic(matrix, shift) + Anchor(gamma=gamma),
            z0,
            solver="gd",
            step_size=step,
            stop="grad<1e-11|steps=3000",
        ).z

    small, large, none = solve(1e-4), solve(1e4), solve(math.inf)
    return [
        (
            EQT,
            STANDARD,
            "gamma -> 0 (pins h = f)",
            compare(
                CLAIM,
                "gamma=1e-4: ||h* - f|| / ||argmin L - f||",
                _norm(small - z0) / scale,
                "<=",
                1e-3,
                "gamma -> 0 pins h* to the proposal: the paper's 'pure EBM' limit is wrong",
            ),
        ),
        (
            EQT,
            EBM,
            "gamma -> inf",
            compare(
                CLAIM,
                "gamma=1e4: ||h* - argmin L|| / ||argmin L - f||",
                _norm(large - argmin) / scale,
                "<=",
                1e-3,
                "gamma -> infinity removes the prior",
            ),
        ),
        (
            EQT,
            EBM,
            "gamma = inf",
            compare(
                CLAIM,
                "gamma=inf: ||h* - argmin L||",
                _norm(none - argmin),
                "<=",
                1e-9,
                "anchor disabled exactly",
            ),
        ),
    ]


def _deq(generator: torch.Generator) -> list[tuple[str, str, str, Record]]:
    dim, batch = 8, 3
    weight = torch.randn(dim, dim, generator=generator, dtype=F64)
    f = ContractiveMap(weight, torch.randn(dim, generator=generator, dtype=F64), 0.7)
    start = torch.randn(batch, dim, generator=generator, dtype=F64)
    fixed = eqt.fixed_point(f, start, solver="anderson", stop="residual<1e-13|steps=500").z

    def deq_energy(h: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((h - f(h)) ** 2).sum(dim=1)

    with torch.no_grad():  # a plain callable: no parameter gradients wanted
        sol = eqt.minimize(
            eqt.energies.as_energy(deq_energy) + Anchor(gamma=math.inf),
            start,
            solver="gd",
            step_size=0.3,
            stop="grad<1e-13|steps=5000",
        )

    def shifted(h: torch.Tensor) -> torch.Tensor:  # no fixed point: h - f(h) = -1 - 0.5 sin(h) != 0
        return h + 1 + 0.5 * torch.sin(h)

    h0 = torch.zeros(1, 1, dtype=F64)
    residual_min = reference_minimiser(lambda h: 0.5 * ((h - shifted(h)) ** 2).sum(1), h0)
    residual = float((residual_min - shifted(residual_min)).abs().max())
    return [
        (
            EBM,
            DEQ,
            "L = |h - f(h)|^2",
            compare(
                CLAIM,
                "DEQ energy, no prior: ||argmin - Anderson fixed point||",
                _norm(sol.z - fixed),
                "<=",
                1e-8,
                "f = 0.7 tanh(Wz+b), ||W||=1: contraction, fixed point exists",
            ),
        ),
        (
            EBM,
            DEQ,
            "needs a fixed point",
            compare(
                CLAIM,
                "f without fixed point: |h - f(h)| at argmin of the DEQ energy",
                residual,
                ">=",
                0.49,
                "f(h) = h + 1 + sin(h)/2: the minimiser is not a fixed point (min residual 0.5)",
            ),
        ),
    ]


def _ttt(generator: torch.Generator) -> Record:
    """One `ttt` step vs ``theta - alpha grad_theta E(h(theta))`` by autograd."""
    batch, length, width, rank, alpha = 2, 5, 4, 2, 0.05
    energy = LogCosh(
        random_spd(length * width, 0.5, 3.0, seed=11), dim=length * width, weight=0.5, seed=11
    )
    z0 = torch.randn(batch, length, width, generator=generator, dtype=F64)
    solver = TestTimeTraining(rank=rank, step_size=alpha)
    sol = eqt.minimize(energy, z0, solver=solver, stop="steps=1")
    state, _ = solver.init(eqt.MinimizeProblem(energy, {"z0": z0}), z0)
    weights = [state[key].clone().requires_grad_() for key in ("U", "V", "b")]
    value = energy(TestTimeTraining.latents(z0, *weights)).sum()
    grads = torch.autograd.grad(value, weights)
    stepped = [w.detach() - alpha * g for w, g in zip(weights, grads)]
    expected = TestTimeTraining.latents(z0, *stepped)
    return compare(
        CLAIM,
        "TTT, one inner step: max |h - h(theta - alpha grad_theta E)|",
        _max_abs(sol.z, expected),
        "<=",
        1e-12,
        f"rank-{rank} fast weights, autograd reference",
    )


def _plot(directory: Path, edges: list[tuple[str, str, str, Record]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import networkx as nx

    graph = nx.MultiDiGraph()
    for source, target, label, record in edges:
        graph.add_edge(source, target, label=label, passed=record.passed, check=record.check)
    position = {
        EQT: (0, 0),
        STANDARD: (-2.0, 1.0),
        EBM: (1.8, 1.0),
        DEQ: (4.0, 1.0),
        DIFFUSION: (-2.0, -1.0),
        TTT: (1.8, -1.0),
    }
    fig, ax = plt.subplots(figsize=(8.5, 4.6), dpi=80)
    nx.draw_networkx_nodes(graph, position, node_size=3800, node_color="#dde8f5", ax=ax)
    nx.draw_networkx_labels(graph, position, font_size=8, ax=ax)
    by_pair: dict[tuple[str, str], list[str]] = {}
    for source, target, data in graph.edges(data=True):
        mark = "ok" if data["passed"] else "FAIL"
        by_pair.setdefault((source, target), []).append(f"{data['label']} [{mark}]")
        color = "tab:green" if data["passed"] else "tab:red"
        nx.draw_networkx_edges(
            graph,
            position,
            edgelist=[(source, target)],
            edge_color=color,
            arrows=True,
            node_size=3800,
            width=1.6,
            ax=ax,
        )
    nx.draw_networkx_edge_labels(
        graph,
        position,
        edge_labels={k: "\n".join(v) for k, v in by_pair.items()},
        font_size=7,
        ax=ax,
    )
    ax.set_title("Prop. 9 special cases; every edge backed by a check (green = passed)", fontsize=9)
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(directory / "special_cases.png")
    plt.close(fig)
