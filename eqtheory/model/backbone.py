r"""The open-loop baseline: a causal pre-LN transformer.

.. math::
    h_0 = \mathrm{Embed}(x) + P, \qquad
    h_{l+1} = g_l + \mathrm{MLP}(\mathrm{LN}(g_l)), \quad
    g_l = h_l + \mathrm{MHSA}(\mathrm{LN}(h_l)),
    \qquad \mathrm{logits} = W_{\text{head}}\, \mathrm{LN}_f(h_L)

with sinusoidal positions ``P`` (fixed, Vaswani et al. 2017), causal attention (position ``t``
reads positions ``<= t`` only), GELU MLPs of width ``4 d``, no dropout. Each block's output
``h_{l+1}`` is the paper's *proposal* ``f`` (Sec. 2); `EqT` refines it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """``[length, dim]`` with ``P[t, 2i] = sin(t / 10000^(2i/d))``, ``P[t, 2i+1] = cos(...)``."""
    position = torch.arange(length, dtype=torch.float32)[:, None]  # (T, 1)
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(1e4) / dim))
    table = torch.zeros(length, dim)
    table[:, 0::2] = torch.sin(position * frequency)
    table[:, 1::2] = torch.cos(position * frequency[: dim // 2])
    return table


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention, ``[B, T, d] -> [B, T, d]``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=2)  # 3 x (B, T, d)
        shape = (batch, length, self.heads, width // self.heads)
        q, k, v = (t.view(shape).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, nh, T, hs)
        return self.proj(y.transpose(1, 2).reshape(batch, length, width))  # (B, T, d)


class Block(nn.Module):
    """One pre-LN block: ``g = h + MHSA(LN(h))``, ``f = g + MLP(LN(g))``."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads)
        self.ln_2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, h: Tensor) -> Tensor:
        g = h + self.attn(self.ln_1(h))
        return g + self.mlp(self.ln_2(g))


@dataclass
class BackboneOutput:
    """``z: [B, T, d]`` final block output (before the final LayerNorm); ``logits: [B, T, V]``."""

    z: Tensor
    logits: Tensor


class Backbone(nn.Module):
    """Causal pre-LN transformer.

    Args:
        vocab: number of input tokens, and of output classes (parity: 2 and 2).
        width: model width ``d`` (a multiple of ``heads``).
        layers: number of blocks ``N >= 0``.
        heads: attention heads.
        max_len: longest sequence the position table covers.

    Example:
        >>> import torch
        >>> model = Backbone(vocab=2, width=8, layers=1, heads=2, max_len=16)
        >>> out = model(torch.zeros(3, 5, dtype=torch.long))
        >>> tuple(out.z.shape), tuple(out.logits.shape)
        ((3, 5, 8), (3, 5, 2))
    """

    def __init__(self, *, vocab: int, width: int, layers: int, heads: int, max_len: int) -> None:
        super().__init__()
        sizes = {"vocab": vocab, "width": width, "heads": heads, "max_len": max_len}
        for name, value in sizes.items():
            if int(value) != value or value < 1:
                raise ValueError(f"backbone {name} must be a whole number >= 1, got {value!r}")
        if int(layers) != layers or layers < 0:
            raise ValueError(f"backbone layers must be a whole number >= 0, got {layers!r}")
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        if width % 2:
            raise ValueError(f"width must be even for sinusoidal positions, got {width}")
        self.vocab, self.width, self.max_len = vocab, width, max_len
        self.embed = nn.Embedding(vocab, width)
        self.register_buffer("positions", sinusoidal_positions(max_len, width), persistent=False)
        self.blocks = nn.ModuleList(Block(width, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab)

    def embed_tokens(self, tokens: Tensor) -> Tensor:
        """``tokens: [B, T]`` int64 -> ``h_0: [B, T, d]``."""
        length = tokens.shape[1]
        if length > self.max_len:
            raise ValueError(f"sequence length {length} exceeds max_len {self.max_len}")
        return self.embed(tokens) + self.positions[:length].to(self.embed.weight.dtype)

    def readout(self, z: Tensor) -> Tensor:
        """``z: [B, T, d]`` -> ``logits: [B, T, V]`` (final LayerNorm, then the head)."""
        return self.head(self.ln_f(z))

    def forward(self, tokens: Tensor) -> BackboneOutput:
        h = self.embed_tokens(tokens)  # (B, T, d)
        for block in self.blocks:
            h = block(h)
        return BackboneOutput(z=h, logits=self.readout(h))
