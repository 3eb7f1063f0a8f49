r"""``mask``: masked reconstruction (the paper's ``mask`` term, Sec. 3, Eqs. 11-15).

A 2-layer MLP head ``g: dim -> hidden -> vocab`` (GELU) predicts the input token at each masked
position from the latent there:

.. math:: E_{\text{mask}}(z) = \sum_{t \in M} -\log \operatorname{softmax}(g(z_t))_{x_t}

with ``M`` the masked positions ``context["mask"]`` (``[B, T]`` bool) and ``x = context["tokens"]``
the original (unmasked) tokens. Hiding the inputs at ``M`` before the backbone runs is the
model's job, once per batch, with `random_mask` (the paper masks 15%); the energy itself is
deterministic. **Without** ``context["mask"]`` every position counts (``M`` = all positions), which
turns the term into a per-token reconstruction of the visible input.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from eqtheory.energies.base import Context, Energy, require
from eqtheory.energies.registry import ENERGIES

MASK_RATE = 0.15
"""The paper's masked-reconstruction rate: the share of positions training masks."""


def random_mask(
    tokens: Tensor, rate: float = MASK_RATE, generator: torch.Generator | None = None
) -> Tensor:
    """Bernoulli(`rate`) mask ``[B, T]`` bool, one independent draw per position.

    Args:
        tokens: ``[B, T]`` the batch to mask (only its shape and device are used).
        rate: probability that a position is masked, in ``[0, 1]``.
        generator: a `torch.Generator` for reproducible masks (on ``tokens.device``).

    Example:
        >>> import torch
        >>> tokens = torch.zeros(2, 5, dtype=torch.long)
        >>> random_mask(tokens, rate=1.0).all().item(), random_mask(tokens, rate=0.0).any().item()
        (True, False)
    """
    if not 0 <= rate <= 1:
        raise ValueError(f"mask rate must be in [0, 1], got {rate!r}")
    return torch.rand(tokens.shape, generator=generator, device=tokens.device) < rate


@ENERGIES.register("mask")
class Mask(Energy):
    """NLL of the original tokens at masked positions, read from the latents by an MLP head.

    Args:
        dim: latent size ``d``.
        vocab: vocabulary size ``V``.
        hidden: width of the head's hidden layer.

    Shapes:
        ``z: [B, T, d]``; ``context["tokens"]: [B, T]`` int64; optional
        ``context["mask"]: [B, T]`` bool; returns ``[B]``.

    Example:
        >>> import torch
        >>> term = Mask(dim=4, vocab=3)
        >>> tokens = torch.tensor([[0, 2, 1]])
        >>> nothing = {"tokens": tokens, "mask": torch.zeros(1, 3, dtype=torch.bool)}
        >>> term(torch.randn(1, 3, 4), nothing)
        tensor([0.], grad_fn=<SumBackward1>)
    """

    name = "mask"
    requires = ("tokens",)  # "mask" is optional: without it every position counts

    def __init__(self, *, dim: int, vocab: int, hidden: int = 64) -> None:
        super().__init__()
        if hidden < 1:
            raise ValueError(f"mask needs hidden >= 1, got {hidden}")
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, vocab))

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        tokens = require(context, "tokens", term=self.name)
        logits = self.head(z)  # (B, T, V)
        nll = F.cross_entropy(logits.flatten(0, 1), tokens.flatten(), reduction="none")
        nll = nll.reshape(tokens.shape)  # (B, T): -log softmax(logits)[x_t]
        if "mask" in context:
            nll = nll * context["mask"].to(nll.dtype)
        return nll.sum(dim=1)
