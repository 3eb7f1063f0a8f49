r"""Diagnostics of refinement: how far the latents move, which predictions change, what drives
the motion, and whether the energy flags wrong tokens.

Pure functions over tensors (no model state is changed); everything per position is derived from
latents ``[B, T, d]``, never from a `Solution`'s shapes (a per-position solve has ``[B, T]``
statuses, a per-sequence one ``[B]``).

* `relative_displacement`: :math:`\|z^*_t - z_{0,t}\| / \|z_{0,t}\|` per position, ``[B, T]``.
* `flip_rates`: predictions changed by refinement, from two correctness tensors
  (wrong -> right, right -> wrong).
* `leaf_terms`, `term_grad_norms`: :math:`\|\nabla_{z_t} w_i E_i(z)\|` per leaf term of a
  (nested) `SumEnergy`, per position ``[B, T]``.
* `per_token_energy`: the energy's causal increments
  :math:`e_t = E(z_{\le t}; x_{\le t}) - E(z_{<t}; x_{<t})`, ``[B, T]``, summing to ``E(z)``.
* `auroc`: the rank-based area under the ROC curve (ties count one half), e.g. of the per-token
  energy as a detector of wrong tokens: the calibration that the paper's Theorem 4 assumes
  (energy tracks the excess loss) predicts an AUROC well above 0.5.
* `k_grid`: the step budgets ``0, 1, 2, 4, ..., cap`` for accuracy against K.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eqtheory.energies.base import Context, Energy, SumEnergy


def relative_displacement(z_star: Tensor, z0: Tensor, *, eps: float = 1e-12) -> Tensor:
    r"""How far refinement moved each position, relative to the proposal's size.

    .. math:: \delta_{b,t} = \frac{\|z^*_{b,t} - z_{0,b,t}\|_2}{\max(\|z_{0,b,t}\|_2, \epsilon)}

    Args:
        z_star: ``[B, T, d]`` refined latents (before any LayerNorm).
        z0: ``[B, T, d]`` the proposals refinement started from.
        eps: floor of the denominator (a zero proposal gives ``||z*|| / eps``).

    Returns:
        ``[B, T]`` relative displacement, 0 where ``z* = z0`` (K = 0).

    Example:
        >>> z0 = torch.tensor([[[3.0, 4.0], [1.0, 0.0]]])
        >>> relative_displacement(z0 + torch.tensor([0.0, 0.5]), z0).tolist()
        [[0.10000000149011612, 0.5]]
    """
    if z_star.shape != z0.shape or z0.dim() != 3:
        raise ValueError(f"need z_star and z0 of one shape [B, T, d], got {list(z_star.shape)} "
                         f"and {list(z0.shape)}")
    return (z_star - z0).norm(dim=-1) / z0.norm(dim=-1).clamp(min=eps)


def flip_rates(correct_before: Tensor, correct_after: Tensor) -> dict[str, float | int | None]:
    r"""Predictions changed by refinement, from per-token correctness before and after.

    With ``n`` tokens, ``w2r = #{wrong before, right after}`` and ``r2w = #{right before,
    wrong after}``:

    * ``wrong_to_right = w2r / n`` and ``right_to_wrong = r2w / n`` (fractions of all tokens;
      their difference is the accuracy change);
    * ``fixed = w2r / #{wrong before}`` and ``broken = r2w / #{right before}`` (None when the
      denominator is 0);
    * ``changed = (w2r + r2w) / n``: correctness flips (for a binary vocabulary, exactly the
      changed predictions);
    * ``n``.

    Args:
        correct_before, correct_after: bool tensors of one shape (any), e.g. ``[N, T]`` at K = 0
            and at the evaluated rule.

    Example:
        >>> before = torch.tensor([True, True, False, False])
        >>> after = torch.tensor([True, False, True, True])
        >>> flip_rates(before, after)["wrong_to_right"], flip_rates(before, after)["broken"]
        (0.5, 0.5)
    """
    if correct_before.shape != correct_after.shape:
        raise ValueError(f"correctness tensors differ in shape: {list(correct_before.shape)} "
                         f"and {list(correct_after.shape)}")
    before, after = correct_before.bool().reshape(-1), correct_after.bool().reshape(-1)
    n = before.numel()
    w2r = int((~before & after).sum())
    r2w = int((before & ~after).sum())
    wrong, right = int((~before).sum()), int(before.sum())
    return {
        "wrong_to_right": w2r / n if n else None,
        "right_to_wrong": r2w / n if n else None,
        "fixed": w2r / wrong if wrong else None,
        "broken": r2w / right if right else None,
        "changed": (w2r + r2w) / n if n else None,
        "n": n,
    }


def leaf_terms(energy: Energy, weight: float = 1.0) -> list[tuple[str, float, Energy]]:
    """The leaf terms of a (possibly nested) `SumEnergy` as ``(label, weight, term)``, weights
    multiplied through the nesting; labels are the terms' specs (``"0.5*mask"`` for weight 0.5,
    ``"#2"`` appended to repeats).

    Example:
        >>> from eqtheory.energies import LogCosh, Quadratic
        >>> energy = LogCosh(dim=3) + 0.5 * (Quadratic(dim=3) + LogCosh(dim=3))
        >>> [(label, w) for label, w, _ in leaf_terms(energy)]
        [('logcosh', 1.0), ('0.5*quadratic', 0.5), ('0.5*logcosh', 0.5)]
    """
    if isinstance(energy, SumEnergy):
        flat = [leaf for w, term in zip(energy.weights, energy.terms)
                for leaf in leaf_terms(term, weight * w)]
    else:
        label = energy.spec() if weight == 1.0 else f"{weight:g}*{energy.spec()}"
        flat = [(label, weight, energy)]
    seen: dict[str, int] = {}
    out = []
    for label, w, term in flat:
        seen[label] = seen.get(label, 0) + 1
        out.append((label if seen[label] == 1 else f"{label}#{seen[label]}", w, term))
    return out


def term_grad_norms(energy: Energy, z: Tensor, context: Context | None) -> dict[str, Tensor]:
    r"""Per leaf term, the norm of its weighted gradient at each position.

    .. math:: g^{(i)}_{b,t} = \big\|\nabla_{z_{b,t}}\, w_i E_i(z; x)\big\|_2

    plus ``"total"``, the norm of the whole energy's gradient (what a gradient step follows;
    the terms' vectors can cancel, so it is not the sum of the terms' norms). Terms that do not
    depend on ``z`` give zeros. Gradients are taken with respect to ``z`` only (a detached copy;
    parameters get no gradient) and computed under `torch.enable_grad`, so this works inside
    `torch.no_grad` evaluation code.

    Args:
        energy: an `Energy` over ``[B, T, d]`` latents (e.g. an ERM's objective ``L + anchor``).
        z: ``[B, T, d]`` where to evaluate (e.g. the proposal ``z0`` or the refined ``z*``).
        context: the energy's context (``tokens``, ``z0`` for the anchor, ...).

    Returns:
        ``{label: [B, T]}`` for every leaf term (labels of `leaf_terms`) and ``"total"``.

    Example:
        >>> from eqtheory.energies import Anchor
        >>> z0 = torch.zeros(1, 2, 3)
        >>> norms = term_grad_norms(Anchor(gamma=0.5), torch.ones(1, 2, 3), {"z0": z0})
        >>> [round(v, 3) for v in norms["anchor=0.5"][0].tolist()]  # ||(z - z0) / gamma||
        [3.464, 3.464]
    """
    if z.dim() != 3:
        raise ValueError(f"term_grad_norms needs latents [B, T, d], got {list(z.shape)}")
    norms: dict[str, Tensor] = {}
    with torch.enable_grad():
        point = z.detach().requires_grad_(True)
        total = torch.zeros_like(point)
        for label, weight, term in leaf_terms(energy):
            value = weight * term(point, context)  # (B,)
            (grad,) = torch.autograd.grad(value.sum(), point, allow_unused=True)
            grad = torch.zeros_like(point) if grad is None else grad  # (B, T, d)
            total = total + grad
            norms[label] = grad.norm(dim=-1).detach()  # (B, T)
    norms["total"] = total.norm(dim=-1).detach()
    return norms


def _prefix(context: Context | None, batch: int, length: int, t: int) -> dict[str, Tensor]:
    """The context cut to positions ``< t``: every tensor whose leading dims are ``[B, T]``."""
    return {
        key: value[:, :t] if value.dim() >= 2 and tuple(value.shape[:2]) == (batch, length)
        else value
        for key, value in (context or {}).items()
    }


@torch.no_grad()
def per_token_energy(energy: Energy, z: Tensor, context: Context | None) -> Tensor:
    r"""The energy split over positions by causal increments.

    .. math:: e_t = E(z_{\le t};\, x_{\le t}) - E(z_{< t};\, x_{< t}), \qquad
              \sum_{t=0}^{T-1} e_t = E(z; x), \qquad E(z_{<0}) := 0

    For an energy that is a sum of per-position terms, each reading ``z_t`` and the context up
    to ``t`` (``bidir``, ``mask``, ``confidence``, ``anchor``, ``memory``), ``e_t`` is exactly
    position ``t``'s term; for an energy that couples positions it is the energy that position
    ``t`` adds to its prefix. Costs ``T`` evaluations on prefixes (``T (T + 1) / 2`` position
    evaluations).

    Args:
        energy: an `Energy` over ``[B, T, d]`` latents.
        z: ``[B, T, d]`` latents.
        context: **unprepared** context (not the output of `Energy.prepare`, whose invariants
            are cut to ``T``); every tensor whose leading dims are ``[B, T]`` (``tokens``,
            ``mask``, ``z0``) is cut to the prefix, others are passed as they are.

    Returns:
        ``[B, T]`` per-token energy.

    Example:
        >>> from eqtheory.energies import Anchor
        >>> z0 = torch.zeros(1, 3, 2)
        >>> z = torch.tensor([[[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]])
        >>> per_token_energy(Anchor(gamma=1.0), z, {"z0": z0}).tolist()
        [[0.5, 2.0, 1.0]]
    """
    if z.dim() != 3:
        raise ValueError(f"per_token_energy needs latents [B, T, d], got {list(z.shape)}")
    split = getattr(energy, "per_position", None)
    if split is not None:  # a term that splits itself into these increments in one evaluation
        return split(z, context).to(z.dtype)
    batch, length = z.shape[0], z.shape[1]
    totals = [z.new_zeros(batch)]
    for t in range(1, length + 1):
        totals.append(energy(z[:, :t], _prefix(context, batch, length, t)).to(z.dtype))
    return torch.stack(totals, dim=1).diff(dim=1)  # (B, T)


def auroc(scores: Tensor, labels: Tensor) -> float | None:
    r"""Area under the ROC curve of ``scores`` for predicting ``labels`` (higher = positive).

    .. math:: \mathrm{AUROC} = P(s^+ > s^-) + \tfrac12 P(s^+ = s^-)
              = \frac{R^+ - n^+ (n^+ + 1)/2}{n^+ n^-}

    with ``R^+`` the sum of the positives' ranks (ties get their average rank), the
    Mann-Whitney form; computed in float64.

    Args:
        scores: ``[n]`` finite scores (any shape, flattened).
        labels: ``[n]`` bool, True = positive (e.g. a wrong token).

    Returns:
        The AUROC in ``[0, 1]`` (0.5: no better than chance), or None when one class is empty.

    Raises:
        ValueError: shapes differ or a score is not finite.

    Example:
        >>> auroc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([False, False, True, True]))
        0.75
    """
    scores, labels = scores.reshape(-1).double(), labels.reshape(-1).bool()
    if scores.shape != labels.shape:
        raise ValueError(f"scores and labels differ in size: {scores.numel()} and {labels.numel()}")
    if not torch.isfinite(scores).all():
        raise ValueError("auroc needs finite scores; drop the non-finite ones first")
    positives = int(labels.sum())
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        return None
    order = torch.argsort(scores)
    _, inverse, counts = torch.unique_consecutive(
        scores[order], return_inverse=True, return_counts=True
    )
    last = counts.cumsum(0).double()  # 1-based rank of each tie group's last member
    average = last - (counts.double() - 1) / 2  # the group's average rank
    ranks = torch.empty_like(scores)
    ranks[order] = average[inverse]
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def k_grid(cap: int) -> list[int]:
    """Step budgets ``0, 1, 2, 4, ..., cap`` (powers of two below ``cap``, then ``cap``).

    Example:
        >>> k_grid(32), k_grid(12), k_grid(0)
        ([0, 1, 2, 4, 8, 16, 32], [0, 1, 2, 4, 8, 12], [0])
    """
    if cap < 0:
        raise ValueError(f"k_grid needs cap >= 0, got {cap}")
    grid, k = [0], 1
    while k < cap:
        grid.append(k)
        k *= 2
    return grid + [cap] if cap > 0 else grid


__all__ = [
    "auroc",
    "flip_rates",
    "k_grid",
    "leaf_terms",
    "per_token_energy",
    "relative_displacement",
    "term_grad_norms",
]
