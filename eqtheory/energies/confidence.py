r"""``confidence``: entropy plus NLL of the model's own argmax (the paper's ``conf``, Sec. 3).

With ``p_t = softmax(head(z_t))`` the readout distribution at position ``t``,

.. math:: E_{\text{conf}}(z) = \sum_t \Big( H(p_t) - \log \max_v p_t(v) \Big),
          \qquad H(p) = -\sum_v p(v) \log p(v).

Both parts are ``>= 0`` and vanish exactly when ``p_t`` is one-hot, so the term pushes every
latent toward a confident readout. The argmax itself is not differentiable, but
``-log p_max`` is: its gradient flows through the log-probability at the argmax index (what
``max(...).values`` does), the index being held fixed.

The readout ``head`` is the term's own ``nn.Linear(dim, vocab)`` by default. Pass
``head=model.lm_head`` to read confidence from the model's LM head instead: the term then
*borrows* it (kept outside the term's module tree), so its parameters are registered, saved and
moved (``.to``, ``.double``) once, by the model that owns them.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from eqtheory.energies.base import Context, Energy
from eqtheory.energies.registry import ENERGIES


@ENERGIES.register("confidence")
class Confidence(Energy):
    """Entropy of ``p(.|z_t)`` plus ``-log`` of its largest probability, summed over positions.

    Args:
        dim: latent size ``d`` (for the term's own head).
        vocab: vocabulary size ``V`` (for the term's own head).
        head: a module ``[..., d] -> [..., V]`` logits to borrow (e.g. the model's LM head);
            None gives the term its own ``nn.Linear(dim, vocab)``. With a borrowed head,
            ``dim`` and ``vocab`` are not needed and not used.

    Shapes:
        ``z: [B, T, d]``; returns ``[B]``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> head = nn.Linear(4, 3)
        >>> term = Confidence(head=head)
        >>> list(term.parameters())  # borrowed: the owner registers it
        []
        >>> term(torch.randn(2, 5, 4)).shape
        torch.Size([2])
    """

    name = "confidence"

    def __init__(
        self, *, dim: int | None = None, vocab: int | None = None, head: nn.Module | None = None
    ) -> None:
        super().__init__()
        if head is None:
            if dim is None or vocab is None:
                raise ValueError("confidence needs dim and vocab for its own head, or head=")
            self.own_head: nn.Module | None = nn.Linear(dim, vocab)
            self._borrowed_head: nn.Module | None = None
        else:
            self.own_head = None
            object.__setattr__(self, "_borrowed_head", head)  # not a submodule: see module doc

    @property
    def head(self) -> nn.Module:
        """The readout in use: the borrowed head if one was given, else the term's own."""
        return self._borrowed_head if self._borrowed_head is not None else self.own_head

    def energy(self, z: Tensor, context: Context | None) -> Tensor:
        del context
        log_probs = torch.log_softmax(self.head(z), dim=-1)  # (B, T, V)
        entropy = -(log_probs.exp() * log_probs).sum(dim=-1)  # (B, T)
        top_nll = -log_probs.max(dim=-1).values  # (B, T)
        return (entropy + top_nll).reshape(z.shape[0], -1).sum(dim=1)
