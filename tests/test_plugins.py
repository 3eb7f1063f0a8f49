"""Plugins: `python -m ablations.run --plugin my_terms.py --energy myterm+bidir` loads the file
before validation, records its sha256 with every run (in the hash), and worker processes and
readers of the database load it again; old databases keep their hashes."""

from __future__ import annotations

import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from ablation_fakes import fake_train

import eqtheory as eqt
from ablations.config import RunConfig
from ablations.run import build_parser, main, plan
from ablations.store import Store
from eqtheory import plugins
from eqtheory.variants import VariantSpec

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent

TERM = textwrap.dedent('''
    """``{name}``: ``sum (z - c)^2`` over positions and features (a plugin's term)."""

    from eqtheory.energies.base import Context, Energy
    from eqtheory.energies.registry import ENERGIES


    @ENERGIES.register("{name}")
    class PluginTerm(Energy):
        """Squared distance of the latents to ``center``; ``[B, T, d] -> [B]``."""

        name = "{name}"

        def __init__(self, center: float = {center}) -> None:
            super().__init__()
            self.center = float(center)

        def energy(self, z, context: Context | None):
            del context
            return ((z - self.center) ** 2).flatten(1).sum(1)
''')


def write_term(folder: Path, name: str, center: float = 0.0) -> Path:
    path = folder / f"{name}.py"
    path.write_text(TERM.format(name=name, center=center))
    return path


@pytest.fixture
def term(tmp_path: Path):
    """A plugin file registering the term ``plugterm``, unregistered afterwards."""
    path = write_term(tmp_path, "plugterm")
    yield path
    if "plugterm" in eqt.energies.names():
        eqt.energies.REGISTRY.unregister("plugterm")


def test_the_runner_loads_a_plugin_records_its_sha256_and_trains_with_it(tmp_path, term):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--plugin", str(term), "--energy", "plugterm+bidir",
            "--lengths", "4", "--seeds", "0", "--no-report"]
    assert main(argv, train_fn=fake_train) == 0
    rows = Store(out / "results.sqlite").rows()
    assert rows and all(row.status == "done" for row in rows)
    digest = plugins.file_sha256(term)
    for row in rows:
        assert row.config.plugins == (f"{term.resolve()}@sha256:{digest}",)
    assert {row.config.variant.energy for row in rows if row.label == "eqt"} == {"plugterm+bidir"}


def test_a_changed_plugin_is_a_different_run_and_the_same_one_is_the_same(tmp_path, term):
    argv = ["--plugin", str(term), "--energy", "plugterm", "--lengths", "4", "--seeds", "0",
            "--no-controls", "--out", str(tmp_path / "out")]
    first = plan(build_parser().parse_args(argv)).runs[0][1]
    again = plan(build_parser().parse_args(argv)).runs[0][1]
    assert first.hash() == again.hash()
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    copy = moved / term.name
    copy.write_bytes(term.read_bytes())  # same content elsewhere: the same run
    records = (f"{copy}@sha256:{plugins.file_sha256(copy)}",)
    assert RunConfig(variant=first.variant, length=4, plugins=records).hash() == \
        RunConfig(variant=first.variant, length=4, plugins=first.plugins).hash()
    changed = (f"{term}@sha256:{'0' * 64}",)
    assert RunConfig(variant=first.variant, length=4, plugins=changed).hash() != \
        RunConfig(variant=first.variant, length=4, plugins=first.plugins).hash()


def test_old_configs_keep_their_hashes_and_open_without_a_plugins_field():
    """Hashes computed by the code before plugins existed (commit f5877a1)."""
    assert RunConfig().hash() == "220b6c8beef6c2cf"
    old = RunConfig(variant=VariantSpec(energy="mask"), eval_lengths=(8,))
    assert old.hash() == "695d7e5513ddec97"
    values = old.as_dict()
    del values["plugins"]
    assert RunConfig.from_dict(values) == old


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--plugin", "missing_file.py"], "--plugin: FileNotFoundError: plugin file"),
        (["--energy", "plugterm"], "unknown energy term 'plugterm'"),
    ],
)
def test_bad_plugins_exit_2_before_anything_runs(tmp_path, capsys, flags, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["--out", str(tmp_path / "out"), *flags], train_fn=fake_train)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_plugin_that_raises_on_import_is_reported(tmp_path, capsys):
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('the plugin is broken')\n")
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "out"), "--plugin", str(broken)], train_fn=fake_train)
    assert "--plugin: RuntimeError: the plugin is broken" in capsys.readouterr().err


def test_a_worker_process_loads_the_run_s_plugin_and_checks_its_hash(tmp_path):
    """A fresh interpreter (as a Ray task or a pool worker is) gets the pickled config and
    builds the variant through `executors.attempt`; a changed file fails the attempt."""
    path = write_term(tmp_path, "workerterm")
    record = plugins.load_file(path).record()
    try:
        config = RunConfig(variant=VariantSpec(energy="workerterm"), length=4, width=8, heads=2,
                           layers=1, plugins=(record,))
    finally:
        eqt.energies.REGISTRY.unregister("workerterm")
    script = textwrap.dedent("""
        import pickle, sys
        from pathlib import Path
        from ablations import executors
        from eqtheory.variants import build

        def train(config, *, workdir, progress):
            model = build(config.variant, vocab=2, width=8, layers=1, heads=2, max_len=4)
            return type("Result", (), {"metrics": {"energy": model.erms[0].energy.spec()},
                                       "timings": {}})()

        config = pickle.loads(Path(sys.argv[1]).read_bytes())
        outcome = executors.attempt(train, config, "h", Path(sys.argv[2]), progress=False)
        print(outcome.ok, outcome.metrics, (outcome.error or "").strip().splitlines()[-1:])
    """)
    pickled = tmp_path / "config.pkl"
    pickled.write_bytes(pickle.dumps(config))

    def run() -> str:
        done = subprocess.run(
            [sys.executable, "-c", script, str(pickled), str(tmp_path / "work")],
            capture_output=True, text=True, check=True, cwd=ROOT,
            env={"PYTHONPATH": f"{ROOT}:{TESTS}", "PATH": "/usr/bin:/bin"},
        )
        return done.stdout.strip()

    assert run().startswith("True {'energy': 'workerterm'}")
    path.write_text(path.read_text() + "\n# edited\n")
    assert "it changed since" in run()


def test_the_database_reader_loads_recorded_plugins(tmp_path, term):
    out = tmp_path / "out"
    argv = ["--out", str(out), "--plugin", str(term), "--energy", "plugterm", "--lengths", "4",
            "--seeds", "0", "--no-controls", "--no-report"]
    assert main(argv, train_fn=fake_train) == 0
    eqt.energies.REGISTRY.unregister("plugterm")
    plugins._LOADED.clear()  # as in a fresh process that reads the database
    try:
        (row,) = Store(out / "results.sqlite").rows()
        assert row.config.variant.energy == "plugterm" and "plugterm" in eqt.energies.names()
    finally:
        plugins._LOADED.clear()
