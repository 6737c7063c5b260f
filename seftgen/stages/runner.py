"""The loop every stage runs: take unfinished items in batches, process, write one part each.

Keeping this in one place means every stage gets the same guarantees: atomic part files, resume
by key, per-row failures that are reported and retried on the next run, usage totals in the
manifest, and a progress bar.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

import polars as pl

from seftgen.console import stage_progress
from seftgen.engines.base import Engine
from seftgen.errors import UserError
from seftgen.io.store import RunStore, Shard, check_out_dir, load_manifest, part_files
from seftgen.stages.common import Producer, StageResult, chunked
from seftgen.templates import PromptTemplate

T = TypeVar("T")
# process(batch) -> (rows to write, failures to report)
Processor = Callable[[list[T]], tuple[list[dict[str, Any]], list[dict[str, Any]]]]


def run_batches(
    store: RunStore,
    items: Iterable[T],
    process: Processor[T],
    *,
    engine: Engine | None,
    batch_size: int,
    total: int | None,
    label: str,
    tokens_of: Callable[[dict[str, Any]], int] = lambda row: row.get("completion_tokens") or 0,
) -> StageResult:
    """Process `items` in batches and write one part per batch, in order.

    With an engine that `overlaps`, several batches are in flight on worker threads: enough to
    fill the engine (`capacity` rows, at least two batches), so it neither drains at batch
    boundaries nor runs below its batch width with small `batch_size`, and stays busy while a
    part is written. Parts are still written in order. Otherwise batches run one after another."""
    result = StageResult(store.root, resumed=len(store.done))
    if engine is not None:
        engine.bind(store)  # provider batches are recorded in this run's manifest
    batches = chunked(items, batch_size)
    first = next(batches, None)
    # A local engine starts on first use: with nothing left to do (a complete run), never.
    depth = in_flight(engine, batch_size) if first is not None else 1
    started = engine.take_startup() if engine is not None else 0.0
    timing = {"engine_start_s": started, "generation_s": 0.0, "write_s": 0.0}
    if first is not None:
        batches = itertools.chain([first], batches)
    start = time.monotonic()
    inflight: deque[_Batch[T]] = deque()
    with store, stage_progress(label, total) as bar:
        while True:
            while len(inflight) < depth and (batch := next(batches, None)) is not None:
                inflight.append(_Batch(process, batch, background=depth > 1))
            if not inflight:
                break
            job = inflight.popleft()
            waited = time.monotonic()
            rows, failures = job.result()
            wrote = time.monotonic()
            timing["generation_s"] += wrote - waited
            if inflight and len(inflight) < depth and (batch := next(batches, None)) is not None:
                inflight.append(_Batch(process, batch, background=True))  # before writing: keep it busy
            result.written += store.write(rows)
            result.failures.extend(failures)
            if engine is not None:
                store.add_totals(engine.take_usage())
            timing["write_s"] += time.monotonic() - wrote
            bar.advance(len(job.batch), sum(tokens_of(r) for r in rows))
        late = engine.take_startup() if engine is not None else 0.0  # started by a batch's call
        timing["engine_start_s"] += late
        timing["generation_s"] = max(0.0, timing["generation_s"] - late)
        wall = time.monotonic() - start - late
        result.timing = {k: round(v, 2) for k, v in timing.items()} | {
            "wall_s": round(wall, 2),
            "rows_per_s": round(result.written / wall, 2) if wall > 0 else 0.0,
        }
        store.set_timing(result.timing)
        if engine is not None:
            store.set_engine(engine.settings)
    return result


MAX_IN_FLIGHT = 64  # batches (threads); beyond this, batches are big enough to fill any engine


def in_flight(engine: Engine | None, batch_size: int) -> int:
    """Batches to keep in flight: one more than fills the engine, so the next is queued when one
    finishes (vLLM keeps surplus requests waiting, so filling past capacity costs nothing)."""
    if engine is None or not engine.overlaps:
        return 1
    fill = -(-engine.capacity // batch_size) if engine.capacity else 1
    return min(max(2, fill + 1), MAX_IN_FLIGHT)


class _Batch(Generic[T]):
    """`process(batch)`, run now or on a daemon thread (an interrupt never waits for it)."""

    def __init__(self, process: Processor[T], batch: list[T], *, background: bool) -> None:
        self.batch = batch
        self._process = process
        self._out: tuple[list[dict[str, Any]], list[dict[str, Any]]] | None = None
        self._error: BaseException | None = None
        self._done = threading.Event()
        if background:
            threading.Thread(target=self._run, name="seftgen-batch", daemon=True).start()
        else:
            self._run()

    def _run(self) -> None:
        try:
            self._out = self._process(self.batch)
        except BaseException as exc:  # handed to the thread that waits for the result
            self._error = exc
        finally:
            self._done.set()

    def result(self) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        # Wake up now and then: a signal the kernel hands to a worker thread only sets Python's
        # flag, and the main thread runs the handler (Ctrl-C) when it next wakes; an untimed wait
        # on a batch that takes hours (a provider batch) would never see it.
        while not self._done.wait(0.2):
            pass
        if self._error is not None:
            raise self._error
        assert self._out is not None
        return self._out


def iter_run_rows(
    run_dir: str | Path, shard: Shard = Shard(), columns: list[str] | None = None
) -> Iterator[dict[str, Any]]:
    """Rows of a run folder, part by part (memory stays at one part), in this shard. Columns a
    part from an older seftgen lacks read as nulls."""
    for part in part_files(run_dir):
        if columns is None:
            df = pl.read_parquet(part)
        else:
            have = set(pl.read_parquet_schema(part))
            df = pl.read_parquet(part, columns=[c for c in columns if c in have])
            df = df.with_columns(pl.lit(None).alias(c) for c in columns if c not in have)
        if shard.count > 1:
            # Same rule as provenance.shard_of: the first 8 hex digits of the prompt id, modulo N.
            first8 = pl.col("prompt_id").str.slice(0, 8).str.to_integer(base=16)
            df = df.filter(first8 % shard.count == shard.index)
        yield from df.iter_rows(named=True)


def iter_prompt_groups(run_dir: str | Path, shard: Shard = Shard()) -> Iterator[list[dict[str, Any]]]:
    """The samples of each prompt together (a sample run writes whole prompts per part)."""
    group: list[dict[str, Any]] = []
    for row in iter_run_rows(run_dir, shard):
        if group and row["prompt_id"] != group[0]["prompt_id"]:
            yield group
            group = []
        group.append(row)
    if group:
        yield group


def source_info(run_dir: str | Path, table: str, out: str | Path) -> dict[str, Any]:
    """What a downstream stage records about its input run, checked before any model loads: the
    right table, not empty, and an output path that can be a run folder."""
    manifest = load_manifest(run_dir, table)
    if not manifest.rows:
        raise UserError(f"the {table} run holds no rows", file=run_dir)
    check_out_dir(Path(out))
    return {
        "path": str(Path(run_dir).resolve()),
        "run_id": manifest.run_id,
        "rows": manifest.rows,
        "status": manifest.status,
    }


def downstream_config(
    source: dict[str, Any], engine: Producer, template: PromptTemplate | None, params: Any, **extra: Any
) -> dict[str, Any]:
    """The settings of a stage that reads a run: what resume compares and the manifest records
    (`template` None: no prompt template, as for a verifier judge)."""
    return {
        "source": source["path"],
        "source_run_id": source["run_id"],
        "model": engine.model,
        "engine": engine.kind,
        "template": template.name if template else None,
        "template_hash": template.hash if template else None,
        "params": params,
        "seed": engine.seed,
        **extra,
    }
