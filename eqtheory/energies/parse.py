"""``parse("bidir+0.1*memory", dim=64, vocab=2)`` -> a composed `Energy`.

Grammar (see `eqtheory.spec`): ``sum := [weight '*'] term ('+' [weight '*'] term)*`` where a
term is ``name``, ``name(key=value,...)`` or ``name=value`` (the term's primary option, e.g.
``anchor=10`` for ``gamma = 10``); weights are finite and >= 0 (``0*term`` switches it off).
Keyword ``dims`` (one of `BUILD_DIMS`: ``dim``, ``vocab``, ``window``) are shared sizes, passed
to every term whose constructor takes them; any other keyword is an error.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from eqtheory.energies.base import Energy, SumEnergy
from eqtheory.energies.registry import ENERGIES
from eqtheory.registry import UnknownOptionError, check_options, did_you_mean
from eqtheory.spec import SpecError, Tokens

BUILD_DIMS = ("dim", "vocab", "window")


def _accepts(cls: type, key: str) -> bool:
    return key in inspect.signature(cls).parameters


def check_option_types(cls: type, options: dict[str, Any], *, kind: str, name: str) -> None:
    """Reject an option whose value cannot be of its default's type: a word or a boolean for a
    numeric option (``gd(momentum=abc)``, ``bidir=abc``), anything but true/false for a boolean
    one. Serves every spec string with options (energies, solvers, backward modes)."""
    params = inspect.signature(cls).parameters
    for key, value in options.items():
        default = params[key].default if key in params else inspect.Parameter.empty
        if isinstance(default, bool):
            wrong = not isinstance(value, bool)
        elif isinstance(default, (int, float)):
            wrong = not isinstance(value, (int, float)) or isinstance(value, bool)
        else:
            continue
        if wrong:
            raise ValueError(
                f"option {key!r} of {kind} {name!r} takes "
                f"{'true or false' if isinstance(default, bool) else 'a number'} "
                f"(default {default!r}), got {value!r}"
            )


def parse_terms(text: str) -> list[tuple[float, type[Energy], dict[str, Any]]]:
    """Validate an energy spec without building anything: ``[(weight, class, options)]``.

    Checks the names (did-you-mean), the options against each constructor, the
    ``name=value`` primary-option form, and the weights: finite and >= 0 (a weight of 0 keeps
    the term, with its parameters, but switches it off)."""
    if not text or not text.strip():
        raise SpecError("empty energy spec; e.g. 'bidir+0.1*memory'")
    tokens = Tokens(text)
    terms: list[tuple[float, type[Energy], dict[str, Any]]] = []
    while True:
        weight = 1.0
        token = tokens.peek()
        if token is not None and token[0] == "number":
            weight = float(tokens.value())
            tokens.take("op", "*")
            if not 0 <= weight < math.inf:
                raise SpecError(
                    f"energy weight {token[1]} at position {token[2]} in {text!r} must be finite "
                    "and >= 0 (0 keeps the term but switches it off)"
                )
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
        check_option_types(cls, options, kind="energy term", name=term.name)
        terms.append((weight, cls, options))
        if not tokens.at("+"):
            break
        tokens.take("op", "+")
    tokens.done()
    return terms


def parse(text: str, **dims: Any) -> Energy:
    """Build the energy a spec string names. A single unweighted term is returned as itself."""
    for key in dims:
        if key not in BUILD_DIMS:
            raise UnknownOptionError(did_you_mean(key, list(BUILD_DIMS), kind="build dim"))
    built: list[tuple[float, Energy]] = []
    for weight, cls, options in parse_terms(text):
        shared = {k: v for k, v in dims.items() if k not in options and _accepts(cls, k)}
        built.append((weight, cls(**options, **shared)))
    if len(built) == 1 and built[0][0] == 1.0:
        return built[0][1]
    return SumEnergy(built)
