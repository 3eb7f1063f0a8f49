r"""``bidir``: reverse predictive coding (the paper's ``L_rev`` / ``rev``, Sec. 3, Eqs. 11-15).

A small reverse predictor ``q_phi`` reads the latent ``z_t`` alone and reconstructs the ``W``
tokens before it, ``x_{t-1}, ..., x_{t-W}``. The energy is the sum over positions of the mean
negative log-likelihood over the available part of the window:

.. math::

    E_{\text{rev}}(z) = \sum_{t=0}^{T-1} \frac{1}{|\mathcal W_t|} \sum_{w \in \mathcal W_t}
        -\log q_\phi(x_{t-w} \mid z_t)_w, \qquad \mathcal W_t = \{1, \dots, \min(W, t)\},

with ``q_phi(. | z_t)_w = softmax(MLP(z_t)[w])``: one MLP ``dim -> hidden -> W * vocab`` whose
output is read as ``W`` rows of logits, row ``w`` for the token ``w`` steps back. Position
``t = 0`` has no predecessor and contributes 0; positions with ``t < W`` average over the ``t``
tokens they have (a mask over the ``[T, W]`` window grid, no loop over positions).

How ``z`` enters ``q_phi`` is not stated in the paper ("predicts the last W tokens from h and
partial context"); here ``q_phi`` sees only ``z_t``, so the energy asks ``z_t`` itself to carry
its recent past. That makes the term per-token, as the paper's Eq. 8 needs.

With ``target="latents"`` the same predictor (``dim -> hidden -> W * dim``) reconstructs the
previous ``W`` proposals ``z0_{t-w}`` of ``context["z0"]`` instead, with the mean squared error
``||g(z_t)_w - z0_{t-w}||^2 / dim`` in place of the NLL. ``z0`` is used as given (not detached);
detach it in the caller for a stop-gradient target.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqtheory.energies.base import Context, Energy, require
from eqtheory.energies.registry import ENERGIES

TARGETS = ("tokens", "latents")


def window_index(
    length: int, window: int, device: torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """Indices ``t - w`` of the previous ``window`` positions and their validity.

    Returns:
        ``index [T, W]`` with ``index[t, w - 1] = max(t - w, 0)`` and ``valid [T, W]`` bool,
        true where ``t - w >= 0``.

    Example:
        >>> index, valid = window_index(3, 2)
        >>> index.tolist(), valid.tolist()
        ([[0, 0], [0, 0], [1, 0]], [[False, False], [True, False], [True, True]])
    """
    back = torch.arange(length, device=device)[:, None] - torch.arange(1, window + 1, device=device)
    return back.clamp(min=0), back >= 0


@ENERGIES.register("bidir")
class Bidir(Energy):
    """Reverse predictive coding: ``z_t`` must predict the ``W`` tokens (or latents) before it.

    Args:
        dim: latent size ``d``.
        vocab: token vocabulary size ``V`` (the ``"tokens"`` target).
        window: ``W >= 1``, how many previous positions to reconstruct (the paper uses 32,
            16-64; the default 4 suits short parity sequences).
        hidden: width of ``q_phi``'s hidden layer.
        target: ``"tokens"`` (NLL of ``context["tokens"]``) or ``"latents"`` (MSE to
            ``context["z0"]``).

    Shapes:
        ``z: [B, T, d]``; ``context["tokens"]: [B, T]`` int64 or ``context["z0"]: [B, T, d]``;
        returns ``[B]``.

    Example:
        >>> import torch
        >>> term = Bidir(dim=4, vocab=3, window=2)
        >>> context = {"tokens": torch.tensor([[0, 1, 2, 1]])}
        >>> term(torch.randn(1, 4, 4), context).shape
        torch.Size([1])
    """

    name = "bidir"
    primary = "window"
    requires = ("tokens",)  # ("z0",) for target="latents", set per instance

    def __init__(
        self,
        *,
        dim: int,
        vocab: int,
        window: int = 4,
        hidden: int = 64,
        target: str = "tokens",
    ) -> None:
        super().__init__()
        if target not in TARGETS:
            raise ValueError(f"bidir target must be one of {', '.join(TARGETS)}; got {target!r}")
        if window < 1 or hidden < 1:
            raise ValueError(f"bidir needs window >= 1 and hidden >= 1, got {window}, {hidden}")
        self.window, self.target = int(window), target
        self.requires = ("tokens",) if target == "tokens" else ("z0",)
        width = vocab if target == "tokens" else dim
        self.predictor = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, window * width)
        )

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        batch, length = z.shape[0], z.shape[1]
        fixed = self.prepared(z, context)
        previous, weight = fixed["previous"], fixed["weight"]
        prediction = self.predictor(z).reshape(batch, length, self.window, -1)  # (B, T, W, V|d)
        if self.target == "tokens":  # -log softmax(prediction)[x_{t-w}], one op
            loss = F.cross_entropy(prediction.flatten(0, 2), previous, reduction="none")
            loss = loss.reshape(batch, length, self.window)  # (B, T, W)
        else:
            loss = ((prediction - previous) ** 2).mean(dim=-1)  # (B, T, W)
        return (loss * weight).sum(dim=(1, 2))

    def invariants(self, z: Tensor, context: Context | None) -> dict[str, Tensor]:
        """``previous``: the tokens ``x_{t-w}`` flattened to ``[B*T*W]`` class indices, or the
        proposals ``z0_{t-w}`` as ``[B, T, W, d]``; ``weight [T, W]``: ``1 / |W_t|`` on the
        valid window entries, 0 elsewhere."""
        index, valid = window_index(z.shape[1], self.window, z.device)  # (T, W)
        if self.target == "tokens":
            previous = require(context, "tokens", term=self.name)[:, index].flatten()
        else:
            previous = require(context, "z0", term=self.name)[:, index]
        weight = valid.to(z.dtype) / valid.sum(dim=1, keepdim=True).clamp(min=1)
        return {"previous": previous, "weight": weight}

    def spec(self) -> str:
        return self.name if self.target == "tokens" else f"{self.name}(target={self.target})"
