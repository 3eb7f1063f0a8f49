r"""Seed ensembles: ``N`` models of one architecture run as one model with stacked weights.

Members differ only in their weights (their seeds). `stack` turns ``N`` models into one model
whose parameterised leaves hold the members' weights stacked on a leading axis ``[N, ...]``,
and whose batch is the members' batches concatenated **member-major**: an input ``[N*B, ...]``
holds member ``n``'s samples in rows ``n*B .. (n+1)*B - 1``. Each leaf applies member ``n``'s
weights to member ``n``'s rows:

* `EnsembleLinear`: ``y_n = x_n W_n^T + b_n`` with ``x`` viewed ``[N, B*..., in]`` (one batched
  matmul, `torch.baddbmm`);
* `EnsembleLayerNorm`: ``y_n = \mathrm{LN}(x_n) \odot w_n + b_n`` (the normalisation itself has
  no weights);
* `EnsembleEmbedding`: ``y_n = E_n[x_n]`` (one gather from the ``[N*V, d]`` table).

Everything between the leaves (attention, activations, the refinement loop, stopping rules)
acts per sample, so member ``n``'s rows are what member ``n``'s own model computes, and the
gradient of ``sum_n loss_n`` with respect to the stacked weights holds each member's own
gradient in its slice. A per-sample solve sees ``N*B`` samples; with a per-sample stopping rule
each still stops on its own.

Why batched-weight leaves rather than ``torch.func.vmap`` over ``functional_call``: measured
by ``python -m benchmarks.sweep`` (a training step of 3 seeds, every label), the stacked model
is the faster of the two on CPU (``vmap`` has no batching rule for CPU attention and falls back
to a loop there); and ``vmap`` cannot run a stopping rule that decides on values (``residual<``
...: the loop reads ``.item()``), while the stacked model runs every rule unchanged, since the
loop only sees a larger batch whose samples stop on their own.

Assumptions, checked by `stack` (`EnsembleUnsupported` names what breaks them): every
parameter belongs to a ``Linear``, ``LayerNorm`` or ``Embedding`` leaf (a GRU, a learned step
size or a learned initial state is refused); buffers are equal across members (they stay
shared); no module updates its own state (a method ``update``, e.g. the memory bank's EMA,
would mix the members). Leaves must see the member-major batch on their first axis, as every
module of `eqtheory.model` does.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class EnsembleUnsupported(ValueError):
    """The models cannot be stacked; the message says which module or parameter prevents it."""


class EnsembleLinear(nn.Module):
    """``N`` linear maps: ``x [N*B, ..., in] -> [N*B, ..., out]``, rows of member ``n`` through
    ``weight[n] [out, in]`` and ``bias[n] [out]``."""

    def __init__(self, members: Sequence[nn.Linear]) -> None:
        super().__init__()
        self.members = len(members)
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))
        bias = [m.bias for m in members]
        self.bias = None if bias[0] is None else nn.Parameter(
            torch.stack([b.detach() for b in bias])  # type: ignore[union-attr]
        )

    def forward(self, x: Tensor) -> Tensor:
        rows = _member_rows(x, self.members)  # (N, B*..., in)
        if self.bias is None:
            y = torch.bmm(rows, self.weight.mT)
        else:
            y = torch.baddbmm(self.bias[:, None, :], rows, self.weight.mT)  # (N, B*..., out)
        return y.reshape(*x.shape[:-1], y.shape[-1])


class EnsembleLayerNorm(nn.Module):
    """``N`` LayerNorms over the last axis: ``LN(x) * weight[n] + bias[n]`` on member ``n``'s rows
    (``weight, bias: [N, d]``; without affine weights the members are identical)."""

    def __init__(self, members: Sequence[nn.LayerNorm]) -> None:
        super().__init__()
        first = members[0]
        self.members, self.shape, self.eps = len(members), tuple(first.normalized_shape), first.eps
        if len(self.shape) != 1:
            raise EnsembleUnsupported(f"LayerNorm over {self.shape}: only the last axis stacks")
        self.weight = None if first.weight is None else nn.Parameter(
            torch.stack([m.weight.detach() for m in members])
        )
        self.bias = None if first.bias is None else nn.Parameter(
            torch.stack([m.bias.detach() for m in members])
        )

    def forward(self, x: Tensor) -> Tensor:
        y = _member_rows(F.layer_norm(x, self.shape, eps=self.eps), self.members)  # (N, B*..., d)
        if self.weight is not None:
            y = y * self.weight[:, None, :]
        if self.bias is not None:
            y = y + self.bias[:, None, :]
        return y.reshape(x.shape)


class EnsembleEmbedding(nn.Module):
    """``N`` embedding tables ``weight: [N, V, d]``: ``tokens [N*B, ...] -> [N*B, ..., d]``,
    member ``n``'s tokens looked up in ``weight[n]``."""

    def __init__(self, members: Sequence[nn.Embedding]) -> None:
        super().__init__()
        first = members[0]
        if first.padding_idx is not None or first.max_norm is not None or first.sparse:
            raise EnsembleUnsupported("Embedding with padding_idx, max_norm or sparse gradients")
        self.members, self.vocab = len(members), first.num_embeddings
        self.weight = nn.Parameter(torch.stack([m.weight.detach() for m in members]))

    def forward(self, tokens: Tensor) -> Tensor:
        offset = torch.arange(self.members, device=tokens.device)[:, None] * self.vocab
        index = _member_rows(tokens[..., None], self.members)[..., 0] + offset  # (N, B*...)
        table = self.weight.reshape(-1, self.weight.shape[-1])  # (N*V, d)
        return F.embedding(index, table).reshape(*tokens.shape, table.shape[-1])


LEAVES: dict[type[nn.Module], type[nn.Module]] = {
    nn.Linear: EnsembleLinear, nn.LayerNorm: EnsembleLayerNorm, nn.Embedding: EnsembleEmbedding,
}


def _member_rows(x: Tensor, members: int) -> Tensor:
    """``[N*B, ..., c] -> [N, B*..., c]``, member ``n``'s rows in slice ``n``."""
    if x.shape[0] % members:
        raise ValueError(
            f"an ensemble of {members} needs a member-major batch; got first axis {x.shape[0]}"
        )
    return x.reshape(members, -1, x.shape[-1])


def check_stackable(models: Sequence[nn.Module]) -> None:
    """Raise `EnsembleUnsupported` unless `stack` can join `models` (the module docstring's
    assumptions): same architecture, weights only in stackable leaves, equal buffers, no
    self-updating state."""
    if len(models) < 2:
        raise EnsembleUnsupported(f"an ensemble needs at least 2 members, got {len(models)}")
    first = models[0]
    names = [name for name, _ in first.named_parameters()]
    for other in models[1:]:
        if [name for name, _ in other.named_parameters()] != names:
            raise EnsembleUnsupported("the members' architectures differ (parameter names)")
        for (name, mine), theirs in zip(first.named_buffers(), other.buffers()):
            if mine.shape != theirs.shape or not torch.equal(mine, theirs):
                raise EnsembleUnsupported(f"buffer {name!r} differs between members")
    leaves = {name for name, module in first.named_modules() if type(module) in LEAVES}
    for name in names:
        owner = name.rpartition(".")[0]
        if owner not in leaves:
            raise EnsembleUnsupported(
                f"parameter {name!r} is not in a Linear, LayerNorm or Embedding leaf"
            )
    for name, module in first.named_modules():
        if callable(getattr(module, "update", None)) and not isinstance(
            module, (nn.ModuleDict, nn.ParameterDict)
        ):
            raise EnsembleUnsupported(
                f"module {name!r} ({type(module).__name__}) updates its own state"
            )


def stack(models: Sequence[nn.Module]) -> nn.Module:
    """One model computing all of `models` at once (see the module docstring).

    Args:
        models: ``N >= 2`` models of one architecture (`check_stackable`).

    Returns:
        A deep copy of ``models[0]`` whose leaves are replaced by ensemble leaves holding the
        members' weights ``[N, ...]`` (parameter names unchanged, so ``state_dict()`` keys are
        a member's keys, each value with a leading member axis). It takes and returns
        member-major batches ``[N*B, ...]``.

    Example:
        >>> from eqtheory.model.backbone import Backbone
        >>> members = [Backbone(vocab=2, width=8, layers=1, heads=2, max_len=4) for _ in range(3)]
        >>> tokens = torch.randint(0, 2, (3, 5, 4))  # (N, B, T)
        >>> joint = stack(members)(tokens.reshape(15, 4)).logits.reshape(3, 5, 4, 2)
        >>> alone = torch.stack([m(t).logits for m, t in zip(members, tokens)])
        >>> torch.allclose(joint, alone, atol=1e-6)
        True
    """
    check_stackable(models)
    joint = copy.deepcopy(models[0])
    sources = [dict(model.named_modules()) for model in models]
    for name, module in list(joint.named_modules()):
        if type(module) not in LEAVES:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = joint.get_submodule(parent_name)
        setattr(parent, child, LEAVES[type(module)]([source[name] for source in sources]))
    return joint


def member_state(joint: nn.Module, index: int) -> dict[str, Tensor]:
    """Member ``index``'s ``state_dict`` (a single model's keys and shapes) from a stacked
    model: stacked entries sliced at ``index``, shared buffers as they are."""
    stacked = {
        f"{name}.{key}" if name else key
        for name, module in joint.named_modules()
        if isinstance(module, tuple(LEAVES.values()))
        for key, _ in module.named_parameters(recurse=False)
    }
    return {key: value[index] if key in stacked else value
            for key, value in joint.state_dict().items()}
