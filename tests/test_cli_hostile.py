"""The runner's promise: every flag value is checked before anything runs or is written.

A hostile value exits with code 2 and one line on stderr (no traceback), writes nothing under
``--out``, and echoes a long value once, cut to 200 characters. The values of
`benchmarks.probe_cli` run here in-process (the runs, were any accepted, are `fake_train`), and a
hypothesis test draws malformed values for every flag from the flag grammar.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from pathlib import Path

import pytest
import torch
from ablation_fakes import fake_train
from hypothesis import given, note
from hypothesis import strategies as st

from ablations import presets, validate
from ablations.config import RunConfig
from ablations.run import build_parser, main
from benchmarks.probe_cli import CASES, SMOKE, TINY, Case
from eqtheory.energies.parse import parse_terms
from eqtheory.variants import VariantSpec

PROG = "python -m ablations.run: error: "


def run_cli(argv: list[str]) -> tuple[int | str | None, str]:
    """``main(argv)`` with fake runs: (exit code, stderr)."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv, train_fn=fake_train)
        except SystemExit as stop:
            code = stop.code
    return code, err.getvalue()


def assert_refused(argv: list[str], root: Path) -> str:
    """Exit 2, one line on stderr, nothing written under ``root``; returns the line."""
    before = sorted(root.rglob("*"))
    code, stderr = run_cli(argv)
    lines = stderr.splitlines()
    assert code == 2, (argv, code, stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith(PROG), stderr[-2000:]
    assert "Traceback" not in stderr
    assert sorted(root.rglob("*")) == before, "something was written"
    for value in argv:
        if len(value) > 200:  # a long value: echoed at most once, cut to 200 characters
            payload = value.partition("=")[2] if value.startswith("--") else value
            assert payload[:230] not in lines[0] and lines[0].count(payload[:200]) <= 1
    return lines[0]


def case_argv(case: Case, root: Path) -> list[str]:
    base = TINY if case.base == "tiny" else SMOKE
    argv = ["--out", str(root / "out"), *base, *case.argv]
    return [value.replace("{tmp}", str(root)) for value in argv]


@pytest.mark.parametrize("case", CASES, ids=lambda case: case.name[:60])
def test_every_probe_value_is_refused_up_front(case: Case, tmp_path: Path) -> None:
    if case.argv == ("--device=cuda",) and torch.cuda.is_available():
        pytest.skip("a GPU is here: --device cuda is valid")
    (tmp_path / "a-file").write_text("a file, not a directory\n")
    assert_refused(case_argv(case, tmp_path), tmp_path)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--energy=-1*bidir"], "must be finite and >= 0 (0 keeps the term but switches it off)"),
        (["--energy", "inf*bidir"], "energy weight inf"),
        (["--solver", "gd(momentum=abc)"], "option 'momentum' of solver 'gd' takes a number"),
        (["--solver", "gd(momentum=nan)"], "solver 'gd(momentum=nan)': "),
        (["--backward", "phantom(k=-1)"], "backward mode 'phantom(k=-1)': "),
        (["--set", "lr=NaN"], "lr must be a finite number > 0, got nan"),
        (["--set", "lr=Infinity"], "lr must be a finite number > 0, got inf"),
        (["--set", "heads=3"], "must be divisible by heads 3"),
        (["--set", "eval_batch_size=0"], "eval_batch_size must be a whole number >= 1"),
        (["--alpha", "1e400"], "alpha (the solver's step size) must be finite and > 0"),
        (["--beta", "inf"], "must be finite and >= 0"),
        (["--seeds", "5-1"], "'5-1' is an empty range (5 > 1); write '1-5'"),
        (["--seeds", "0-100000000"], "at most 10,000 per sweep"),
        (["--stop", ""], "--stop: empty value"),
        (["--stop", "steps=1e9"], "the sweep is too long: about"),
        (["--k-train", "100000"], "or pass --force"),  # memory of the unrolled graph
        (["--lengths", "100000"], "of memory (cap 64 GiB per run"),
        (["--out", ""], "--out: empty path"),
        (["--threads", "100000"], "--threads must be in 0..256"),
    ],
)
def test_messages_say_what_is_wrong(
    flags: list[str], message: str, tmp_path: Path
) -> None:
    out = ["--out", str(tmp_path / "out")] if "--out" not in flags else []
    line = assert_refused([*out, "--no-report", *flags], tmp_path)
    assert message in line


def test_out_must_be_a_creatable_directory(tmp_path: Path) -> None:
    afile = tmp_path / "a-file"
    afile.write_text("x")
    assert "is a file" in assert_refused(["--out", str(afile)], tmp_path)
    assert "a file, not a directory" in assert_refused(["--out", str(afile / "sub")], tmp_path)
    assert afile.read_text() == "x"
    for path in (tmp_path / "new" / "deep", tmp_path):
        assert validate.check_out(str(path), writing=True) == path
    assert not (tmp_path / "new").exists()  # the write check leaves nothing behind


def test_long_values_are_echoed_once_and_cut() -> None:
    value = "bidir+" * 100 + "bidr"
    line = validate.one_line(f"unknown term in {value!r}; again {value!r}", [value])
    assert line.count(value[:200]) == 1 and value[:201] not in line
    assert "(604 characters)" in line and "(the same value)" in line
    assert "\n" not in validate.one_line("a\nb")


def test_the_presets_fit_the_caps_and_force_lifts_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for preset in presets.PRESETS:
        argv = ["--out", str(tmp_path / preset), "--dry-run", "--preset", preset]
        assert main(argv, train_fn=fake_train) == 0, capsys.readouterr().err
    bomb = ["--out", str(tmp_path / "bomb"), "--dry-run", "--k-train", "100000"]
    assert run_cli(bomb)[0] == 2
    assert main([*bomb, "--force"], train_fn=fake_train) == 0
    assert not any(tmp_path.iterdir())


def test_estimates_grow_with_what_they_count() -> None:
    small = validate.estimate(RunConfig())
    assert small.flops > 0 and small.passes > 0 and small.peak_bytes > 0
    longer = validate.estimate(RunConfig(variant=VariantSpec(stop_train="steps=20")))
    assert longer.passes > small.passes and longer.flops > small.flops
    fixed = validate.WORKSPACE_BYTES  # what does not scale with the run
    grown = validate.estimate(RunConfig(length=4096)).peak_bytes  # 256x the default length
    assert grown - fixed > 100 * (small.peak_bytes - fixed)


def test_help_documents_the_caps_and_force() -> None:
    text = build_parser().format_help()
    assert "--force" in text and "10,000 runs" in " ".join(text.split())
    assert validate.MAX_RUN_BYTES // 2**30 == 64 and "64 GiB" in text


def test_model_layer_checks() -> None:
    assert parse_terms("0*bidir+mask")[0][0] == 0.0  # a zero weight switches a term off
    for text in ("-1*bidir", "inf*bidir", "1e400*mask+bidir"):
        with pytest.raises(ValueError, match="finite and >= 0"):
            parse_terms(text)
    with pytest.raises(ValueError, match="momentum"):
        VariantSpec(solver="gd(momentum=1e400)")
    with pytest.raises(ValueError, match="takes true or false"):
        VariantSpec(solver="gd(nesterov=1)")
    with pytest.raises(ValueError, match="alpha"):
        VariantSpec(alpha=math.inf)
    for fields in ({"lr": math.nan}, {"width": 30, "heads": 4}, {"train_size": 0},
                   {"train_size": 8, "batch_size": 16}, {"weight_decay": -1.0},
                   {"grad_clip": 0.0}, {"seed": -1}, {"length": True}):
        with pytest.raises(ValueError):
            RunConfig(**fields)
    RunConfig(train_size=8, batch_size=16, fresh_sampling=True, grad_clip=math.inf)


# ---- malformed values for every flag, drawn from the flag grammar

AFILE = Path(tempfile.mkdtemp(prefix="eqt-hostile-")) / "a-file"
AFILE.write_text("a file\n")
PLUGIN = AFILE.parent / "noop_plugin.py"  # a plugin that registers nothing
PLUGIN.write_text('"""A plugin module with no components."""\n')
RAISES = AFILE.parent / "raises_plugin.py"
RAISES.write_text("raise RuntimeError('broken plugin')\n")
BROKEN = AFILE.parent / "syntax_plugin.py"
BROKEN.write_text("def (:\n")
# one valid value per flag (the grammar's atoms), and values that are wrong for that flag
GRAMMAR: dict[str, tuple[str, list[str]]] = {
    "--preset": ("smoke", ["smok", "SMOKE", "paper2"]),
    "--energy": ("bidir+0.1*mask", ["-1*bidir", "inf*bidir", "1e400*mask", "bidr", "mask(x=1)",
                                    "bidir(window=0)", "bidir=abc", "*mask", "mask+",
                                    "bidir(window=inf)", "bidir(window=100000000)"]),
    "--solver": ("gd(momentum=0.9)", ["gd(momentum=abc)", "gd(momentum=nan)", "gd(momentum=-5)",
                                      "gd(momentum=1e400)", "andersn", "gd(step_size=1)",
                                      "gd(nesterov=2)", "gd<1"]),
    "--alpha": ("0.1", ["nan", "inf", "-1", "0", "1e400", "abc", "-inf"]),
    "--stop": ("residual<1e-3|steps=8", ["steps=-1", "steps=1e9", "steps=inf", "residul<1",
                                         "steps<8", "steps=1.5", "|steps=2", "steps=2&"]),
    "--k-eval": ("8", ["-1", "x", "1.5", "100000000", "1e3"]),
    "--stop-train": ("steps=2", ["stepz=2", "steps=-2", "steps=1e8", "steps=abc"]),
    "--k-train": ("2", ["-1", "x", "100000", "2.0"]),
    "--backward": ("phantom(k=2)", ["phantom(k=-1)", "phantom(k=0)", "phantom(k=1.5)",
                                    "implicitt", "implicit(adjoint=foo)", "unrolled(k=1)"]),
    "--placement": ("every", ["evry", "Last", "all"]),
    "--gamma": ("1.0", ["0", "-1", "nan", "abc", "-inf"]),
    "--beta": ("0.3", ["inf", "nan", "-1", "1e400", "abc"]),
    "--task": ("parity", ["parity_fnal", "copy"]),
    "--lengths": ("8", ["0", "-1", "1.5", "abc", "100000", "1e3"]),
    "--seeds": ("0-2", ["5-1", "-1", "x", "0-100000000", "1-2-3", "0-"]),
    "--device": ("cpu", ["tpu", "gpu", "CPU"]),
    "--set": ("lr=0.001", ["lr=NaN", "lr=Infinity", "lr=-1", "lr=0", "heads=3", "heads=0",
                           "width=0", "train_size=0", "test_size=0", "eval_batch_size=0",
                           "batch_size=0", "layers=0", "train_steps=-1", "weight_decay=NaN",
                           "grad_clip=0", "warmup_steps=-1", "train_size=8", "lr=1e400",
                           "nokey", "=1", "amp=1", "width=8.5", "lengthh=3", "seed=1",
                           "width=100000", "train_steps=1000000000"]),
    "--executor": ("local", ["dask", "Local"]),
    "--threads": ("1", ["-1", "100000", "x", "1.5"]),
    "--retries": ("1", ["-1", "x", "1.5"]),
    "--lease": ("600", ["-5", "nan", "0", "x", "1"]),
    "--out": ("", ["", str(AFILE), str(AFILE / "out"), "o\x00ut"]),
    "--eval-lengths": ("16", ["0", "-1", "x", "1.5", "100000"]),
    "--ensemble": ("2", ["0", "-1", "x", "1.5", "autox", "Auto"]),
    "--workers": ("1", ["0", "-1", "x", "1.5", "100000"]),
    "--gpus-per-run": ("0.5", ["0", "-1", "1.5", "nan", "inf", "x"]),
    "--plugin": (str(PLUGIN), [str(AFILE), str(AFILE.parent), str(RAISES), str(BROKEN),
                               str(AFILE.parent / "missing.py"), "o\x00ut.py"]),
}
FLAGS = {option for action in build_parser()._actions for option in action.option_strings
         if action.nargs != 0 and option != "--ray-address"}
GRAMMAR = {flag: grammar for flag, grammar in GRAMMAR.items() if flag in FLAGS}
LIST_FLAGS = {"--eval-lengths", "--energy", "--solver", "--alpha", "--stop", "--k-eval",
              "--stop-train", "--k-train", "--backward", "--placement", "--gamma", "--beta",
              "--task", "--lengths", "--seeds"}
# characters outside every flag's grammar (not whitespace: JSON and int() strip it)
BREAKERS = [")", "(", "$", "@", "#", "\x00"]


def test_the_grammar_covers_every_flag() -> None:
    assert set(GRAMMAR) == FLAGS  # --ray-address is free text, read only by Ray


@st.composite
def malformed(draw: st.DrawFn) -> tuple[str, str]:
    """A flag and a value that breaks its grammar."""
    flag = draw(st.sampled_from(sorted(GRAMMAR)))
    valid, bad = GRAMMAR[flag]
    if flag == "--out":
        return flag, draw(st.sampled_from(bad))
    atom = draw(st.sampled_from(bad))
    kind = draw(st.sampled_from(["bad", "listed", "empty item", "breaker", "long", "blank"]))
    if kind == "listed" and flag in LIST_FLAGS:  # a bad atom among good ones
        value = draw(st.sampled_from([f"{valid},{atom}", f"{atom},{valid}"]))
    elif kind == "empty item":
        value = draw(st.sampled_from([f"{valid},", f",{valid}", f"{valid},,{valid}"]))
    elif kind == "breaker":
        breaker = draw(st.sampled_from(BREAKERS))
        value = draw(st.sampled_from([valid + breaker, breaker + valid]))
    elif kind == "long":
        value = ",".join([valid] * (validate.MAX_VALUE_CHARS // len(valid) + 1))
    elif kind == "blank":
        value = draw(st.sampled_from(["", " ", "\t"]))
    else:
        value = atom
    return flag, value


@given(malformed())
def test_malformed_values_of_every_flag_exit_2_with_one_line(flag_value: tuple[str, str]) -> None:
    flag, value = flag_value
    note(f"{flag}={value!r}")
    with tempfile.TemporaryDirectory(prefix="eqt-hostile-") as name:
        root = Path(name)
        argv = ["--out", str(root / "out"), "--lengths", "8", "--seeds", "0", "--no-controls",
                "--no-report", f"{flag}={value}"]
        assert_refused(argv, root)
