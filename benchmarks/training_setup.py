"""One run's (or one seed ensemble's) training step as `ablations.train` takes it, for the
benchmarks that time, count or capture it (`benchmarks.gpu_check`, `benchmarks.dispatch`,
`benchmarks.graphed_step`)."""

from __future__ import annotations

import contextlib
import gc
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ablations import tasks
from ablations.config import RunConfig
from ablations.train import make_optimizer, training_step
from eqtheory.context import MASK_RATE
from eqtheory.energies.mask import random_mask
from eqtheory.model.ensemble import stack
from eqtheory.variants import build


@dataclass
class TrainingSetup:
    """A model (one run's, or ``members`` stacked ones), its AdamW and one fixed batch.

    ``inputs, targets``: ``[M, B, T]``; ``context``: the ``mask`` drawn for the batch (EqT) or
    empty; ``models``: the members' own models (``model`` is ``models[0]`` for one run)."""

    config: RunConfig
    model: torch.nn.Module
    models: list[torch.nn.Module]
    optimizer: torch.optim.Optimizer
    inputs: torch.Tensor
    targets: torch.Tensor
    context: dict[str, torch.Tensor]
    scored: torch.Tensor

    def stepper(self, autocast: Callable[[], contextlib.AbstractContextManager] | None = None
                ) -> Callable[[], Any]:
        """One `ablations.train.training_step` per call, under a fresh ``autocast()`` context
        (None: none)."""
        config = self.config

        def step() -> Any:
            return training_step(
                self.model, self.optimizer, self.inputs, self.targets, self.context,
                scored=self.scored, beta=config.variant.beta, grad_clip=config.grad_clip,
                with_energy=config.variant.kind == "eqt",
                autocast=None if autocast is None else autocast())
        return step


def training_setup(config: RunConfig, device: torch.device, *, members: int = 1,
                   compile_backend: str | None = None) -> TrainingSetup:
    """`config`'s model(s) on `device` (every member from seed 0's state of the global RNG,
    built one after another), AdamW as the runner makes it, and one batch of ``members * B``
    sequences with its mask, all seeded; in training mode. ``compile_backend``: compile the
    model as ``--compile`` does."""
    task, length, batch = tasks.get(config.task), config.length, config.batch_size
    torch.manual_seed(0)
    models = [build(config.variant, vocab=task.vocab, width=config.width, layers=config.layers,
                    heads=config.heads, max_len=length).to(device) for _ in range(members)]
    model = models[0] if members == 1 else stack(models)
    if compile_backend is not None:
        from ablations.compile import compile_model

        compile_model(model, backend=compile_backend)
    optimizer = make_optimizer(model, config, device=device, members=members)
    sample = task.sample(members * batch, length, tasks.generator(0, "gpu", device=device))
    context = {"mask": random_mask(sample.inputs, MASK_RATE, generator=tasks.generator(
        0, "mask", device=device))} if config.variant.kind == "eqt" else {}  # (M*B, T)
    inputs, targets = (t.view(members, batch, length) for t in (sample.inputs, sample.targets))
    model.train()
    return TrainingSetup(config=config, model=model, models=models, optimizer=optimizer,
                         inputs=inputs, targets=targets, context=context,
                         scored=task.scored(length).to(device))


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def autocast_for(config: RunConfig, device: torch.device, *, cache: bool = True
                 ) -> Callable[[], contextlib.AbstractContextManager]:
    """The runner's autocast (bf16 on CUDA when ``config.amp``; else none) as a factory;
    ``cache=False`` turns off autocast's weight-cast cache (which a CUDA graph must not keep
    across replays)."""
    if config.amp and device.type == "cuda":
        return lambda: torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache)
    return contextlib.nullcontext


def planned_runs(device: str, lengths: tuple[int, ...],
                 settings: dict[str, Any] | None = None, *, preset: str = "paper"
                 ) -> list[tuple[str, RunConfig]]:
    """``[(label, RunConfig)]`` that ``python -m ablations.run --preset <preset>`` plans for
    seed 0 at `lengths` on `device`, with ``--set key=value`` for each of `settings`."""
    from ablations.run import build_parser, plan

    argv = ["--preset", preset, "--lengths", ",".join(map(str, lengths)), "--seeds", "0",
            "--device", device, "--dry-run"]
    for key, value in (settings or {}).items():
        argv += ["--set", f"{key}={value}"]
    with tempfile.TemporaryDirectory() as scratch:  # a dry run writes nothing there
        return plan(build_parser().parse_args([*argv, "--out", scratch])).runs


def release(device: torch.device | str) -> None:
    """Give the CUDA allocator's cached blocks back to the driver (after collecting what is no
    longer referenced): the next model, or another process on the device, can take them."""
    if torch.device(device).type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
