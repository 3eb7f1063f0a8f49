"""The GPU check's Markdown report (`benchmarks.gpu_check`), from its JSON payload."""

from __future__ import annotations

import json
from typing import Any

from benchmarks.grid_extrapolation import TARGET_MIN


def markdown(payload: dict[str, Any]) -> str:
    """The Markdown report of `Check.write`'s payload."""
    info = payload["machine"]
    lines = ["# GPU check", "", f"Machine: {info['cpu']}, {info['cores']} cores, torch "
             f"{info['torch']}, CUDA device: {info['cuda']}; device used: {payload['device']}"
             f"{' (quick: tiny model)' if payload['quick'] else ''}.", "",
             f"Command: `{payload['command']}`; wall time {payload.get('wall_s', 0):.0f} s.", ""]
    for name in ("steps", "ensembles"):
        part = payload.get(name)
        if not part or "rows" not in part:
            continue
        bf16 = part["amp"] and payload["device"] == "cuda"
        lines += [f"## {name}", "", f"Batch {part['batch']} per member, width "
                  f"{part['width']}, bf16 autocast: {bf16}; step = mean of "
                  f"{part['repeats']} after {part['warmup']} warm-up steps.", "",
                  "| label | T | layers | members | setup s | step ms | eval s | peak GiB |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in part["rows"]:
            lines.append(
                f"| {r['label']} | {r['T']} | {r['layers']} | {r['members']} | "
                f"{r['setup_s']:.2f} | {1e3 * r['step_s']:.1f} | "
                f"{_num(r.get('eval_s'), '.2f')} | {_num(r.get('peak_gib'), '.2f')} |")
        lines.append("")
    part = payload.get("concurrency")
    if part and "rows" in part:
        lines += ["## concurrency", "", f"{part['processes']} processes, each timing the same "
                  f"seed ensemble's step over {part['repeats']} steps at the same moment; "
                  "alone: the ensembles section's step; gain: processes / slowdown.", "",
                  "| label | T | members | packed step ms | alone: members | alone step ms "
                  "| slowdown per member | gain |", "|---|---|---|---|---|---|---|---|"]
        for r in part["rows"]:
            lines.append(f"| {r['label']} | {r['T']} | {r['members']} | "
                         f"{1e3 * r['step_s']:.1f} | {r['alone_members']} | "
                         f"{1e3 * r['alone_step_s']:.1f} | {r['slowdown']:.2f} | "
                         f"{r['gain']:.2f} |")
        lines.append("")
    part = payload.get("graphs")
    if part and part.get("rows"):
        lines += ["## graphs", "", "One run's training step captured as one CUDA graph "
                  "(`benchmarks.graphed_step`; on CPU not captured), against the same step "
                  "run eagerly; drift: the copies' distance after the same steps over each "
                  "parameter's own change (median / largest).", "",
                  "| label | T | captured | eager step ms | graphed step ms | speed-up | "
                  "capture s | drift median / max |", "|---|---|---|---|---|---|---|---|"]
        for r in part["rows"]:
            lines.append(f"| {r['label']} | {r['T']} | {r['captured']} | "
                         f"{1e3 * r['eager_step_s']:.1f} | {1e3 * r['graphed_step_s']:.1f} | "
                         f"{r['speedup']:.2f} | {r['capture_s']:.2f} | "
                         f"{r['drift_median']:.2g} / {r['drift_max']:.2g} |")
        lines.append("")
    grid = payload.get("extrapolation")
    if grid:
        missing = "" if grid["complete"] else " INCOMPLETE: cells are missing."
        packed = f"{grid['processes']} ensembles at once min"
        graphed = "one run at a time, steps captured min"
        lines += ["## paper grid, extrapolated", "", f"{grid['runs']} runs x "
                  f"{grid['train_steps']} steps, lengths {grid['lengths']}; minutes on this "
                  f"device: one run at a time, one seed ensemble at a time, and several seed "
                  f"ensembles at once.{missing}", "",
                  f"| label | sequential min | seed ensembles min | {packed} | {graphed} |",
                  "|---|---|---|---|---|"]
        for r in grid["labels"]:
            lines.append(f"| {r['label']} | {r['sequential_min']:.1f} | "
                         f"{_num(r['ensembles_min'], '.1f')} | "
                         f"{_num(r.get('packed_min'), '.1f')} | "
                         f"{_num(r.get('graphed_min'), '.1f')} |")
        lines += [f"| **total** | **{grid['sequential_min']:.1f}** | "
                  f"**{_num(grid['ensembles_min'], '.1f')}** | "
                  f"**{_num(grid.get('packed_min'), '.1f')}** | "
                  f"**{_num(grid.get('graphed_min'), '.1f')}** |", "",
                  f"Target: under {TARGET_MIN:.0f} min.", ""]
    measured = ("steps", "ensembles", "concurrency", "graphs", "scan")  # own tables, or an error
    for name in ("sweep", "packing", "tests", "compile",
                 *(n for n in measured if "error" in payload.get(n, {}))):
        part = payload.get(name)
        if part:
            shown = {k: v for k, v in part.items() if k != "tail"}
            lines += [f"## {name}", "", "```", json.dumps(shown, indent=1, default=str)[:3000],
                      "```", ""]
    if "markdown" in payload.get("scan", {}):
        lines += [payload["scan"]["markdown"], ""]
    lines += ["## outcome", "", f"Failures: {payload['failures'] or 'none'}",
              f"Left out: {payload['left_out'] or 'none'}", ""]
    return "\n".join(lines)


def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)
