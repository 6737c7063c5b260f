"""How a finished stage is reported on the terminal (one place for every command)."""

from __future__ import annotations

import typer

from seftgen.console import console, warn
from seftgen.stages.common import StageResult


def report(result: StageResult, what: str) -> None:
    console.print(
        f"[green]✓[/] {what}: {result.written} new rows"
        + (f", {result.resumed} kept from an earlier attempt" if result.resumed else "")
        + f" → {result.run_dir}"
    )
    for key, value in result.summary.items():
        console.print(f"  {key}: {value}")
    totals = result.totals
    if totals.get("cost_usd") or totals.get("retries"):
        console.print(
            f"  API: {totals.get('requests', 0):.0f} requests, {totals.get('retries', 0):.0f} retries, "
            f"{totals.get('prompt_tokens', 0):.0f}+{totals.get('completion_tokens', 0):.0f} tokens, "
            f"${totals.get('cost_usd', 0):.4f}"
        )
    if result.failures:
        for failure in result.failures[:5]:
            warn(f"failed: {failure}")
        warn(f"{len(result.failures)} rows failed and were not written; rerun the same command to retry them")
        raise typer.Exit(1)
