"""``parse("residual<1e-4|steps=50")`` -> a `StopRule` (see `eqtheory.spec` for the grammar)."""

from __future__ import annotations

from eqtheory.registry import check_options
from eqtheory.spec import SpecError, Term, Tokens
from eqtheory.stopping.base import StopRule
from eqtheory.stopping.registry import STOPPING


def _build(term: Term, text: str) -> StopRule:
    cls = STOPPING.get(term.name, context=text)
    options = dict(term.options)
    if term.comparator is not None:
        primary, comparator = cls.primary, cls.comparator
        if primary is None:
            raise SpecError(f"{term.name!r} takes options in parentheses, e.g. {term.name}(...)")
        if term.comparator != comparator:
            raise SpecError(
                f"{term.name!r} is written {term.name}{comparator}VALUE, not "
                f"{term.name}{term.comparator}VALUE, in {text!r}"
            )
        options[primary] = term.primary
    check_options(cls, options, kind="stopping rule", name=term.name)
    return cls(**options)


def parse(text: str) -> StopRule:
    """Parse a stopping-rule spec; ``&`` binds tighter than ``|``; parentheses group."""
    tokens = Tokens(text)

    def any_expr() -> StopRule:
        rule = all_expr()
        while tokens.at("|"):
            tokens.take("op", "|")
            rule = rule | all_expr()
        return rule

    def all_expr() -> StopRule:
        rule = atom()
        while tokens.at("&"):
            tokens.take("op", "&")
            rule = rule & atom()
        return rule

    def atom() -> StopRule:
        if tokens.at("("):
            tokens.take("op", "(")
            rule = any_expr()
            tokens.take("op", ")")
            return rule
        return _build(tokens.term(), text)

    if not text or not text.strip():
        raise SpecError("empty stopping rule; e.g. 'residual<1e-4|steps=50'")
    rule = any_expr()
    tokens.done()
    return rule


def resolve(stop: str | StopRule) -> StopRule:
    """Accept a spec string or a rule object."""
    if isinstance(stop, StopRule):
        return stop
    if isinstance(stop, str):
        return parse(stop)
    raise TypeError(f"stop must be a spec string or a StopRule, got {type(stop).__name__}")


def shared(stop: str | StopRule) -> StopRule:
    """`resolve`, parsing each spec string once: rules keep what a solve changes in explicit
    state dicts, so the rule parsed before from the same string serves every later solve
    (`eqtheory.registry.Registry.cached` on the rules' registry, which forgets it when a rule
    name comes or goes). A rule with parameters (``halt``'s learned head) is parsed anew."""
    if not isinstance(stop, str):
        return resolve(stop)
    return STOPPING.cached(("spec", stop), lambda: parse(stop))
