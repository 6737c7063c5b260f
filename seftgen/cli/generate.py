"""Commands that run a model: sample, revise, judge, best-of."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from seftgen.cli.options import (
    BatchSizeOpt,
    LimitOpt,
    MaxTokensOpt,
    NOpt,
    OutOpt,
    ResumeOpt,
    ShardOpt,
    StopOpt,
    TemperatureOpt,
    TopPOpt,
    sampling,
    with_engine_options,
)
from seftgen.cli.report import report
from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Shard


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
    n: NOpt = 2,
    temperature: TemperatureOpt = 1.0,
    top_p: TopPOpt = 1.0,
    max_tokens: MaxTokensOpt = 256,
    stop: StopOpt = None,
    limit: LimitOpt = None,
    batch_size: BatchSizeOpt = 256,
    shard: ShardOpt = None,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Sample policy responses: n per prompt, into a run folder of Parquet parts.

    [bold]Examples[/]

      seftgen sample data/demo/prompts.jsonl -o runs/r1/samples -n 2 --max-tokens 256

      seftgen sample prompts.parquet --messages-column messages -o out --shard 0/8

      seftgen sample prompts.jsonl -o out --engine openai --base-url http://127.0.0.1:8000/v1 -m my-model
    """
    from seftgen.stages.sample import sample

    result = sample(
        source,
        out,
        spec,
        columns=PromptColumns(prompt=prompt_column, messages=messages_column, system=system),
        params=sampling(n, temperature, top_p, max_tokens, stop),
        limit=limit,
        batch_size=batch_size,
        shard=Shard.parse(shard),
        resume=resume,
    )
    report(result, "sample")


SamplesArg = Annotated[Path, typer.Argument(help="Run folder written by `seftgen sample`.")]
TemplateOpt = Annotated[
    str | None, typer.Option("--template", help="Template name (see `seftgen templates list`) or YAML file.")
]


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
        str | None,
        typer.Option("--critic", help="SRT: the critic's engine, 'openai' (with --base-url and --model) or 'vllm'."),
    ] = None,
    template: TemplateOpt = None,
    score_template: Annotated[
        str, typer.Option("--score-template", help="SRT: template of the separate scoring calls.")
    ] = "srt_score",
    max_tokens: MaxTokensOpt = 512,
    batch_size: BatchSizeOpt = 64,
    shard: ShardOpt = None,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Revise samples: SEFT adaptive reviser ([bold]--reviser[/]) or SRT API critic ([bold]--critic[/]).

    SEFT labels each sample keep / minor / major and rewrites it unless kept. SRT writes feedback
    with a score and an improved response (temperature 0), scores original and refinement in
    separate calls, and keeps the refinement only if the feedback is complete and it scores no
    lower. Every row is written with its verdict and reason; API failures are reported and a
    rerun of the same command retries them.

    [bold]Examples[/]

      seftgen revise runs/r1/samples -o runs/r1/revised --reviser ./reviser-model

      seftgen revise runs/r1/samples -o runs/r1/refined --critic openai --base-url http://127.0.0.1:8000/v1 -m critic
    """
    from seftgen.stages.revise import revise_seft, revise_srt

    if (reviser is None) == (critic is None):
        raise UserError("give exactly one of --reviser MODEL (SEFT) or --critic ENGINE (SRT)")
    if reviser is not None:
        result = revise_seft(
            samples,
            out,
            replace(spec, model=reviser),
            template=template or "reviser",
            params=SamplingConfig(temperature=0.0, max_tokens=max_tokens),
            batch_size=batch_size,
            shard=Shard.parse(shard),
            resume=resume,
        )
    else:
        result = revise_srt(
            samples,
            out,
            replace(spec, kind=str(critic)),
            template=template or "srt_critic",
            score_template=score_template,
            max_tokens=max_tokens,
            batch_size=batch_size,
            shard=Shard.parse(shard),
            resume=resume,
        )
    report(result, "revise")


VerdictOpt = Annotated[
    str,
    typer.Option(
        "--verdict",
        help="'logprobs' (probabilities of the answer tokens) or 'text' (parse the reply; APIs without logprobs).",
    ),
]


@with_engine_options
def judge_cmd(
    samples: SamplesArg,
    out: OutOpt,
    template: TemplateOpt = None,
    verdict: VerdictOpt = "logprobs",
    min_margin: Annotated[
        float,
        typer.Option("--min-margin", min=0.0, max=1.0, help="Keep pairs whose margin |2*score_a-1| is at least this."),
    ] = 0.0,
    require_consistent: Annotated[
        bool, typer.Option("--require-consistent", help="Keep only pairs both orders agree on.")
    ] = False,
    batch_size: BatchSizeOpt = 64,
    shard: ShardOpt = None,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """SELF-JUDGE: judge the samples of each prompt pairwise, in both orders, into DPO pairs.

    The judge is usually the policy itself ([bold]--model[/] the same folder). Its verdict is
    read from the probabilities of ' A' and ' B' after the template's fixed assistant prefix,
    averaged over both orders: score_a = (p_a[AB] + p_a[BA]) / 2.

    [bold]Example[/]

      seftgen judge runs/r1/samples -o runs/r1/pairs --min-margin 0.1 --require-consistent
    """
    from seftgen.stages.judge import judge_pairs

    result = judge_pairs(
        samples,
        out,
        spec,
        template=template or "judge_general",
        verdict=verdict,
        min_margin=min_margin,
        require_consistent=require_consistent,
        batch_size=batch_size,
        shard=Shard.parse(shard),
        resume=resume,
    )
    report(result, "judge")


@with_engine_options
def best_of_cmd(
    samples: SamplesArg,
    out: OutOpt,
    template: TemplateOpt = None,
    verdict: VerdictOpt = "logprobs",
    tournament_seed: Annotated[int, typer.Option("--tournament-seed", help="Seed of the bracket shuffle.")] = 0,
    batch_size: BatchSizeOpt = 64,
    shard: ShardOpt = None,
    resume: ResumeOpt = True,
    *,
    spec: EngineSpec,
) -> None:
    """Tournament rejection sampling: the best of the n samples of each prompt (n-1 judgments).

    [bold]Example[/]

      seftgen sample prompts.jsonl -o runs/s -n 8 && seftgen best-of runs/s -o runs/best
    """
    from seftgen.stages.judge import best_of

    result = best_of(
        samples,
        out,
        spec,
        template=template or "judge_general",
        verdict=verdict,
        seed=tournament_seed,
        batch_size=batch_size,
        shard=Shard.parse(shard),
        resume=resume,
    )
    report(result, "best-of")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)
    app.command("revise")(revise_cmd)
    app.command("judge")(judge_cmd)
    app.command("best-of")(best_of_cmd)
