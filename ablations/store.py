"""The results database: one SQLite row per run, keyed by `RunConfig.hash()`.

A row's life: ``pending`` (added by a sweep) -> ``running`` (claimed by one runner, atomically)
-> ``done`` (metrics and timings written) or ``failed`` (error text written; re-queued as
``pending`` while attempts remain). Several runners (processes, hosts sharing a file system that
supports SQLite locking) may point at one database: the database is in WAL mode with a busy
timeout, and a claim is a single ``UPDATE ... WHERE status = 'pending'`` inside a
``BEGIN IMMEDIATE`` transaction, so a run is claimed by exactly one runner.

A ``running`` row whose owner is gone is *stale*: its owner process is gone on this host (no
such pid, a zombie that its parent has not reaped yet, or a pid that now belongs to another
process: the row records the owner's start time beside its pid), or its heartbeat is older than
the lease. `Store.reset_stale` puts stale rows back to ``pending``; the runner calls it before
every sweep, so a killed sweep resumes where it stopped (and the run that was killed
mid-training resumes from the checkpoint in its work directory). A lease shorter than twice the
heartbeat period is refused (a live runner would lose its rows between two beats). A runner
whose row was taken over writes nothing to it: `Store.finish` and `Store.fail` return False.

A file that is not a results database (garbled, truncated, another program's SQLite file)
raises `UnreadableStore` with one line naming the file and how to recover; it is never written.

Reports read the database only (`Store.rows`), never a sweep's memory.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from ablations.config import RunConfig

STATUSES = ("pending", "running", "done", "failed")
DEFAULT_LEASE_S = 900.0
HEARTBEAT_S = 30.0  # how often a runner refreshes the heartbeat of the rows it owns
DIVERGED = "TrainingDiverged"  # error prefix of runs whose loss became non-finite

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    hash         TEXT PRIMARY KEY,   -- RunConfig.hash()
    status       TEXT NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    config       TEXT NOT NULL,      -- RunConfig.as_dict() as JSON
    variant_hash TEXT NOT NULL,      -- VariantSpec.hash()
    label        TEXT NOT NULL,      -- baseline / eqt / aux-only / compute-matched
    task         TEXT NOT NULL,
    length       INTEGER NOT NULL,
    seed         INTEGER NOT NULL,
    versions     TEXT,               -- JSON {python, torch, eqtheory}
    environment  TEXT,               -- JSON: what decides the kernels (ablations.environment)
    git_commit   TEXT,               -- NULL when not in a git checkout
    device       TEXT,               -- resolved device of the last attempt (cpu, cuda:0, ...)
    host         TEXT,               -- claimant's hostname
    pid          INTEGER,            -- claimant's process id
    pid_started  REAL,               -- claimant's process start time, unix s (pid reuse check)
    timings      TEXT,               -- JSON {train_s, eval_s, total_s}
    metrics      TEXT,               -- JSON, the RunResult.metrics schema
    error        TEXT,               -- last error (traceback tail), NULL when done
    attempts     INTEGER NOT NULL DEFAULT 0,
    created_at   REAL NOT NULL,      -- unix seconds
    started_at   REAL,
    finished_at  REAL,
    heartbeat_at REAL
);
CREATE INDEX IF NOT EXISTS runs_status ON runs (status);
"""
# columns added after the first release: (name, type), added to older files on open
ADDED_COLUMNS = (("pid_started", "REAL"), ("environment", "TEXT"))


class UnreadableStore(RuntimeError):
    """The results file cannot be read as a results database; the message is one line."""


def unreadable(path: Path, reason: object) -> UnreadableStore:
    return UnreadableStore(
        f"{path} is not a readable results database ({reason}); it was left untouched: move it "
        f"aside (mv {path} {path}.bad) and run again to start a new one, or restore a backup"
    )


@dataclass(frozen=True)
class Row:
    """One run as stored; JSON columns are decoded."""

    hash: str
    status: str
    config: RunConfig
    variant_hash: str
    label: str
    task: str
    length: int
    seed: int
    versions: dict[str, str] | None
    environment: dict[str, Any] | None
    git_commit: str | None
    device: str | None
    host: str | None
    pid: int | None
    pid_started: float | None
    timings: dict[str, float] | None
    metrics: dict[str, Any] | None
    error: str | None
    attempts: int
    created_at: float
    started_at: float | None
    finished_at: float | None
    heartbeat_at: float | None


def _decode(record: sqlite3.Row) -> Row:
    values = dict(record)
    for name, _ in ADDED_COLUMNS:  # a file opened read-only may predate them
        values.setdefault(name, None)
    for key in ("versions", "environment", "timings", "metrics"):
        if values[key] is not None:
            values[key] = json.loads(values[key])
    values["config"] = RunConfig.from_dict(json.loads(values["config"]))
    return Row(**values)


def process_started(pid: int) -> float | None:
    """Start time (unix seconds) of process `pid` on this host; None if there is none."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def pid_alive(pid: int | None, started: float | None = None) -> bool:
    """Whether process `pid` runs on this host: it exists, is not a zombie (dead, not yet
    reaped by its parent) and, when `started` is given, started at that time (else the pid was
    reused by another process)."""
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        return started is None or abs(process.create_time() - started) < 0.01
    except psutil.NoSuchProcess:  # includes psutil.ZombieProcess
        return False
    except psutil.AccessDenied:  # exists, owned by someone else
        return True


def check_lease(lease_s: float) -> None:
    """A lease must outlast two heartbeats (ValueError otherwise)."""
    if not lease_s >= 2 * HEARTBEAT_S:  # also refuses NaN
        raise ValueError(
            f"lease {lease_s:g} s is shorter than twice the heartbeat ({HEARTBEAT_S:g} s): "
            f"a live runner would lose its runs; use at least {2 * HEARTBEAT_S:g}"
        )


class Store:
    """The runs table of one SQLite file.

    Args:
        path: the database file (created with its parent directory if missing).
        timeout_s: how long a writer waits for the lock before failing (busy timeout).
        readonly: open an existing file for reading only (no schema set-up, nothing written).

    Raises:
        UnreadableStore: the file is not a results database (it is left untouched).
    """

    def __init__(
        self, path: str | Path, *, timeout_s: float = 60.0, readonly: bool = False
    ) -> None:
        self.path = Path(path)
        if readonly and not self.path.is_file():
            raise FileNotFoundError(f"no results database at {self.path}")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: autocommit; every write below opens its own transaction.
        target = f"file:{self.path}?mode=ro" if readonly else str(self.path)
        self._db = sqlite3.connect(
            target, timeout=timeout_s, isolation_level=None, uri=readonly
        )
        self._db.row_factory = sqlite3.Row
        try:
            self._open(timeout_s, readonly=readonly)
        except sqlite3.OperationalError as error:  # locked, no permission, ...: not corrupt
            self._db.close()
            raise UnreadableStore(
                f"{self.path}: cannot open the results database ({error}); nothing was "
                "written: check the path and its permissions, or whether another process "
                "holds the file locked"
            ) from None
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise unreadable(self.path, error) from None
        except UnreadableStore:
            self._db.close()
            raise
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.pid_started = process_started(self.pid)

    def _open(self, timeout_s: float, *, readonly: bool) -> None:
        """Check that the file is a results database (or empty), then set it up for writing."""
        self._db.execute(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}")
        check = self._db.execute("PRAGMA quick_check").fetchone()[0]
        if check != "ok":
            raise unreadable(self.path, f"integrity check: {check}")
        tables = {
            r[0] for r in self._db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }
        if tables and "runs" not in tables:
            raise unreadable(self.path, f"no runs table; tables: {', '.join(sorted(tables))}")
        if "runs" in tables:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
            missing = {"hash", "status", "config", "heartbeat_at"} - columns
            if missing:
                raise unreadable(self.path, f"runs table lacks {', '.join(sorted(missing))}")
        if readonly:
            return
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute("PRAGMA synchronous = NORMAL")
        with self._write():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(runs)")}
            for name, kind in ADDED_COLUMNS:
                if name not in columns:
                    self._db.execute(f"ALTER TABLE runs ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction: takes the write lock up front (no upgrade races)."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- adding and reading ------------------------------------------------------------------

    def add(self, config: RunConfig, *, label: str) -> bool:
        """Add `config` as a pending run; False (and no change) if its hash is already stored."""
        with self._write() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO runs (hash, status, config, variant_hash, label, task,"
                " length, seed, created_at) VALUES (?, 'pending', ?, ?, ?, ?, ?, ?, ?)",
                (
                    config.hash(), json.dumps(config.as_dict(), sort_keys=True),
                    config.variant.hash(), label, config.task, config.length, config.seed,
                    time.time(),
                ),
            )
            return cursor.rowcount == 1

    def get(self, run_hash: str) -> Row | None:
        record = self._db.execute("SELECT * FROM runs WHERE hash = ?", (run_hash,)).fetchone()
        return None if record is None else _decode(record)

    def config(self, run_hash: str) -> RunConfig:
        """The config of stored run `run_hash` (KeyError if absent)."""
        record = self._db.execute("SELECT config FROM runs WHERE hash = ?", (run_hash,)).fetchone()
        if record is None:
            raise KeyError(f"run {run_hash} is not in {self.path}")
        return RunConfig.from_dict(json.loads(record["config"]))

    def rows(self, *, status: str | None = None) -> list[Row]:
        """All rows (or those with `status`), in the order they were added."""
        if status is None:
            records = self._db.execute("SELECT * FROM runs ORDER BY rowid")
        else:
            records = self._db.execute(
                "SELECT * FROM runs WHERE status = ? ORDER BY rowid", (status,)
            )
        return [_decode(record) for record in records.fetchall()]

    def counts(self, hashes: list[str] | None = None) -> dict[str, int]:
        """Rows per status (over `hashes` if given)."""
        counts = dict.fromkeys(STATUSES, 0)
        for row in self._db.execute("SELECT hash, status FROM runs").fetchall():
            if hashes is None or row["hash"] in hashes:
                counts[row["status"]] += 1
        return counts

    # -- the run life cycle ------------------------------------------------------------------

    def claim(self, run_hash: str) -> bool:
        """Atomically move `run_hash` from pending to running, owned by this process."""
        now = time.time()
        with self._write() as db:
            cursor = db.execute(
                "UPDATE runs SET status = 'running', host = ?, pid = ?, pid_started = ?,"
                " started_at = ?, heartbeat_at = ?, finished_at = NULL, attempts = attempts + 1"
                " WHERE hash = ? AND status = 'pending'",
                (self.host, self.pid, self.pid_started, now, now, run_hash),
            )
            return cursor.rowcount == 1

    def claim_next(self, hashes: list[str]) -> str | None:
        """Claim the first pending run in the order of `hashes`; None when there is none left."""
        order = {run_hash: i for i, run_hash in enumerate(hashes)}
        while True:
            pending = sorted(
                (
                    r["hash"]
                    for r in self._db.execute(
                        "SELECT hash FROM runs WHERE status = 'pending'"
                    ).fetchall()
                    if r["hash"] in order
                ),
                key=order.__getitem__,
            )
            if not pending:
                return None
            for run_hash in pending:
                if self.claim(run_hash):
                    return run_hash
            # every candidate was claimed by someone else between the SELECT and our UPDATEs

    def _owned(self, db: sqlite3.Connection, run_hash: str, sets: str, values: tuple) -> bool:
        cursor = db.execute(
            f"UPDATE runs SET {sets}"
            " WHERE hash = ? AND status = 'running' AND host = ? AND pid = ?"
            " AND pid_started IS ?",
            (*values, run_hash, self.host, self.pid, self.pid_started),
        )
        return cursor.rowcount == 1

    def heartbeat(self, run_hash: str) -> bool:
        """Refresh the heartbeat of a run this process owns; False if it is no longer ours."""
        with self._write() as db:
            return self._owned(db, run_hash, "heartbeat_at = ?", (time.time(),))

    def finish(
        self,
        run_hash: str,
        *,
        metrics: dict[str, Any],
        timings: dict[str, float],
        device: str,
        versions: dict[str, str],
        git_commit: str | None,
        environment: dict[str, Any] | None = None,
    ) -> bool:
        """Record a finished run if this process still owns it; False (nothing written) if
        another runner took the row over."""
        with self._write() as db:
            return self._owned(
                db,
                run_hash,
                "status = 'done', metrics = ?, timings = ?, device = ?, versions = ?,"
                " environment = ?, git_commit = ?, error = NULL, finished_at = ?",
                (
                    json.dumps(metrics), json.dumps(timings), device, json.dumps(versions),
                    None if environment is None else json.dumps(environment), git_commit,
                    time.time(),
                ),
            )

    def fail(
        self,
        run_hash: str,
        *,
        error: str,
        requeue: bool,
        device: str | None = None,
        environment: dict[str, Any] | None = None,
    ) -> bool:
        """Record a failure; `requeue` puts the run back to pending (attempts are kept).
        False (nothing written) if another runner took the row over."""
        status = "pending" if requeue else "failed"
        with self._write() as db:
            return self._owned(
                db,
                run_hash,
                "status = ?, error = ?, device = COALESCE(?, device),"
                " environment = COALESCE(?, environment), finished_at = ?",
                (
                    status, error, device,
                    None if environment is None else json.dumps(environment), time.time(),
                ),
            )

    def release(self, run_hash: str) -> None:
        """Give a claimed run back (interrupted): pending again, the attempt not counted."""
        with self._write() as db:
            self._owned(
                db, run_hash, "status = 'pending', attempts = MAX(attempts - 1, 0)", ()
            )

    # -- recovery ------------------------------------------------------------------------------

    def reset_stale(self, *, lease_s: float = DEFAULT_LEASE_S) -> list[str]:
        """Put stale running rows back to pending; returns their hashes.

        Stale: owned by a process on this host that is gone (`pid_alive`: no such pid, a zombie,
        or a reused pid), or no heartbeat for `lease_s` seconds. A lease shorter than twice
        `HEARTBEAT_S` is refused (ValueError): live runners would lose their rows.
        """
        check_lease(lease_s)
        now = time.time()
        reset = []
        with self._write() as db:
            for row in db.execute(
                "SELECT hash, host, pid, pid_started, heartbeat_at FROM runs"
                " WHERE status = 'running'"
            ).fetchall():
                dead = row["host"] == self.host and not pid_alive(row["pid"], row["pid_started"])
                expired = row["heartbeat_at"] is None or now - row["heartbeat_at"] > lease_s
                if dead or expired:
                    db.execute(
                        "UPDATE runs SET status = 'pending', error = ? WHERE hash = ?",
                        (
                            f"reset: owner {row['host']}:{row['pid']} "
                            + ("died" if dead else f"silent for over {lease_s:.0f} s"),
                            row["hash"],
                        ),
                    )
                    reset.append(row["hash"])
        return reset

    def requeue_failed(self, hashes: list[str], *, max_attempts: int) -> list[str]:
        """Failed runs among `hashes` with fewer than `max_attempts` attempts -> pending.

        Runs whose error starts with ``TrainingDiverged`` stay failed: divergence is a
        deterministic outcome of the config and seed, not a fault to retry.
        """
        wanted = set(hashes)
        requeued = []
        with self._write() as db:
            for row in db.execute(
                "SELECT hash, attempts, error FROM runs WHERE status = 'failed'"
            ).fetchall():
                diverged = (row["error"] or "").startswith(DIVERGED)
                if row["hash"] in wanted and row["attempts"] < max_attempts and not diverged:
                    db.execute("UPDATE runs SET status = 'pending' WHERE hash = ?", (row["hash"],))
                    requeued.append(row["hash"])
        return requeued
