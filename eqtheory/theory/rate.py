r"""Empirical linear rate of a convergence trace.

For a trace ``e_k`` (distance, residual or energy gap) that decays like ``C q^k``, the rate is
``q = exp(s)`` where ``s`` is the slope of ``log e_k`` against ``k``. The slope is fitted
robustly with the Theil-Sen estimator (median of the pairwise slopes
``(log e_j - log e_i) / (j - i)``, ``i < j``), using only finite points above a noise ``floor``
(values at rounding level are excluded so the plateau does not bias the fit).
"""

from __future__ import annotations

import torch
from torch import Tensor


def linear_rate(values: Tensor, *, floor: float | None = None, skip: int = 0) -> Tensor:
    """Fitted per-step factor ``q`` of ``values: [K+1]`` or ``[K+1, B]``.

    Args:
        values: non-negative trace, one row per step.
        floor: ignore values ``<= floor`` (default ``1e-13 * max|values|`` per column).
        skip: ignore the first ``skip`` rows (transient).

    Returns:
        ``[]`` or ``[B]`` rate; NaN where fewer than two points remain.

    Example:
        >>> import torch
        >>> float(linear_rate(0.7 ** torch.arange(30, dtype=torch.float64)))
        0.7
    """
    squeeze = values.dim() == 1
    trace = (values[:, None] if squeeze else values).to(torch.float64)[skip:]
    steps = torch.arange(trace.shape[0], dtype=torch.float64, device=trace.device)
    rates = []
    for column in trace.T:
        limit = floor if floor is not None else 1e-13 * float(column.nan_to_num(0).abs().max())
        keep = torch.isfinite(column) & (column > limit)
        k, logs = steps[keep], torch.log(column[keep])
        if k.numel() < 2:
            rates.append(torch.tensor(float("nan"), dtype=torch.float64))
            continue
        i, j = torch.triu_indices(k.numel(), k.numel(), offset=1)
        slopes = (logs[j] - logs[i]) / (k[j] - k[i])
        rates.append(torch.exp(slopes.median()))
    out = torch.stack(rates)
    return out[0] if squeeze else out
