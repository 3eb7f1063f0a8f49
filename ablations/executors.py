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

Seed ensembles (``run_local(ensemble=...)``, the runner's ``--ensemble``): the local executor
claims a pending run together with pending runs that differ from it only in their seed
(`claim_group`) and trains them as one model (`ablations.train.train_runs`); each member is
still its own row, claimed, recorded and retried on its own.

Every attempt records what decided its kernels (`ablations.environment.capture`, taken in the
process that trained) in the row's ``environment``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
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
from eqtheory.plugins import load_records

TrainFn = Callable[..., Any]  # train_run(config, *, workdir, progress, log) -> RunResult
# train_runs(configs, *, workdirs, progress) -> [RunResult | Exception] per run
EnsembleTrainFn = Callable[..., list[Any]]
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

    def alone(configs: list[RunConfig], *, workdirs: list[Path], progress: bool) -> list[Any]:
        return [train_fn(configs[0], workdir=workdirs[0], progress=progress)]

    return attempt_ensemble(
        alone, [config], [run_hash], [workdir], progress=progress, threads=threads
    )[0]


def attempt_ensemble(
    train_ensemble_fn: EnsembleTrainFn,
    configs: list[RunConfig],
    run_hashes: list[str],
    workdirs: list[Path],
    *,
    progress: bool,
    threads: int = 0,
) -> list[Outcome]:
    """Train runs that differ only in their seed as one seed ensemble
    (`ablations.train.train_runs`); one `Outcome` per run, in order. A member's own exception
    (returned in the list) is its outcome; an exception raised by the whole attempt is every
    member's."""
    import torch

    from ablations.train import TrainingDiverged

    if threads > 0:
        torch.set_num_threads(threads)
    description = kernels = None
    with warnings.catch_warnings(record=True) as caught:  # re-emitted by `record`, in the driver
        warnings.simplefilter("always", RuntimeWarning)
        try:
            load_records(configs[0].plugins)  # a worker process loads the plugins itself
            device = environment.resolve_device(configs[0].device).type
            description = environment.describe_device(device)
            kernels = environment.capture(device)
            for workdir in workdirs:
                workdir.mkdir(parents=True, exist_ok=True)
            results: list[Any] = train_ensemble_fn(
                [dataclasses.replace(c, device=device) for c in configs], workdirs=workdirs,
                progress=progress,
            )
        except Exception as error:  # noqa: BLE001  (any failure of a run is recorded, not fatal)
            results = [error] * len(configs)
    outcomes = []
    for run_hash, result in zip(run_hashes, results):
        if isinstance(result, TrainingDiverged):
            outcome = Outcome(
                run_hash, ok=False, device=description, retryable=False,
                error=f"{DIVERGED}: {result}", environment=kernels,
            )
        elif isinstance(result, Exception):
            tail = "".join(traceback.format_exception(result)[-12:])
            outcome = Outcome(
                run_hash, ok=False, device=description, error=tail, environment=kernels
            )
        else:
            outcome = Outcome(
                run_hash, ok=True, metrics=result.metrics, timings=dict(result.timings),
                device=description, versions=versions(), environment=kernels,
            )
        outcomes.append(outcome)
    runtime = tuple(str(w.message) for w in caught if issubclass(w.category, RuntimeWarning))
    for other in caught:  # the rest as they would have been shown
        if not issubclass(other.category, RuntimeWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return [dataclasses.replace(outcome, warnings=runtime) for outcome in outcomes]


def ensemble_width(choice: str, config: RunConfig, members: int, *, share: int = 1) -> int:
    """How many of ``members`` same-but-seed runs of `config` train as one ensemble.

    ``choice``: a whole number ``N >= 1`` (at most ``N``), or ``auto``: every member, capped
    so that the members' estimated peak memory (`ablations.validate.estimate`, per run) fits in
    half of the memory that is free now (CUDA: the device's free memory; CPU: the machine's
    available memory; no cap where the system does not report it) divided by ``share``, the
    ensembles that may run at once (``--workers``: a group is sized before the groups started
    beside it have taken their memory), at least 1.
    """
    if choice != "auto":
        return max(1, min(int(choice), members))
    import torch

    from ablations import validate

    if config.device == "cuda" or (config.device == "auto" and torch.cuda.is_available()):
        free = torch.cuda.mem_get_info()[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError):  # no such counter on this system: no memory cap
            return members
    per_run = max(1.0, validate.estimate(config).peak_bytes)
    return max(1, min(members, int(0.5 * free / share // per_run)))


def claim_group(store: Store, hashes: list[str], ensemble: str, *, share: int = 1
                ) -> list[str]:
    """Claim the first pending run in the order of `hashes` and, with ``ensemble`` other than
    ``"1"``, pending runs that differ from it only in their seed, up to `ensemble_width` (of
    ``share`` ensembles at once); ``[]`` when nothing is pending."""
    first = store.claim_next(hashes)
    if first is None:
        return []
    if ensemble == "1":
        return [first]
    config = store.config(first)
    wanted = set(hashes)
    mates = [row.hash for row in store.rows(status="pending")
             if row.hash in wanted and row.config.ensemble_key() == config.ensemble_key()]
    width = ensemble_width(ensemble, config, 1 + len(mates), share=share)
    group = [first]
    for run_hash in mates:
        if len(group) == width:
            break
        if store.claim(run_hash):
            group.append(run_hash)
    return group


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
    ensemble: str = "1",
    train_ensemble_fn: EnsembleTrainFn | None = None,
) -> None:
    """Run the pending runs among `hashes` one after another in this process; with
    ``ensemble`` other than ``"1"`` (a width or ``auto``, `claim_group`), runs that differ
    only in their seed train together through `train_ensemble_fn`."""
    commit = git_commit()
    with Heartbeat(store.path) as heartbeat:
        while group := claim_group(store, hashes, ensemble):
            for run_hash in group:
                heartbeat.add(run_hash)
            workdirs = [out / "runs" / run_hash for run_hash in group]
            try:
                outcomes = attempt_group(
                    train_fn, train_ensemble_fn, [store.config(h) for h in group], group,
                    workdirs, progress=progress, threads=threads,
                )
            except BaseException:  # KeyboardInterrupt / SIGTERM: give the runs back
                for run_hash in group:
                    store.release(run_hash)
                raise
            finally:
                for run_hash in group:
                    heartbeat.discard(run_hash)
            for run_hash, outcome in zip(group, outcomes):
                status = record(store, outcome, max_attempts=1 + retries, commit=commit)
                on_finished(run_hash, status)


def check_gpus_per_run(value: float) -> float:
    """``value`` if it is a GPU share Ray can schedule: a fraction in (0, 1] or a whole number
    of GPUs; else `ValueError`."""
    whole = float(value).is_integer() if isinstance(value, (int, float)) else False
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        0 < value <= 1 or (value > 1 and whole)
    ):
        raise ValueError(
            f"GPUs per run must be a fraction in (0, 1] (e.g. 0.25: four runs per GPU) or a "
            f"whole number of GPUs, got {value!r}"
        )
    return float(value)


def run_pool(
    store: Store,
    hashes: list[str],
    *,
    out: Path,
    train_fn: TrainFn,
    retries: int,
    on_finished: Callable[[str, str], None],
    workers: int,
    threads: int = 0,
    ensemble: str = "1",
    train_ensemble_fn: EnsembleTrainFn | None = None,
) -> None:
    """Run the pending runs among `hashes`, `workers` at a time, each in a process of its own
    on this machine (several runs on one device when one run cannot fill it); this process
    claims and writes every row. With ``ensemble`` other than ``"1"`` a worker trains a seed
    ensemble (`claim_group`, `attempt_ensemble`) where `run_local` would.

    At most `workers` runs (or ensembles) are claimed at a time (the rest stay pending for
    other runners).
    Each attempt runs in a fresh spawned process (not forked: torch's threads do not survive a
    fork; a process per attempt: a worker that dies, killed or out of memory, fails only its
    own run, as a retryable error) with `threads` torch threads (0: torch's default, one per
    core, in every process). An interrupt gives every claimed run back and stops the workers.
    """
    from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    if type(workers) is not int or workers < 1:
        raise ValueError(f"workers must be a whole number >= 1, got {workers!r}")
    commit = git_commit()
    in_flight: dict[Future, tuple[list[str], ProcessPoolExecutor]] = {}

    def submit() -> None:
        while len(in_flight) < workers and (
                group := claim_group(store, hashes, ensemble, share=workers)):
            for run_hash in group:
                heartbeat.add(run_hash)
            worker = ProcessPoolExecutor(1, mp_context=get_context("spawn"))
            configs = [store.config(run_hash) for run_hash in group]
            workdirs = [out / "runs" / run_hash for run_hash in group]
            future = worker.submit(attempt_group, train_fn, train_ensemble_fn, configs, group,
                                   workdirs, progress=False, threads=threads)
            in_flight[future] = (group, worker)

    with Heartbeat(store.path) as heartbeat:
        try:
            submit()
            while in_flight:
                ready, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
                for future in ready:
                    group, worker = in_flight.pop(future)
                    worker.shutdown(wait=True)
                    try:
                        outcomes = future.result()
                    except BrokenProcessPool as error:
                        outcomes = [Outcome(run_hash, ok=False,
                                            error=f"worker process died: {error}")
                                    for run_hash in group]
                    for run_hash, outcome in zip(group, outcomes):
                        heartbeat.discard(run_hash)
                        status = record(store, outcome, max_attempts=1 + retries, commit=commit)
                        on_finished(run_hash, status)
                submit()  # includes runs re-queued by a failure
        except BaseException:
            for group, worker in in_flight.values():
                for run_hash in group:
                    store.release(run_hash)
                # no public way before Python 3.14 (terminate_workers); it would train on, unowned
                for process in list((getattr(worker, "_processes", None) or {}).values()):
                    process.terminate()
                worker.shutdown(wait=False, cancel_futures=True)
            raise


def attempt_group(
    train_fn: TrainFn,
    train_ensemble_fn: EnsembleTrainFn | None,
    configs: list[RunConfig],
    run_hashes: list[str],
    workdirs: list[Path],
    *,
    progress: bool,
    threads: int = 0,
) -> list[Outcome]:
    """The outcomes of a claimed group (`claim_group`), in order: one seed ensemble through
    `train_ensemble_fn` when the group has several runs and one is given, else `attempt` of each
    run in turn (one run, or an injected trainer in tests)."""
    if len(configs) > 1 and train_ensemble_fn is not None:
        return attempt_ensemble(train_ensemble_fn, configs, run_hashes, workdirs,
                                progress=progress, threads=threads)
    return [attempt(train_fn, config, run_hash, workdir, progress=progress, threads=threads)
            for config, run_hash, workdir in zip(configs, run_hashes, workdirs)]


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
    gpus_per_run: float = 1.0,
) -> None:
    """Run the pending runs among `hashes` as Ray tasks; this process writes every row.

    One task per run: ``num_gpus=gpus_per_run`` when the cluster has GPUs (a fraction packs
    ``1 / gpus_per_run`` runs on each GPU, for runs too small to fill one;
    `check_gpus_per_run`), else one CPU (Ray then runs each task with one torch thread unless
    `threads` says otherwise). Task failures
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
        num_gpus=check_gpus_per_run(gpus_per_run) if gpus else 0, num_cpus=1,
        max_retries=retries,
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
