"""Executors: run a sweep's pending runs and write their rows; ``local`` (default) and ``ray``.

Both share one contract: given a `Store` and the hashes of the sweep's runs, run every run that
is pending, claiming it first (so a second runner on the same database skips it), and write
the outcome (``done`` with metrics and timings, or the error). The store is written by this
process only: with Ray, tasks return results and the driver writes the rows.

Failures: `TrainingDiverged` (NaN loss) is deterministic for a config and seed, so it is
recorded as ``failed`` and not retried; any other exception is retried until the run has had
``1 + retries`` attempts (counted across invocations). An interrupt (Ctrl-C, SIGTERM) gives the
running rows back (pending, attempt not counted) before the exception propagates; a hard kill
leaves them ``running``, and `Store.reset_stale` resets them on the next start. A run whose row
another runner took over (this runner was silent past the lease) is reported as ``lost``: its
result is dropped, the other runner's row is left alone, and the sweep goes on.

Every attempt records what decided its kernels (`ablations.environment.capture`, taken in the
process that trained) in the row's ``environment``.
"""

from __future__ import annotations

import dataclasses
import platform
import socket
import sqlite3
import subprocess
import threading
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ablations import environment
from ablations.config import RunConfig
from ablations.store import DIVERGED, HEARTBEAT_S, Store

TrainFn = Callable[..., Any]  # train_run(config, *, workdir, progress, log) -> RunResult
EXECUTORS = ("local", "ray")
LOST = "lost"  # record()'s status for a run whose row another runner took over


@dataclass(frozen=True)
class Outcome:
    """What one attempt produced, as the driver writes it."""

    run_hash: str
    ok: bool
    metrics: dict[str, Any] | None = None
    timings: dict[str, float] | None = None
    device: str | None = None
    versions: dict[str, str] | None = None
    error: str | None = None
    retryable: bool = True
    environment: dict[str, Any] | None = None
    warnings: tuple[str, ...] = ()  # raised by the attempt (e.g. a checkpoint set aside)


def versions() -> dict[str, str]:
    import torch

    import eqtheory

    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "eqtheory": eqtheory.__version__,
    }


def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` if it has uncommitted changes), or None."""
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
            capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return commit.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def resolve_device(device: str) -> tuple[str, str]:
    """(``cpu``/``cuda``, a description for the database: GPU name or CPU threads)."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but torch sees no CUDA device")
        return device, f"cuda ({torch.cuda.get_device_name(0)})"
    return device, f"cpu (threads={torch.get_num_threads()}, {socket.gethostname()})"


def attempt(
    train_fn: TrainFn,
    config: RunConfig,
    run_hash: str,
    workdir: Path,
    *,
    progress: bool,
    threads: int = 0,
) -> Outcome:
    """Run one training attempt and turn its result or exception into an `Outcome`.

    `threads` > 0 sets torch's CPU threads for the attempt (0: leave torch's default).
    """
    import torch

    from ablations.train import TrainingDiverged

    if threads > 0:
        torch.set_num_threads(threads)
    description = kernels = None
    with warnings.catch_warnings(record=True) as caught:  # re-emitted by `record`, in the driver
        warnings.simplefilter("always", RuntimeWarning)
        try:
            device, description = resolve_device(config.device)
            kernels = environment.capture(device)
            workdir.mkdir(parents=True, exist_ok=True)
            result = train_fn(
                dataclasses.replace(config, device=device), workdir=workdir, progress=progress
            )
        except TrainingDiverged as error:
            outcome = Outcome(
                run_hash, ok=False, device=description, retryable=False,
                error=f"{DIVERGED}: {error}", environment=kernels,
            )
        except Exception as error:  # noqa: BLE001  (any failure of a run is recorded, not fatal)
            tail = "".join(traceback.format_exception(error)[-12:])
            outcome = Outcome(
                run_hash, ok=False, device=description, error=tail, environment=kernels
            )
        else:
            outcome = Outcome(
                run_hash, ok=True, metrics=result.metrics, timings=dict(result.timings),
                device=description, versions=versions(), environment=kernels,
            )
    runtime = tuple(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    for other in caught:  # the rest as they would have been shown
        if not issubclass(other.category, RuntimeWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return dataclasses.replace(outcome, warnings=runtime)


class Heartbeat:
    """A thread that refreshes the heartbeat of the runs this process owns."""

    def __init__(self, path: Path, *, every_s: float = HEARTBEAT_S) -> None:
        self.path, self.every_s = path, every_s
        self.hashes: set[str] = set()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._beat, daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def add(self, run_hash: str) -> None:
        with self._lock:
            self.hashes.add(run_hash)

    def discard(self, run_hash: str) -> None:
        with self._lock:
            self.hashes.discard(run_hash)

    def _beat(self) -> None:
        store = Store(self.path)  # a connection of this thread's own
        try:
            while not self._stop.wait(self.every_s):
                with self._lock:
                    hashes = list(self.hashes)
                for run_hash in hashes:
                    try:
                        store.heartbeat(run_hash)
                    except sqlite3.OperationalError:  # busy past the timeout: beat next time
                        continue
        finally:
            store.close()


def record(store: Store, outcome: Outcome, *, max_attempts: int, commit: str | None) -> str:
    """Write `outcome`; returns the row's new status (``pending`` when it will be retried), or
    `LOST` when another runner took the row over (nothing is written). The attempt's runtime
    warnings (a checkpoint set aside, ...) are re-emitted here, where the runner prints."""
    for message in outcome.warnings:
        warnings.warn(f"run {outcome.run_hash}: {message}", RuntimeWarning, stacklevel=2)
    if outcome.ok:
        owned = store.finish(
            outcome.run_hash, metrics=outcome.metrics or {}, timings=outcome.timings or {},
            device=outcome.device or "unknown", versions=outcome.versions or {},
            git_commit=commit, environment=outcome.environment,
        )
        return "done" if owned else LOST
    row = store.get(outcome.run_hash)
    requeue = outcome.retryable and row is not None and row.attempts < max_attempts
    owned = store.fail(
        outcome.run_hash, error=outcome.error or "", requeue=requeue, device=outcome.device,
        environment=outcome.environment,
    )
    if not owned:
        return LOST
    return "pending" if requeue else "failed"


def run_local(
    store: Store,
    hashes: list[str],
    *,
    out: Path,
    train_fn: TrainFn,
    retries: int,
    progress: bool,
    on_finished: Callable[[str, str], None],
    threads: int = 0,
) -> None:
    """Run the pending runs among `hashes` one after another in this process."""
    commit = git_commit()
    with Heartbeat(store.path) as heartbeat:
        while (run_hash := store.claim_next(hashes)) is not None:
            heartbeat.add(run_hash)
            config = store.config(run_hash)
            try:
                outcome = attempt(
                    train_fn, config, run_hash, out / "runs" / run_hash, progress=progress,
                    threads=threads,
                )
            except BaseException:  # KeyboardInterrupt / SIGTERM: give the run back
                store.release(run_hash)
                raise
            finally:
                heartbeat.discard(run_hash)
            on_finished(run_hash, record(store, outcome, max_attempts=1 + retries, commit=commit))


def _ray_attempt(
    train_fn: TrainFn, config: dict[str, Any], run_hash: str, workdir: str, threads: int
) -> Outcome:
    return attempt(
        train_fn, RunConfig.from_dict(config), run_hash, Path(workdir), progress=False,
        threads=threads,
    )


def run_ray(
    store: Store,
    hashes: list[str],
    *,
    out: Path,
    train_fn: TrainFn,
    retries: int,
    on_finished: Callable[[str, str], None],
    address: str | None = None,
    threads: int = 0,
) -> None:
    """Run the pending runs among `hashes` as Ray tasks; this process writes every row.

    One task per run, ``num_gpus=1`` when the cluster has GPUs (else one CPU; Ray then runs
    each task with one torch thread unless `threads` says otherwise). Task failures
    (a worker dying) are retried by Ray (``max_retries``); a run that raises is resubmitted by
    the driver until it has had ``1 + retries`` attempts. Work directories must be on a file
    system every node sees (a local instance always does).
    """
    import ray

    if not ray.is_initialized():
        ray.init(
            address=address, include_dashboard=False, log_to_driver=False,
            configure_logging=False,
        )
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    remote = ray.remote(_ray_attempt).options(
        num_gpus=1 if gpus else 0, num_cpus=1, max_retries=retries
    )
    commit = git_commit()
    in_flight: dict[Any, str] = {}

    def submit() -> None:
        while (run_hash := store.claim_next(hashes)) is not None:
            config = store.config(run_hash).as_dict()
            ref = remote.remote(
                train_fn, config, run_hash, str(out / "runs" / run_hash), threads
            )
            in_flight[ref] = run_hash
            heartbeat.add(run_hash)

    with Heartbeat(store.path) as heartbeat:
        try:
            submit()
            while in_flight:
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                for ref in ready:
                    run_hash = in_flight.pop(ref)
                    heartbeat.discard(run_hash)
                    try:
                        outcome = ray.get(ref)
                    except ray.exceptions.RayError as error:  # the task itself died
                        outcome = Outcome(run_hash, ok=False, error=f"ray: {error}")
                    status = record(store, outcome, max_attempts=1 + retries, commit=commit)
                    on_finished(run_hash, status)
                submit()  # includes runs re-queued by a failure
        except BaseException:
            for ref, run_hash in in_flight.items():
                ray.cancel(ref, force=True)
                store.release(run_hash)
            raise
