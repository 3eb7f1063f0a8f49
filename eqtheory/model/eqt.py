r"""The EqT model: the backbone with Equilibrium Refinement Modules placed in its stack.

Placements:

* ``last``: one ERM after the final block, ``z* = ERM(h_N)``, ``logits = head(LN_f(z*))``; one
  energy network (the paper's parity model: +0.5M parameters suggests one shared network).
* ``every``: an ERM after every block, ``h_{l+1} = ERM_l(Block_l(h_l))``; each block's ERM has
  **its own** energy network (and its own LayerNorm), the reading of "every token and every
  layer" in which each layer's proposal gets its own energy.

With no ERMs (``kind="baseline"``) the model is the `Backbone`. With ``aux_losses_only`` the
ERMs' energies are evaluated on the un-refined states (for the auxiliary loss) but nothing is
refined, so the forward pass is the backbone's exactly.

The model's ``steps=0`` forward equals the baseline forward on the same backbone weights when
``layernorm=False`` (the ERM returns ``z0`` exactly); with ``layernorm=True`` it adds the ERM's
LayerNorm.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from torch import Tensor, nn

from eqtheory.energies.base import Energy, SumEnergy
from eqtheory.energies.memory import Memory
from eqtheory.model.backbone import Backbone
from eqtheory.model.erm import ERM
from eqtheory.solution import Solution
from eqtheory.stopping.base import StopRule


@dataclass
class ModelOutput:
    """What `EqT.forward` returns.

    Attributes:
        logits: ``[B, T, V]``.
        energy: ``[B]`` learned energy ``L`` (no prior), summed over positions and over ERMs,
            at each ERM's refined state (``aux_losses_only``: at the un-refined state); None
            for baselines or when ``with_energy=False``.
        latents: per ERM, ``[B, T, d]`` the state the energy was evaluated at (refined, before
            the LayerNorm); memory-bank updates read these.
        solutions: per ERM that refined, its `Solution`.
        proposals: per ERM, ``[B, T, d]`` the proposal ``z0`` it started from (aligned with
            ``latents``; ``latents[i] - proposals[i]`` is what refinement moved).
    """

    logits: Tensor
    energy: Tensor | None = None
    latents: list[Tensor] = field(default_factory=list)
    solutions: list[Solution] = field(default_factory=list)
    proposals: list[Tensor] = field(default_factory=list)


class EqT(nn.Module):
    """Backbone + ERMs.

    Args:
        backbone: the causal transformer.
        erms: no ERM (baseline), one (``last``) or one per block (``every``).
        placement: ``"last"`` or ``"every"``.
        aux_losses_only: never refine; evaluate the energies on the un-refined states.
    """

    def __init__(
        self, backbone: Backbone, erms: Sequence[ERM], *, placement: str, aux_losses_only: bool
    ) -> None:
        super().__init__()
        expected = {"last": 1, "every": len(backbone.blocks)}[placement]
        if erms and len(erms) != expected:
            raise ValueError(f"placement {placement!r} needs {expected} ERMs, got {len(erms)}")
        self.backbone = backbone
        self.erms = nn.ModuleList(erms)
        self.placement = placement
        self.aux_losses_only = aux_losses_only

    @property
    def refines(self) -> bool:
        """Whether the forward pass runs refinement (EqT, not baseline or aux-only)."""
        return len(self.erms) > 0 and not self.aux_losses_only

    def set_gamma(self, gamma: float) -> None:
        for erm in self.erms:
            erm.set_gamma(gamma)

    def forward(
        self,
        tokens: Tensor,
        *,
        context: Mapping[str, Tensor] | None = None,
        stop: str | StopRule | None = None,
        with_energy: bool = True,
    ) -> ModelOutput:
        """Run the model.

        Args:
            tokens: ``[B, T]`` int64 inputs (also the energies' ``context["tokens"]``).
            context: further context keys for the energies (`eqtheory.context`), e.g.
                ``{"mask": [B, T] bool}`` in training.
            stop: overrides the ERMs' train/eval stopping rule (``"steps=0"``: K = 0).
            with_energy: also return the learned energy (one extra evaluation per ERM).
        """
        context = {"tokens": tokens, **(context or {})}
        out = ModelOutput(logits=tokens.new_empty(0))
        energies: list[Tensor] = []
        backbone = self.backbone
        h = backbone.embed_tokens(tokens)  # (B, T, d)
        for index, block in enumerate(backbone.blocks):
            h = block(h)
            if self.placement == "every" and self.erms:
                h = self._refine(self.erms[index], h, context, stop, with_energy, out, energies)
        if self.placement == "last" and self.erms:
            h = self._refine(self.erms[0], h, context, stop, with_energy, out, energies)
        out.logits = backbone.readout(h)  # (B, T, V)
        if energies:
            out.energy = sum(energies[1:], energies[0])
        return out

    def _refine(
        self,
        erm: ERM,
        z0: Tensor,
        context: dict[str, Tensor],
        stop: str | StopRule | None,
        with_energy: bool,
        out: ModelOutput,
        energies: list[Tensor],
    ) -> Tensor:
        if self.aux_losses_only:
            z_star, z = z0, z0
        else:
            z, solution = erm(z0, context, stop=stop, readout=self.backbone.readout)
            z_star = solution.z
            out.solutions.append(solution)
        out.proposals.append(z0)
        out.latents.append(z_star)
        if with_energy:
            energies.append(erm.energy(z_star, {**context, "z0": z0}))
        return z

    def update_memories(self, latents: Sequence[Tensor]) -> None:
        """Explicit state updates after a training step: every ``memory`` term of ERM ``i``
        moves toward ``latents[i]`` (`eqtheory.energies.memory.Memory.update`)."""
        for erm, z in zip(self.erms, latents):
            for term in flatten_terms(erm.energy):
                if isinstance(term, Memory):
                    term.update(z)


def flatten_terms(energy: Energy) -> list[Energy]:
    """The leaf terms of a (possibly nested) `SumEnergy`."""
    if isinstance(energy, SumEnergy):
        return [t for term in energy.terms for t in flatten_terms(term)]
    return [energy]
