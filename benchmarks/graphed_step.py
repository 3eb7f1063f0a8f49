"""A training step captured as one CUDA graph, against the same step run eagerly.

On a GPU the paper-size training step is host-bound (docs/performance.md sections 9 and 10):
the host dispatches its thousands of operators one by one while the device waits. A CUDA graph
(`torch.cuda.graph`) records the whole step once (forward, refinement, backward, clip, AdamW)
and replays it with one launch, which the step allows because, with step-budget rules, it makes
no host synchronisation and has fixed shapes (docs/performance.md section 6). The runner does
not capture steps (it would also need the learning rate as a tensor, since its schedule writes
a Python float each step, and each batch copied into the graph's input tensors); this module
measures what capturing would give, for the GPU check:

`measure(config, device)`: two copies of one run's model and AdamW (seed 0); the eager copy
takes ``WARMUP + REPLAYS`` steps on one batch under the runner's autocast; the graphed copy
takes the same ``WARMUP`` steps on a side stream, is captured (autocast without its weight-cast
cache, which a graph must not keep across replays) and replays ``REPLAYS`` steps on the same
batch. Returns both step times, the speed-up, and how far the copies' parameters are apart at
the end, per parameter relative to that parameter's own change over the run (`drift`; median
and largest over the parameters): a capture that replays nothing leaves the median near 0.85
(the 20 replays' share of the 23 steps' change), bf16 rounding far below it. On CPU nothing
is captured (CUDA only): the "graphed" copy runs eagerly, which checks the plumbing and must
agree exactly.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from benchmarks.training_setup import autocast_for, synchronize, training_setup

WARMUP, REPLAYS = 3, 20


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


def drift(start: list[torch.Tensor], eager: list[torch.Tensor], graphed: list[torch.Tensor]
          ) -> list[float]:
    """Per parameter ``||eager - graphed|| / ||eager - start||`` (0 where neither moved)."""
    return [float((e - g).norm() / (e - s).norm().clamp_min(1e-30))
            for s, e, g in zip(start, eager, graphed)]


def measure(config: Any, device: torch.device) -> dict[str, Any]:
    """Eager against graphed training steps of `config` (see the module docstring)."""
    eager = training_setup(config, device)
    twin = training_setup(config, device)  # the same seeds: the same start, bit for bit
    if device.type == "cuda":  # AdamW refuses capture unless its step state is capturable
        for group in twin.optimizer.param_groups:
            group["capturable"] = True
    start = [p.detach().clone() for p in eager.model.parameters()]
    eager_step = eager.stepper(autocast_for(config, device))
    started = time.perf_counter()
    replay = capture(twin.stepper(autocast_for(config, device, cache=False)), device)
    synchronize(device)
    capture_s = time.perf_counter() - started
    for _ in range(WARMUP):
        eager_step()
    synchronize(device)
    timings = {}
    for name, call in (("eager", eager_step), ("graphed", replay)):
        started = time.perf_counter()
        for _ in range(REPLAYS):
            call()
        synchronize(device)
        timings[name] = (time.perf_counter() - started) / REPLAYS
    apart = drift(start, [p.detach() for p in eager.model.parameters()],
                  [p.detach() for p in twin.model.parameters()])
    return {"captured": device.type == "cuda", "capture_s": capture_s,
            "eager_step_s": timings["eager"], "graphed_step_s": timings["graphed"],
            "speedup": timings["eager"] / timings["graphed"],
            "drift_median": statistics.median(apart), "drift_max": max(apart)}
