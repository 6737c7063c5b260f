"""Commands that build data with no model: SFT datasets from preference records, prompts with
verifiable instructions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seftgen.cli.options import LimitOpt, OutOpt
from seftgen.cli.report import report
from seftgen.console import console
from seftgen.errors import UserError
from seftgen.io.readers import PromptColumns
from seftgen.stages.build_data import RevisionLabels, build_jsft_data, build_reviser_data
from seftgen.stages.config import JSFT_DATA, REVISE

_LABELS = RevisionLabels()  # the library's defaults, shown and used by the options below

SourceArg = Annotated[
    str, typer.Argument(help="Preference records: .jsonl, .parquet, a saved dataset folder or a hub id.")
]
PresetOpt = Annotated[
    str,
    typer.Option("--preset", help="Record shape: seftgen (prompt, responses[{text, rating}]), ultrafeedback, nectar."),
]
MAP = "Column mapping (overrides the preset)"
PromptColOpt = Annotated[str | None, typer.Option("--prompt-column", rich_help_panel=MAP)]
ResponsesColOpt = Annotated[
    str | None, typer.Option("--responses-column", help="List of responses.", rich_help_panel=MAP)
]
TextFieldOpt = Annotated[
    str | None, typer.Option("--text-field", help="Response text field inside each item.", rich_help_panel=MAP)
]
RatingFieldOpt = Annotated[
    str | None, typer.Option("--rating-field", help="Rating field inside each item.", rich_help_panel=MAP)
]
RationaleColOpt = Annotated[
    str | None, typer.Option("--rationale-column", help="Judge rationale (principle templates).", rich_help_panel=MAP)
]


def _columns(
    preset: str,
    prompt: str | None,
    responses: str | None,
    text: str | None,
    rating: str | None,
    rationale: str | None = None,
):
    from seftgen.io.preferences import columns_for

    return columns_for(preset, prompt=prompt, responses=responses, text=text, rating=rating, rationale=rationale)


def build_reviser_data_cmd(
    source: SourceArg,
    out: OutOpt,
    preset: PresetOpt = "seftgen",
    keep_min_rating: Annotated[
        float, typer.Option("--keep-min-rating", help="A response rated at least this becomes a keep example.")
    ] = _LABELS.keep_min_rating,
    min_target_rating: Annotated[
        float, typer.Option("--min-target-rating", help="Never rewrite towards a response rated below this.")
    ] = _LABELS.min_target_rating,
    minor_gap: Annotated[
        float, typer.Option("--minor-gap", help="Rating gap (best - weak) from which a pair is a minor revision.")
    ] = _LABELS.minor_gap,
    major_gap: Annotated[
        float, typer.Option("--major-gap", help="Rating gap from which a pair is a major revision.")
    ] = _LABELS.major_gap,
    template: Annotated[str, typer.Option("--template")] = REVISE.template,
    limit: LimitOpt = None,
    prompt_column: PromptColOpt = None,
    responses_column: ResponsesColOpt = None,
    text_field: TextFieldOpt = None,
    rating_field: RatingFieldOpt = None,
) -> None:
    """SEFT reviser SFT data from preference records: graded revision and keep examples.

    For each record, a weak response with the best one becomes a [bold]minor[/] or [bold]major[/]
    revision example (by rating gap), and a top response becomes a [bold]keep[/] example.

    [bold]Example[/]

      seftgen build-reviser-data data/demo/preferences.jsonl -o runs/reviser-data
      seftgen build-reviser-data openbmb/UltraFeedback --preset ultrafeedback -o runs/uf-reviser
    """
    if major_gap < minor_gap:
        raise typer.BadParameter("--major-gap must be at least --minor-gap")
    result = build_reviser_data(
        source,
        out,
        columns=_columns(preset, prompt_column, responses_column, text_field, rating_field),
        labels=RevisionLabels(keep_min_rating, min_target_rating, minor_gap, major_gap),
        template=template,
        limit=limit,
    )
    report(result, "build-reviser-data")


def build_jsft_data_cmd(
    source: SourceArg,
    out: OutOpt,
    preset: PresetOpt = "seftgen",
    template: Annotated[
        list[str],
        typer.Option(
            "--template",
            help="judge_general; the reference's decision-first principle judges (give each of principle_helpfulness, "
            "principle_honesty, principle_instruction_following, principle_truthfulness; needs aspect ratings, "
            "e.g. --preset ultrafeedback); or our rationale-first judge_helpfulness / judge_harmlessness (needs "
            "a rationale column).",
        ),
    ] = [JSFT_DATA.template],  # noqa: B006 - Typer's list default, never mutated
    min_gap: Annotated[
        float, typer.Option("--min-gap", help="Only pair responses whose ratings differ by at least this.")
    ] = JSFT_DATA.min_gap,
    sft: Annotated[
        bool, typer.Option("--sft/--no-sft", help="Also emit the best response as an SFT example.")
    ] = JSFT_DATA.include_sft,
    limit: LimitOpt = None,
    prompt_column: PromptColOpt = None,
    responses_column: ResponsesColOpt = None,
    text_field: TextFieldOpt = None,
    rating_field: RatingFieldOpt = None,
    rationale_column: RationaleColOpt = None,
) -> None:
    """SELF-JUDGE judge-augmented SFT data: SFT examples plus pairwise judge examples in both orders.

    [bold]Example[/] (the four principle judges from UltraFeedback-style records)

      seftgen build-jsft-data data/demo/ultrafeedback.jsonl -o runs/jsft --preset ultrafeedback
      --template principle_helpfulness --template principle_honesty
      --template principle_instruction_following --template principle_truthfulness
    """
    result = build_jsft_data(
        source,
        out,
        columns=_columns(preset, prompt_column, responses_column, text_field, rating_field, rationale_column),
        template=template[0] if len(template) == 1 else template,
        min_gap=min_gap,
        include_sft=sft,
        limit=limit,
    )
    report(result, "build-jsft-data")


def instruct_cmd(
    source: Annotated[
        str | None, typer.Argument(help="Base prompts: .jsonl, .parquet, a saved dataset folder or a hub id.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Prompts file to write (.jsonl), for `sample` or a recipe.")
    ] = None,
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Column with the prompt text.")] = "prompt",
    messages_column: Annotated[
        str | None, typer.Option("--messages-column", help="Column with chat messages (the last user turn is used).")
    ] = None,
    min_count: Annotated[int, typer.Option("--min", min=1, help="Fewest instructions per prompt.")] = 1,
    max_count: Annotated[int, typer.Option("--max", min=1, help="Most instructions per prompt.")] = 2,
    instruction: Annotated[
        list[str] | None,
        typer.Option("--instruction", "-i", help="Draw only these instruction ids (repeat it); default: all."),
    ] = None,
    variants: Annotated[
        int, typer.Option("--variants", min=1, help="Instruction sets drawn per base prompt (ids become ID:v).")
    ] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the draws (per prompt: seed and prompt id).")] = 0,
    limit: LimitOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite --out if it exists.")] = False,
    list_ids: Annotated[bool, typer.Option("--list", help="Print the instruction ids and exit.")] = False,
) -> None:
    """Prompts with verifiable instructions: IFEval's checkable instructions attached to base prompts.

    Each prompt gets --min to --max instructions drawn (seeded) from IFEval's registry, described
    by IFEval's own builders, with the ids and arguments the [bold]instructions[/] verifier checks
    ([bold]judge/best-of --verifier instructions[/]). IFEval's own 541 prompts are never used, so
    the benchmark stays held out.

    [bold]Example[/]

      seftgen instruct data/demo/prompts.jsonl -o runs/instruct.jsonl --variants 4 --max 2
      seftgen sample runs/instruct.jsonl -o runs/s -n 4 && seftgen best-of runs/s -o runs/best --verifier instructions
    """
    from seftgen.stages.instruct import instruct_prompts
    from seftgen.stages.instructions import instruction_ids

    if list_ids:
        console.print("\n".join(instruction_ids()))
        return
    if source is None or out is None:
        raise UserError("give SOURCE and --out (or --list)", param="source" if source is None else "out")
    result = instruct_prompts(
        source,
        out,
        columns=PromptColumns(prompt=prompt_column, messages=messages_column),
        min_count=min_count,
        max_count=max_count,
        ids=instruction or None,
        seed=seed,
        variants=variants,
        limit=limit,
        force=force,
    )
    console.print(f"[green]✓[/] instruct: {result.written} prompts → {result.out}")
    if result.skipped_ifeval:
        console.print(f"  skipped {result.skipped_ifeval} base prompts that are IFEval's own")
    console.print(f"  instructions: {result.by_instruction}")


def register(app: typer.Typer) -> None:
    app.command("instruct")(instruct_cmd)
    app.command("build-reviser-data")(build_reviser_data_cmd)
    app.command("build-jsft-data")(build_jsft_data_cmd)
