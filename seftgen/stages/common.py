"""Pieces every stage shares: the result type, chunking, and the provenance columns."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, Protocol, TypeVar

import polars as pl

from seftgen.choices import ErrorKind, RunStatus
from seftgen.engines import EngineSpec, get_engine
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.io.store import RunStore, Shard
from seftgen.provenance import template_hash, utc_now
from seftgen.templates import PromptTemplate

T = TypeVar("T")
MAX_RECORDED_FAILURES = 1000


@dataclass(frozen=True)
class RunIO:
    """Where a downstream stage reads and writes: its input run, its output run, which shard of the
    input, and whether to resume what the output already holds."""

    source: str | Path
    out: str | Path
    shard: Shard = Shard()  # noqa: RUF009 - frozen
    resume: bool = True


@dataclass
class StageResult:
    """What a stage did. `failures` are rows that could not be produced (for example an API that
    stayed down); they are not written, so rerunning the same command retries exactly them."""

    run_dir: Path
    written: int = 0
    resumed: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)
    totals: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # see the manifest's attempt `timing`

    @property
    def ok(self) -> bool:
        return not self.failures


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Producer(Protocol):
    """What wrote a row: an engine, or a judge that needs none (a verifier: engine `none`)."""

    @property
    def model(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def seed(self) -> int | None: ...


def provenance(engine: Producer, store: RunStore, template: str, params_json: str) -> dict[str, Any]:
    """The provenance columns for rows written now by `engine` into `store`."""
    return {
        "model": engine.model,
        "engine": engine.kind,
        "template_hash": template,
        "params": params_json,
        "seed": engine.seed,
        "run_id": store.run_id,
        "created_at": utc_now(),
    }


def ensure_engine(engine: Engine | EngineSpec) -> Engine:
    """Stages take a spec so that input is validated before a model is loaded (tens of seconds)."""
    return engine if isinstance(engine, Engine) else get_engine(engine)


def constrained(params: SamplingConfig, template: PromptTemplate, engine: Engine, constrain: bool) -> SamplingConfig:
    """`params` with the template's output regex when asked for and the engine enforces it; the
    choice lands in the run's params (`constrained`), so every row records it."""
    if constrain and template.output is not None and engine.constrains:
        return replace(params, regex=template.output.regex())
    return replace(params, regex=None)


def chat_template_hash(engine: Engine) -> str:
    return template_hash(engine.chat_template)


def rejection(kind: ErrorKind, reason: str | None) -> dict[str, Any]:
    """The `kept` / `reason` / `reason_kind` columns of a row (kept when there is no reason)."""
    return {"kept": reason is None, "reason": reason, "reason_kind": kind if reason is not None else None}


def reason_counts(rows: pl.LazyFrame) -> dict[str, int]:
    """Why rows were not kept, bucketed by kind and reason: "filter: refinement scored 4 <
    original 6" and "... scored 3 < original 5" count together (numbers become N)."""
    bucket = pl.concat_str(
        pl.col("reason_kind"), pl.lit(": "), pl.col("reason").str.replace_all(r"\d+(\.\d+)?", "N")
    ).alias("why")
    counts = (
        rows.filter(pl.col("reason").is_not_null())
        .select(bucket)
        .group_by("why")
        .len()
        .sort(["len", "why"], descending=[True, False])
        .collect()
    )
    return dict(counts.iter_rows())


def gate_counts(rows: pl.LazyFrame) -> dict[str, int]:
    """Rows each quality gate removed ("truncated", "repetition", ...: a reason's first word)."""
    if "reason_kind" not in rows.collect_schema().names():
        return {}
    gate = pl.col("reason").str.extract(r"^([a-z-]+):", 1).alias("gate")
    counts = rows.filter(pl.col("reason_kind") == ErrorKind.QUALITY).select(gate).group_by("gate").len().collect()
    return {g: int(n) for g, n in sorted(counts.iter_rows()) if g}


def value_counts(rows: pl.LazyFrame, column: str) -> dict[str, int]:
    """Counts of a column's non-null values, most frequent first."""
    counts = (
        rows.select(pl.col(column)).drop_nulls().group_by(column).len().sort(["len", column], descending=[True, False])
    )
    return dict(counts.collect().iter_rows())


def mean_of(rows: pl.LazyFrame, columns: list[str], digits: int = 4) -> dict[str, float]:
    """Rounded means of the columns that have values (`mean_<column>`)."""
    means = rows.select(pl.col(c).cast(pl.Float64).mean() for c in columns).collect().row(0, named=True)
    return {f"mean_{c}": round(v, digits) for c, v in means.items() if v is not None}


def finish(store: RunStore, result: StageResult, summary: dict[str, Any] | None = None) -> StageResult:
    """Close the run: status, failures and summary into the manifest."""
    result.summary = summary or {}
    result.totals = dict(store.manifest.totals)
    store.finish(
        summary,
        RunStatus.COMPLETE if result.ok else RunStatus.INCOMPLETE,
        failures=result.failures[:MAX_RECORDED_FAILURES],
    )
    return result
