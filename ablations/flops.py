r"""FLOPs per token of the baseline and of EqT variants; the compute-matched baseline depth.

The paper's Eq. 9 (per token, ``N`` main parameters, ``M`` energy parameters, width ``d``):

.. math:: C_{\text{Eq.9}} = 2N + K (2M + d)

counts one forward pass of the energy network per refinement step. We count what the code
spends: the backbone forward ``2N + 2 n_{\text{layer}} T d`` (attention scores and values,
Kaplan et al. 2020), and per energy *evaluation* (value and gradient, i.e. forward and backward
through the energy network) ``4M + d`` (the update), times the number
of evaluations actually made (`Solution.fevals`: a ``steps=K`` solve makes ``K + 1``, the start
included). ``N`` excludes the token embedding (a lookup); ``M`` includes the readout a term
borrows from the model (``confidence``).

Why ``4M`` (two forward passes), not the usual ``6M`` of a training step: ``grad_z E`` needs only
the gradients with respect to the *inputs* of each linear layer (one product per layer backward;
autograd skips the weight gradients nobody asked for). Matrix-product FLOPs counted by
``torch.profiler(with_flops=True)`` per evaluation per token: 1.95 forward passes for the ``cpu``
preset's model, 1.97 for the ``paper`` preset's (``tests/test_train.py`` checks the count against
the profiler). The count covers matrix products only (no softmax, norms or activations).
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from ablations.config import RunConfig
from ablations.tasks import get as get_task
from eqtheory.energies.parse import accepts
from eqtheory.model import Block, EqT
from eqtheory.model.eqt import flatten_terms
from eqtheory.variants import VariantSpec, build

EVAL_COST = 2  # value + input gradient of the energy network, in forward passes


def paper_eq9(*, main_params: int, energy_params: int, width: int, k: float) -> float:
    """The paper's Eq. 9: ``2N + K (2M + d)``."""
    return 2 * main_params + k * (2 * energy_params + width)


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def main_params(model: EqT) -> int:
    """``N``: backbone parameters without the token embedding."""
    return _count(model.backbone) - model.backbone.embed.weight.numel()


def energy_params(model: EqT) -> int:
    """``M``: parameters one ERM's energy evaluation reads: its own, and the model's readout
    (LN_f + LM head) once per term that borrows it (a term whose constructor takes ``head``,
    given the readout by `eqtheory.model.build`)."""
    if not model.erms:
        return 0
    energy = model.erms[0].energy
    readout = _count(model.backbone.ln_f) + _count(model.backbone.head)
    borrowed = sum(readout for term in flatten_terms(energy) if accepts(type(term), "head"))
    return _count(energy) + borrowed


def backbone_flops(model: EqT, length: int) -> float:
    """Forward FLOPs per token of the backbone at sequence length ``T``."""
    backbone = model.backbone
    return 2 * main_params(model) + 2 * len(backbone.blocks) * length * backbone.width


def flops_per_token(model: EqT, length: int, fevals_per_token: float) -> float:
    """Inference FLOPs per token: backbone + ``fevals * (4M + d)`` (``fevals`` summed over ERMs);
    a model without a backbone (the recurrent control) spends ``2 x`` its parameters less the
    embedding."""
    if not isinstance(model, EqT):
        return 2 * (_count(model) - model.embed.weight.numel())
    per_eval = 2 * EVAL_COST * energy_params(model) + model.backbone.width
    return backbone_flops(model, length) + fevals_per_token * per_eval


def _model(config: RunConfig, variant: VariantSpec, layers: int) -> EqT:
    with torch.random.fork_rng(devices=[]):
        return build(
            variant, vocab=get_task(config.task).vocab, width=config.width, layers=layers,
            heads=config.heads, max_len=config.length,
        )


def matched_layers(config: RunConfig, k: int) -> int:
    """Smallest baseline depth whose FLOPs per token reach the EqT variant's at ``steps=k``.

    Each ERM makes ``k + 1`` evaluations under ``steps=k``; with ``placement="every"`` there is
    one ERM per block. A baseline config returns its own depth.
    """
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k!r}")
    eqt = _model(config, config.variant, config.layers)
    target = flops_per_token(eqt, config.length, (k + 1) * len(eqt.erms) if eqt.refines else 0)
    baseline = dataclasses.replace(config.variant, kind="baseline", aux_losses_only=False)
    flops = backbone_flops(_model(config, baseline, config.layers), config.length)
    with torch.device("meta"):
        block = Block(config.width, config.heads)
    per_block = 2 * _count(block) + 2 * config.length * config.width
    return config.layers + max(0, math.ceil((target - flops) / per_block))
