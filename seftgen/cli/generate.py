"""Commands that run a model: sample, revise, judge, best-of, evaluate, benchmark."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from seftgen.choices import EngineKind, Verdict
from seftgen.cli.options import (
    JUDGE_PANEL,
    RUN,
    SAMPLING,
    SAMPLING_DEFAULTS,
    BatchSizeOpt,
    DataParallelOpt,
    GateOpt,
    KeepTruncatedOpt,
    LimitOpt,
    MaxTokensOpt,
    NOpt,
    OutOpt,
    ResumeOpt,
    ShardOpt,
    StopOpt,
    TemperatureOpt,
    TopPOpt,
    quality_gates,
    sampling,
    with_engine_options,
)
from seftgen.cli.report import report
from seftgen.console import console
from seftgen.engines import EngineSpec
from seftgen.engines.openai_batch import BATCH_ROWS
from seftgen.errors import UserError
from seftgen.evaluation.benchmark import BENCHMARKS, JudgeSettings, run_benchmark
from seftgen.evaluation.benchmark import get as get_benchmark
from seftgen.evaluation.evaluate import evaluate
from seftgen.evaluation.stats import headline
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Shard
from seftgen.stages.common import StageResult
from seftgen.stages.config import BENCHMARK, CRITIQUE, EVALUATE, JUDGE, REVISE, SAMPLE, TOURNAMENT
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.revise import SRT_BATCH_SIZE, revise_seft, revise_self, revise_srt
from seftgen.stages.sample import sample

# The library's defaults (seftgen.stages.config), shown and used by the options below.


def run_stage(
    fn: Callable[..., StageResult],
    source: str | Path,
    out: Path,
    spec: EngineSpec | None,
    *,
    data_parallel: int,
    shard: str | None,
    **kwargs: Any,
) -> StageResult:
    """One stage, in this process (on `--shard i/N` of the input) or as `--data-parallel N` workers."""
    if data_parallel == 1 or spec is None:  # a verifier alone loads no model: nothing to spread
        return fn(source, out, spec, shard=Shard.parse(shard), **kwargs)
    if shard:
        raise UserError("give --shard or --data-parallel, not both (--data-parallel shards the input itself)")
    if spec.kind != EngineKind.VLLM:
        raise UserError("--data-parallel runs local vLLM engines; an API engine scales with --concurrency")
    from seftgen.stages.parallel import run_data_parallel

    return run_data_parallel(fn, source, out, spec, data_parallel, **kwargs)


ConstrainOpt = Annotated[
    bool,
    typer.Option(
        "--constrain/--no-constrain",
        help="Constrain decoding to the template's reply format (vLLM in process, vLLM servers, Ray).",
        rich_help_panel=SAMPLING,
    ),
]


@with_engine_options
def sample_cmd(
    source: Annotated[
        str,
        typer.Argument(
            help="Prompts: .jsonl, .parquet, a saved dataset folder, or a hub dataset id (org/name[:split])."
        ),
    ],
    out: OutOpt,
    prompt_column: Annotated[
        str, typer.Option("--prompt-column", help="Column with the prompt as plain text.")
    ] = "prompt",
    messages_column: Annotated[
        str | None,
        typer.Option("--messages-column", help="Column with the prompt as chat messages (overrides --prompt-column)."),
    ] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt to put before each prompt.")] = None,
    n: NOpt = SAMPLING_DEFAULTS.n,
    temperature: TemperatureOpt = SAMPLING_DEFAULTS.temperature,
    top_p: TopPOpt = SAMPLING_DEFAULTS.top_p,
    max_tokens: MaxTokensOpt = SAMPLING_DEFAULTS.max_tokens,
    stop: StopOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = SAMPLE.batch_size,
    self_refine: Annotated[
        bool,
        typer.Option(
            "--self-refine",
            help="SRT at inference: the model (an SRT stage-1/2 model) refines each response once, with its own "
            "feedback; `response` is the refinement, `initial` and `feedback` are kept.",
        ),
    ] = False,
    shard: ShardOpt = None,
    data_parallel: DataParallelOpt = 1,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Sample policy responses: n per prompt, into a run folder of Parquet parts.

    [bold]Examples[/]

      seftgen sample data/demo/prompts.jsonl -o runs/r1/samples -n 2 --max-tokens 256

      seftgen sample prompts.parquet --messages-column messages -o out --shard 0/8

      seftgen sample prompts.jsonl -o out --engine openai --base-url http://127.0.0.1:8000/v1 -m my-model

      seftgen sample prompts.jsonl -o out -m Qwen/Qwen2.5-7B-Instruct --data-parallel 8   # every GPU of a node
    """
    result = run_stage(
        sample,
        source,
        out,
        spec,
        data_parallel=data_parallel,
        shard=shard,
        columns=PromptColumns(prompt=prompt_column, messages=messages_column, system=system),
        params=sampling(n, temperature, top_p, max_tokens, stop),
        limit=limit,
        batch_size=batch_size,
        self_refine=self_refine,
        resume=resume,
    )
    report(result, "sample")


SamplesArg = Annotated[Path, typer.Argument(help="Run folder written by `seftgen sample`.")]
TemplateOpt = Annotated[
    str, typer.Option("--template", help="Template name (see `seftgen templates list`) or YAML file.")
]
JudgeTemplatesOpt = Annotated[
    list[str],
    typer.Option(
        "--template",
        help="Judge template name or YAML file. Give it several times for a panel of principle judges "
        "(e.g. the four principle_*): each judges every pair, the majority decides (ties by the mean score).",
    ),
]


def _templates(given: list[str]) -> str | list[str]:
    return given[0] if len(given) == 1 else given


@with_engine_options
def revise_cmd(
    samples: SamplesArg,
    out: OutOpt,
    reviser: Annotated[
        str | None,
        typer.Option(
            "--reviser", help="SEFT: the reviser model ('demo', folder or hub id; --engine openai for a served one)."
        ),
    ] = None,
    critic: Annotated[
        EngineKind | None,
        typer.Option("--critic", help="SRT: the critic's engine (openai: with --base-url and --model)."),
    ] = None,
    self_critic: Annotated[
        str | None,
        typer.Option(
            "--self-critic",
            help="SRT stage 2: the stage-1 model ('train:' output folder) critiques, refines and scores its own "
            "samples; rows are kept when the refinement scores strictly higher.",
        ),
    ] = None,
    template: Annotated[
        str | None,
        typer.Option(
            "--template",
            help=f"Template name or YAML file; default {REVISE.template} (reviser), {CRITIQUE.template} (critic).",
        ),
    ] = None,
    score_template: Annotated[
        str, typer.Option("--score-template", help="SRT: template of the separate scoring calls.")
    ] = CRITIQUE.score_template,
    max_tokens: Annotated[
        int | None,
        typer.Option(
            "--max-tokens",
            min=1,
            help=f"Tokens per reply; default {REVISE.params.max_tokens} (reviser), {CRITIQUE.max_tokens} (critic).",
            rich_help_panel=SAMPLING,
        ),
    ] = None,
    batch_size: Annotated[
        int | None,
        typer.Option(
            "--batch-size",
            min=1,
            help=f"Samples per engine call and part file; default {REVISE.batch_size} (reviser), "
            f"{SRT_BATCH_SIZE} (critic; {BATCH_ROWS:,} with --batch-api).",
            rich_help_panel=RUN,
        ),
    ] = None,
    constrain: ConstrainOpt = REVISE.constrain,
    keep_truncated: KeepTruncatedOpt = False,
    gate: GateOpt = None,
    shard: ShardOpt = None,
    data_parallel: DataParallelOpt = 1,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Revise samples: SEFT reviser, SRT API critic, or SRT stage-2 self-critic.

    SEFT ([bold]--reviser[/]) labels each sample keep / minor / major and rewrites it unless kept.
    SRT ([bold]--critic[/]) writes feedback with a score and an improved response (temperature 0),
    scores original and refinement in separate calls, and keeps the refinement only if the
    feedback is complete and it scores no lower. SRT stage 2 ([bold]--self-critic[/]): the stage-1
    model continues its own samples in its training layout with feedback and a refinement, scores
    both in separate calls, and keeps pairs whose refinement scores strictly higher. Every row is
    written with its verdict and reason; API failures are reported and a rerun retries them.

    [bold]Examples[/]

      seftgen revise runs/r1/samples -o runs/r1/revised --reviser ./reviser-model

      seftgen revise runs/r1/samples -o runs/r1/refined --critic openai --base-url http://127.0.0.1:8000/v1 -m critic

      seftgen revise runs/r1/stage2-samples -o runs/r1/self-critique --self-critic runs/r1/train-stage1-output
    """
    if sum(x is not None for x in (reviser, critic, self_critic)) != 1:
        raise UserError(
            "give exactly one of --reviser MODEL (SEFT), --critic ENGINE (SRT) or --self-critic MODEL (SRT stage 2)"
        )
    # Options left unset take the library's default for the method (one source of defaults).
    given = {k: v for k, v in {"template": template, "batch_size": batch_size}.items() if v is not None}
    given["constrain"] = constrain
    given["quality"] = quality_gates(keep_truncated, gate)
    fn: Callable[..., StageResult]
    if reviser is not None:
        given["params"] = REVISE.params if max_tokens is None else replace(REVISE.params, max_tokens=max_tokens)
        fn, stage_spec = revise_seft, replace(spec, model=reviser)
    else:
        if max_tokens is not None:
            given["max_tokens"] = max_tokens
        if self_critic is not None:
            fn, stage_spec = revise_self, replace(spec, model=self_critic)
        else:
            fn, stage_spec = revise_srt, replace(spec, kind=critic)
            given["score_template"] = score_template
    result = run_stage(fn, samples, out, stage_spec, data_parallel=data_parallel, shard=shard, resume=resume, **given)
    report(result, "revise")


VerdictOpt = Annotated[
    Verdict,
    typer.Option(
        "--verdict",
        help="logprobs: probabilities of the answer tokens; text: parse the reply (APIs without logprobs).",
    ),
]


VerifierOpt = Annotated[
    str | None,
    typer.Option(
        "--verifier",
        help="A program judges in place of the model: instructions (IFEval's checkers on the prompt rows' "
        "instruction_id_list/kwargs), instructions-loose, match (the rows' reference), or module:function. "
        "No model is loaded unless --tie-break.",
    ),
]
TieBreakOpt = Annotated[
    bool,
    typer.Option(
        "--tie-break/--no-tie-break", help="With --verifier: the model (--model) decides samples the verifier ties."
    ),
]


def _judge_spec(spec: EngineSpec, verifier: str | None, tie_break: bool) -> EngineSpec | None:
    """A verifier alone loads no model."""
    return None if verifier and not tie_break else spec


@with_engine_options
def judge_cmd(
    samples: SamplesArg,
    out: OutOpt,
    template: JudgeTemplatesOpt = [JUDGE.template],  # noqa: B006 - Typer's list default, never mutated
    verdict: VerdictOpt = JUDGE.verdict,
    min_margin: Annotated[
        float,
        typer.Option("--min-margin", min=0.0, max=1.0, help="Keep pairs whose margin |2*score_a-1| is at least this."),
    ] = JUDGE.min_margin,
    require_consistent: Annotated[
        bool, typer.Option("--require-consistent", help="Keep only pairs both orders agree on.")
    ] = JUDGE.require_consistent,
    batch_size: BatchSizeOpt = JUDGE.batch_size,
    constrain: ConstrainOpt = JUDGE.constrain,
    keep_truncated: KeepTruncatedOpt = False,
    gate: GateOpt = None,
    verifier: VerifierOpt = JUDGE.verifier,
    tie_break: TieBreakOpt = JUDGE.tie_break,
    shard: ShardOpt = None,
    data_parallel: DataParallelOpt = 1,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """SELF-JUDGE: judge the samples of each prompt pairwise, in both orders, into DPO pairs.

    The judge is usually the policy itself ([bold]--model[/] the same folder). Its verdict is
    read from the probabilities of ' A' and ' B' after the template's fixed assistant prefix,
    averaged over both orders: score_a = (p_a[AB] + p_a[BA]) / 2. With [bold]--verifier[/], a
    program scores each sample instead (score_a = 0.5 + (score a - score b) / 2); equal scores
    are ties, dropped unless [bold]--tie-break[/] asks the model.

    [bold]Example[/]

      seftgen judge runs/r1/samples -o runs/r1/pairs --min-margin 0.1 --require-consistent
      seftgen judge runs/r1/samples -o runs/r1/pairs --verifier instructions
    """
    result = run_stage(
        judge_pairs,
        samples,
        out,
        _judge_spec(spec, verifier, tie_break),
        data_parallel=data_parallel,
        shard=shard,
        verifier=verifier,
        tie_break=tie_break,
        template=_templates(template),
        verdict=verdict,
        min_margin=min_margin,
        require_consistent=require_consistent,
        batch_size=batch_size,
        constrain=constrain,
        quality=quality_gates(keep_truncated, gate),
        resume=resume,
    )
    report(result, "judge")


@with_engine_options
def best_of_cmd(
    samples: SamplesArg,
    out: OutOpt,
    template: JudgeTemplatesOpt = [TOURNAMENT.template],  # noqa: B006 - Typer's list default, never mutated
    verdict: VerdictOpt = TOURNAMENT.verdict,
    tournament_seed: Annotated[
        int, typer.Option("--tournament-seed", help="Seed of the bracket shuffle.")
    ] = TOURNAMENT.seed,
    batch_size: BatchSizeOpt = TOURNAMENT.batch_size,
    constrain: ConstrainOpt = TOURNAMENT.constrain,
    keep_truncated: KeepTruncatedOpt = False,
    gate: GateOpt = None,
    verifier: VerifierOpt = TOURNAMENT.verifier,
    tie_break: TieBreakOpt = TOURNAMENT.tie_break,
    data_parallel: DataParallelOpt = 1,
    min_score: Annotated[
        float,
        typer.Option(
            "--min-score",
            min=0.0,
            max=1.0,
            help="With --verifier: keep a winner scoring at least this (1: all checks).",
        ),
    ] = TOURNAMENT.min_score,
    shard: ShardOpt = None,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Tournament rejection sampling: the best of the n samples of each prompt (n-1 judgments).

    With [bold]--verifier[/], the verifier's scores decide the matches, and a winner is kept only
    if it scores at least [bold]--min-score[/] (rejection sampling on checkable instructions).

    [bold]Example[/]

      seftgen sample prompts.jsonl -o runs/s -n 8 && seftgen best-of runs/s -o runs/best
      seftgen instruct prompts.jsonl -o ip.jsonl && seftgen sample ip.jsonl -o runs/s -n 4
      seftgen best-of runs/s -o runs/best --verifier instructions
    """
    result = run_stage(
        best_of,
        samples,
        out,
        _judge_spec(spec, verifier, tie_break),
        data_parallel=data_parallel,
        shard=shard,
        verifier=verifier,
        tie_break=tie_break,
        min_score=min_score,
        template=_templates(template),
        verdict=verdict,
        seed=tournament_seed,
        batch_size=batch_size,
        constrain=constrain,
        quality=quality_gates(keep_truncated, gate),
        resume=resume,
    )
    report(result, "best-of")


@with_engine_options
def evaluate_cmd(
    candidate: Annotated[Path, typer.Argument(help="Sample run of the policy being evaluated.")],
    baseline: Annotated[Path, typer.Argument(help="Sample run of the policy it is compared with.")],
    out: OutOpt,
    template: TemplateOpt = EVALUATE.template,
    verdict: VerdictOpt = EVALUATE.verdict,
    tie_margin: Annotated[
        float,
        typer.Option(
            "--tie-margin", min=0.0, max=1.0, help="A verdict whose margin |2*score-1| is below this is a tie."
        ),
    ] = EVALUATE.tie_margin,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = EVALUATE.batch_size,
    constrain: ConstrainOpt = EVALUATE.constrain,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Win rate of CANDIDATE over BASELINE: each common prompt judged pairwise, in both orders.

    The judge ([bold]--model[/]) reads the first sample of each prompt from both runs, once with
    the candidate shown first and once second. A prompt is a win, a loss or a tie (the orders
    disagree, or the margin is below --tie-margin). The summary gives the win rate (ties count
    half) with a 95% bootstrap interval, position consistency, mean lengths, and the win rate
    within length buckets (is the gain only longer answers?). Rows go to an `evals` run.

    [bold]Example[/]

      seftgen evaluate runs/r2/eval-samples runs/r0/eval-samples -o runs/r2/eval-vs-r0 -m judge/
    """
    result = evaluate(
        candidate,
        baseline,
        out,
        spec,
        template=template,
        verdict=verdict,
        tie_margin=tie_margin,
        limit=limit,
        batch_size=batch_size,
        constrain=constrain,
        resume=resume,
    )
    report(result, "evaluate")
    console.print(f"  [bold]{headline(result.summary)}[/]")


@with_engine_options
def benchmark_cmd(
    name: Annotated[str, typer.Argument(help=f"The benchmark: {', '.join(BENCHMARKS)}.")],
    out: OutOpt,
    judge: Annotated[
        str | None,
        typer.Option(
            "--judge",
            help="alpaca_eval, mt_bench: the judge model (a served model's name with --judge-base-url; else a "
            "local folder or hub id run by vLLM). AlpacaEval's judge must give logprobs.",
            rich_help_panel=JUDGE_PANEL,
        ),
    ] = None,
    judge_base_url: Annotated[
        str | None,
        typer.Option("--judge-base-url", help="The judge's OpenAI-compatible endpoint.", rich_help_panel=JUDGE_PANEL),
    ] = None,
    judge_api_key_env: Annotated[
        str, typer.Option("--judge-api-key-env", help="Env var with the judge's API key.", rich_help_panel=JUDGE_PANEL)
    ] = "OPENAI_API_KEY",
    judge_batch_api: Annotated[
        bool,
        typer.Option(
            "--judge-batch-api",
            help="Judge through the provider's Batch API (half price).",
            rich_help_panel=JUDGE_PANEL,
        ),
    ] = False,
    judge_max_tokens: Annotated[
        int,
        typer.Option(
            "--judge-max-tokens", min=1, help="mt_bench: the judge's reply length.", rich_help_panel=JUDGE_PANEL
        ),
    ] = BENCHMARK.judge_max_tokens,
    judge_constrain: Annotated[
        bool,
        typer.Option(
            "--judge-constrain/--no-judge-constrain",
            help="mt_bench: constrain the judge's reply to an explanation and 'Rating: [[N]]' (vLLM judges).",
            rich_help_panel=JUDGE_PANEL,
        ),
    ] = BENCHMARK.judge_constrain,
    limit: LimitOpt = None,
    max_tokens: MaxTokensOpt = BENCHMARK.max_tokens,
    batch_size: BatchSizeOpt = BENCHMARK.batch_size,
    data_parallel: DataParallelOpt = 1,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Answer a benchmark's prompts with [bold]--model[/] (greedy), score the answers, and export
    them in the official harness's format.

    [bold]ifeval[/]: the 541 IFEval prompts, scored offline by the benchmark's own checkers
    (lm-evaluation-harness's `ifeval`): prompt-level and instruction-level accuracy, strict and
    loose, with a 95% bootstrap interval and accuracy per instruction.
    [bold]alpaca_eval[/]: the 805 AlpacaEval instructions, each answer judged against GPT-4
    Turbo's reference with the official annotator's prompt and [bold]--judge[/]'s logprobs: the
    win rate with its interval, and the length-controlled win rate where alpaca-eval and its
    df_gamed.csv are at hand. [bold]mt_bench[/]: 80 questions over two turns, each turn rated
    1-10 by [bold]--judge[/] with FastChat's prompts. [bold]arena_hard[/]: the 750 Arena-Hard-Auto
    v2.0 prompts answered, for the official harness to judge.

    OUT holds the answers (`samples` runs: a rerun resumes them), the scores (a run of the
    benchmark's table) and the official file. Data comes from PyPI wheels; nothing else is
    fetched. Judged numbers match the public leaderboards only with the official judge
    (AlpacaEval: gpt-4-1106-preview; MT-Bench: gpt-4).

    [bold]Examples[/]

      seftgen benchmark ifeval -m runs/seft/round-2/policy/merged -o runs/seft/ifeval-r2

      seftgen benchmark alpaca_eval -m runs/seft/round-2/policy/merged -o runs/seft/alpaca-r2
        --judge gpt-4-1106-preview --judge-base-url https://api.openai.com/v1 --judge-batch-api
    """
    bench = get_benchmark(name)
    judge_spec = None
    if bench.judged:
        if judge is None:
            raise UserError(f"{name} is scored by a judge model: give --judge (and --judge-base-url for an API)")
        kind = EngineKind.OPENAI if judge_base_url else EngineKind.VLLM
        if judge_batch_api and kind != EngineKind.OPENAI:
            raise UserError("--judge-batch-api needs --judge-base-url (a provider's Batch API)")
        judge_spec = replace(
            spec,
            model=judge,
            kind=kind,
            base_url=judge_base_url,
            api_key_env=judge_api_key_env,
            batch_api=judge_batch_api,
            dtype=spec.dtype if kind == EngineKind.VLLM else None,
        )
    settings = JudgeSettings(max_tokens=judge_max_tokens, constrain=judge_constrain)
    result = run_benchmark(
        name,
        out,
        spec,
        judge=judge_spec,
        limit=limit,
        max_tokens=max_tokens,
        batch_size=batch_size,
        judge_settings=settings,
        data_parallel=data_parallel,
        resume=resume,
    )
    report(result.answers, f"{name} answers")  # failed rows: exit 1, rerun to retry them
    if result.scoring is not None:
        report(result.scoring, f"{name} judge")
    assert result.summary is not None
    console.print(f"[green]✓[/] scored {result.scored} new answers → {out / 'scores'}")
    console.print(f"  [bold]{bench.headline(result.summary)}[/]")
    console.print(f"  official format: {result.official}")


def register(app: typer.Typer) -> None:
    app.command("benchmark")(benchmark_cmd)
    app.command("sample")(sample_cmd)
    app.command("revise")(revise_cmd)
    app.command("judge")(judge_cmd)
    app.command("best-of")(best_of_cmd)
    app.command("evaluate")(evaluate_cmd)
