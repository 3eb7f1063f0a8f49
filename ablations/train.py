r"""Train and evaluate one run: config, data, model, optimizer, one loop, evaluation.

Loss (the paper's Eq. 18), per batch:

.. math:: \mathcal L = \mathrm{NLL}(y \mid z^*) + \beta\, \frac{1}{T} \overline{L_\theta(z^*)}

the mean cross-entropy over the task's scored positions of the readout of the refined state
``z*``, plus ``beta`` times the learned energy (no prior) **per token**: the energy is a sum over
the ``T`` positions, divided by ``T`` so that ``beta`` means the same at every length, then
averaged over the batch (and summed over ERMs for ``placement="every"``). ``aux_losses_only``
variants take the same loss on the un-refined state. A sequence that a refinement solve rejected
(status ``nonfinite`` or ``diverged``) is left out of both terms and of the gradient
(`masked_loss`), and counted (``metrics["masked_sequences"]``), instead of failing the run.
The energies' context is the input bits
(``tokens``) and, during training only, a 15% ``mask`` drawn per step from a generator seeded
by ``(seed, step)``; the backbone always sees every bit (hiding bits would make the prefix parity
unknowable).

Everything is seeded from ``config.seed`` (data, initialisation, batch order, masks), so the
same config gives the same metrics on CPU, and a run resumed from its checkpoint ends exactly
where an uninterrupted one does. On CUDA: bf16 autocast (``config.amp``), compiled blocks
(``config.compile``), and no host syncs in the loop except every ``log_every`` steps and at
checkpoints (the non-finite-loss check runs there; it names the first bad step).
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import pickle
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F
from tqdm import tqdm

from ablations import tasks
from ablations.config import RunConfig
from ablations.evaluate import evaluate_all
from eqtheory.energies.mask import random_mask
from eqtheory.solution import Solution
from eqtheory.status import Status
from eqtheory.variants import build

CHECKPOINT = "checkpoint.pt"
MASK_RATE = 0.15  # the paper's masked-reconstruction rate


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


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA if available), ``cpu`` or ``cuda``."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but CUDA is not available")
    return torch.device(name)


def kept_samples(solutions: list[Solution], batch: int, device: torch.device) -> Tensor:
    """``[B]`` bool: sequences none of whose solves ended ``nonfinite`` or ``diverged`` (a
    per-position solve's statuses ``[B*T]`` are grouped by sequence); no host sync."""
    keep = torch.ones(batch, dtype=torch.bool, device=device)
    for solution in solutions:
        codes = solution.status.view(batch, -1)  # (B, 1) or (B, T)
        keep = keep & ~((codes == int(Status.NONFINITE)) | (codes == int(Status.DIVERGED))).any(1)
    return keep


def masked_loss(
    logits: Tensor, targets: Tensor, energy: Tensor | None, keep: Tensor, *, beta: float,
    length: int,
) -> tuple[Tensor, Tensor]:
    """``(nll, loss)`` over the kept sequences only: the mean cross-entropy of ``logits
    [B, S, V]`` against ``targets [B, S]`` over the kept sequences' tokens, plus ``beta`` times
    the kept sequences' mean energy per token (``energy: [B]`` or None). A rejected sequence
    contributes neither value nor gradient (its logits and energy are selected away before any
    arithmetic, the double-``where`` pattern, so a NaN there stays out); with every sequence kept
    this is the plain batch mean."""
    safe = torch.where(keep.view(-1, 1, 1), logits, 0)  # a NaN row must not reach the softmax
    per_token = F.cross_entropy(safe.flatten(0, 1), targets.flatten(), reduction="none")
    tokens = keep.repeat_interleave(targets.shape[1])  # (B*S,)
    nll = torch.where(tokens, per_token, 0).sum() / tokens.sum().clamp(min=1)
    if energy is None:
        return nll, nll
    per_sequence = torch.where(keep, energy.float() / length, 0)
    return nll, nll + beta * per_sequence.sum() / keep.sum().clamp(min=1)


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
    started = time.perf_counter()
    log = log or (lambda message: None)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if config.amp and device.type == "cuda" else contextlib.nullcontext()
    )
    spec, length, seed = config.variant, config.length, config.seed

    # ---- data: fixed train/test sets from the seed (or fresh batches each step)
    task = tasks.get(config.task)
    train_set, test_set = tasks.datasets(
        task, length=length, seed=seed,
        train_size=0 if config.fresh_sampling else config.train_size, test_size=config.test_size,
    )
    if not config.fresh_sampling and config.train_size < config.batch_size:
        raise ValueError(f"train_size {config.train_size} < batch_size {config.batch_size}")
    scored = task.scored(length).to(device)  # (T,) bool
    train_inputs, train_targets = train_set.inputs.to(device), train_set.targets.to(device)
    steps_per_epoch = max(1, config.train_size // config.batch_size)
    order: dict[int, torch.Tensor] = {}

    def batch_at(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch of optimizer step ``step``: ``inputs, targets [batch, T]`` on the device."""
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

    # ---- model and optimizer (AdamW; no weight decay on biases, LayerNorms, scalars)
    torch.manual_seed(tasks.derive_seed(seed, "init"))
    model = build(
        spec, vocab=task.vocab, width=config.width, layers=config.layers, heads=config.heads,
        max_len=max((length, *config.eval_lengths)),
    ).to(device)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, fused=device.type == "cuda",
    )
    if config.compile and device.type == "cuda":
        for block in model.backbone.blocks:
            block.compile()
    with_energy = spec.kind == "eqt"

    # ---- resume
    step = last_checkpoint = 0
    losses = torch.zeros(config.train_steps, 2, device=device)  # (loss, nll) per step
    path = workdir / CHECKPOINT
    state = _resume(path, config, model, optimizer, device=device, log=log)
    if state is not None:
        losses = state["losses"].to(device)
        step = last_checkpoint = int(state["step"])
        log(f"resumed from {path} at step {step}")

    def checkpoint(done: int) -> None:
        nonlocal last_checkpoint
        last_checkpoint = done
        _save(path, {
            "config": config.as_dict(), "config_hash": config.hash(), "step": done,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "losses": losses.cpu(), "rng": {"torch": torch.get_rng_state()},
        })
        log(f"checkpoint step {done} -> {path}")

    # ---- the loop
    log_every = max(1, min(100, config.train_steps // 10))
    first_bad = torch.full((), -1, dtype=torch.int64, device=device)  # first non-finite step
    masked = torch.zeros((), dtype=torch.int64, device=device)

    def check_finite() -> None:  # a host sync: only at log and checkpoint steps
        bad = int(first_bad)
        if bad >= 0:
            raise TrainingDiverged(
                f"non-finite training loss at step {bad} (run {config.hash()}, lr {config.lr})"
            )

    bar = tqdm(total=config.train_steps, initial=step, disable=not progress, desc=config.hash())
    model.train()
    while step < config.train_steps:
        inputs, targets = batch_at(step)  # (B, T) each
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config)
        model.set_gamma(gamma_at(step, config))
        mask = None
        if with_energy:  # the mask term's positions, reproducible per step
            gen = torch.Generator(device=device).manual_seed(tasks.derive_seed(seed, "mask", step))
            mask = random_mask(inputs, MASK_RATE, generator=gen)
        with autocast:
            out = model(inputs, mask=mask, with_energy=with_energy)
            keep = kept_samples(out.solutions, inputs.shape[0], device)  # (B,) bool
            logits = out.logits[:, scored].float()  # (B, S, V), S scored positions
            nll, loss = masked_loss(
                logits, targets[:, scored], out.energy, keep, beta=spec.beta, length=length
            )
        masked = masked + (~keep).sum()  # sequences a solve rejected, left out of the loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimizer.step()
        model.update_memories([z.detach() for z in out.latents])
        losses[step] = torch.stack((loss.detach(), nll.detach()))
        bad_now = ~torch.isfinite(loss.detach()) & (first_bad < 0)
        first_bad = torch.where(bad_now, torch.full_like(first_bad, step), first_bad)
        step += 1
        bar.update(1)
        if step % log_every == 0 or step == config.train_steps:
            check_finite()
            loss_value, nll_value = losses[step - 1].tolist()
            bar.set_postfix(loss=f"{loss_value:.4f}", nll=f"{nll_value:.4f}")
            log(f"step {step}/{config.train_steps} loss {loss_value:.4f} nll {nll_value:.4f}")
        if config.checkpoint_every > 0 and step % config.checkpoint_every == 0 \
                and step < config.train_steps:
            check_finite()
            checkpoint(step)
    bar.close()
    check_finite()
    if step != last_checkpoint:
        checkpoint(step)  # a kill during evaluation resumes straight to evaluation
    if device.type == "cuda":
        torch.cuda.synchronize()
    trained = time.perf_counter()

    # ---- evaluation
    model.set_gamma(spec.gamma)
    tail = losses[max(0, step - max(1, step // 10)) : step]  # the last 10% of steps
    metrics: dict[str, Any] = {
        "params": sum(p.numel() for p in model.parameters()),
        "train_loss": float(tail[:, 0].mean()) if step else None,
        "train_nll": float(tail[:, 1].mean()) if step else None,
        "steps": step,
        "masked_sequences": int(masked),  # this invocation's training steps (not resumed ones)
        "evals": evaluate_all(model, test_set, task, config, device=device, autocast=autocast),
    }
    if config.eval_lengths:  # length generalisation: fresh test sets of each length
        metrics["evals_by_length"] = {
            str(other): metrics["evals"] if other == length else evaluate_all(
                model, tasks.datasets(
                    task, length=other, seed=seed, train_size=0, test_size=config.test_size
                )[1], task, config, device=device, autocast=autocast,
            )
            for other in config.eval_lengths
        }
    if device.type == "cuda":
        torch.cuda.synchronize()
    finished = time.perf_counter()
    return RunResult(
        metrics=metrics,
        timings={
            "train_s": trained - started,
            "eval_s": finished - trained,
            "total_s": finished - started,
        },
    )
