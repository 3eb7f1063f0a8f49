"""``parse("bidir+0.1*memory", dim=64, vocab=2)`` -> a composed `Energy`.

Grammar (see `eqtheory.spec`): ``sum := [weight '*'] term ('+' [weight '*'] term)*`` where a
term is ``name``, ``name(key=value,...)`` or ``name=value`` (the term's primary option, e.g.
``anchor=10`` for ``gamma = 10``). Keyword ``dims`` (one of `BUILD_DIMS`: ``dim``, ``vocab``,
``window``) are shared sizes, passed to every term whose constructor takes them; any other
keyword is an error.
"""

from __future__ import annotations

import inspect
from typing import Any

from eqtheory.energies.base import Energy, SumEnergy
from eqtheory.energies.registry import ENERGIES
from eqtheory.registry import UnknownOptionError, check_options, did_you_mean
from eqtheory.spec import SpecError, Tokens

BUILD_DIMS = ("dim", "vocab", "window")


def _accepts(cls: type, key: str) -> bool:
    return key in inspect.signature(cls).parameters


def parse(text: str, **dims: Any) -> Energy:
    """Build the energy a spec string names. A single unweighted term is returned as itself."""
    if not text or not text.strip():
        raise SpecError("empty energy spec; e.g. 'bidir+0.1*memory'")
    for key in dims:
        if key not in BUILD_DIMS:
            raise UnknownOptionError(did_you_mean(key, list(BUILD_DIMS), kind="build dim"))
    tokens = Tokens(text)
    terms: list[tuple[float, Energy]] = []
    while True:
        weight = 1.0
        token = tokens.peek()
        if token is not None and token[0] == "number":
            weight = float(tokens.value())
            tokens.take("op", "*")
        term = tokens.term()
        cls = ENERGIES.get(term.name, context=text)
        options = dict(term.options)
        if term.comparator is not None:
            primary = getattr(cls, "primary", None)
            if primary is None or term.comparator != "=":
                raise SpecError(
                    f"energy term {term.name!r} takes options as {term.name}(key=value)"
                )
            options[primary] = term.primary
        check_options(cls, options, kind="energy term", name=term.name)
        for key, value in dims.items():
            if key not in options and _accepts(cls, key):
                options[key] = value
        terms.append((weight, cls(**options)))
        if not tokens.at("+"):
            break
        tokens.take("op", "+")
    tokens.done()
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return SumEnergy(terms)
