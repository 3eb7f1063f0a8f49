r"""The recurrent control (``kind="rnn"``): a GRU outside the EqT family.

.. math:: h_t = \mathrm{GRU}(h_{t-1}, \mathrm{Embed}(x_t)), \qquad
          \mathrm{logits}_t = W_{\text{head}}\, \mathrm{LN}(h_t)

one GRU layer of the model's width, no positions (a recurrence needs none, so it runs at any
length). Parity is a regular language: a finite automaton, so a one-layer RNN, solves it at
every length; the control says what carrying state along the sequence achieves without any
refinement. It answers the `EqT` interface the training and evaluation code use (no ERMs, no
energy, nothing to refine).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from eqtheory.model.eqt import ModelOutput


class RecurrentBaseline(nn.Module):
    """Embedding, one GRU layer, LayerNorm, linear head: ``tokens [B, T] -> logits [B, T, V]``.

    Args:
        vocab: input tokens = output classes; width: the GRU's state width.

    Example:
        >>> import torch
        >>> model = RecurrentBaseline(vocab=2, width=8)
        >>> model(torch.zeros(3, 5, dtype=torch.long)).logits.shape
        torch.Size([3, 5, 2])
    """

    refines = False

    def __init__(self, *, vocab: int, width: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, width)
        self.gru = nn.GRU(width, width, batch_first=True)
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)
        self.erms = nn.ModuleList()

    def forward(self, tokens: Tensor, **unused: object) -> ModelOutput:
        """``tokens [B, T]``; the EqT keywords (``mask``, ``stop``, ``with_energy``) are accepted
        and have no effect (nothing is refined, there is no energy)."""
        del unused
        states, _ = self.gru(self.embed(tokens))  # (B, T, d)
        return ModelOutput(logits=self.head(self.ln_f(states)))

    def set_gamma(self, gamma: float) -> None:
        """No prior to anneal."""
        del gamma

    def update_memories(self, latents: Sequence[Tensor]) -> None:
        """No memory terms."""
        del latents
