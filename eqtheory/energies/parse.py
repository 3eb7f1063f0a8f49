"""``parse("bidir+0.1*memory", dim=64, vocab=2)`` -> a composed `Energy`.

Grammar (see `eqtheory.spec`): ``sum := [weight '*'] term ('+' [weight '*'] term)*`` where a
term is ``name``, ``name(key=value,...)`` or ``name=value`` (the term's primary option, e.g.
``anchor=10`` for ``gamma = 10``); weights are finite and >= 0 (``0*term`` switches it off).
Keywords (``dim=64, vocab=2``) are shared options, passed to every term whose constructor takes
them and whose spec does not set them; a keyword no registered term's constructor takes is an
error listing those that some term takes (a new term's sizes need no list kept in step).
"""

from __future__ import annotations

import inspect
import math
from typing import Any

from eqtheory.energies.base import Energy, SumEnergy
from eqtheory.energies.registry import ENERGIES
from eqtheory.registry import UnknownOptionError, check_options, did_you_mean
from eqtheory.spec import SpecError, Tokens


def accepts(cls: type, key: str) -> bool:
    """True if `cls`'s constructor has a parameter named `key`."""
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
            primary = cls.primary
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


def build_term(cls: type[Energy], options: dict[str, Any], **shared: Any) -> Energy:
    """``cls(**options)`` plus the `shared` options its constructor takes (``options`` win)."""
    taken = {k: v for k, v in shared.items() if k not in options and accepts(cls, k)}
    return cls(**options, **taken)


def combine(terms: list[tuple[float, Energy]]) -> Energy:
    """``sum_i w_i E_i`` as a `SumEnergy`; a single unweighted term is returned as itself."""
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return SumEnergy(terms)


def check_shared(shared: dict[str, Any]) -> None:
    """Reject a shared option that no registered term's constructor takes."""
    valid = sorted({k for _, cls in ENERGIES.items() for k in inspect.signature(cls).parameters})
    for key in shared:
        if key not in valid:
            raise UnknownOptionError(did_you_mean(key, valid, kind="shared energy option"))


def parse(text: str, **shared: Any) -> Energy:
    """Build the energy a spec string names; `shared` options (``dim``, ``vocab``, ...) go to
    every term that takes them. A single unweighted term is returned as itself."""
    check_shared(shared)
    return combine([(w, build_term(cls, opts, **shared)) for w, cls, opts in parse_terms(text)])
