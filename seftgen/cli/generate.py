"""Commands that run a model: sample, revise, judge, best-of."""

from __future__ import annotations

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
from seftgen.engines import EngineSpec, get_engine
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Shard


@with_engine_options
def sample_cmd(
    source: Annotated[str, typer.Argument(help="Prompts: .jsonl, .parquet, a saved dataset folder, or a hub dataset id (org/name[:split]).")],
    out: OutOpt,
    prompt_column: Annotated[str, typer.Option("--prompt-column", help="Column with the prompt as plain text.")] = "prompt",
    messages_column: Annotated[str | None, typer.Option("--messages-column", help="Column with the prompt as chat messages (overrides --prompt-column).")] = None,
    system: Annotated[str | None, typer.Option("--system", help="System prompt to put before each prompt.")] = None,
    n: NOpt = 2,
    temperature: TemperatureOpt = 1.0,
    top_p: TopPOpt = 0.9,
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
        get_engine(spec),
        columns=PromptColumns(prompt=prompt_column, messages=messages_column, system=system),
        params=sampling(n, temperature, top_p, max_tokens, stop),
        limit=limit,
        batch_size=batch_size,
        shard=Shard.parse(shard),
        resume=resume,
    )
    report(result, "sample")


def register(app: typer.Typer) -> None:
    app.command("sample")(sample_cmd)
