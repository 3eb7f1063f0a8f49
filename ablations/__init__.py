"""Experiment layer: the parity task, training, sweeps, the results store and reports."""
