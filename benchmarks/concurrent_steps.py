"""Several processes timing training steps on one device at the same moment.

What ``--ensemble auto --workers N`` does on a GPU that one run (or one seed ensemble) cannot
fill: N processes dispatch their steps side by side. `time_together` starts ``processes``
spawned processes that go through the same cells in order; for each cell every process builds
its model, warms up, waits at the cell's own barrier, times its steps and waits again, so the
timed steps overlap. Each process sends exactly one message per cell: its mean step time or
the reason it has none (its own error, or a peer's, which breaks that cell's barrier and only
that cell's). A process that dies without a message is noticed by its exit code.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from queue import Empty
from typing import Any

import torch

from benchmarks.training_setup import release

BARRIER_S = 300.0
"""How long a process waits at a barrier for its peers (a dead peer must not hang it)."""

Timer = Callable[..., dict[str, Any]]
"""``timer(config, device, members=, evaluate=False, repeats=, before_timing=)`` ->
``{"step_s": ...}``: `benchmarks.gpu_check.time_run`; picklable (a module-level function)."""


PEER_FAILED = "a peer process failed at this cell"


def _worker(rank: int, device: str, cells: list[tuple[Any, int]], barriers: list[Any],
            queue: Any, timer: Timer, repeats: int) -> None:
    """Process `rank` of `time_together`: every ``(config, members)`` cell in order, one
    ``(rank, index, step_s | reason)`` message each."""
    if device == "cpu":
        torch.set_num_threads(1)
    for index, (config, members) in enumerate(cells):
        barrier = barriers[index]

        def wait(barrier: Any = barrier) -> None:
            barrier.wait(timeout=BARRIER_S)

        try:
            timed = timer(config, torch.device(device), members=members, evaluate=False,
                          repeats=repeats, before_timing=wait)
            wait()  # the peers' timed steps ran beside ours to the end
            queue.put((rank, index, timed["step_s"]))
        except threading.BrokenBarrierError:
            queue.put((rank, index, PEER_FAILED))
        except Exception as error:  # noqa: BLE001  (reported by the parent; peers released)
            queue.put((rank, index, f"{type(error).__name__}: {error}"[:300]))
            barrier.abort()  # after our reason is on its way: the peers' reports follow it
        release(device)


def _break(barriers: list[Any]) -> None:
    """Abort every barrier, from a thread given 2 s: a process that died inside a barrier's
    bookkeeping would hold its lock forever (the peers then wait out `BARRIER_S`)."""
    breaker = threading.Thread(target=lambda: [b.abort() for b in barriers], daemon=True)
    breaker.start()
    breaker.join(timeout=2)


def time_together(cells: list[tuple[Any, int]], device: str, *, processes: int, timer: Timer,
                  repeats: int, time_left: Callable[[], float]
                  ) -> tuple[dict[int, list[float]], dict[int, str]]:
    """Time every ``(config, members)`` cell in `processes` processes at once.

    Returns ``(timings, errors)``: per cell index, the step times of the processes that timed
    it, and why a cell was not timed by all of them (a process's own error before a peer's
    report that it failed). Each process writes to a queue of its own (one that dies while
    writing can only spoil its own). A process that dies (exit code other than 0) fails the
    cells it had not reported, and the barriers are broken so that its peers stop waiting for
    it. Stops when every process reported every cell or died, or when `time_left` falls under
    10 s; the processes are killed and reaped either way."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    barriers = [context.Barrier(processes) for _ in cells]
    queues = [context.Queue() for _ in range(processes)]
    workers = [context.Process(target=_worker, daemon=True, args=(
        rank, device, cells, barriers, queues[rank], timer, repeats)) for rank in range(processes)]
    timings: dict[int, list[float]] = {}
    errors: dict[int, str] = {}
    reported: list[set[int]] = [set() for _ in workers]

    def fail(index: int, reason: str) -> None:
        if index not in errors or errors[index] == PEER_FAILED:
            errors[index] = reason

    def read(rank: int) -> bool:
        """Take one message of process `rank`, if one is there."""
        try:
            _, index, message = queues[rank].get_nowait()
        except Empty:
            return False
        if index not in reported[rank]:  # else: its process was already declared dead
            reported[rank].add(index)
            if isinstance(message, str):
                fail(index, message)
            else:
                timings.setdefault(index, []).append(message)
        return True

    try:
        for worker in workers:
            worker.start()
        while time_left() > 10 and any(len(done) < len(cells) for done in reported):
            if any([read(rank) for rank in range(processes)]):
                continue
            for rank, worker in enumerate(workers):
                if worker.exitcode not in (None, 0) and len(reported[rank]) < len(cells):
                    for index in set(range(len(cells))) - reported[rank]:
                        fail(index, f"process {rank} died (exit code {worker.exitcode})")
                    reported[rank] = set(range(len(cells)))
                    _break(barriers)
            time.sleep(0.05)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.kill()
        for worker in workers:
            worker.join()
    return timings, errors
