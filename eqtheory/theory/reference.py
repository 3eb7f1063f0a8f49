r"""A reference minimiser independent of the toolkit's solvers: scipy's L-BFGS-B in float64.

For each sample ``b`` (the energy is batch-independent), minimise ``x -> E(x)_b`` over
``x in R^n`` with the analytic gradient from autograd, starting at ``start_b`` (default the
sample's ``z0``), to gradient tolerance ``gtol``; then polish with up to ``newton_steps`` Newton
steps ``x <- x - H(x)^{-1} grad(x)`` (exact float64 Hessian, kept only while they reduce the
gradient norm), which takes a non-degenerate minimiser to rounding level. Context tensors
whose leading dimension is ``B``
are sliced per sample; others are passed whole.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.optimize
import torch
from torch import Tensor

from eqtheory.energies.base import Context, EnergyLike, as_energy


def reference_minimiser(
    energy: EnergyLike,
    start: Tensor,
    context: Context | None = None,
    *,
    gtol: float = 1e-12,
    max_iter: int = 20000,
    newton_steps: int = 5,
) -> Tensor:
    """``[B, *S]`` float64 local minimiser of ``energy`` from ``start: [B, *S]``.

    Raises:
        RuntimeError: if scipy reports failure with a gradient norm above ``sqrt(gtol)``.

    Example:
        >>> import torch
        >>> z = reference_minimiser(lambda z: ((z - 3) ** 2).sum(1), torch.zeros(2, 3))
        >>> bool(torch.allclose(z, torch.full((2, 3), 3.0, dtype=torch.float64)))
        True
    """
    energy_obj = as_energy(energy)
    batch, shape = start.shape[0], start.shape[1:]
    x64 = start.detach().to(torch.float64)
    results = []
    for b in range(batch):
        sample_context = {
            key: (value[b : b + 1] if value.dim() > 0 and value.shape[0] == batch else value)
            .detach()
            .to(torch.float64)
            for key, value in (context or {}).items()
        }

        def fun(x: np.ndarray, sample_context=sample_context) -> tuple[float, np.ndarray]:
            z = torch.tensor(x, dtype=torch.float64).reshape(1, *shape).requires_grad_()
            with torch.enable_grad():
                value = energy_obj(z, sample_context).sum()
                (grad,) = torch.autograd.grad(value, z)
            return float(value.detach()), grad.reshape(-1).numpy()

        def hessian(x: np.ndarray, sample_context=sample_context) -> np.ndarray:
            with torch.enable_grad():
                return torch.autograd.functional.hessian(
                    lambda v: energy_obj(v.reshape(1, *shape), sample_context).sum(),
                    torch.tensor(x, dtype=torch.float64),
                ).numpy()

        x, grad_norm = _lbfgs(fun, x64[b].reshape(-1).numpy(), b, gtol=gtol, max_iter=max_iter)
        x = _polish(fun, hessian, x, grad_norm, newton_steps)
        results.append(torch.tensor(x, dtype=torch.float64).reshape(shape))
    return torch.stack(results)


Objective = Callable[[np.ndarray], tuple[float, np.ndarray]]


def _lbfgs(
    fun: Objective, x0: np.ndarray, sample: int, *, gtol: float, max_iter: int
) -> tuple[np.ndarray, float]:
    """scipy's L-BFGS-B from ``x0 [n]``: the minimiser and its gradient norm; raises a
    `RuntimeError` if scipy fails with a gradient norm above ``sqrt(gtol)``."""
    result = scipy.optimize.minimize(
        fun, x0, jac=True, method="L-BFGS-B",
        options={"gtol": gtol, "ftol": 0.0, "maxiter": max_iter, "maxcor": 30},
    )
    grad_norm = float(np.linalg.norm(fun(result.x)[1]))
    if not result.success and grad_norm > gtol**0.5:
        raise RuntimeError(
            f"scipy failed on sample {sample}: {result.message} (|grad| = {grad_norm:.3g})"
        )
    return result.x, grad_norm


def _polish(
    fun: Objective, hessian: Callable[[np.ndarray], np.ndarray], x: np.ndarray,
    grad_norm: float, newton_steps: int,
) -> np.ndarray:
    """Up to ``newton_steps`` Newton steps ``x <- x - H(x)^+ grad(x)``, each kept only while it
    reduces the gradient norm."""
    for _ in range(newton_steps):
        candidate = x - np.linalg.lstsq(hessian(x), fun(x)[1], rcond=None)[0]
        candidate_norm = float(np.linalg.norm(fun(candidate)[1]))
        if not candidate_norm < grad_norm:
            break
        x, grad_norm = candidate, candidate_norm
    return x
