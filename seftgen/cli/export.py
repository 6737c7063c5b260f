"""Commands that hand data on: export-axolotl, round, release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seftgen.cli.report import report
from seftgen.console import console


def export_axolotl_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder: reviser/JSFT data, revisions, judged pairs or best-of.")],
    kind: Annotated[str, typer.Option("--kind", help="sft or dpo (see the table in `seftgen.export.axolotl`).")],
    base_model: Annotated[
        str,
        typer.Option("--base-model", help="'demo', a local folder, or a hub id (round K: round K-1's merged output)."),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out", "-o", help="Config file to write; the dataset goes to <stem>-data/train.parquet beside it."
        ),
    ],
    output_dir: Annotated[
        Path | None, typer.Option("--output-dir", help="axolotl output_dir (default <stem>-output).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help="YAML file of axolotl keys, or a shipped preset (cpu).")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override one key: --set learning_rate=2e-5 (repeatable).")
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate", help="Check with axolotl's validate_config and for keys axolotl would drop."
        ),
    ] = True,
) -> None:
    """Write an axolotl dataset file and a validated training config for a run folder.

    Defaults per kind follow the papers (DPO beta 0.1 for SELF-JUDGE, 0.01 for SRT); LoRA by
    default (--set adapter=null for full fine-tuning). Paths are absolute, DPO datasets point at
    the Parquet file, the chat template is set at top level.

    [bold]Example[/]

      seftgen export-axolotl runs/r1/pairs --kind dpo --base-model demo -o runs/r1/dpo.yml
    """
    from seftgen.export.axolotl import export_axolotl, parse_overrides

    result = export_axolotl(
        run_dir,
        kind,
        base_model,
        out,
        output_dir=output_dir,
        preset=preset,
        overrides=parse_overrides(set_ or []),
        check=validate,
    )
    console.print(
        f"[green]✓[/] {result.variant}: {result.rows} rows → {result.data_path}"
        + (f" ({result.left_out} not kept, left out)" if result.left_out else "")
    )
    console.print(f"[green]✓[/] config → {result.config_path}")
    console.print("next:\n  " + "\n  ".join(result.commands))


def round_cmd(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or a shipped one: seft, self-judge, srt.")],
    round_k: Annotated[
        int, typer.Option("--round", "-k", min=1, help="Round number; K > 1 trains round K-1's merged model.")
    ] = 1,
    workdir: Annotated[Path, typer.Option("--workdir", "-w", help="Where round-K/ folders go.")] = Path("runs"),
    policy: Annotated[str | None, typer.Option("--policy", help="Override the round's policy model.")] = None,
    base_dir: Annotated[
        Path, typer.Option("--base-dir", help="Relative paths in the recipe resolve against this.")
    ] = Path("."),
) -> None:
    """Run round K of a recipe: its data stages, then its axolotl configs; print what to run next.

    [bold]Example[/]

      seftgen round seft --round 1 --workdir runs/seft
    """
    from seftgen.console import warn
    from seftgen.recipes import load_recipe
    from seftgen.stages.round import run_round

    result = run_round(load_recipe(recipe, base_dir), workdir, round_k, policy)
    for name, stage in result.stages.items():
        report(stage, name)
    for exported in result.exports:
        console.print(f"[green]✓[/] {exported.variant}: {exported.rows} rows → {exported.config_path}")
    for name, why in result.skipped.items():
        warn(f"training step '{name}' skipped: {why}")
    console.print(f"round {round_k} policy: {result.policy}\nnext:\n  " + "\n  ".join(result.commands))


def release_cmd(
    runs: Annotated[list[Path], typer.Argument(help="Run folders to release (one config each).")],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[bool, typer.Option("--private", help="Create the repo private.")] = False,
    dry_run: Annotated[Path | None, typer.Option("--dry-run", help="Build the folder here and do not upload.")] = None,
    include_rejected: Annotated[
        bool, typer.Option("--include-rejected", help="Also release rows that failed parsing or filters (kept=false).")
    ] = False,
    license: Annotated[str, typer.Option("--license", help="License id for the card.")] = "apache-2.0",
) -> None:
    """Release run folders as a Hub dataset: Parquet per config and a dataset card from the manifests.

    Uses huggingface_hub (token from HF_TOKEN or `hf auth login`). Rows without provenance are never
    released; rows that failed parsing or filters only with --include-rejected.

    [bold]Example[/]

      seftgen release runs/seft/round-1/revised runs/seft/round-1/samples --repo-id me/seft-r1 --dry-run out/
    """
    from seftgen.console import warn
    from seftgen.export.release import release

    result = release(
        list(runs), repo_id, private=private, dry_run=dry_run, include_rejected=include_rejected, license=license
    )
    for config in result.configs:
        console.print(f"[green]✓[/] config {config.name}: {config.rows.height} rows")
    for name, reasons in result.left_out.items():
        warn(f"{name}: left out " + ", ".join(f"{n} ({why})" for why, n in reasons.items()))
    console.print(f"[green]✓[/] {'built' if dry_run else 'uploaded'}: {result.url or result.folder}")


def register(app: typer.Typer) -> None:
    app.command("release")(release_cmd)
    app.command("export-axolotl")(export_axolotl_cmd)
    app.command("round")(round_cmd)
