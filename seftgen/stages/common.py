"""Pieces every stage shares: the result type, chunking, and the provenance columns."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from seftgen.engines import EngineSpec, get_engine
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.io.store import RunStore
from seftgen.provenance import template_hash, utc_now
from seftgen.templates import PromptTemplate

T = TypeVar("T")
MAX_RECORDED_FAILURES = 1000


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

    @property
    def ok(self) -> bool:
        return not self.failures


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def provenance(engine: Engine, store: RunStore, template: str, params_json: str) -> dict[str, Any]:
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


def reason_counts(reasons: pl.Series) -> dict[str, int]:
    """Why rows were not kept, bucketed: "scored 4 < original 6" and "scored 3 < original 5"
    count together (numbers become N)."""
    bucketed = reasons.drop_nulls().str.replace_all(r"\d+(\.\d+)?", "N")
    return dict(Counter(bucketed.to_list()).most_common())


def finish(store: RunStore, result: StageResult, summary: dict[str, Any] | None = None) -> StageResult:
    """Close the run: status, failures and summary into the manifest."""
    result.summary = summary or {}
    result.totals = dict(store.manifest["totals"])
    store.manifest["failures"] = result.failures[:MAX_RECORDED_FAILURES]
    store.finish(summary, status="complete" if result.ok else "incomplete")
    return result
