"""A tiny shared grammar for component spec strings.

    stopping:  expr  := all ('|' all)*        all := atom ('&' atom)*
               atom  := '(' expr ')' | term
    energies:  sum   := weighted ('+' weighted)*     weighted := [number '*'] term
    term       := name [ '(' key=value {',' key=value} ')' | ('<' | '=') value ]

Values are numbers (``1e-4``, ``inf``), booleans (``true``/``false``) or bare words
(``cosine``). ``name<v`` / ``name=v`` set the component's primary option (``residual<1e-4`` is
``residual(tol=1e-4)``). Errors name the offending text and position.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_TOKEN = re.compile(
    r"\s*(?:(?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?inf\b)"
    r"|(?P<name>[A-Za-z_][A-Za-z0-9_.]*)|(?P<op>[|&()<=,+*]))"
)


class SpecError(ValueError):
    """A spec string that does not parse; the message shows where."""


@dataclass
class Term:
    """One named component with options, e.g. ``residual<1e-4`` or ``memory(slots=64)``."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)
    primary: Any = None
    comparator: str | None = None


def parse_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in lowered else number


class Tokens:
    """Cursor over the tokens of one spec string."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.items: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            if text[pos:].strip() == "":
                break
            match = _TOKEN.match(text, pos)
            if not match:
                raise SpecError(f"cannot read {text[pos:]!r} at position {pos} in {text!r}")
            kind = match.lastgroup or "op"
            start = match.start(kind)
            if kind == "number" and text[start] == "+" and self._after_value():
                self.items.append(("op", "+", start))  # 'a+0.1*b': '+' joins, not a sign
                pos = start + 1
                continue
            self.items.append((kind, match.group(kind), start))
            pos = match.end()
        self.i = 0

    def _after_value(self) -> bool:
        last = self.items[-1] if self.items else None
        return last is not None and (last[0] in ("name", "number") or last[1] == ")")

    def peek(self) -> tuple[str, str, int] | None:
        return self.items[self.i] if self.i < len(self.items) else None

    def take(self, kind: str | None = None, value: str | None = None) -> str:
        token = self.peek()
        if token is None or (kind and token[0] != kind) or (value and token[1] != value):
            want = value or kind or "more"
            where = f"at position {token[2]}" if token else "at the end"
            raise SpecError(f"expected {want!r} {where} in {self.text!r}")
        self.i += 1
        return token[1]

    def at(self, value: str) -> bool:
        token = self.peek()
        return token is not None and token[0] == "op" and token[1] == value

    def done(self) -> None:
        token = self.peek()
        if token is not None:
            raise SpecError(f"unexpected {token[1]!r} at position {token[2]} in {self.text!r}")

    def value(self) -> Any:
        token = self.peek()
        if token is None or token[0] not in ("number", "name"):
            raise SpecError(f"expected a value in {self.text!r}")
        self.i += 1
        return parse_value(token[1])

    def term(self) -> Term:
        term = Term(self.take("name"))
        if self.at("("):
            self.take("op", "(")
            while not self.at(")"):
                key = self.take("name")
                self.take("op", "=")
                if key in term.options:
                    raise SpecError(f"option {key!r} given twice in {self.text!r}")
                term.options[key] = self.value()
                if not self.at(")"):
                    self.take("op", ",")
            self.take("op", ")")
        elif self.at("<") or self.at("="):
            term.comparator = self.take("op")
            term.primary = self.value()
        return term
