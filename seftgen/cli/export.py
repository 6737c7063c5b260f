"""Commands that hand data on: export-axolotl, round, release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seftgen.choices import TrainKind
from seftgen.cli.options import DataParallelOpt
from seftgen.console import console, warn
from seftgen.io.workdir import PLAN

AXOLOTL_HELP = "axolotl executable or its venv (else $SEFTGEN_AXOLOTL, then PATH, then .venv-train)."


def export_axolotl_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run folder: reviser/JSFT data, revisions, judged pairs or best-of.")],
    kind: Annotated[
        TrainKind, typer.Option("--kind", help="What to train (see the table in `seftgen.export.axolotl`).")
    ],
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
    axolotl: Annotated[
        Path | None,
        typer.Option("--axolotl", help=AXOLOTL_HELP),
    ] = None,
    validate: Annotated[
        bool,
        typer.Option(
            "--validate/--no-validate",
            help="Check with axolotl's validate_config (in axolotl's env) and for keys axolotl would drop.",
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
        axolotl=axolotl,
    )
    console.print(
        f"[green]✓[/] {result.variant}: {result.rows} rows → {result.data_path}"
        + (f" ({result.left_out} not kept, left out)" if result.left_out else "")
    )
    console.print(f"[green]✓[/] config → {result.config_path}")
    if validate and not result.validated:
        warn("no axolotl found: the config was written unvalidated; run `seftgen validate` where axolotl is")
    console.print("next:\n  " + "\n  ".join(result.commands))


def round_cmd(
    recipe: Annotated[str, typer.Argument(help="Recipe file, or a shipped one: seft, self-judge, srt.")],
    rounds: Annotated[
        str,
        typer.Option("--rounds", "--round", "-k", help="Round K, or rounds K-M; round K > 1 starts from K-1's policy."),
    ] = "1",
    workdir: Annotated[Path, typer.Option("--workdir", "-w", help="Where round-K/ folders go.")] = Path("runs"),
    do_train: Annotated[
        bool, typer.Option("--train/--no-train", help="Run each training step with axolotl (train + merge-lora).")
    ] = False,
    preset: Annotated[
        str | None,
        typer.Option("--preset", help="axolotl preset for every step: cpu, gpu, gpu-fsdp, gpu-qlora or a YAML file."),
    ] = None,
    axolotl: Annotated[
        Path | None,
        typer.Option("--axolotl", help=AXOLOTL_HELP),
    ] = None,
    policy: Annotated[str | None, typer.Option("--policy", help="Override the first round's policy model.")] = None,
    base_dir: Annotated[
        Path, typer.Option("--base-dir", help="Relative paths in the recipe resolve against this.")
    ] = Path("."),
    launcher_args: Annotated[
        str | None,
        typer.Option(
            "--launcher-args",
            help="Arguments for axolotl's launcher (accelerate/torchrun), one string, e.g. "
            "'--num_processes 4 --main_process_port 29501'; overrides the recipe's training.launcher_args.",
        ),
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print every training command (launcher, arguments, processes, effective batch) and run nothing.",
        ),
    ] = False,
    data_parallel: DataParallelOpt = 1,
) -> None:
    """Run rounds of a recipe: data stages, axolotl configs, and with [bold]--train[/] the training.

    Each round samples with its policy, revises / critiques / judges, and trains in the order the
    method needs (SEFT: reviser, then revise with it, then the policy). Round K+1 samples with round
    K's trained policy. Without --train, the configs and the axolotl commands are written and printed.
    axolotl runs in its own environment (.venv-train); its output goes to the round's logs/ folder.

    [bold]Examples[/]

      seftgen round seft --rounds 1-2 --train --preset cpu --workdir runs/demo

      seftgen round self-judge --round 1 --workdir runs/sj      # configs only

      seftgen round seft --rounds 1-3 --preset gpu-fsdp --launcher-args '--num_processes 8' --dry-run

      seftgen round self-judge --rounds 1-2 --train --data-parallel 8   # 8 GPUs: one engine each per model stage
    """
    import shlex

    from seftgen.console import StepLine
    from seftgen.rounds import RoundOptions, load_recipe, parse_rounds, run_rounds

    line = StepLine()
    options = RoundOptions(
        train=do_train,
        axolotl=axolotl,
        preset=preset,
        launcher_args=shlex.split(launcher_args) if launcher_args is not None else None,
        notify=lambda text: console.print(f"[dim]·[/] {text}"),
        on_step=line.update,
        data_parallel=data_parallel,
    )
    loaded = load_recipe(recipe, base_dir)
    if dry_run:
        from rich.markup import escape

        from seftgen.rounds.plan import plan_training

        for step in plan_training(loaded, workdir, parse_rounds(rounds), options):
            console.print(
                f"[bold]round {step.round}[/] {step.step} ({step.kind}, preset {step.preset or 'none'}): "
                f"launcher {step.launcher or 'accelerate'}, {step.processes} process(es), "
                f"effective batch {step.effective_batch}"
            )
            for command in step.commands:
                console.print(f"  {escape(command)}", soft_wrap=True)
        return
    results = run_rounds(loaded, workdir, parse_rounds(rounds), policy=policy, options=options)
    for result in results:
        round_report(result)


def round_report(result) -> None:
    """What a round did, in a few lines: data, labels, kept rows, training, models."""
    from seftgen.console import warn

    console.print(f"\n[bold]round {result.round}[/]  policy (wrote the samples): {result.policy}")
    for name, stage in result.stages.items():
        s = stage.summary
        detail = ", ".join(
            f"{k} {v}" for k, v in s.items() if k in ("prompts", "rows", "kept", "labels", "examples", "pairs")
        )
        console.print(f"  [green]✓[/] {name}: {detail or f'{stage.written} rows'}")
        if gates := s.get("gates"):
            console.print("      quality gates removed: " + ", ".join(f"{g} {n}" for g, n in gates.items()))
    for name, trained in result.trained.items():
        loss = f"loss {trained.losses[0]:.3f} → {trained.losses[-1]:.3f}" if trained.losses else "no loss logged"
        state = "already trained" if trained.skipped else f"{trained.steps} steps, {trained.seconds:.0f}s"
        console.print(f"  [green]✓[/] trained {name}: {state}, {loss} → {trained.model}")
    for exported in result.exports:
        if not exported.validated:
            warn(f"{exported.config_path} was not validated (no axolotl found); run `seftgen validate` later")
    for name, why in result.skipped.items():
        console.print(f"  [dim]·[/] training step '{name}' skipped: {why}")
    if result.blocked:
        warn(result.blocked)
    if result.commands:
        console.print("  next:\n    " + "\n    ".join(result.commands))
    if result.next_policy:
        console.print(f"  next round's policy: {result.next_policy}")
    if result.eval:
        from seftgen.evaluation.stats import headline

        if "skipped" in result.eval:
            console.print(f"  [dim]·[/] eval skipped: {result.eval['skipped']}")
        for name in ("vs_start", "vs_previous"):
            if name in result.eval:
                console.print(f"  [green]✓[/] eval {name.replace('_', ' ')}: {headline(result.eval[name])}")
        from seftgen.evaluation.benchmark import round_headline

        for name, bench in (result.eval.get("benchmarks") or {}).items():
            console.print(f"  [green]✓[/] {name}: {round_headline(name, bench)}")
    time_report(result)
    console.print(f"  plan: {result.dir / PLAN}")


TIME_PARTS = {"engine_start_s": "engine start", "generation_s": "generation", "write_s": "writing"}


def time_report(result) -> None:
    """Where the round's time went: one line per stage and training step."""
    from seftgen.rounds.runner import time_table

    table = time_table(result)
    console.print(f"  time: {table.pop('round')['total_s']:.0f}s")
    for name, t in table.items():
        parts = [f"{label} {t[key]:.1f}s" for key, label in TIME_PARTS.items() if t.get(key)]
        if t.get("rows_per_s"):
            parts.append(f"{t['rows_per_s']:.1f} rows/s")
        console.print(f"    {name:<16} {t['total_s']:>7.1f}s" + (f"  ({', '.join(parts)})" if parts else ""))


def validate_cmd(
    configs: Annotated[list[Path], typer.Argument(help="axolotl config files written by seftgen.")],
    axolotl: Annotated[
        Path | None,
        typer.Option("--axolotl", help=AXOLOTL_HELP),
    ] = None,
) -> None:
    """Validate axolotl configs with axolotl's own code, in axolotl's environment.

    Checks what `validate_config` checks, and keys axolotl would drop silently.

    [bold]Example[/]

      seftgen validate runs/demo/round-1/train-*.yml --axolotl .venv-train
    """

    from seftgen.errors import UserError
    from seftgen.io.files import read_mapping
    from seftgen.training.env import find_axolotl, validate_configs

    found = find_axolotl(axolotl)
    if found is None:
        raise UserError("no axolotl found", hint="--axolotl PATH, $SEFTGEN_AXOLOTL, PATH or .venv-train")
    loaded = []
    for path in configs:
        if not path.is_file():
            raise UserError("config file does not exist", file=path)
        loaded.append(read_mapping(path, "axolotl config"))
    problems = validate_configs(found, loaded)
    for path, problem in zip(configs, problems, strict=True):
        if problem:
            raise UserError(problem, file=path)
        console.print(f"[green]✓[/] {path}: valid for axolotl ({found.executable})")


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


def report_cmd(
    workdir: Annotated[Path, typer.Argument(help="A `seftgen round` workdir (round-*/round.json).")],
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Folder for report.png and report.html (default WORKDIR/report).")
    ] = None,
) -> None:
    """Draw the rounds (report.png) and write a page to browse their rows (report.html).

    The PNG shows the win rate per round with its 95% interval (recipe `eval`), the rows kept and
    labelled per round, the score distributions and the judges' position consistency. The page is
    one self-contained file: original vs revised as a word diff, labels, critic feedback and
    scores, judged pairs with both orders' probabilities, filterable by round, label, kept, reason.

    [bold]Example[/]

      seftgen round seft --rounds 1-2 --train --workdir runs/demo && seftgen report runs/demo
    """
    from seftgen.evaluation.report import write_report

    made = write_report(workdir, out)
    console.print(f"[green]✓[/] report of {made.rounds} round(s), {made.rows} rows to browse")
    console.print(f"  {made.png}\n  {made.html}")


def register(app: typer.Typer) -> None:
    app.command("release")(release_cmd)
    app.command("export-axolotl")(export_axolotl_cmd)
    app.command("round")(round_cmd)
    app.command("validate")(validate_cmd)
    app.command("report")(report_cmd)
