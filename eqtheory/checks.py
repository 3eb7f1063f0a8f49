"""Checks of user-given options: one-sentence errors that name the option and its valid range.

Components call these in ``__init__``, so a bad option is refused when the object is built (the
CLI builds every component before anything runs), never as a NaN or a crash later on.

>>> number(0.9, "momentum", owner="gd", at_least=0, below=1)
0.9
>>> number(float("nan"), "momentum", owner="gd", at_least=0, below=1)
Traceback (most recent call last):
...
ValueError: gd needs a finite momentum with 0 <= momentum < 1, got nan
"""

from __future__ import annotations

import math
import numbers


def number(
    value: object,
    name: str,
    *,
    owner: str,
    above: float | None = None,
    at_least: float | None = None,
    below: float | None = None,
    at_most: float | None = None,
    whole: bool = False,
) -> float | int:
    """``value`` as a float (``whole``: an int) after checking that it is a finite real number
    in the range the bounds give (``above < value``, ``at_least <= value``, ``value < below``,
    ``value <= at_most``); else a `TypeError` (not a number) or `ValueError` (out of range) whose
    one sentence names ``owner``, ``name``, the range and the value."""
    low = (f"{above:g} < ", ">", above) if above is not None else (
        (f"{at_least:g} <= ", ">=", at_least) if at_least is not None else None
    )
    high = f" < {below:g}" if below is not None else (
        f" <= {at_most:g}" if at_most is not None else ""
    )
    if low and high:
        rule = f"{low[0]}{name}{high}"
    elif low:
        rule = f"{name} {low[1]} {low[2]:g}"
    else:
        rule = f"{name}{high}" if high else ""
    kind = "whole number" if whole else "finite"
    wanted = f"a {kind} {name}" + (f" with {rule}" if rule else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner} needs {wanted}, got {value!r} ({type(value).__name__})")
    try:
        as_float = float(value)
    except OverflowError:  # an int too large for a float
        as_float = math.inf
    out_of_range = (
        not math.isfinite(as_float)
        or (above is not None and not as_float > above)
        or (at_least is not None and not as_float >= at_least)
        or (below is not None and not as_float < below)
        or (at_most is not None and not as_float <= at_most)
        or (whole and as_float != int(as_float))
    )
    if out_of_range:
        raise ValueError(f"{owner} needs {wanted}, got {value!r}")
    return int(as_float) if whole else as_float


def optional_number(value: object, name: str, *, owner: str, **bounds: float) -> float | None:
    """`number`, or ``None`` when ``value`` is None (an option whose default is computed)."""
    return None if value is None else number(value, name, owner=owner, **bounds)


def flag(value: object, name: str, *, owner: str) -> bool:
    """``value`` as a bool: True, False (or the integers 1, 0); anything else is a `TypeError`
    (``restart="no"`` would otherwise be silently true)."""
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and value in (0, 1)):
        return bool(value)
    raise TypeError(f"{owner} needs {name} to be True or False, got {value!r}")


def choice(value: object, name: str, *, owner: str, valid: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``valid``, else a `ValueError` listing them."""
    if isinstance(value, str) and value in valid:
        return value
    raise ValueError(f"{owner} needs {name} to be one of {', '.join(valid)}; got {value!r}")


__all__ = ["choice", "flag", "number", "optional_number"]
