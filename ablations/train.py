r"""Train and evaluate one run, or a seed ensemble of runs: config, data, model, optimizer,
one loop, evaluation.

Loss (the paper's Eq. 18), per batch:

.. math:: \mathcal L = \mathrm{NLL}(y \mid z^*) + \beta\, \frac{1}{T} \overline{L_\theta(z^*)}

the mean cross-entropy over the task's scored positions of the readout of the refined state
``z*``, plus ``beta`` times the learned energy (no prior) **per token**: the energy is a sum over
the ``T`` positions, divided by ``T`` so that ``beta`` means the same at every length, then
averaged over the batch (and summed over ERMs for ``placement="every"``). ``aux_losses_only``
variants take the same loss on the un-refined state. A sequence that a refinement solve rejected
(status ``nonfinite`` or ``diverged``) is left out of both terms and of the gradient
(`masked_loss`), and counted (``metrics["masked_sequences"]``), instead of failing the run; a
step whose gradient still came out non-finite (a refinement step budget keeps a rejected sample's
last evaluation in the graph) sets that member's gradient to zero (``metrics["zeroed_gradients"]``).
The energies' context is the input bits
(``tokens``) and, during training only, a 15% ``mask`` drawn per step from a generator seeded
by ``(seed, step)``; the backbone always sees every bit (hiding bits would make the prefix parity
unknowable).

Everything is seeded from ``config.seed`` (data, initialisation, batch order, masks), so the
same config gives the same metrics on CPU, and a run resumed from its checkpoint ends exactly
where an uninterrupted one does. On CUDA: bf16 autocast (``config.amp``), compiled blocks
(``config.compile``). On any device the loop reads nothing back to the host except every
``log_every`` steps and at checkpoints (the non-finite-loss check runs there; it names the
first bad step) when the training rule is a step budget: scored positions are weighted, not
gathered, the rejected-sequence count stays on the device, AdamW is the fused kernel
(``tests/test_train_syncs.py`` counts the reads).

Runs that differ only in their seed can train as one **seed ensemble** (`train_runs`): their
models stacked into one (`eqtheory.model.ensemble`), each member fed its own batches and
masks, its gradient clipped on its own, checkpointed into its own directory in a single run's
format and evaluated with its own test set, so that each member's metrics are its single run's
(``tests/test_ensemble.py``: float64, 1e-8).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ablations import tasks
from ablations.config import RunConfig
from ablations.environment import resolve_device
from ablations.evaluate import at_least_float32, evaluate_members
from eqtheory import context as context_keys
from eqtheory.model.ensemble import EnsembleUnsupported, check_stackable, member_state, stack
from eqtheory.solution import Solution
from eqtheory.status import Status
from eqtheory.variants import build

CHECKPOINT = "checkpoint.pt"


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the message names the step."""


class CheckpointMismatch(RuntimeError):
    """``workdir/checkpoint.pt`` belongs to a different run (another config hash)."""


@dataclass
class RunResult:
    """``metrics``: JSON-serialisable (schema in `ablations.evaluate`); ``timings``:
    ``{"train_s", "eval_s", "total_s"}`` in seconds."""

    metrics: dict[str, Any]
    timings: dict[str, float]


def kept_samples(solutions: list[Solution], batch: int, device: torch.device) -> Tensor:
    """``[B]`` bool: sequences none of whose solves ended ``nonfinite`` or ``diverged`` (a
    per-position solve's statuses ``[B, T]`` are grouped by sequence); no host sync."""
    keep = torch.ones(batch, dtype=torch.bool, device=device)
    for solution in solutions:
        codes = solution.status.view(batch, -1)  # (B, 1) or (B, T)
        keep = keep & ~((codes == int(Status.NONFINITE)) | (codes == int(Status.DIVERGED))).any(1)
    return keep


def masked_loss(
    logits: Tensor, targets: Tensor, energy: Tensor | None, keep: Tensor, *, scored: Tensor,
    beta: float, length: int,
) -> tuple[Tensor, Tensor]:
    r"""``(nll, loss)`` over the kept sequences' scored tokens, per ensemble member.

    .. math:: \mathrm{nll} = \frac{\sum_{b,t} w_{bt}\, \mathrm{CE}_{bt}}
              {\max(1, \sum_{b,t} w_{bt})}, \quad
              w_{bt} = \mathrm{keep}_b \wedge \mathrm{scored}_t, \qquad
              \mathrm{loss} = \mathrm{nll} + \beta\, \frac{\sum_b \mathrm{keep}_b E_b / T}
              {\max(1, \sum_b \mathrm{keep}_b)}

    Args:
        logits: ``[*M, B, T, V]`` (``*M``: no axis for one run, ``[M]`` for an ensemble).
        targets: ``[*M, B, T]`` classes; ``energy``: ``[*M, B]`` learned energy, or None.
        keep: ``[*M, B]`` bool, the sequences in the loss (`kept_samples`).
        scored: ``[T]`` bool, the task's scored positions.
        beta, length: the energy's weight and the sequence length ``T`` (energy per token).

    Returns:
        ``nll, loss``: ``[*M]`` each. A rejected sequence contributes neither value nor gradient
        (its logits and energy are selected away before any arithmetic, the double-``where``
        pattern, so a NaN there stays out); positions are weighted, never gathered (no host
        sync); with every sequence kept this is the plain mean over scored tokens.
    """
    safe = torch.where(keep[..., None, None], logits, 0)  # a NaN row must not reach the softmax
    per_token = F.cross_entropy(
        safe.flatten(0, -2), targets.flatten(), reduction="none"
    ).view(targets.shape)  # (*M, B, T)
    weight = keep[..., None] & scored  # (*M, B, T)
    nll = torch.where(weight, per_token, 0).sum((-2, -1)) / weight.sum((-2, -1)).clamp(min=1)
    if energy is None:
        return nll, nll
    per_sequence = torch.where(keep, energy.to(nll.dtype) / length, 0)  # (*M, B)
    return nll, nll + beta * per_sequence.sum(-1) / keep.sum(-1).clamp(min=1)


def learning_rate(step: int, config: RunConfig) -> float:
    """Linear warm-up over ``warmup_steps``, then cosine decay to 0 at ``train_steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    span = max(1, config.train_steps - config.warmup_steps)
    progress = min(1.0, (step - config.warmup_steps) / span)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def gamma_at(step: int, config: RunConfig) -> float:
    """The prior's gamma: linear from ``gamma_start`` to ``gamma`` over the first
    ``anneal_fraction`` of training, then ``gamma`` (no annealing without ``gamma_start``)."""
    spec = config.variant
    if spec.gamma_start is None:
        return spec.gamma
    span = spec.anneal_fraction * config.train_steps
    fraction = 1.0 if span <= 0 else min(1.0, step / span)
    return spec.gamma_start + (spec.gamma - spec.gamma_start) * fraction


def _save(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a temporary file, then `os.replace`."""
    temporary = path.with_name(path.name + ".tmp")
    torch.save(state, temporary)
    os.replace(temporary, path)


CHECKPOINT_KEYS = {"config", "config_hash", "step", "model", "optimizer", "losses", "rng"}


def _set_aside(path: Path, kind: str, reason: str, log: Callable[[str], None]) -> Path:
    """Rename an unusable checkpoint to ``<name>.<kind>-<time>`` (never loaded again) and warn."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.{kind}-{stamp}")
    count = 1
    while aside.exists():
        count += 1
        aside = path.with_name(f"{path.name}.{kind}-{stamp}-{count}")
    os.replace(path, aside)
    message = f"{path} {reason}; moved to {aside}; training restarts from step 0"
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    log(message)
    return aside


def _refused(error: Exception) -> bool:
    """Whether `torch.load(weights_only=True)` refused a well-formed pickle that asks for code
    or objects beyond tensors and plain containers (rather than failing on garbage)."""
    text = str(error)
    return isinstance(error, pickle.UnpicklingError) and any(
        marker in text for marker in ("GLOBAL", "Unsupported class", "allowed global")
    )


def _check_state(state: object, config: RunConfig, model: torch.nn.Module) -> str | None:
    """What is wrong with a loaded checkpoint's contents (None: it can be loaded)."""
    if not isinstance(state, dict) or not CHECKPOINT_KEYS <= set(state):
        keys = sorted(map(str, state)) if isinstance(state, dict) else type(state).__name__
        return f"does not hold a training checkpoint (keys {keys})"
    ours = model.state_dict()
    theirs = state["model"]
    if not isinstance(theirs, dict) or set(theirs) != set(ours):
        return "holds weights of another model (parameter names differ)"
    for name, tensor in ours.items():
        if not isinstance(theirs[name], torch.Tensor) or theirs[name].shape != tensor.shape:
            return f"holds weights of another model (parameter {name!r})"
    losses, step, rng = state["losses"], state["step"], state["rng"]
    if not (isinstance(losses, torch.Tensor) and losses.shape == (config.train_steps, 2)):
        return "holds a loss record of another length"
    if not (isinstance(step, int) and 0 <= step <= config.train_steps):
        return f"holds step {step!r}, outside 0..{config.train_steps}"
    if not (isinstance(rng, dict) and isinstance(rng.get("torch"), torch.Tensor)
            and rng["torch"].dtype == torch.uint8):
        return "holds no random-generator state"
    return None


def _resume(
    path: Path,
    config: RunConfig,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    device: torch.device,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    """Load ``path`` into `model` and `optimizer`; returns the checkpoint, or None when there is
    none or it is unusable.

    An unreadable checkpoint (garbled, truncated, empty, wrong keys or shapes) and one that
    ``torch.load(weights_only=True)`` refuses are renamed aside (``checkpoint.pt.unreadable-*``
    / ``checkpoint.pt.refused-*``) with a warning and never loaded; the run starts from scratch,
    so neither costs it an attempt. A checkpoint of another run raises `CheckpointMismatch`.
    """
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as error:  # noqa: BLE001  (anything torch.load raises: the file is bad)
        first = (str(error).strip().splitlines() or [type(error).__name__])[-1]
        if _refused(error):
            _set_aside(path, "refused", f"was refused by torch.load(weights_only=True) and is "
                       f"not loaded ({first.strip()})", log)
        else:
            _set_aside(path, "unreadable", f"is unreadable ({type(error).__name__}: "
                       f"{first.strip()[:200]})", log)
        return None
    if isinstance(state, dict) and state.get("config_hash", config.hash()) != config.hash():
        raise CheckpointMismatch(
            f"{path} belongs to run {state['config_hash']}, not {config.hash()}; "
            "remove it or use another workdir"
        )
    problem = _check_state(state, config, model)
    if problem is not None:
        _set_aside(path, "unreadable", problem, log)
        return None
    fresh_model = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    fresh_optimizer = copy.deepcopy(optimizer.state_dict())
    try:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"].cpu())
    except Exception as error:  # noqa: BLE001  (an inconsistent file: start from scratch)
        model.load_state_dict(fresh_model)
        optimizer.load_state_dict(fresh_optimizer)
        _set_aside(path, "unreadable", f"could not be loaded ({type(error).__name__}: "
                   f"{str(error).strip()[:200]})", log)
        return None
    return state


def make_optimizer(
    model: torch.nn.Module, config: RunConfig, *, device: torch.device, members: int = 1
) -> torch.optim.AdamW:
    """AdamW (the fused kernel on CPU and CUDA: its step count is never read back to the host)
    with weight decay on each member's matrices only (a parameter with ``dim >= 2``
    per member; none on biases, LayerNorms, scalars). ``members > 1``: every parameter carries
    a leading member axis (`eqtheory.model.ensemble.stack`); AdamW acts elementwise, so each
    member's slice takes the update a single run would."""
    member_axes = 1 if members > 1 else 0
    decay = [p for p in model.parameters() if p.dim() - member_axes >= 2]
    no_decay = [p for p in model.parameters() if p.dim() - member_axes < 2]
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, fused=device.type in ("cpu", "cuda"),  # fused: no step-count reads
    )


def clip_per_member(parameters: list[Tensor], max_norm: float, members: int) -> Tensor:
    r"""Clip each ensemble member's gradient on its own:
    ``g_n <- g_n min(1, c / (||g_n|| + 1e-6))``, ``||g_n||`` the norm of member ``n``'s slice
    over all parameters (each parameter ``[M, ...]``; ``members == 1``: the whole gradient, as
    `torch.nn.utils.clip_grad_norm_` clips one model).

    A member whose gradient norm is not finite gets a zero gradient for this step instead: a
    refinement step budget (``steps=K``) reads nothing back to the host, so a sample whose
    evaluation turned non-finite leaves that step's evaluation in the graph (docs/reliability.md),
    and its NaN would otherwise reach every weight. Returns ``[M]`` bool, the members whose
    gradient was zeroed. No host sync, and a fixed number of kernels whatever the number of
    parameters: the gradients are gathered into one ``[M, N]`` matrix, clipped and zeroed there
    and copied back with one `torch._foreach_copy_` (private, as `torch.optim` uses it; it
    casts each part back to its gradient's dtype)."""
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.zeros(members, dtype=torch.bool,
                           device=parameters[0].device if parameters else None)
    flat = torch.cat([g.reshape(members, -1) for g in grads], dim=1)  # (M, N): row n, member n
    norms = torch.linalg.vector_norm(flat, dim=1)  # (M,)
    finite = norms.isfinite()
    scale = (max_norm / (norms + 1e-6)).clamp(max=1.0).to(flat.dtype)  # (M,)
    flat = torch.where(finite[:, None], flat * scale[:, None], 0)
    parts = flat.split([g.numel() // members for g in grads], dim=1)
    torch._foreach_copy_(grads, [part.view(g.shape) for part, g in zip(parts, grads)])
    return ~finite


def _stack_optimizer_states(states: list[dict[str, Any]]) -> dict[str, Any]:
    """Single runs' AdamW ``state_dict``\\ s (one parameter order) -> the ensemble's: moment
    tensors stacked on a member axis, the shared step count and groups from the first."""
    first = states[0]
    return {
        "param_groups": copy.deepcopy(first["param_groups"]),
        "state": {
            index: {key: torch.stack([s["state"][index][key] for s in states]) if value.dim()
                    else value.clone() for key, value in entry.items()}
            for index, entry in first["state"].items()
        },
    }


def _member_optimizer_state(state: dict[str, Any], index: int) -> dict[str, Any]:
    """Member ``index``'s AdamW ``state_dict`` (a single run's layout) from the ensemble's."""
    return {
        "param_groups": copy.deepcopy(state["param_groups"]),
        "state": {
            key: {name: value[index] if value.dim() else value for name, value in entry.items()}
            for key, entry in state["state"].items()
        },
    }


def draw_context(inputs: Tensor, seeds: list[int], step: int) -> dict[str, Tensor]:
    """Every context key that training draws (`eqtheory.context.drawn`) for optimizer step
    ``step``: member ``n``'s from a generator seeded by ``(seeds[n], key name, step)``, so a
    member's draws are its single run's. ``inputs: [M, B, T]``; returns ``[M*B, T]`` each."""
    def generator(seed: int, name: str) -> torch.Generator:
        return torch.Generator(device=inputs.device).manual_seed(
            tasks.derive_seed(seed, name, step)
        )

    return {
        key.name: torch.stack([key.draw(member, generator(seed, key.name))
                               for member, seed in zip(inputs, seeds)]).flatten(0, 1)
        for key in context_keys.drawn()
    }


def training_step(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    inputs: Tensor,
    targets: Tensor,
    context: dict[str, Tensor],
    *,
    scored: Tensor,
    beta: float,
    grad_clip: float,
    with_energy: bool,
    autocast: contextlib.AbstractContextManager | None = None,
) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
    """One optimizer step of ``M`` members (one model, ``M = 1``, or stacked ones, `stack`).

    Forward on the member-major batch ``inputs.flatten(0, 1)``, the `masked_loss` of each
    member, backward of their sum, `clip_per_member`, ``optimizer.step()``. No host sync when
    the model's solves have none (step budgets).

    Args:
        inputs, targets: ``[M, B, T]``; ``context``: the drawn context keys, ``[M*B, T]`` each
            (`draw_context`; empty without energies).
        scored: ``[T]`` bool; beta: the energy's weight; grad_clip: per-member norm cap.
        with_energy: add ``beta`` times the learned energy to the loss.
        autocast: the context of the forward pass and loss (bf16 on CUDA; None: none).

    Returns:
        ``loss, nll [M]`` (detached), ``keep [M, B]`` bool (`kept_samples`), the refined
        latents ``[M*B, T, d]`` per ERM (detached, for `EqT.update_memories`), and ``[M]`` bool:
        the members whose non-finite gradient was zeroed (`clip_per_member`).
    """
    members, batch, length = inputs.shape
    with autocast or contextlib.nullcontext():
        out = model(inputs.flatten(0, 1), context=context, with_energy=with_energy)
        keep = kept_samples(out.solutions, members * batch, inputs.device).view(members, batch)
        logits = at_least_float32(out.logits.view(members, batch, length, -1))  # (M, B, T, V)
        energy = None if out.energy is None else out.energy.view(members, batch)
        nll, loss = masked_loss(
            logits, targets, energy, keep, scored=scored, beta=beta, length=length
        )  # (M,) each
    optimizer.zero_grad(set_to_none=True)
    loss.sum().backward()  # member n's gradient is its own loss's
    zeroed = clip_per_member(list(model.parameters()), grad_clip, members)
    optimizer.step()
    return loss.detach(), nll.detach(), keep, [z.detach() for z in out.latents], zeroed


@dataclass
class _Member:
    """One run of a (possibly one-member) ensemble: its config, files, data and own model.

    ``batch_at(step)`` gives the batch of optimizer step ``step`` (``inputs, targets [B, T]``
    on the device) from the run's own seed; ``model`` is the run's own model (initialised from
    its seed; the ensemble's weights are copied back into it for evaluation); ``state`` the
    checkpoint it resumed from; ``result`` or ``failure`` how it ended."""

    config: RunConfig
    path: Path
    task: tasks.Task
    test_set: tasks.Batch
    batch_at: Callable[[int], tuple[Tensor, Tensor]]
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    state: dict[str, Any] | None = None
    result: RunResult | None = None
    failure: Exception | None = None


def _member(config: RunConfig, workdir: Path, device: torch.device) -> _Member:
    """Data, model and optimizer of one run, everything seeded from ``config.seed``."""
    workdir.mkdir(parents=True, exist_ok=True)
    length, seed = config.length, config.seed
    task = tasks.get(config.task)
    train_set, test_set = tasks.datasets(
        task, length=length, seed=seed,
        train_size=0 if config.fresh_sampling else config.train_size, test_size=config.test_size,
    )
    if not config.fresh_sampling and config.train_size < config.batch_size:
        raise ValueError(f"train_size {config.train_size} < batch_size {config.batch_size}")
    train_inputs, train_targets = train_set.inputs.to(device), train_set.targets.to(device)
    steps_per_epoch = max(1, config.train_size // config.batch_size)
    order: dict[int, torch.Tensor] = {}

    def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        if config.fresh_sampling:  # drawn on the device: no host-to-device copy per step
            gen = tasks.generator(seed, "fresh", step, device=device)
            fresh = task.sample(config.batch_size, length, gen)
            return fresh.inputs, fresh.targets
        epoch, index = divmod(step, steps_per_epoch)
        if epoch not in order:  # one permutation per epoch, moved once
            order.clear()
            shuffle = tasks.generator(seed, "order", epoch)
            perm = torch.randperm(config.train_size, generator=shuffle)
            order[epoch] = perm.to(device)
        rows = order[epoch][index * config.batch_size : (index + 1) * config.batch_size]
        return train_inputs[rows], train_targets[rows]

    torch.manual_seed(tasks.derive_seed(seed, "init"))
    model = build(
        config.variant, vocab=task.vocab, width=config.width, layers=config.layers,
        heads=config.heads, max_len=max((length, *config.eval_lengths)),
    ).to(device)
    return _Member(
        config=config, path=workdir / CHECKPOINT, task=task, test_set=test_set,
        batch_at=batch_at, model=model, optimizer=make_optimizer(model, config, device=device),
    )


def train_run(
    config: RunConfig,
    *,
    workdir: Path,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> RunResult:
    """Train ``config`` (resuming from ``workdir/checkpoint.pt`` when it is this run's) and
    evaluate it under every rule of ``config.eval_stops`` (baselines and aux-only: ``steps=0``),
    at its length and at each of ``config.eval_lengths`` (``metrics["evals_by_length"]``).

    Raises:
        TrainingDiverged: the loss became non-finite.
        CheckpointMismatch: the checkpoint in ``workdir`` has another config hash.
    """
    (result,) = train_runs([config], workdirs=[workdir], progress=progress, log=log)
    if isinstance(result, Exception):
        raise result
    return result


def train_runs(
    configs: Sequence[RunConfig],
    *,
    workdirs: Sequence[Path],
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> list[RunResult | Exception]:
    """Train runs that differ only in their seed as one **seed ensemble** (one run: `train_run`).

    The members' models are stacked (`eqtheory.model.ensemble.stack`) and trained as one: each
    step feeds every member its own batch (and mask) from its own seed, sums the members' losses
    (each member's gradient is its own), clips each member's gradient norm on its own
    (`clip_per_member`) and takes one AdamW step (elementwise, so per member; weight decay on
    each member's matrices). Each member checkpoints into its own ``workdir`` in a single run's
    format, and is evaluated alone with its own weights, so its metrics are a single run's up
    to float rounding. Falls back to training the runs one by one (logged) when the models
    cannot be stacked (`EnsembleUnsupported`: a GRU, a memory bank, a learned step size) or
    their checkpoints stand at different steps.

    Returns:
        Per run, in order: its `RunResult`, or the exception that ended it
        (`TrainingDiverged`, `CheckpointMismatch`); a diverged member stops alone.
    """
    log = log or (lambda message: None)
    if len(configs) != len(workdirs) or not configs:
        raise ValueError(f"{len(configs)} configs for {len(workdirs)} workdirs")
    if len({config.ensemble_key() for config in configs}) > 1:
        raise ValueError("an ensemble's runs may differ only in their seed")
    started = time.perf_counter()
    device = resolve_device(configs[0].device)
    members = [_member(c, Path(w), device) for c, w in zip(configs, workdirs)]
    for member in members:
        try:
            member.state = _resume(
                member.path, member.config, member.model, member.optimizer, device=device,
                log=log,
            )
        except CheckpointMismatch as error:
            member.failure = error
    alive = [m for m in members if m.failure is None]
    reason = _split_reason(alive)
    if reason is not None:
        log(f"ensemble of {len(alive)} trained one by one: {reason}")
        for member in alive:
            (result,) = train_runs([member.config], workdirs=[member.path.parent],
                                   progress=progress, log=log)
            member.failure = result if isinstance(result, Exception) else None
            member.result = None if isinstance(result, Exception) else result
    elif alive:
        _train(alive, device=device, started=started, progress=progress, log=log)
    return [m.failure if m.failure is not None else m.result for m in members]


def _split_reason(members: list[_Member]) -> str | None:
    """Why these members cannot train as one ensemble (None: they can)."""
    if len(members) < 2:
        return None
    steps = {0 if m.state is None else int(m.state["step"]) for m in members}
    if len(steps) > 1:
        return f"their checkpoints stand at different steps {sorted(steps)}"
    try:
        check_stackable([m.model for m in members])
    except EnsembleUnsupported as error:
        return str(error)
    return None


def _train(
    members: list[_Member], *, device: torch.device, started: float, progress: bool,
    log: Callable[[str], None],
) -> None:
    """Train ``members`` (all at one step) as one model, then evaluate each; sets each
    member's ``result`` or ``failure``."""
    count, config = len(members), members[0].config
    spec, length = config.variant, config.length
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.amp and device.type == "cuda" else contextlib.nullcontext()
    )
    scored = members[0].task.scored(length).to(device)  # (T,) bool
    if count == 1:
        model, optimizer = members[0].model, members[0].optimizer
    else:
        model = stack([m.model for m in members])
        optimizer = make_optimizer(model, config, device=device, members=count)
        if members[0].state is not None:
            optimizer.load_state_dict(_stack_optimizer_states(
                [m.optimizer.state_dict() for m in members]
            ))
    if config.compile:  # blocks and the refinement step, on CPU or CUDA (ablations.compile)
        from ablations.compile import compile_model  # imports torch._dynamo only when asked

        compile_model(model)
    with_energy = spec.kind == "eqt"
    names = [m.config.hash() for m in members]

    def say(index: int, message: str) -> None:
        log(message if count == 1 else f"[{names[index]}] {message}")

    # ---- resume: every member stands at the same step (`_split_reason`)
    step = last_checkpoint = 0
    losses = torch.zeros(count, config.train_steps, 2, device=device)  # (loss, nll) per step
    if members[0].state is not None:
        losses = torch.stack([m.state["losses"].to(device) for m in members])
        step = last_checkpoint = int(members[0].state["step"])
        for index, member in enumerate(members):
            say(index, f"resumed from {member.path} at step {step}")

    def checkpoint(done: int) -> None:
        nonlocal last_checkpoint
        last_checkpoint = done
        joint = optimizer.state_dict()
        for index, member in enumerate(members):
            if member.failure is not None:
                continue
            _save(member.path, {
                "config": member.config.as_dict(), "config_hash": names[index], "step": done,
                "model": model.state_dict() if count == 1 else member_state(model, index),
                "optimizer": joint if count == 1 else _member_optimizer_state(joint, index),
                "losses": losses[index].cpu(), "rng": {"torch": torch.get_rng_state()},
            })
            say(index, f"checkpoint step {done} -> {member.path}")

    # ---- the loop: no host sync between log steps
    log_every = max(1, min(100, config.train_steps // 10))
    first_bad = torch.full((count,), -1, dtype=torch.int64, device=device)  # per member
    masked = torch.zeros(count, dtype=torch.int64, device=device)
    zeroed = torch.zeros(count, dtype=torch.int64, device=device)

    def check_finite() -> bool:  # a host sync: only at log and checkpoint steps
        for index, bad in enumerate(first_bad.tolist()):
            if bad >= 0 and members[index].failure is None:
                members[index].failure = TrainingDiverged(
                    f"non-finite training loss at step {bad} (run {names[index]}, lr {config.lr})"
                )
        return any(m.failure is None for m in members)

    bar = tqdm(total=config.train_steps, initial=step, disable=not progress,
               desc="+".join(names))
    model.train()
    while step < config.train_steps:
        batches = [m.batch_at(step) for m in members]
        inputs = torch.stack([b[0] for b in batches])  # (M, B, T)
        targets = torch.stack([b[1] for b in batches])
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        model.set_gamma(gamma_at(step, config))
        context = draw_context(inputs, [m.config.seed for m in members], step) if with_energy \
            else {}
        loss, nll, keep, latents, zeroed_now = training_step(
            model, optimizer, inputs, targets, context, scored=scored, beta=spec.beta,
            grad_clip=config.grad_clip, with_energy=with_energy, autocast=autocast,
        )
        masked = masked + (~keep).sum(dim=1)  # sequences a solve rejected, left out of the loss
        zeroed = zeroed + zeroed_now  # steps whose non-finite gradient was set to zero
        model.update_memories(latents)
        losses[:, step] = torch.stack((loss, nll), dim=-1)
        bad_now = ~torch.isfinite(loss) & (first_bad < 0)
        first_bad = torch.where(bad_now, step, first_bad)
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == config.train_steps:
            if not check_finite():
                break
            values = losses[:, step - 1].tolist()
            bar.set_postfix(loss=f"{values[0][0]:.4f}", nll=f"{values[0][1]:.4f}")
            for index, (loss_value, nll_value) in enumerate(values):
                say(index, f"step {step}/{config.train_steps} loss {loss_value:.4f} "
                    f"nll {nll_value:.4f}")
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 \
                and step < config.train_steps:
            if not check_finite():
                break
            checkpoint(step)
    bar.close()
    if check_finite() and step != last_checkpoint:
        checkpoint(step)  # a kill during evaluation resumes straight to evaluation
    if device.type == "cuda":
        torch.cuda.synchronize()
    train_s = (time.perf_counter() - started) / count  # the ensemble's time, shared evenly
    masked_counts, zeroed_counts = masked.tolist(), zeroed.tolist()
    alive = [index for index, m in enumerate(members) if m.failure is None]
    for index in alive if count > 1 else ():
        members[index].model.load_state_dict(member_state(model, index))
    # evaluated together when every member trained to the end (else the survivors alone)
    groups = [alive] if len(alive) == count else [[index] for index in alive]
    for group in groups:
        joint = model if len(group) == count else members[group[0]].model
        results = _evaluate(joint, [members[i] for i in group], device=device,
                            autocast=autocast)
        for index, (metrics, eval_s) in zip(group, results):
            tail = losses[index, max(0, step - max(1, step // 10)) : step]  # the last 10%
            metrics = {
                "params": sum(p.numel() for p in members[index].model.parameters()),
                "train_loss": float(tail[:, 0].mean()) if step else None,
                "train_nll": float(tail[:, 1].mean()) if step else None,
                "steps": step,
                "masked_sequences": masked_counts[index],  # this invocation's steps only
                "zeroed_gradients": zeroed_counts[index],  # likewise
                **metrics,
            }
            timings = {"train_s": train_s, "eval_s": eval_s, "total_s": train_s + eval_s}
            if count > 1:
                timings["ensemble"] = float(count)
            members[index].result = RunResult(metrics=metrics, timings=timings)


def _evaluate(
    model: torch.nn.Module, members: list[_Member], *, device: torch.device,
    autocast: contextlib.AbstractContextManager,
) -> list[tuple[dict[str, Any], float]]:
    """Evaluate trained members together through ``model`` (their stacked model, or the one
    member's own; `ablations.evaluate.evaluate_members`): per member its ``evals`` (and
    ``evals_by_length``) metrics and its share of the evaluation's seconds."""
    started = time.perf_counter()
    config, task = members[0].config, members[0].task
    own = [m.model for m in members]
    configs = [m.config for m in members]
    for each in {id(m): m for m in (model, *own)}.values():
        each.set_gamma(config.variant.gamma)

    def evaluate(tests: list[tasks.Batch]) -> list[dict[str, Any]]:
        return evaluate_members(model, own, tests, task, configs, device=device,
                                autocast=autocast)

    metrics = [{"evals": evals} for evals in evaluate([m.test_set for m in members])]
    for other in config.eval_lengths:  # length generalisation: fresh test sets of each length
        by_length = [metrics[n]["evals"] for n in range(len(members))] \
            if other == config.length else evaluate([tasks.datasets(
                task, length=other, seed=m.config.seed, train_size=0,
                test_size=config.test_size,
            )[1] for m in members])
        for record, evals in zip(metrics, by_length):
            record.setdefault("evals_by_length", {})[str(other)] = evals
    if device.type == "cuda":
        torch.cuda.synchronize()
    share = (time.perf_counter() - started) / len(members)
    return [(record, share) for record in metrics]
