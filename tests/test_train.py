"""Training runs end to end: metrics schema, determinism, checkpoint/resume, errors; FLOPs."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from ablations import flops
from ablations.config import RunConfig
from ablations.train import (
    CHECKPOINT,
    CheckpointMismatch,
    TrainingDiverged,
    gamma_at,
    learning_rate,
    train_run,
)
from eqtheory.variants import VariantSpec, build

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = RunConfig(
    variant=VariantSpec(stop_train="steps=2"),
    length=8, layers=1, width=16, heads=2, train_size=256, test_size=128, train_steps=30,
    batch_size=32, warmup_steps=5, eval_stops=("steps=0", "steps=8"), checkpoint_every=100,
)
EVAL_KEYS = {
    "acc", "acc_final", "acc_by_position", "acc_by_difficulty", "steps_mean", "steps_hist",
    "status_counts", "fevals_per_token", "flops_per_token", "trace",
}


def finite_numbers(value):
    if isinstance(value, dict):
        return all(finite_numbers(v) for v in value.values())
    if isinstance(value, list):
        return all(finite_numbers(v) for v in value)
    return isinstance(value, (int, str)) or (isinstance(value, float) and math.isfinite(value))


def test_eqt_smoke_run_produces_the_metrics_schema(tmp_path):
    result = train_run(TINY, workdir=tmp_path)
    metrics = result.metrics
    json.dumps(metrics, allow_nan=False)
    assert finite_numbers(metrics)
    assert set(metrics) == {"params", "train_loss", "train_nll", "steps", "masked_sequences",
                            "zeroed_gradients", "evals"}
    assert metrics["steps"] == 30 and metrics["params"] > 0 and metrics["masked_sequences"] == 0
    assert metrics["zeroed_gradients"] == 0
    assert set(metrics["evals"]) == {"steps=0", "steps=8"}
    k0, k8 = metrics["evals"]["steps=0"], metrics["evals"]["steps=8"]
    for record in (k0, k8):
        assert set(record) == EVAL_KEYS | {"diagnostics"}  # an EqT run: ablations.evaluate
        assert set(record["acc_by_position"]) == {"q1", "q2", "q3", "q4"}
        assert set(record["acc_by_difficulty"]) == {"hard", "medium", "easy"}
        assert 0 <= record["acc"] <= 1
    # per position: 128 test sequences x 8 positions
    assert k0["steps_hist"] == {"0": 1024} and k8["steps_hist"] == {"8": 1024}
    assert k8["fevals_per_token"] == 9.0 and k0["fevals_per_token"] == 1.0
    assert len(k8["trace"]["residual"]) == 8 and len(k8["trace"]["energy"]) == 9
    assert k8["flops_per_token"] > k0["flops_per_token"]
    assert set(result.timings) == {"train_s", "eval_s", "total_s"}
    assert metrics["train_loss"] > metrics["train_nll"]  # + beta * energy


def test_the_same_seed_gives_identical_metrics_and_another_seed_does_not(tmp_path):
    config = dataclasses.replace(TINY, train_steps=15)
    first = train_run(config, workdir=tmp_path / "a").metrics
    second = train_run(config, workdir=tmp_path / "b").metrics
    other = train_run(dataclasses.replace(config, seed=1), workdir=tmp_path / "c").metrics
    assert first == second
    assert first != other


def test_a_killed_run_resumes_to_the_same_result(tmp_path):
    config = dataclasses.replace(
        TINY, variant=VariantSpec(energy="mask+0.1*memory", gamma_start=5.0),
        train_steps=20, checkpoint_every=10, train_size=128,  # 4 steps per epoch
    )
    whole = train_run(config, workdir=tmp_path / "whole").metrics

    class Killed(Exception):
        pass

    def kill_after_checkpoint(message: str) -> None:
        if message.startswith("checkpoint step 10"):
            raise Killed

    with pytest.raises(Killed):
        train_run(config, workdir=tmp_path / "split", log=kill_after_checkpoint)
    state = torch.load(tmp_path / "split" / CHECKPOINT, weights_only=True)
    assert state["step"] == 10 and state["config_hash"] == config.hash()
    messages: list[str] = []
    resumed = train_run(config, workdir=tmp_path / "split", log=messages.append).metrics
    assert any(m.startswith("resumed from") and m.endswith("at step 10") for m in messages)
    assert resumed == whole


def test_a_checkpoint_of_another_run_is_refused(tmp_path):
    config = dataclasses.replace(TINY, variant=VariantSpec(kind="baseline"), train_steps=2)
    train_run(config, workdir=tmp_path)
    assert (tmp_path / CHECKPOINT).exists()  # the final checkpoint stays for the runner
    with pytest.raises(CheckpointMismatch, match="belongs to run"):
        train_run(dataclasses.replace(config, seed=5), workdir=tmp_path)
    # an execution-only change (checkpoint interval) is the same run: it resumes
    again = train_run(dataclasses.replace(config, checkpoint_every=7), workdir=tmp_path)
    assert again.metrics == train_run(config, workdir=tmp_path / "fresh").metrics


def test_baseline_and_aux_only_runs_evaluate_once(tmp_path):
    for variant in (VariantSpec(kind="baseline"), VariantSpec(aux_losses_only=True)):
        config = dataclasses.replace(TINY, variant=variant, train_steps=5)
        evals = train_run(config, workdir=tmp_path / variant.hash()).metrics["evals"]
        assert list(evals) == ["steps=0"]
        assert evals["steps=0"]["fevals_per_token"] == 0.0
        assert evals["steps=0"]["steps_hist"] == {}


def test_parity_final_scores_the_final_bit(tmp_path):
    config = dataclasses.replace(
        TINY, task="parity_final", variant=VariantSpec(kind="baseline"), train_steps=3
    )
    record = train_run(config, workdir=tmp_path).metrics["evals"]["steps=0"]
    assert record["acc"] == record["acc_final"]
    assert record["acc_by_position"]["q1"] is None and record["acc_by_position"]["q4"] is not None


def test_a_nonfinite_loss_stops_the_run_naming_the_step(tmp_path):
    # lr=inf is refused by RunConfig (issue 9); a finite 1e30 overflows the loss at step 1
    config = dataclasses.replace(TINY, variant=VariantSpec(kind="baseline"), lr=1e30)
    with pytest.raises(TrainingDiverged, match="at step 1 "):
        train_run(config, workdir=tmp_path)
    assert not (tmp_path / CHECKPOINT).exists()


def test_schedules():
    config = dataclasses.replace(
        TINY, lr=1.0, warmup_steps=10, train_steps=110,
        variant=VariantSpec(gamma=1.0, gamma_start=10.0, anneal_fraction=0.5),
    )
    assert learning_rate(0, config) == pytest.approx(0.1)
    assert learning_rate(9, config) == pytest.approx(1.0)
    assert learning_rate(60, config) == pytest.approx(0.5)
    assert learning_rate(110, config) == pytest.approx(0.0, abs=1e-12)
    assert gamma_at(0, config) == 10.0
    assert gamma_at(55, config) == pytest.approx(1.0) and gamma_at(100, config) == 1.0
    assert gamma_at(27.5, config) == pytest.approx(5.5)


def test_flops_and_the_compute_matched_depth():
    config = dataclasses.replace(TINY, layers=2, width=32, heads=4, length=16)
    eqt = build(config.variant, width=32, layers=2, heads=4, max_len=16)
    base = build(VariantSpec(kind="baseline"), width=32, layers=2, heads=4, max_len=16)
    assert flops.flops_per_token(base, 16, 0) == flops.backbone_flops(base, 16)
    assert flops.energy_params(eqt) > 0 and flops.energy_params(base) == 0
    depths = [flops.matched_layers(config, k) for k in (0, 2, 8, 32)]
    assert depths == sorted(depths) and depths[0] > config.layers
    size = {"width": 32, "heads": 4, "max_len": 16}
    deeper = build(VariantSpec(kind="baseline"), layers=depths[2], **size)
    shallower = build(VariantSpec(kind="baseline"), layers=depths[2] - 1, **size)
    target = flops.flops_per_token(eqt, 16, 9)
    assert flops.backbone_flops(deeper, 16) >= target > flops.backbone_flops(shallower, 16)
    assert flops.paper_eq9(main_params=10, energy_params=3, width=4, k=2) == 20 + 2 * 10


def test_flop_count_matches_the_profiler_on_matrix_products():
    """`flops_per_token` counts what refinement spends: the difference between a steps=8 and a
    steps=0 forward, in matrix-product FLOPs measured by torch.profiler, is 8 evaluations."""
    from torch.profiler import ProfilerActivity, profile

    batch, length = 2, 16
    eqt = build(TINY.variant, width=32, layers=2, heads=4, max_len=length).eval()
    tokens = torch.randint(0, 2, (batch, length), generator=torch.Generator().manual_seed(0))

    def measured(k: int) -> float:
        with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof, torch.no_grad():
            eqt(tokens, stop=f"steps={k}", with_energy=False)
        return sum(event.flops for event in prof.key_averages()) / (batch * length)

    per_eval = (measured(8) - measured(0)) / 8
    counted = (flops.flops_per_token(eqt, length, 9) - flops.flops_per_token(eqt, length, 1)) / 8
    assert counted == pytest.approx(per_eval, rel=0.1)
