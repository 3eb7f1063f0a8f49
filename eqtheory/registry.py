"""Name -> component registries with did-you-mean errors.

Every family (energies, solvers, stopping rules, backward modes, tasks) keeps one `Registry`,
filled by the `@REGISTRY.register("name")` decorator in the file that defines the component.
A family package imports all of its modules with `import_modules`, so a new file in the package
is registered without editing its ``__init__``; a module outside the package (a researcher's
plugin) registers the same way when it is imported (`eqtheory.plugins`). The CLI, the docs
components table and the contract tests (`eqtheory.testing.contracts`) all read the registries.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import inspect
import itertools
import pkgutil
from collections.abc import Callable, Hashable, Iterator
from typing import Any, Generic, TypeVar

from torch import nn

T = TypeVar("T")


class UnknownNameError(KeyError, ValueError):
    """A name that is not registered; the message lists the valid names and a close match."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class UnknownOptionError(TypeError, ValueError):
    """A keyword option that a component does not accept; the message lists the valid ones."""


def did_you_mean(name: str, valid: list[str], *, kind: str, context: str | None = None) -> str:
    """Return the one-line error message for an unknown `name` of family `kind`."""
    where = f" in {context!r}" if context else ""
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown {kind} {name!r}{where}{hint} valid: {', '.join(sorted(valid))}"


def check_options(
    target: Callable[..., Any], options: dict[str, Any], *, kind: str, name: str
) -> None:
    """Raise `UnknownOptionError` if `options` has a key that `target`'s signature lacks."""
    valid = _keywords(target)
    if valid is None:
        return
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise UnknownOptionError(
                f"unknown option {key!r} for {kind} {name!r}{hint} "
                f"valid: {', '.join(sorted(valid)) or '(none)'}"
            )


@functools.lru_cache(maxsize=512)
def _keywords(target: Callable[..., Any]) -> tuple[str, ...] | None:
    """The names `target` accepts as keywords (None: any, it takes ``**kwargs``); read from its
    signature once per target (`inspect.signature` costs more than a whole small solve)."""
    params = inspect.signature(target).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return None
    return tuple(n for n, p in params.items() if p.kind is not inspect.Parameter.VAR_POSITIONAL)


def check_fields(cls: type, values: dict[str, Any], *, kind: str) -> None:
    """Raise `UnknownOptionError` if `values` has a key that is not a field of the dataclass
    `cls` (e.g. a config read back from JSON); the message lists the valid fields."""
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in valid:
            raise UnknownOptionError(did_you_mean(key, valid, kind=kind))


class Registry(Generic[T]):
    """A named family of components.

    Args:
        kind: what one entry is, used in error messages (e.g. ``"solver"``).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._shared: dict[Hashable, Any] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator: register the decorated class or function under `name`."""

        def decorate(component: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = component
            self._changed()
            return component

        return decorate

    def unregister(self, name: str) -> T:
        """Remove and return the entry `name` (a temporary registration, e.g. in a test)."""
        component = self.get(name)
        del self._entries[name]
        self._changed()
        return component

    def _changed(self) -> None:
        """An entry came or went: drop the shared instances (a name may now build another)."""
        self._shared.clear()

    def get(self, name: str, *, context: str | None = None) -> T:
        """Return the component registered as `name`, or raise `UnknownNameError`."""
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownNameError(
                did_you_mean(name, list(self._entries), kind=self.kind, context=context)
            ) from None

    def build(self, name: str, /, **options: Any) -> Any:
        """Instantiate `name` with keyword `options`, rejecting options it does not take."""
        component = self.get(name)
        check_options(component, options, kind=self.kind, name=name)
        return component(**options)  # type: ignore[operator]

    def shared(self, name: str, /, **options: Any) -> Any:
        """`build`, or the instance built before with the same name and options when that one
        holds no parameters or buffers: components keep what a solve changes in explicit state
        dicts, so one stateless instance serves every solve (and a solve does not pay for
        constructing it). Options are told apart by type too (``1`` is not ``True``);
        unhashable ones build anew each time."""
        try:
            key = (name, tuple(sorted((k, type(v), v) for k, v in options.items())))
            hash(key)
        except TypeError:  # an unhashable option value
            return self.build(name, **options)
        return self.cached(key, lambda: self.build(name, **options))

    def cached(self, key: Hashable, build: Callable[[], Any]) -> Any:
        """The instance remembered under `key`, else ``build()``, remembered when it holds no
        parameters or buffers (`stateless`); registering or removing a name forgets them all,
        and at most `SHARED_LIMIT` are kept."""
        instance = self._shared.get(key)
        if instance is None:
            instance = build()
            if stateless(instance):
                if len(self._shared) >= SHARED_LIMIT:
                    self._shared.clear()
                self._shared[key] = instance
        return instance

    def names(self) -> list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        """``(name, component)`` pairs sorted by name."""
        return sorted(self._entries.items())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


SHARED_LIMIT = 256
"""At most this many shared instances per cache (option values from a sweep stay bounded)."""


def stateless(component: object) -> bool:
    """Whether `component` holds no parameters or buffers (True for anything not a module)."""
    if not isinstance(component, nn.Module):
        return True
    return next(itertools.chain(component.parameters(), component.buffers()), None) is None


def import_modules(package: str, path: list[str]) -> list[str]:
    """Import every public module of `package` (whose ``__path__`` is `path`), registering the
    components they define; returns the module names imported, sorted.

    A family's ``__init__`` calls ``import_modules(__name__, __path__)``: adding a component is
    adding a file, with no import line to keep in step.
    """
    names = sorted(m.name for m in pkgutil.iter_modules(path) if not m.name.startswith("_"))
    for name in names:
        importlib.import_module(f"{package}.{name}")
    return names
