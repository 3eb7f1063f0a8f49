"""``python -m benchmarks.probe_cli``: feed hostile flag values to ``python -m ablations.run``.

Each value runs in-process (``ablations.run.main(argv)``) in a forked child, so that a hang is
a timeout and a memory bomb hits an address-space limit instead of the machine. Values that
need a run to show their failure (a solver option that only fails in the loop, a negative
energy weight that trains) use a tiny model and the real ``ablations.train.train_run``; resource
bombs use the preset's defaults, as a new user would. Every value should be refused up front:

- ``clean``: exit code 2, one line on stderr, no traceback, nothing written under ``--out``,
  a long value echoed at most once and cut to 200 characters;
- ``unclean``: exit 2, but more than one line, a traceback, files written or a long echo;
- ``hang``: still running after ``--timeout`` seconds (killed);
- ``traceback``: an exception escaped ``main`` (or the child died: out of memory, a signal);
- ``run-time failure``: the plan was accepted and a run failed (exit 1): a value that could
  have been checked before anything ran;
- ``accepted``: exit 0, the hostile value was used.

    python -m benchmarks.probe_cli                # all values, counts at the end
    python -m benchmarks.probe_cli --only seeds   # values whose name contains 'seeds'
    python -m benchmarks.probe_cli --verbose      # one line per value with its stderr
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

# a run small enough that a real training run takes about a second
TINY = [
    "--lengths", "8", "--seeds", "0", "--no-controls", "--no-report", "--k-eval", "2",
    "--set", "train_steps=2", "--set", "train_size=32", "--set", "test_size=16",
    "--set", "batch_size=16", "--set", "width=8", "--set", "heads=2", "--set", "layers=1",
    "--set", "eval_batch_size=16", "--set", "checkpoint_every=0",
]
SMOKE = ["--no-report"]  # the smoke preset's defaults
OUT = "{out}"  # replaced by the case's output directory
LONG = "x" * 5000


@dataclass(frozen=True)
class Case:
    """One hostile value: a name, the flags, and the base flags it is added to."""

    name: str
    argv: tuple[str, ...]
    base: str = "tiny"  # "tiny" or "smoke"


def _cases() -> list[Case]:
    cases: list[Case] = []

    def add(name: str, flag: str, value: str, *more: str, base: str = "tiny") -> None:
        # --flag=value: a value that starts with '-' stays a value
        cases.append(Case(name, (f"{flag}={value}", *more), base))

    # --preset
    for value in ("", "smok", LONG):
        add(f"preset={value[:20]!r}", "--preset", value)
    # --energy: names, grammar, weights, options, size
    for value in ("", "bidr", "bidir+", "+bidir", "bidir++mask", "bidir(", "bidir)", "*bidir",
                  "-1*bidir", "inf*bidir", "1e400*bidir", "nan*bidir", "-0.5*mask+bidir",
                  "bidir=abc", "bidir(window=-1)", "bidir(window=0)", "bidir(hidden=0)",
                  "bidir(bogus=1)", "bidir(window=inf)", "mask,,bidir", "bidir;mask", LONG,
                  "+".join(["bidir"] * 3000)):
        add(f"energy={value[:24]!r}", "--energy", value)
    # --solver
    for value in ("", "andersn", "gd(momentum=abc)", "gd(momentum=nan)", "gd(momentum=1e400)",
                  "gd(momentum=-5)", "gd(momentum=1)", "gd(noise=-1)", "gd(step_size=0.1)",
                  "gd(line_search=wolfe)", "gd(", "gd(momentum=0.9", "anderson(m=0)",
                  "anderson(m=-1)", "gd<1", "gd(x=1)", LONG):
        add(f"solver={value[:24]!r}", "--solver", value)
    # --alpha, --gamma, --beta: numbers
    for flag, values in {
        "--alpha": ("", "abc", "0", "-1", "nan", "inf", "1e400", "0.1,,0.2"),
        "--gamma": ("0", "-1", "nan", "abc", "-inf"),
        "--beta": ("inf", "nan", "-1", "1e400", "abc", ""),
    }.items():
        for value in values:
            add(f"{flag[2:]}={value!r}", flag, value)
    # stopping rules and K shortcuts
    for flag, values in {
        "--stop": ("", "steps=-1", "steps=abc", "steps=inf", "residul<1e-3", "|", "steps=8|",
                   "steps=2.5", "residual<1e-3&", "steps<8", LONG),
        "--k-eval": ("", "-1", "abc", "2,,3"),
        "--stop-train": ("", "stepz=2", "steps=-2", "steps=1.5"),
        "--k-train": ("", "-1", "x"),
    }.items():
        for value in values:
            add(f"{flag[2:]}={value[:20]!r}", flag, value)
    # --backward, --placement, --task
    for value in ("", "implicitt", "phantom(k=-1)", "phantom(k=0)", "phantom(k=1.5)",
                  "implicit(tol=-1)", "implicit(tol=nan)", "implicit(max_iter=0)",
                  "implicit(adjoint=foo)", "phantom(damping=nan)"):
        add(f"backward={value!r}", "--backward", value)
    for value in ("", "evry"):
        add(f"placement={value!r}", "--placement", value)
    for value in ("", "parity_fnal"):
        add(f"task={value!r}", "--task", value)
    # --lengths, --seeds
    for value in ("", "0", "-1", "abc", "8,,16", "1e3"):
        add(f"lengths={value!r}", "--lengths", value)
    for value in ("", "5-1", "x", "-1", "1-2-3", "0-"):
        add(f"seeds={value!r}", "--seeds", value)
    # --set: values and sizes
    for item in ("lr=NaN", "lr=Infinity", "lr=-Infinity", "lr=-1", "lr=0", "lr=1e400",
                 "heads=3", "heads=0", "width=0", "layers=0", "layers=-1", "train_size=0",
                 "test_size=0", "batch_size=0", "eval_batch_size=0", "train_steps=-1",
                 "train_size=8", "weight_decay=NaN", "weight_decay=-1", "grad_clip=0",
                 "grad_clip=NaN", "warmup_steps=-1", "checkpoint_every=-1", "lr=", "=5",
                 "nokey", "amp=null", "width=8.5", "lr=[1]"):
        add(f"set {item}", "--set", item)
    # --device, executor, threads, retries, lease
    add("device=cuda without a GPU", "--device", "cuda")
    add("device=tpu", "--device", "tpu")
    add("executor=dask", "--executor", "dask")
    for value in ("-1", "abc", "100000"):
        add(f"threads={value}", "--threads", value)
    for value in ("-1", "abc"):
        add(f"retries={value}", "--retries", value)
    for value in ("-5", "nan", "0", "abc"):
        add(f"lease={value}", "--lease", value)
    # --out
    add("out=''", "--out", "")
    add("out=a file", "--out", "{tmp}/a-file")
    add("out=under a file", "--out", "{tmp}/a-file/out")
    add("out=/proc (unwritable)", "--out", "/proc/eqt-probe-out")
    add("out=NUL byte", "--out", "{tmp}/o\x00ut")
    # resource bombs, from the preset's defaults
    smoke = {
        "stop steps=1e9": ("--stop", "steps=1e9"),
        "stop residual|steps=1e9": ("--stop", "residual<1e-9|steps=1e9"),
        "stop-train steps=1e8": ("--stop-train", "steps=1e8"),
        "k-train 100000": ("--k-train", "100000"),
        "k-eval 100000000": ("--k-eval", "100000000"),
        "lengths 100000": ("--lengths", "100000"),
        "seeds 0-100000000": ("--seeds", "0-100000000"),
        "seeds 0-100000": ("--seeds", "0-100000"),
        "set width=100000": ("--set", "width=100000"),
        "set train_steps=1e9": ("--set", "train_steps=1000000000"),
        "set batch_size=1e8": ("--set", "batch_size=100000000"),
        "set train_size=1e10": ("--set", "train_size=10000000000"),
        "set test_size=1e10": ("--set", "test_size=10000000000"),
        "set layers=100000": ("--set", "layers=100000"),
        "energy 18,000 characters": ("--energy", "+".join(["mask"] * 3600)),
        "energy bidir(window=1e8)": ("--energy", "bidir(window=100000000)"),
        "solver anderson(memory=1e8)": ("--solver", "anderson(memory=100000000)"),
    }
    for name, argv in smoke.items():
        add(name, *argv, base="smoke")
    return cases


CASES = _cases()


def _run_child(case: Case, tmp: Path, report: Path, memory_gib: float) -> None:
    """In the forked child: limit memory, run main, write the outcome to `report`; never returns."""
    from ablations.run import main

    code: object
    try:
        with open(tmp / "stdout", "w") as out, open(tmp / "stderr", "w") as err:
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
        sys.stdout = open(1, "w", closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115
        used = _vm_size()
        limit = used + int(memory_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        argv = _argv(case, tmp)
        try:
            code = main(argv)
            outcome = {"kind": "returned", "code": code}
        except SystemExit as stop:
            outcome = {"kind": "exit", "code": stop.code}
        except BaseException as error:  # noqa: BLE001
            traceback.print_exc()
            outcome = {"kind": "traceback", "error": f"{type(error).__name__}: {error}"[:300]}
        sys.stdout.flush()
        sys.stderr.flush()
        report.write_text(json.dumps(outcome))
    finally:
        os._exit(0)


def _vm_size() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def _argv(case: Case, tmp: Path) -> list[str]:
    base = TINY if case.base == "tiny" else SMOKE
    argv = ["--out", str(tmp / "out"), *base, *case.argv]
    return [value.replace("{tmp}", str(tmp)) for value in argv]


def classify(case: Case, tmp: Path, outcome: dict | None, elapsed: float,
             timeout: float) -> tuple[str, str]:
    """(category, detail) of one finished (or killed) case."""
    stderr = (tmp / "stderr").read_text(errors="replace") if (tmp / "stderr").exists() else ""
    lines = [line for line in stderr.splitlines() if line.strip()]
    tail = lines[-1][:300] if lines else ""
    if outcome is None:
        if elapsed >= timeout:
            return "hang", f"killed after {elapsed:.0f} s"
        return "traceback", f"the child died ({tail or 'no output'})"
    if outcome["kind"] == "traceback":
        return "traceback", outcome["error"]
    code = outcome["code"]
    if code == 2:
        problems = []
        if len(lines) != 1:
            problems.append(f"{len(lines)} lines on stderr")
        if "Traceback" in stderr:
            problems.append("a traceback")
        written = sorted(p.name for p in tmp.iterdir()
                         if p.name not in ("stdout", "stderr", "report", "a-file"))
        if written:
            problems.append(f"wrote {written}")
        values = [item.partition("=")[2] if item.startswith("--") else item
                  for item in case.argv]
        if any(len(value) > 200 and value[:230] in stderr for value in values):
            problems.append("echoed a long value uncut")
        if any(len(value) > 200 and stderr.count(value[:200]) > 1 for value in values):
            problems.append("echoed a long value more than once")
        if problems:
            return "unclean", "; ".join(problems) + f": {tail}"
        return "clean", tail
    if code == 1:
        return "run-time failure", tail
    return "accepted", f"exit {code}"


def probe(case: Case, *, timeout: float, memory_gib: float) -> tuple[str, str, float]:
    with tempfile.TemporaryDirectory(prefix="eqt-probe-") as name:
        tmp = Path(name)
        (tmp / "a-file").write_text("a file, not a directory\n")
        report = tmp / "report"
        started = time.perf_counter()
        pid = os.fork()
        if pid == 0:
            _run_child(case, tmp, report, memory_gib)
        elapsed = 0.0
        while True:
            finished, _ = os.waitpid(pid, os.WNOHANG)
            elapsed = time.perf_counter() - started
            if finished:
                break
            if elapsed >= timeout:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                break
            time.sleep(0.02)
        outcome = json.loads(report.read_text()) if report.exists() else None
        category, detail = classify(case, tmp, outcome, elapsed, timeout)
        return category, detail, elapsed


CATEGORIES = ("clean", "unclean", "hang", "traceback", "run-time failure", "accepted")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.probe_cli",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=None,
                        help="run only the values whose name contains this (default: all)")
    parser.add_argument("--timeout", type=float, default=30.0,
                        help="seconds before a value counts as a hang (default: 30)")
    parser.add_argument("--memory-gib", type=float, default=3.0,
                        help="address space a value may add before it fails (default: 3)")
    parser.add_argument("--verbose", action="store_true",
                        help="one line per value with its category and stderr (default: off)")
    args = parser.parse_args(argv)
    import ablations.run  # noqa: F401  (imported once, before forking)
    import ablations.train  # noqa: F401

    cases = [case for case in CASES if args.only is None or args.only in case.name]
    counts: Counter[str] = Counter()
    bad: list[str] = []
    started = time.perf_counter()
    for case in cases:
        category, detail, elapsed = probe(case, timeout=args.timeout, memory_gib=args.memory_gib)
        counts[category] += 1
        line = f"[{category}] {case.name} ({elapsed:.1f} s): {detail}"
        if category != "clean":
            bad.append(line)
        if args.verbose:
            print(line, flush=True)
    if not args.verbose:
        for line in bad:
            print(line)
    print(f"{len(cases)} hostile values in {time.perf_counter() - started:.0f} s: "
          + ", ".join(f"{counts[c]} {c}" for c in CATEGORIES))
    return 0 if counts["clean"] == len(cases) else 1


if __name__ == "__main__":
    sys.exit(main())
