"""Several processes timing training steps on one device at the same moment.

What ``--ensemble auto --workers N`` does on a GPU that one run (or one seed ensemble) cannot
fill: N processes dispatch their steps side by side. `time_together` starts ``processes``
spawned processes that go through the same cells in order; for each cell every process builds
its model, warms up, waits at the cell's own barrier, times its steps and waits again, so the
timed steps overlap. Each process sends exactly one message per cell: its mean step time or
the reason it has none (its own error, or a peer's, which breaks that cell's barrier and only
that cell's).
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable
from queue import Empty
from typing import Any

import torch

BARRIER_S = 300.0
"""How long a process waits at a barrier for its peers (a dead peer must not hang it)."""

Timer = Callable[..., dict[str, Any]]
"""``timer(config, device, members=, evaluate=False, repeats=, before_timing=)`` ->
``{"step_s": ...}``: `benchmarks.gpu_check.time_run`; picklable (a module-level function)."""


def _worker(device: str, cells: list[tuple[Any, int]], barriers: list[Any], queue: Any,
            timer: Timer, repeats: int) -> None:
    """One process of `time_together`: every ``(config, members)`` cell in order, one
    ``(index, step_s | reason)`` message each."""
    if device == "cpu":
        torch.set_num_threads(1)
    for index, (config, members) in enumerate(cells):
        barrier = barriers[index]

        def wait(barrier: Any = barrier) -> None:
            barrier.wait(timeout=BARRIER_S)

        message: float | str
        try:
            timed = timer(config, torch.device(device), members=members, evaluate=False,
                          repeats=repeats, before_timing=wait)
            wait()  # the peers' timed steps ran beside ours to the end
            message = timed["step_s"]
        except threading.BrokenBarrierError:
            message = "a peer process failed at this cell"
        except Exception as error:  # noqa: BLE001  (reported by the parent; peers released)
            barrier.abort()
            message = f"{type(error).__name__}: {error}"[:300]
        queue.put((index, message))
        if device == "cuda":
            gc.collect()
            torch.cuda.empty_cache()


def time_together(cells: list[tuple[Any, int]], device: str, *, processes: int, timer: Timer,
                  repeats: int, time_left: Callable[[], float]
                  ) -> tuple[dict[int, list[float]], dict[int, str]]:
    """Time every ``(config, members)`` cell in `processes` processes at once.

    Returns ``(timings, errors)``: per cell index, the step times of the processes that timed
    it, and the first reason a process gave for not timing it. Stops reading when every message
    came, every process ended, or `time_left` falls under 10 s (then the processes are killed
    and the cells not reported are in neither dict)."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barriers, queue = [context.Barrier(processes) for _ in cells], context.Queue()
    workers = [context.Process(target=_worker, daemon=True,
                               args=(device, cells, barriers, queue, timer, repeats))
               for _ in range(processes)]
    for worker in workers:
        worker.start()
    timings: dict[int, list[float]] = {}
    errors: dict[int, str] = {}
    received, expected = 0, processes * len(cells)
    while received < expected and time_left() > 10:
        try:
            index, message = queue.get(timeout=1)
        except Empty:
            if not any(worker.is_alive() for worker in workers):
                break
            continue
        received += 1
        if isinstance(message, str):
            errors.setdefault(index, message)
        else:
            timings.setdefault(index, []).append(message)
    for worker in workers:
        worker.join(timeout=5)
        if worker.is_alive():
            worker.kill()
    return timings, errors
