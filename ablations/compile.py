r"""``--compile``: `torch.compile` the backbone blocks and the refinement step, from the outside.

What a refinement step evaluates is the ERM's objective ``Phi(z) = L_theta(z; x) + anchor`` and
its gradient ``grad_z Phi`` (`eqtheory.problem.MinimizeProblem.evaluate`: one forward, then
``torch.autograd.grad``, with ``create_graph=True`` under unrolled training). A compiled module
cannot be differentiated twice (AOTAutograd refuses double backward), so the objective is not
compiled as is; `compile_energy` replaces its ``forward`` by an autograd function with two
compiled graphs:

* **value**: ``E = Phi(z; context, theta)``, run without a graph;
* **pull-back**: given weights ``w: [B]``, the vector-Jacobian products
  ``(d/dz, d/dc, d/dtheta) sum_b w_b Phi_b`` (``torch.func.vjp``, so the graph is traced by
  dynamo, not by the autograd engine), for ``z``, the context tensors ``c`` that need a
  gradient (e.g. ``z0``) and the parameters ``theta``.

The function's backward is the pull-back, itself a compiled graph with a (first-order)
backward, so the solver's ``autograd.grad(..., create_graph=True)`` gets ``grad_z Phi`` as a
differentiable tensor and the training loss differentiates through it once more (a Hessian-vector
product, traced by AOTAutograd inside the pull-back's backward). Values and gradients equal the
eager ones up to floating-point reassociation (`tests/test_compile.py`).

The blocks are compiled with ``nn.Module.compile`` (state-dict keys unchanged; the objective's
``forward`` is replaced on the instance, so checkpoints of compiled and eager runs are
interchangeable, as ``compile`` is an execution field of `ablations.config.RunConfig`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from eqtheory.energies.base import Context, Energy
from eqtheory.registry import did_you_mean

BACKENDS = ("inductor", "aot_eager", "eager")
"""Backends `compile_model` accepts: ``inductor`` (generated kernels; what ``--compile`` uses),
``aot_eager`` (the same traced graphs run by eager kernels: the wrapping without code
generation, for fast tests) and ``eager`` (dynamo only)."""


class _Shell(nn.Module):
    """Calls the energy's *class* ``forward``, so that `functional_call` can reparametrise the
    energy while its instance ``forward`` is the compiled one."""

    def __init__(self, energy: Energy) -> None:
        super().__init__()
        self.inner = energy

    def forward(self, z: Tensor, context: Context | None) -> Tensor:
        return type(self.inner).forward(self.inner, z, context)


def compile_energy(energy: Energy, *, backend: str = "inductor") -> Energy:
    """Compile ``energy``'s value and its pull-back (see the module docstring), in place.

    Args:
        energy: any `Energy` (``[B, ...] -> [B]``); its context values must be tensors.
        backend: a `torch.compile` backend from `BACKENDS`.

    Returns:
        ``energy`` itself, whose ``forward(z, context)`` now runs the compiled graphs; its
        parameters, buffers and state-dict keys are unchanged.
    """
    _check_backend(backend)
    shell = _Shell(energy)
    names = [f"inner.{name}" for name, _ in energy.named_parameters()]

    def value(z: Tensor, context: dict[str, Tensor], params: dict[str, Tensor]) -> Tensor:
        return functional_call(shell, params, (z, context))

    def pullback(
        weights: Tensor, z: Tensor, context: dict[str, Tensor], params: dict[str, Tensor],
        wanted: tuple[str, ...],
    ) -> tuple[Tensor, dict[str, Tensor], dict[str, Tensor]]:
        fixed = {key: v for key, v in context.items() if key not in wanted}

        def phi(z: Tensor, free: dict[str, Tensor], params: dict[str, Tensor]) -> Tensor:
            return functional_call(shell, params, (z, {**fixed, **free}))

        _, vjp = torch.func.vjp(phi, z, {key: context[key] for key in wanted}, params)
        return vjp(weights)

    compiled_value = torch.compile(value, backend=backend)
    compiled_pullback = torch.compile(pullback, backend=backend)

    class CompiledValue(torch.autograd.Function):
        """``(z, keys, *context values, *params) -> [B]``; backward: the compiled pull-back."""

        @staticmethod
        @torch.amp.custom_fwd(device_type="cuda")  # the backward runs under the same autocast
        def forward(ctx: Any, z: Tensor, keys: tuple[str, ...], *tensors: Tensor) -> Tensor:
            ctx.save_for_backward(z, *tensors)
            ctx.keys = keys
            context, params = _split(keys, names, tensors)
            with torch.no_grad():
                return compiled_value(z, context, params)

        @staticmethod
        @torch.amp.custom_bwd(device_type="cuda")
        def backward(ctx: Any, weights: Tensor) -> tuple[Tensor | None, ...]:
            # grad mode is on here exactly when the caller asked for create_graph=True
            z, *tensors = ctx.saved_tensors
            keys = ctx.keys
            context, params = _split(keys, names, tensors)
            needs = ctx.needs_input_grad[2:]
            wanted = tuple(key for key, need in zip(keys, needs) if need)
            grad_z, grad_context, grad_params = compiled_pullback(
                weights, z, context, params, wanted
            )
            return (grad_z, None, *(grad_context.get(key) for key in keys),
                    *(grad_params[name] for name in names))

    def forward(z: Tensor, context: Context | None = None) -> Tensor:
        values = dict(context or {})
        for key, item in values.items():
            if not isinstance(item, Tensor):
                raise TypeError(
                    f"a compiled energy's context holds tensors only; {key!r} is a "
                    f"{type(item).__name__}"
                )
        params = [parameter for _, parameter in energy.named_parameters()]
        return CompiledValue.apply(z, tuple(values), *values.values(), *params)

    energy.forward = forward  # type: ignore[method-assign]
    return energy


def _split(
    keys: tuple[str, ...], names: list[str], tensors: tuple[Tensor, ...] | list[Tensor]
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(context, params)`` from the flat tensors ``[*context values, *parameters]``."""
    count = len(keys)
    return dict(zip(keys, tensors[:count])), dict(zip(names, tensors[count:]))


def compile_model(model: nn.Module, *, backend: str = "inductor") -> nn.Module:
    """Compile an `eqtheory.model.EqT` (or `Backbone`-bearing baseline) in place: every backbone
    block (``nn.Module.compile``) and, when the model refines (not baseline or aux-only), every
    ERM's objective (`compile_energy`). Models without blocks (the ``rnn`` control) are
    returned unchanged.

    Args:
        model: the model from `eqtheory.variants.build`.
        backend: a `torch.compile` backend from `BACKENDS`.

    Returns:
        ``model``, whose forward (and backward) now run compiled graphs.
    """
    _check_backend(backend)
    backbone = getattr(model, "backbone", None)
    for block in getattr(backbone, "blocks", ()):
        block.compile(backend=backend)
    for erm in getattr(model, "erms", ()) if getattr(model, "refines", False) else ():
        compile_energy(erm.objective, backend=backend)
    return model


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(did_you_mean(backend, list(BACKENDS), kind="compile backend"))

