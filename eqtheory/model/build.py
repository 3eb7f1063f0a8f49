"""`build(spec)`: a `VariantSpec` -> the model it names (`EqT` or the recurrent control).

The energy is the spec's terms built with the model's sizes (``dim = width`` and ``vocab``
passed to the terms that take them; term options such as ``bidir=8`` come from the spec
string). A term that takes a ``head`` (``confidence``) reads the model's own readout (final
LayerNorm + LM head, borrowed, not copied), as the paper's "entropy of p(.|h) plus NLL of the
model's own argmax" says.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from eqtheory.backward.registry import BACKWARD
from eqtheory.energies.base import Energy
from eqtheory.energies.parse import accepts, build_term, combine, parse_terms
from eqtheory.model.backbone import Backbone
from eqtheory.model.eqt import EqT
from eqtheory.model.erm import ERM
from eqtheory.model.rnn import RecurrentBaseline
from eqtheory.model.spec import VariantSpec, component
from eqtheory.solvers.registry import SOLVERS


def build_energy(text: str, *, width: int, vocab: int, readout: nn.Module | None = None) -> Energy:
    """The variant's energy spec built with the model's sizes: ``dim = width`` and ``vocab`` go
    to every term whose constructor takes them. A term whose constructor takes ``head``
    borrows the model's `readout` (LN_f + LM head) as its head: it is built first as it would be
    on its own and then again with the borrowed head, so the parameters drawn for the terms
    after it are the same whether or not it borrows."""
    terms = []
    for weight, cls, options in parse_terms(text):
        term = build_term(cls, options, dim=width, vocab=vocab)
        if readout is not None and accepts(cls, "head"):
            term = cls(**options, head=readout)
        terms.append((weight, term))
    return combine(terms)


class _Readout(nn.Module):
    """``z -> head(LN_f(z))`` of a backbone, as a module for terms that borrow it."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        object.__setattr__(self, "backbone", backbone)  # borrowed, not a submodule

    def forward(self, z: Tensor) -> Tensor:
        return self.backbone.readout(z)  # (B, T, d) -> (B, T, V)


def build_model(
    spec: VariantSpec, *, vocab: int, width: int, layers: int, heads: int, max_len: int
) -> EqT | RecurrentBaseline:
    """The model a spec names; see `eqtheory.variants.build` (``kind="rnn"``: the recurrent
    control, which reads only ``vocab`` and ``width``)."""
    if spec.kind == "rnn":
        return RecurrentBaseline(vocab=vocab, width=width)
    backbone = Backbone(vocab=vocab, width=width, layers=layers, heads=heads, max_len=max_len)
    if spec.kind == "baseline":
        return EqT(backbone, [], placement=spec.placement, aux_losses_only=False)
    count = 1 if spec.placement == "last" else layers
    if count == 0:
        raise ValueError("placement 'every' needs layers >= 1")
    gamma = spec.gamma if spec.gamma_start is None else spec.gamma_start
    erms = []
    for _ in range(count):
        solver_cls, solver_options = component(spec.solver, SOLVERS)
        backward_cls, backward_options = component(spec.backward, BACKWARD)
        erms.append(ERM(
            build_energy(spec.energy, width=width, vocab=vocab, readout=_Readout(backbone)),
            gamma=gamma,
            solver=solver_cls(step_size=spec.alpha, **solver_options),
            stop_train=spec.stop_train,
            stop_eval=spec.stop_eval,
            backward=backward_cls(**backward_options),
            width=width,
            layernorm=spec.layernorm,
        ))
    return EqT(backbone, erms, placement=spec.placement, aux_losses_only=spec.aux_losses_only)


def build(
    spec: VariantSpec | None = None,
    *,
    vocab: int = 2,
    width: int = 64,
    layers: int = 2,
    heads: int = 4,
    max_len: int = 512,
    **fields: Any,
) -> nn.Module:
    """Build the model a variant names (an `eqtheory.model.EqT`).

    Args:
        spec: the variant; or None and its fields as keywords (``energy=``, ``solver=``, ...);
            ``stop=`` sets both ``stop_train`` and ``stop_eval`` unless those are given.
        vocab: input tokens = output classes (parity: 2); width, layers, heads, max_len: the
            backbone's size (`eqtheory.model.Backbone`).

    Example:
        >>> import torch
        >>> model = build(energy="mask", solver="gd", stop="steps=2", width=8, heads=2)
        >>> model(torch.zeros(1, 4, dtype=torch.long)).logits.shape
        torch.Size([1, 4, 2])
    """
    if spec is None:
        if "stop" in fields:
            stop = fields.pop("stop")
            fields.setdefault("stop_train", stop)
            fields.setdefault("stop_eval", stop)
        spec = VariantSpec.from_dict(fields)
    elif fields:
        raise TypeError(f"give either a VariantSpec or its fields, not both (got {sorted(fields)})")
    return build_model(spec, vocab=vocab, width=width, layers=layers, heads=heads, max_len=max_len)
