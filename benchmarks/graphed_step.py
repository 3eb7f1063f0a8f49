"""A training step captured as one CUDA graph, against the same step run eagerly.

On a GPU the paper-size training step is launch-bound (docs/performance.md sections 9 and 10):
the host dispatches its ~250-1,100 kernels one by one while the device waits. A CUDA graph
(`torch.cuda.graph`) records the whole step once (forward, refinement, backward, clip, AdamW)
and replays it with one launch, which the step allows because, with step-budget rules, it makes
no host synchronisation and has fixed shapes (docs/performance.md section 6). The runner does
not capture steps; this module measures what capturing would give, for the GPU check:

`measure(config, device)`: two copies of one run's model and AdamW (seed 0); the eager copy
takes ``WARMUP + REPLAYS`` steps on one batch; the graphed copy takes the same ``WARMUP`` steps
on a side stream, is captured, and replays ``REPLAYS`` steps on the same batch. Returns both
step times, the speed-up and the largest relative difference between the copies' parameters at
the end (bf16 autocast: a few 1e-3 of rounding is expected; a wrong capture differs by O(1)).
On CPU nothing is captured (CUDA only): the "graphed" copy runs eagerly, which checks the
plumbing and must agree exactly.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable
from typing import Any

import torch

WARMUP, REPLAYS = 3, 20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _run(config: Any, device: torch.device) -> tuple[Callable[[], Any], Callable[[], Any],
                                                    list[torch.nn.Parameter],
                                                    list[torch.nn.Parameter]]:
    """``(eager_step, graphed_copy_step, eager_params, graphed_params)`` of one run."""
    from ablations import tasks
    from ablations.train import make_optimizer, training_step
    from eqtheory.context import MASK_RATE
    from eqtheory.energies.mask import random_mask
    from eqtheory.variants import build

    task, length, batch = tasks.get(config.task), config.length, config.batch_size
    torch.manual_seed(0)
    model = build(config.variant, vocab=task.vocab, width=config.width, layers=config.layers,
                  heads=config.heads, max_len=length).to(device)
    twin = copy.deepcopy(model)
    optimizers = [make_optimizer(m, config, device=device) for m in (model, twin)]
    if device.type == "cuda":  # AdamW refuses capture unless its step state is capturable
        for group in optimizers[1].param_groups:
            group["capturable"] = True
    sample = task.sample(batch, length, tasks.generator(0, "gpu", device=device))
    with_energy = config.variant.kind == "eqt"
    context = {"mask": random_mask(sample.inputs, MASK_RATE, generator=tasks.generator(
        0, "mask", device=device))} if with_energy else {}
    inputs, targets = sample.inputs.view(1, batch, length), sample.targets.view(1, batch, length)
    scored = task.scored(length).to(device)

    def stepper(which: torch.nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], Any]:
        def step() -> Any:
            # a graph must not keep autocast's weight cache across replays
            autocast = (torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=False)
                        if config.amp and device.type == "cuda" else contextlib.nullcontext())
            return training_step(which, optimizer, inputs, targets, context, scored=scored,
                                 beta=config.variant.beta, grad_clip=config.grad_clip,
                                 with_energy=with_energy, autocast=autocast)
        return step

    for which in (model, twin):
        which.train()
    return (stepper(model, optimizers[0]), stepper(twin, optimizers[1]),
            list(model.parameters()), list(twin.parameters()))


def capture(step: Callable[[], Any], device: torch.device) -> Callable[[], Any]:
    """`step`, warmed up ``WARMUP`` times and captured as a CUDA graph: a replay callable (on
    CPU: the warm-up, then `step` itself)."""
    if device.type != "cuda":
        for _ in range(WARMUP):
            step()
        return step
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # the documented warm-up before a capture
        for _ in range(WARMUP):
            step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    return graph.replay


def measure(config: Any, device: torch.device) -> dict[str, Any]:
    """Eager against graphed training steps of `config` (see the module docstring)."""
    eager, graphed, eager_params, graphed_params = _run(config, device)
    started = time.perf_counter()
    replay = capture(graphed, device)
    _sync(device)
    capture_s = time.perf_counter() - started
    for _ in range(WARMUP):
        eager()
    _sync(device)
    timings = {}
    for name, call in (("eager", eager), ("graphed", replay)):
        started = time.perf_counter()
        for _ in range(REPLAYS):
            call()
        _sync(device)
        timings[name] = (time.perf_counter() - started) / REPLAYS
    difference = max(float(((a - b).norm() / a.norm().clamp_min(1e-12)).item())
                     for a, b in zip(eager_params, graphed_params))
    return {"captured": device.type == "cuda", "capture_s": capture_s,
            "eager_step_s": timings["eager"], "graphed_step_s": timings["graphed"],
            "speedup": timings["eager"] / timings["graphed"], "param_rel_diff": difference}
