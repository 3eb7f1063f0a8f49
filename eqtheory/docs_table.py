"""Generate ``docs/components.md`` from the registries: ``python -m eqtheory.docs_table``.

The table is derived, never hand-written: each row is a component's own docstring summary, its
constructor options and what it declares. ``tests/test_docs.py`` fails when a committed row
differs from what this prints (regenerate with ``make docs``); a component registered since
then simply has no row until the next ``make docs``. ``--plugin FILE`` (repeatable) loads
plugin files first, so their components are listed too.
"""

from __future__ import annotations

import argparse
import inspect

from eqtheory import backward, energies, plugins, solvers, stopping
from eqtheory.registry import Registry


def _summary(component: object) -> str:
    doc = inspect.getdoc(component) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def _options(component: object) -> str:
    parts = []
    for name, param in inspect.signature(component).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = "" if param.default is param.empty else f"={param.default!r}"
        parts.append(f"`{name}{default}`")
    return ", ".join(parts) or "—"


def _extra(family: str, component: object) -> str:
    if family == "solvers":
        return ", ".join(sorted(component.solves))  # type: ignore[attr-defined]
    if family == "energies":
        requires = ", ".join(component.requires) or "—"  # type: ignore[attr-defined]
        return f"{component.latent_layout}; context: {requires}"  # type: ignore[attr-defined]
    if family == "stopping":
        primary, comparator = component.primary, component.comparator  # type: ignore[attr-defined]
        return f"`{component.name}{comparator}{primary.upper()}`" if primary else "options only"  # type: ignore[attr-defined]
    return ""


FAMILIES: list[tuple[str, str, Registry, str]] = [
    ("energies", "Energy terms", energies.REGISTRY, "layout; context keys read"),
    ("solvers", "Solvers", solvers.REGISTRY, "solves"),
    ("stopping", "Stopping rules", stopping.REGISTRY, "short form"),
    ("backward", "Backward modes", backward.REGISTRY, ""),
]


def render() -> str:
    """The Markdown page: one table per family, rows sorted by registered name."""
    lines = [
        "# Components",
        "",
        "Generated from the registries by `python -m eqtheory.docs_table` (`make docs`); do not",
        "edit by hand. Each row is one file in `eqtheory/<family>/`: its docstring's first line,",
        "its constructor options and what it declares.",
        "",
    ]
    for family, title, registry, extra_title in FAMILIES:
        lines += [f"## {title} (`eqtheory.{family}`)", ""]
        header = ["name", "summary", "options"] + ([extra_title] if extra_title else [])
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for name, component in registry.items():
            row = [f"`{name}`", _summary(component), _options(component)]
            if extra_title:
                row.append(_extra(family, component))
            lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Print the table, after loading the ``--plugin`` files given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--plugin", action="append", default=[], metavar="FILE")
    for path in parser.parse_args(argv).plugin:
        plugins.load_file(path)
    print(render(), end="")


if __name__ == "__main__":
    main()
