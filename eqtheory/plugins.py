"""Components from outside the package: a module file, or an installed package's entry point.

A plugin is an ordinary Python module whose components register themselves on import, exactly
as the built-in ones do (``@ENERGIES.register("myterm")`` on an `Energy` subclass, and so on for
solvers, stopping rules and backward modes). Loading it makes its names valid everywhere a
registered name is: spec strings, the runner's validation, the contract tests, the docs table.

* `load_file` imports a ``.py`` file (``python -m ablations.run --plugin my_terms.py``);
* `load_entry_points` imports every module that installed distributions list under the entry
  point group ``eqtheory.plugins`` (``[project.entry-points."eqtheory.plugins"]
  my_terms = "my_package.terms"`` in their ``pyproject.toml``).

Each returns `Plugin` records ``(source, sha256)``: the sha256 of the module's file, which the
runner stores with every run (``RunConfig.plugins``, part of its hash) so that a result can be
traced to the code that made it; `load_records` loads them again, in a worker process or when a
database is read, and checks the hashes. Loading the same file again (same content) is a no-op.

>>> import pathlib, tempfile
>>> path = pathlib.Path(tempfile.mkdtemp()) / "my_rules.py"
>>> _ = path.write_text('''
... from eqtheory.stopping.registry import STOPPING
... from eqtheory.stopping.steps import Steps
... @STOPPING.register("my_steps")
... class MySteps(Steps):
...     name = "my_steps"
... ''')
>>> plugin = load_file(path)
>>> import eqtheory as eqt
>>> "my_steps" in eqt.stopping.names(), len(plugin.sha256)
(True, 64)
>>> _ = eqt.stopping.REGISTRY.unregister("my_steps")
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "eqtheory.plugins"


@dataclass(frozen=True)
class Plugin:
    """A loaded plugin: where it came from and the sha256 (64 hex digits) of its file."""

    source: str
    sha256: str

    def record(self) -> str:
        """``"<source>@sha256:<hex>"``: how a run stores it (`load_records` reads it back)."""
        return f"{self.source}@sha256:{self.sha256}"


_LOADED: dict[str, tuple[str, ModuleType]] = {}  # resolved path -> (sha256, module)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, as 64 hex digits."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_file(path: str | Path) -> Plugin:
    """Import the module in `path` (a ``.py`` file), registering its components.

    Raises:
        FileNotFoundError: no such file; ValueError: not a ``.py`` file, or a file loaded
            earlier in this process whose content has changed since (its registrations would
            clash: restart the process).
    """
    resolved = Path(path).expanduser().resolve()
    source = str(resolved)
    if not resolved.is_file():
        raise FileNotFoundError(f"plugin file {str(path)!r} does not exist")
    if resolved.suffix != ".py":
        raise ValueError(f"a plugin is a Python file (.py), got {str(path)!r}")
    sha256 = file_sha256(resolved)
    if source in _LOADED:
        if _LOADED[source][0] != sha256:
            raise ValueError(
                f"plugin {source!r} changed since this process loaded it; restart to load it "
                "again"
            )
        return Plugin(source, sha256)
    name = f"eqtheory_plugin_{resolved.stem}_{sha256[:12]}"
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot import plugin file {source!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    _LOADED[source] = (sha256, module)
    return Plugin(source, sha256)


def load_entry_points(group: str = ENTRY_POINT_GROUP) -> list[Plugin]:
    """Import every module registered under the entry-point `group` by installed packages;
    a record per module, its source ``entry-point:<name>=<module>``."""
    plugins = []
    for entry in sorted(importlib.metadata.entry_points(group=group), key=lambda e: e.name):
        module = importlib.import_module(entry.module)
        origin = getattr(module, "__file__", None)
        sha256 = file_sha256(origin) if origin else ""
        plugins.append(Plugin(f"entry-point:{entry.name}={entry.module}", sha256))
    return plugins


def load_records(records: list[str] | tuple[str, ...]) -> list[Plugin]:
    """Load what `Plugin.record` strings name (a file, or ``entry-point:<name>=<module>``) and
    check that each has the recorded sha256, so a run is rebuilt from the code that made it.

    Raises:
        ValueError: a malformed record, an entry point no installed package provides, or a
            plugin whose file changed since the run recorded it.
    """
    loaded: list[Plugin] = []
    for record in records:
        source, sep, sha256 = record.rpartition("@sha256:")
        if not sep or len(sha256) != 64:
            raise ValueError(f"plugin record {record!r} is not '<source>@sha256:<64 hex>'")
        if source.startswith("entry-point:"):
            found = [p for p in load_entry_points() if p.source == source]
            if not found:
                raise ValueError(f"no installed package provides plugin {source!r}")
            plugin = found[0]
        else:
            plugin = load_file(source)
        if plugin.sha256 != sha256:
            raise ValueError(
                f"plugin {source!r} has sha256 {plugin.sha256[:12]}..., the run recorded "
                f"{sha256[:12]}...: it changed since (restore it, or plan the run again)"
            )
        loaded.append(plugin)
    return loaded
