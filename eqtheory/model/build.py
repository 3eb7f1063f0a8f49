"""`build_model(spec, ...)`: a `VariantSpec` -> an `EqT` model (`eqtheory.variants.build`).

The energy is ``energies.parse(spec.energy, dim=width, vocab=vocab)`` (each dim passed only to
terms that take it; term options such as ``bidir=8`` come from the spec string). Every
``confidence`` term reads the model's own readout (final LayerNorm + LM head, borrowed, not
copied), as the paper's "entropy of p(.|h) plus NLL of the model's own argmax" says.
"""

from __future__ import annotations

import inspect

from torch import Tensor, nn

from eqtheory import energies
from eqtheory.backward.registry import BACKWARD
from eqtheory.energies.base import Energy, SumEnergy
from eqtheory.energies.confidence import Confidence
from eqtheory.model.backbone import Backbone
from eqtheory.model.eqt import EqT
from eqtheory.model.erm import ERM
from eqtheory.model.rnn import RecurrentBaseline
from eqtheory.solvers.registry import SOLVERS
from eqtheory.variants import VariantSpec, component, energy_terms


def build_energy(text: str, *, width: int, vocab: int, readout: nn.Module | None = None) -> Energy:
    """Parse the variant's energy spec with the model's dims; `confidence` borrows `readout`."""
    dims = {"dim": width, "vocab": vocab}
    classes = energy_terms(text)
    taken = {k: v for k, v in dims.items()
             if any(k in inspect.signature(cls).parameters for cls in classes)}
    energy = energies.parse(text, **taken)
    return _borrow_readout(energy, readout) if readout is not None else energy


def _borrow_readout(energy: Energy, readout: nn.Module) -> Energy:
    if isinstance(energy, Confidence):
        return Confidence(head=readout)
    if isinstance(energy, SumEnergy):
        for index, term in enumerate(energy.terms):
            energy.terms[index] = _borrow_readout(term, readout)
    return energy


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
