"""Model layer: the causal transformer backbone, the Equilibrium Refinement Module, EqT.

>>> import torch
>>> from eqtheory.variants import VariantSpec, build
>>> model = build(VariantSpec(energy="mask", stop_train="steps=1"), width=8, heads=2, max_len=8)
>>> model.train()(torch.zeros(2, 8, dtype=torch.long)).energy.shape
torch.Size([2])
"""

from eqtheory.model.backbone import Backbone, BackboneOutput, Block, sinusoidal_positions
from eqtheory.model.build import build_energy, build_model
from eqtheory.model.eqt import EqT, ModelOutput
from eqtheory.model.erm import ERM
from eqtheory.model.rnn import RecurrentBaseline

__all__ = [
    "ERM", "Backbone", "BackboneOutput", "Block", "EqT", "ModelOutput", "RecurrentBaseline",
    "build_energy", "build_model", "sinusoidal_positions",
]
