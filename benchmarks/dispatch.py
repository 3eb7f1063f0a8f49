"""Operators dispatched per training step and per evaluation: the cost of a launch-bound step.

On an H200 (docs/performance.md section 9) the paper-size baseline's training step took 19-21 ms
at every length from 8 to 256 while its tokens grew 32-fold: the step's time is the host
dispatching operators one by one, not the device's arithmetic. How many operators a step
dispatches does not depend on the device, the width, the batch or the length, so this CPU
benchmark counts them, for each label of the ``paper`` preset (its 6 layers and rules, at a
small width and batch), one run and a seed ensemble of 5:

- ``ops``: every ``aten::`` operator the profiler records in one step (after two warm-up
  steps), nested ones included;
- ``kernels``: those that compute (neither a view, an allocation nor a metadata query) and
  call no other operator that does: on a GPU each is about one kernel launch.

The ``per-parameter clip`` rows run the same step with the gradient clipping that
`ablations.train.clip_per_member` replaced (`clip_grad_norm_` with its multi-tensor norm, then
one ``where`` and one ``copy_`` per parameter to zero a non-finite gradient), for comparison.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch.profiler import ProfilerActivity, profile

from ablations import tasks, train
from ablations.config import RunConfig
from ablations.evaluate import evaluate_all
from benchmarks.common import Report, pin_threads
from benchmarks.training_setup import planned_runs, training_setup
from eqtheory.variants import build

NO_KERNEL = frozenset({
    "aten::view", "aten::as_strided", "aten::transpose", "aten::t", "aten::reshape",
    "aten::_reshape_alias", "aten::expand", "aten::detach", "aten::resolve_conj",
    "aten::resolve_neg", "aten::unsqueeze", "aten::squeeze", "aten::slice", "aten::select",
    "aten::narrow", "aten::permute", "aten::alias", "aten::split", "aten::split_with_sizes",
    "aten::unbind", "aten::chunk", "aten::flatten", "aten::unflatten", "aten::view_as",
    "aten::empty", "aten::empty_strided", "aten::empty_like", "aten::lift_fresh",
    "aten::is_nonzero", "aten::result_type", "aten::size", "aten::stride", "aten::numel",
    "aten::contiguous", "aten::to", "aten::_to_copy", "aten::type_as", "aten::_unsafe_view",
    "aten::matmul", "aten::linear", "aten::dropout", "aten::scalar_tensor", "aten::item",
    "aten::_local_scalar_dense",
})
"""Operators that launch nothing themselves (views, allocations, metadata, and composites
whose work is counted in the operators they call)."""
FOREACH = "aten::_foreach_"
EVAL_RULE = "steps=8"
SITES = (("eqtheory/energies/", "energy terms (forward)"),
         ("eqtheory/model/", "backbone and heads (forward)"),
         ("eqtheory/", "refinement loop and solver"))
"""Where a kernel was dispatched from: the first of these folders on its Python stack."""
WIDTH, BATCH, LENGTH, MEMBERS = 32, 4, 16, 5
QUICK = dict(layers=1, members=2)


def _counts(step: Callable[[], Any]) -> dict[str, int]:
    """``ops`` and ``kernels`` (see the module docstring) of one call of `step`."""
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    events = [e for e in prof.events() if e.name.startswith("aten::")]
    return {"ops": len(events), "kernels": len(_kernels(events))}


def _kernels(events: list[Any]) -> list[Any]:
    """The profiler events among `events` that count as kernels (module docstring)."""
    return [e for e in events if _computes(e) and not _under_foreach(e) and (
        e.name.startswith(FOREACH) or not any(map(_computes_within, e.cpu_children)))]




def kernels_by_site(step: Callable[[], Any]) -> dict[str, int]:
    """The kernels of one call of `step` by where they were dispatched: the autograd engine
    (the energy's gradients inside the refinement loop and the training backward), else
    `SITES` (the nearest toolkit frame on the stack), else anything else (the loss, the clip,
    the optimizer)."""
    verbose = torch._C._profiler._ExperimentalConfig(verbose=True)  # Python frames on events
    with profile(activities=[ProfilerActivity.CPU], with_stack=True,
                 experimental_config=verbose) as prof:
        step()
    counts: dict[str, int] = {}
    for event in _kernels([e for e in prof.events() if e.name.startswith("aten::")]):
        site, frames, parent = None, [], event
        while parent is not None:
            if parent.name.startswith("autograd::engine"):
                site = "autograd engine (gradients in the loop, the backward pass)"
                break
            frames, parent = frames or parent.stack or [], parent.cpu_parent
        for frame in frames if site is None else ():
            site = next((name for folder, name in SITES if folder in frame), None)
            if site is not None:
                break
        site = site or "other (loss, optimizer)"
        counts[site] = counts.get(site, 0) + 1
    return counts


def _computes(event: Any) -> bool:
    """Whether `event` is an aten operator that computes (not in `NO_KERNEL`)."""
    return event.name.startswith("aten::") and event.name not in NO_KERNEL


def _computes_within(event: Any) -> bool:
    """Whether `event` or an operator it calls computes (see `NO_KERNEL`)."""
    return _computes(event) or any(map(_computes_within, event.cpu_children))


def _under_foreach(event: Any) -> bool:
    """Whether `event` runs inside a multi-tensor operator (one launch on a GPU; on CPU it
    loops over its tensors, and the loop's operators are not counted)."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(FOREACH):
            return True
        parent = parent.cpu_parent
    return False


def per_parameter_clip(parameters: list[torch.Tensor], max_norm: float, members: int
                       ) -> torch.Tensor:
    """The reference: `torch.nn.utils.clip_grad_norm_` (multi-tensor norm, as on CUDA) and one
    ``where`` + ``copy_`` per parameter (one model; ensembles per member the same way)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if members == 1:
        norms = torch.nn.utils.clip_grad_norm_(parameters, max_norm, foreach=True).view(1)
        finite = norms.isfinite()
        for grad in grads:
            grad.copy_(torch.where(finite.view(()), grad, 0))
        return ~finite
    norms = torch.stack([g.flatten(1).norm(dim=1) for g in grads]).norm(dim=0)  # (M,)
    finite = norms.isfinite()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0)
    for grad in grads:
        shape = (-1,) + (1,) * (grad.dim() - 1)
        grad.copy_(torch.where(finite.view(shape), grad * scale.view(shape), 0))
    return ~finite


@contextlib.contextmanager
def _clip(function: Callable[..., torch.Tensor]) -> Iterator[None]:
    """`ablations.train.clip_per_member` replaced by `function` inside the block."""
    original = train.clip_per_member
    train.clip_per_member = function
    try:
        yield
    finally:
        train.clip_per_member = original


def _step(config: RunConfig, members: int) -> Callable[[], Any]:
    """One `ablations.train.training_step` of `config` (``members`` stacked seeds), on CPU;
    `ablations.train.clip_per_member` looked up at each call (the reference rows swap it)."""
    return training_setup(config, torch.device("cpu"), members=members).stepper()


def _evaluation(config: RunConfig) -> tuple[str, Callable[[], Any]]:
    """`ablations.evaluate.evaluate_all` of one model on one batch under `EVAL_RULE` (the
    run's first rule where it has no such rule)."""
    task = tasks.get(config.task)
    torch.manual_seed(0)
    model = build(config.variant, vocab=task.vocab, width=config.width, layers=config.layers,
                  heads=config.heads, max_len=config.length).eval()
    _, test_set = tasks.datasets(task, length=config.length, seed=0, train_size=0,
                                 test_size=config.batch_size)
    rule = next((r for r in config.eval_stops if r == EVAL_RULE), config.eval_stops[0])
    config = dataclasses.replace(config, eval_stops=(rule,), eval_lengths=(),
                                 eval_batch_size=config.batch_size, test_size=config.batch_size)
    return rule, lambda: evaluate_all(model, test_set, task, config, device=torch.device("cpu"),
                                      autocast=contextlib.nullcontext())


def _configs(quick: bool) -> list[tuple[str, RunConfig]]:
    """The ``paper`` preset's runs (seed 0, T = `LENGTH`), planned at its size (the
    compute-matched control's depth depends on the width), then run at width `WIDTH`, batch
    `BATCH`, 2 heads (quick: 1 layer, and 2 for the compute-matched control)."""
    small = dict(width=WIDTH, batch_size=BATCH, heads=2, test_size=BATCH,
                 eval_batch_size=BATCH, train_size=BATCH)
    return [(label, dataclasses.replace(config, **small, **(
        {"layers": QUICK["layers"] + (label == "compute-matched")} if quick else {})))
            for label, config in planned_runs("cpu", (LENGTH,))]


def run(*, quick: bool = False) -> Report:
    """The table of the module docstring (quick: 1-2 layers, ensembles of 2)."""
    pin_threads()
    members = QUICK["members"] if quick else MEMBERS
    report = Report("dispatch", ["label", "layers", "measure", "members", "ops", "kernels",
                                 "kernels per member"])
    for label, config in _configs(quick):
        rows = [("training step", 1, None), ("training step", members, None),
                ("training step, per-parameter clip", 1, per_parameter_clip),
                ("training step, per-parameter clip", members, per_parameter_clip)]
        for measure, width, clip in rows:
            step = _step(config, width)
            with _clip(clip) if clip is not None else contextlib.nullcontext():
                step()
                step()  # warm-up: optimizer state, lazy inits
                counts = _counts(step)
            report.rows.append({"label": label, "layers": config.layers, "measure": measure,
                                "members": width, **counts,
                                "kernels per member": counts["kernels"] / width})
        rule, evaluate = _evaluation(config)
        evaluate()
        counts = _counts(evaluate)
        report.rows.append({"label": label, "layers": config.layers,
                            "measure": f"evaluation ({rule})", "members": 1,
                            **counts, "kernels per member": counts["kernels"]})
    eqt = next(config for label, config in _configs(quick) if label == "eqt")
    step = _step(eqt, 1)
    step()
    step()
    sites = sorted(kernels_by_site(step).items(), key=lambda item: -item[1])
    report.notes.append("EqT's training step (one run), kernels by where they were dispatched "
                        "(the nearest toolkit frame on the stack): "
                        + ", ".join(f"{name} {count}" for name, count in sites) + ".")
    report.notes += [
        f"The paper preset's runs (layers as planned at its width) at T = {LENGTH}, width "
        f"{WIDTH}, batch {BATCH}, 2 heads{' (quick: 1-2 layers)' if quick else ''}, CPU, "
        "float32; one step profiled after two "
        "warm-up steps (torch.profiler, CPU activity). The counts do not depend on width, "
        "batch or length.",
        "kernels: aten operators that compute (not views, allocations or metadata: "
        "benchmarks.dispatch.NO_KERNEL) and call no other operator that does; a multi-tensor "
        "operator (_foreach_*) counts once, as it launches on a GPU, though on CPU it loops "
        "over its tensors; so does AdamW's fused step (one operator on both).",
        f"evaluation: ablations.evaluate.evaluate_all on one batch under {EVAL_RULE} (a "
        "baseline: its first rule), accuracy against K and the diagnostics included.",
    ]
    return report
