"""Option aliases shared by every command (as in huggingface_hub's `hf` CLI), and the one helper
that turns engine options into an `EngineSpec`."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from seftgen.choices import EngineKind
from seftgen.defaults import defaults_of
from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.stages.quality import GATES, QualityGates

ENGINE = "Engine"
SAMPLING = "Sampling"
RUN = "Run"
JUDGE_PANEL = "Judge (alpaca_eval, mt_bench)"

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help="'demo' (embedded SmolLM2), a local HF folder, or a hub id; with --engine openai, the served model name.",
        rich_help_panel=ENGINE,
    ),
]
EngineOpt = Annotated[
    EngineKind,
    typer.Option(
        "--engine",
        help="vllm: offline, in process; openai: any OpenAI-compatible server; ray: Ray Data LLM on a cluster.",
        rich_help_panel=ENGINE,
    ),
]
BaseUrlOpt = Annotated[
    str | None,
    typer.Option(
        "--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.", rich_help_panel=ENGINE
    ),
]
ApiKeyEnvOpt = Annotated[
    str, typer.Option("--api-key-env", help="Environment variable holding the API key.", rich_help_panel=ENGINE)
]
DtypeOpt = Annotated[str, typer.Option("--dtype", help="vLLM weight dtype.", rich_help_panel=ENGINE)]
HeadDtypeOpt = Annotated[
    str | None,
    typer.Option(
        "--head-dtype",
        help="vLLM lm_head (logits) dtype; float32 gives a judge fine-grained probabilities (bf16: steps of 0.125).",
        rich_help_panel=ENGINE,
    ),
]
MaxModelLenOpt = Annotated[
    int | None,
    typer.Option(
        "--max-model-len",
        help="vLLM context length in tokens (default: 2048 on CPU; on GPU the model's own, or what fits its memory).",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
EagerOpt = Annotated[
    bool | None,
    typer.Option(
        "--eager/--no-eager",
        help="Eager PyTorch, no CUDA graphs or torch.compile (default: eager on CPU; graphs on GPU, which cost "
        "start-up time and decode faster).",
        rich_help_panel=ENGINE,
        show_default=False,
    ),
]
MemoryShareOpt = Annotated[
    float | None,
    typer.Option(
        "--memory-share",
        min=0.01,
        max=1.0,
        help="vLLM gpu_memory_utilization; default 0.9 on GPU, 0.3 on CPU (there: share of ALL RAM per engine).",
        rich_help_panel=ENGINE,
    ),
]
TensorParallelOpt = Annotated[
    int, typer.Option("--tensor-parallel", help="vLLM tensor parallel size (GPUs per model).", rich_help_panel=ENGINE)
]
MaxNumSeqsOpt = Annotated[
    int | None,
    typer.Option(
        "--max-num-seqs",
        min=1,
        help="vLLM: sequences decoded together (default vLLM's); lower it to save memory.",
        rich_help_panel=ENGINE,
    ),
]
SeedOpt = Annotated[
    int, typer.Option("--seed", help="Engine-level seed, recorded in every row.", rich_help_panel=ENGINE)
]
ChatTemplateOpt = Annotated[
    Path | None,
    typer.Option("--chat-template", help="Jinja chat template file; default: the tokenizer's.", rich_help_panel=ENGINE),
]
ConcurrencyOpt = Annotated[
    int, typer.Option("--concurrency", help="API engine: requests in flight.", rich_help_panel=ENGINE)
]
RpmOpt = Annotated[
    float | None, typer.Option("--rpm", help="API engine: requests per minute limit.", rich_help_panel=ENGINE)
]
TpmOpt = Annotated[
    float | None, typer.Option("--tpm", help="API engine: tokens per minute limit.", rich_help_panel=ENGINE)
]
RetriesOpt = Annotated[
    int,
    typer.Option(
        "--max-retries", help="API engine: retries per request (exponential backoff).", rich_help_panel=ENGINE
    ),
]
TimeoutOpt = Annotated[
    float, typer.Option("--timeout", help="API engine: seconds per request.", rich_help_panel=ENGINE)
]
PriceInOpt = Annotated[
    float,
    typer.Option(
        "--price-in", help="API engine: USD per million prompt tokens, for cost totals.", rich_help_panel=ENGINE
    ),
]
PriceOutOpt = Annotated[
    float, typer.Option("--price-out", help="API engine: USD per million completion tokens.", rich_help_panel=ENGINE)
]
BatchApiOpt = Annotated[
    bool,
    typer.Option(
        "--batch-api",
        help="API engine: send requests through the Batch API (Files + Batches endpoints): half price, results "
        "within 24 h. Give list prices to --price-in/--price-out; totals charge half. A rerun reattaches to "
        "batches still running and pays for nothing twice.",
        rich_help_panel=ENGINE,
    ),
]
BatchPollOpt = Annotated[
    float,
    typer.Option(
        "--batch-poll",
        min=0.01,
        help="Batch API: seconds to the first status check (then 1.5x, up to 60).",
        rich_help_panel=ENGINE,
    ),
]

RAY = "Engine: ray"
RayAddressOpt = Annotated[
    str | None,
    typer.Option(
        "--ray-address", help="Ray cluster to join ('auto', ray://host:10001); default: local.", rich_help_panel=RAY
    ),
]
ReplicasOpt = Annotated[
    int,
    typer.Option("--replicas", min=1, help="vLLM engine replicas (actors) across the cluster.", rich_help_panel=RAY),
]
RayBatchOpt = Annotated[
    int, typer.Option("--ray-batch-size", min=1, help="Rows per batch sent to each replica.", rich_help_panel=RAY)
]

NOpt = Annotated[int, typer.Option("-n", help="Samples per prompt.", min=1, rich_help_panel=SAMPLING)]
TemperatureOpt = Annotated[float, typer.Option("--temperature", "-t", min=0.0, rich_help_panel=SAMPLING)]
TopPOpt = Annotated[float, typer.Option("--top-p", min=0.0, max=1.0, rich_help_panel=SAMPLING)]
MaxTokensOpt = Annotated[
    int, typer.Option("--max-tokens", min=1, help="Tokens generated per response.", rich_help_panel=SAMPLING)
]
StopOpt = Annotated[
    list[str] | None, typer.Option("--stop", help="Stop string (repeatable).", rich_help_panel=SAMPLING)
]

OutOpt = Annotated[
    Path,
    typer.Option("--out", "-o", help="Run folder to write (parts/*.parquet + manifest.json).", rich_help_panel=RUN),
]
ResumeOpt = Annotated[
    bool,
    typer.Option("--resume/--no-resume", help="Skip rows already in --out (same settings only).", rich_help_panel=RUN),
]
ShardOpt = Annotated[
    str | None,
    typer.Option(
        "--shard",
        help="Take shard i of N (i/N) of the input, split by prompt id; join with `seftgen merge`.",
        rich_help_panel=RUN,
    ),
]
DataParallelOpt = Annotated[
    int,
    typer.Option(
        "--data-parallel",
        min=1,
        help="N worker processes, each with its own engine on its own GPUs (--tensor-parallel each) and a "
        "shard of the input, merged at the end; a rerun resumes every shard. Local vLLM only.",
        rich_help_panel=ENGINE,
    ),
]
BatchSizeOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Prompts per engine call and per part file.", rich_help_panel=RUN)
]
QUALITY = "Quality gates"
KeepTruncatedOpt = Annotated[
    bool,
    typer.Option(
        "--keep-truncated",
        help="Let texts that hit max_tokens be training targets (default: such rows are kept=false, reason "
        "'truncated').",
        rich_help_panel=QUALITY,
    ),
]
GateOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--gate",
        help="A quality gate threshold, KEY=VALUE (repeatable): max_repeated_ngrams=0.3, ngram=4, headings=false, "
        "max_growth=4, growth_slack=64, min_words_for_repetition=24.",
        rich_help_panel=QUALITY,
    ),
]


def quality_gates(keep_truncated: bool, gate: list[str] | None) -> QualityGates:
    """The library's gates with the CLI's changes."""
    return GATES.with_settings(gate or None).with_settings({"keep_truncated": True} if keep_truncated else None)


LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Use only the first N prompts.", rich_help_panel=RUN)
]


# CLI names that differ from EngineSpec's field names.
_SPEC_FIELD = {"engine": "kind", "tensor_parallel": "tensor_parallel_size"}
_SPEC_DEFAULTS = defaults_of(EngineSpec)

# (name, annotated type, default) of every engine option, in --help order; defaults are EngineSpec's.
ENGINE_OPTIONS: list[tuple[str, Any, Any]] = [
    (name, annotation, _SPEC_DEFAULTS[_SPEC_FIELD.get(name, name)])
    for name, annotation in [
        ("model", ModelOpt),
        ("engine", EngineOpt),
        ("base_url", BaseUrlOpt),
        ("api_key_env", ApiKeyEnvOpt),
        ("dtype", DtypeOpt),
        ("head_dtype", HeadDtypeOpt),
        ("max_model_len", MaxModelLenOpt),
        ("eager", EagerOpt),
        ("memory_share", MemoryShareOpt),
        ("tensor_parallel", TensorParallelOpt),
        ("max_num_seqs", MaxNumSeqsOpt),
        ("seed", SeedOpt),
        ("chat_template", ChatTemplateOpt),
        ("concurrency", ConcurrencyOpt),
        ("rpm", RpmOpt),
        ("tpm", TpmOpt),
        ("max_retries", RetriesOpt),
        ("timeout", TimeoutOpt),
        ("price_in", PriceInOpt),
        ("price_out", PriceOutOpt),
        ("batch_api", BatchApiOpt),
        ("batch_poll", BatchPollOpt),
        ("ray_address", RayAddressOpt),
        ("replicas", ReplicasOpt),
        ("ray_batch_size", RayBatchOpt),
    ]
]
# Sampling options default to SamplingConfig's.
SAMPLING_DEFAULTS = SamplingConfig()


def engine_spec_from(values: dict[str, Any]) -> EngineSpec:
    fields = {_SPEC_FIELD.get(name, name): value for name, value in values.items()}
    if fields["chat_template"] is not None:
        fields["chat_template"] = str(fields["chat_template"])
    return EngineSpec(**fields)


def with_engine_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command every engine option and call it with one `spec: EngineSpec` instead.

    Typer reads the wrapper's `__signature__`, so the options appear in --help under 'Engine'.
    """
    signature = inspect.signature(func, eval_str=True)
    own = [p for p in signature.parameters.values() if p.name != "spec"]
    added = [
        inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
        for name, annotation, default in ENGINE_OPTIONS
    ]

    @functools.wraps(func)
    def wrapper(**kwargs: Any) -> Any:
        values = {name: kwargs.pop(name) for name, _, _ in ENGINE_OPTIONS}
        return func(spec=engine_spec_from(values), **kwargs)

    wrapper.__signature__ = signature.replace(parameters=own + added)  # type: ignore[attr-defined]
    return wrapper


def sampling(n: int, temperature: float, top_p: float, max_tokens: int, stop: list[str] | None) -> SamplingConfig:
    return SamplingConfig(n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, stop=tuple(stop or ()))
