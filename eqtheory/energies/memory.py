r"""``memory``: episodic memory coherence (the paper's ``mem``, Sec. 3, Eqs. 11-15).

A bank of ``M`` slots ``m_i`` with weights ``r_i = w_i / sum_j w_j`` (uniform by default):

.. math:: E_{\text{mem}}(z) = \sum_t -\tau \log \sum_{i=1}^M r_i
          \exp\!\Big(\frac{\cos(z_t, m_i)}{\tau}\Big)

a soft maximum of the cosine similarities, negated: low where ``z_t`` points like some slot.
**We include the factor** ``tau`` that the paper's ``-log sum_i r_i exp(cos/tau)`` lacks: each
position's energy then lies in ``[-max_i cos, -min_i cos] ⊂ [-1, 1]`` whatever ``tau``, and
``tau -> 0`` tends to ``-max_i cos(z_t, m_i)``. The paper's term is ours divided by ``tau``, so a
paper weight ``lambda`` is our weight ``lambda / tau``.

The energy is pure. The bank moves only through the explicit `update` call (after a solve, on the
refined latents): every latent moves its nearest slot (by cosine) toward it by an exponential
moving average; latents sharing a slot are averaged first,
``m_i <- momentum * m_i + (1 - momentum) * mean{z : nearest(z) = i}``; slots no latent picked stay.
The bank starts as ``M`` unit-norm Gaussian directions drawn from ``seed``; slots are not
renormalised by `update` (the cosine ignores their norm).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eqtheory.energies.base import Context, Energy
from eqtheory.energies.registry import ENERGIES


def _unit(x: Tensor) -> Tensor:
    return nn.functional.normalize(x, dim=-1, eps=1e-12)


@ENERGIES.register("memory")
class Memory(Energy):
    """Negative soft-max cosine similarity of each latent to a memory bank.

    Args:
        dim: latent size ``d``.
        slots: number of memory slots ``M`` (the paper's large recipe uses 10,000).
        tau: temperature ``tau > 0``.
        seed: seed of the initial bank.

    Buffers:
        ``bank: [M, d]`` the slots ``m_i``; ``weights: [M]`` positive ``w_i`` (ones), normalised
        to ``r_i = w_i / sum_j w_j`` in the energy (exact in any dtype).

    Shapes:
        ``z: [B, T, d]`` (any ``[B, *S, d]``); returns ``[B]``. Memory cost ``O(B T M)``.

    Example:
        >>> import torch
        >>> term = Memory(dim=4, slots=8)
        >>> slot = term.bank[3].expand(1, 2, 4)
        >>> bool(term(slot) < term(-slot))
        True
    """

    name = "memory"
    primary = "slots"

    def __init__(self, *, dim: int, slots: int = 64, tau: float = 0.1, seed: int = 0) -> None:
        super().__init__()
        if slots < 1 or not tau > 0:
            raise ValueError(f"memory needs slots >= 1 and tau > 0, got {slots}, {tau}")
        self.tau = float(tau)
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer("bank", _unit(torch.randn(slots, dim, generator=generator)))
        self.register_buffer("weights", torch.ones(slots))

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        fixed = self.prepared(z, context)
        cosine = _unit(z) @ fixed["slots"]  # (B, *S, M)
        soft_max = torch.logsumexp(cosine / self.tau + fixed["log_r"], dim=-1)  # (B, *S)
        return -self.tau * soft_max.reshape(z.shape[0], -1).sum(dim=1)

    def invariants(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """``slots [d, M]``: the unit slots, transposed; ``log_r [M]``: ``log r_i`` (prepare
        again after `update`)."""
        del z, context
        return {"slots": _unit(self.bank).T, "log_r": self.weights.log() - self.weights.sum().log()}

    @torch.no_grad()
    def update(self, z: Tensor, momentum: float = 0.99) -> Tensor:
        """Move each latent's nearest slot toward it by EMA (explicit; never called by forward).

        Args:
            z: ``[..., d]`` latents (flattened over all leading dimensions; detached).
            momentum: in ``[0, 1]``; 1 leaves the bank unchanged, 0 replaces hit slots by the
                mean of their latents.

        Returns:
            ``[N]`` int64: the slot each of the ``N`` latents was assigned to.
        """
        if not 0 <= momentum <= 1:
            raise ValueError(f"memory momentum must be in [0, 1], got {momentum!r}")
        latents = z.detach().reshape(-1, self.bank.shape[1]).to(self.bank.dtype)  # (N, d)
        nearest = (_unit(latents) @ _unit(self.bank).T).argmax(dim=1)  # (N,)
        sums = torch.zeros_like(self.bank).index_add_(0, nearest, latents)  # (M, d)
        ones = torch.ones(nearest.shape, dtype=self.bank.dtype, device=self.bank.device)
        counts = torch.zeros_like(self.weights).index_add_(0, nearest, ones)  # (M,)
        hit = (counts > 0)[:, None]
        mean = sums / counts.clamp(min=1)[:, None]
        self.bank.copy_(torch.where(hit, momentum * self.bank + (1 - momentum) * mean, self.bank))
        return nearest

    def spec(self) -> str:
        return f"memory(slots={self.bank.shape[0]},tau={self.tau:g})"
