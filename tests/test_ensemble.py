"""Seed ensembles: stacked models compute their members, and an ensemble trains its members as
single runs would (float64, 1e-8), checkpoints in a single run's format, and refuses models it
cannot stack."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

from ablations.config import RunConfig
from ablations.train import CHECKPOINT, train_run, train_runs
from eqtheory.model.ensemble import EnsembleUnsupported, check_stackable, member_state, stack
from eqtheory.variants import VariantSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = RunConfig(
    length=8, layers=1, width=16, heads=2, train_size=128, test_size=64, train_steps=20,
    batch_size=16, warmup_steps=5, grad_clip=0.05, weight_decay=0.1,
    eval_stops=("steps=0", "steps=2"), checkpoint_every=100, eval_batch_size=64,
)
LABELS = {
    "baseline": VariantSpec(kind="baseline"),
    "eqt": VariantSpec(stop_train="steps=2", stop_eval="steps=2"),
}


@pytest.fixture
def float64():
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def models(spec: VariantSpec, count: int = 3) -> list[torch.nn.Module]:
    built = []
    for seed in range(count):
        torch.manual_seed(seed)
        built.append(build(spec, vocab=2, width=16, layers=2, heads=2, max_len=8))
    return built


@pytest.mark.parametrize("label", sorted(LABELS))
def test_a_stacked_model_computes_each_member_on_its_rows(label, float64):
    members = models(LABELS[label])
    tokens = torch.randint(0, 2, (3, 5, 8))  # (N, B, T)
    joint = stack(members)(tokens.flatten(0, 1), with_energy=True)
    for index, (member, rows) in enumerate(zip(members, tokens)):
        alone = member(rows, with_energy=True)
        assert torch.allclose(joint.logits.view(3, 5, 8, 2)[index], alone.logits, atol=1e-12)
        if alone.energy is not None:
            assert torch.allclose(joint.energy.view(3, 5)[index], alone.energy, atol=1e-12)
    for index, member in enumerate(members):
        state = member_state(stack(members), index)
        assert state.keys() == member.state_dict().keys()
        assert all(torch.equal(state[k], v) for k, v in member.state_dict().items())


@pytest.mark.parametrize(("spec", "reason"), [
    (VariantSpec(kind="rnn"), "'gru.weight_ih_l0' is not in a Linear, LayerNorm or Embedding"),
    (VariantSpec(energy="bidir+memory"), "updates its own state"),
    (VariantSpec(solver="gd(learn_step=true)"), "'erms.0.solver.log_step' is not in a Linear"),
])
def test_models_that_cannot_be_stacked_are_refused_naming_why(spec, reason):
    with pytest.raises(EnsembleUnsupported, match=reason):
        check_stackable(models(spec, 2))


def test_a_member_major_batch_is_required():
    joint = stack(models(LABELS["baseline"], 3))
    with pytest.raises(ValueError, match="member-major batch; got first axis 4"):
        joint(torch.zeros(4, 8, dtype=torch.long))


def assert_close(ours, theirs, where="metrics"):
    """Equal structure; numbers equal to 1e-8 (float64 runs), None where None."""
    if isinstance(theirs, dict):
        assert ours.keys() == theirs.keys(), where
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{where}.{key}")
    elif isinstance(theirs, list):
        assert len(ours) == len(theirs), where
        for index, (a, b) in enumerate(zip(ours, theirs)):
            assert_close(a, b, f"{where}[{index}]")
    elif isinstance(theirs, float):
        assert ours == pytest.approx(theirs, rel=1e-8, abs=1e-8, nan_ok=True), where
    else:
        assert ours == theirs, where


def final_weights(workdir) -> dict[str, torch.Tensor]:
    return torch.load(workdir / CHECKPOINT, weights_only=True)["model"]


@pytest.mark.parametrize("label", sorted(LABELS))
def test_twenty_steps_of_an_ensemble_of_three_equal_three_single_runs(label, float64, tmp_path):
    # a value-based rule too: the stacked model's solve stops each sample on its own
    rules = (*SMALL.eval_stops, "residual<0.025|steps=6")
    configs = [dataclasses.replace(SMALL, variant=LABELS[label], seed=s, eval_lengths=(8, 12),
                                   eval_stops=rules) for s in (0, 1, 2)]
    joint = train_runs(configs, workdirs=[tmp_path / f"e{c.seed}" for c in configs])
    for config, result in zip(configs, joint):
        alone = train_run(config, workdir=tmp_path / f"s{config.seed}")
        assert result.timings["ensemble"] == 3 and "ensemble" not in alone.timings
        for name, value in final_weights(tmp_path / f"s{config.seed}").items():
            ours = final_weights(tmp_path / f"e{config.seed}")[name]
            assert torch.allclose(ours, value, rtol=0, atol=1e-8), name
        assert_close(result.metrics, alone.metrics)  # every metric, diagnostics included
        if label == "eqt":
            steps = result.metrics["evals"][rules[-1]]["steps_hist"]
            assert len(steps) > 1, steps  # samples stopped at different steps
    weights = [final_weights(tmp_path / f"e{c.seed}")["backbone.head.weight"] for c in configs]
    assert not torch.allclose(weights[0], weights[1])  # the members are not one model thrice


def test_an_interrupted_ensemble_resumes_and_its_checkpoints_are_single_runs(tmp_path):
    configs = [dataclasses.replace(SMALL, variant=LABELS["eqt"], seed=s, checkpoint_every=10)
               for s in (0, 1)]

    def kill_after_checkpoint(message: str) -> None:
        if message.endswith(str(tmp_path / "e1" / CHECKPOINT)):
            raise KeyboardInterrupt

    workdirs = [tmp_path / "e0", tmp_path / "e1"]
    with pytest.raises(KeyboardInterrupt):
        train_runs(configs, workdirs=workdirs, log=kill_after_checkpoint)
    assert torch.load(workdirs[0] / CHECKPOINT, weights_only=True)["step"] == 10
    shutil.copytree(workdirs[1], tmp_path / "alone1")  # a member's checkpoint, resumed alone
    whole = [train_run(c, workdir=tmp_path / f"whole{c.seed}").metrics for c in configs]
    messages: list[str] = []
    resumed = train_runs(configs, workdirs=workdirs, log=messages.append)
    assert sum("resumed from" in m and "at step 10" in m for m in messages) == 2
    alone = train_run(configs[1], workdir=tmp_path / "alone1", log=messages.append).metrics
    assert messages[-1].startswith("checkpoint step 20") and "resumed from" in " ".join(messages)
    for ours, theirs in zip([*resumed, alone], [*whole, whole[1]]):
        ours = ours.metrics if hasattr(ours, "metrics") else ours
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-5)
        assert ours["evals"]["steps=2"]["acc"] == pytest.approx(theirs["evals"]["steps=2"]["acc"])


def test_the_runner_trains_seed_ensembles_with_the_same_rows(tmp_path):
    from ablations.run import main
    from ablations.store import Store

    tiny = ["train_steps=6", "train_size=64", "test_size=32", "batch_size=16", "width=16",
            "heads=2", "layers=1", "checkpoint_every=3", "eval_batch_size=32"]
    base = ["--lengths", "8", "--k-eval", "2", "--seeds", "0-2", "--no-report"]
    for item in tiny:
        base += ["--set", item]
    rows = {}
    ways = {"single": ["--ensemble", "1"], "auto": ["--ensemble", "auto"],
            "pool": ["--ensemble", "2", "--workers", "2"]}  # 2 workers, ensembles of 2 and 1
    for way, flags in ways.items():
        out = tmp_path / way
        assert main([*base, "--out", str(out), *flags]) == 0
        with Store(out / "results.sqlite") as store:
            rows[way] = {row.hash: row for row in store.rows()}
    assert len(rows["single"]) == 6  # 2 labels x 3 seeds
    assert any(row.timings.get("ensemble") == 2 for row in rows["pool"].values())
    for way, width in (("auto", [3]), ("pool", [1, 2])):
        assert rows[way].keys() == rows["single"].keys()
        for run_hash, alone in rows["single"].items():
            joint = rows[way][run_hash]
            assert joint.status == alone.status == "done" and joint.attempts == 1
            assert joint.timings.get("ensemble", 1) in width and "ensemble" not in alone.timings
            assert joint.metrics["train_loss"] == pytest.approx(
                alone.metrics["train_loss"], rel=1e-4)
            for rule, record in alone.metrics["evals"].items():
                assert joint.metrics["evals"][rule]["acc"] == pytest.approx(
                    record["acc"], abs=0.04)


def test_the_sweep_benchmark_times_every_label_three_ways():
    from benchmarks import sweep

    report = sweep.run(quick=True)
    assert [row["label"] for row in report.rows] == list(sweep.LABELS)
    for row in report.rows:
        assert row["sequential ms"] > 0 and row["stacked ms"] > 0 and row["vmap"] == "ok"
        assert row["stacked speed-up"] == pytest.approx(row["sequential ms"] / row["stacked ms"])


def test_auto_width_shares_the_free_memory_among_the_ensembles_that_run_at_once(monkeypatch):
    """``auto`` fits the members in half the free memory, split among ``share`` ensembles (the
    workers): 4 workers each get a quarter of what one gets, so together they still fit."""
    import os

    from ablations import executors, validate

    config = dataclasses.replace(SMALL, device="cpu")
    per_run = validate.estimate(config).peak_bytes
    pages = int(2 * 8 * per_run) // 4096 + 1  # free memory: room for 8 runs in its half
    monkeypatch.setattr(os, "sysconf", lambda name: pages if name == "SC_AVPHYS_PAGES" else 4096)
    assert executors.ensemble_width("auto", config, 10) == 8
    assert executors.ensemble_width("auto", config, 10, share=4) == 2
    assert executors.ensemble_width("auto", config, 10, share=16) == 1  # at least one
    assert executors.ensemble_width("3", config, 10, share=4) == 3  # a number is taken as is
