"""`seftgen benchmark NAME`: a model answers a benchmark's prompts with seftgen's own engines, and
the answers are scored, into one run folder:

    OUT/answers/               a `samples` run (greedy; resumes like `sample`)
    OUT/scores/                the benchmark's table (IFEval: `ifeval`), its summary in the manifest
    OUT/ifeval_responses.jsonl the answers in the official harness's input format

Benchmarks: `ifeval` (offline: `evaluation/ifeval.py`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import RunStatus, Stage
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.errors import UserError
from seftgen.evaluation import ifeval
from seftgen.io.schema import IFEVAL
from seftgen.io.store import RunStore, load_manifest, part_files, read_run
from seftgen.provenance import utc_now
from seftgen.stages.common import StageResult
from seftgen.stages.config import BENCHMARK
from seftgen.stages.sample import sample

BENCHMARKS = ("ifeval",)
OFFICIAL_FILE = "ifeval_responses.jsonl"


@dataclass
class BenchmarkResult:
    """What `run_benchmark` did: the answers stage, the scores run, and the scores' summary."""

    out: Path
    answers: StageResult
    scored: int = 0  # rows scored now (0 when every answer was scored before)
    summary: dict[str, Any] | None = None  # None while answers are missing (failed rows: rerun)

    @property
    def ok(self) -> bool:
        return self.answers.ok and self.summary is not None


def run_benchmark(
    name: str,
    out: str | Path,
    engine: Engine | EngineSpec,
    *,
    limit: int | None = None,
    max_tokens: int = BENCHMARK.max_tokens,
    batch_size: int = BENCHMARK.batch_size,
    resume: bool = True,
) -> BenchmarkResult:
    """Answer benchmark `name`'s prompts (the first `limit`) with `engine`, greedily, then score.

    A rerun resumes the answers and scores only what is new; a run whose answers had failures
    (an API that stayed down) is scored once they are all there."""
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r} (choose {', '.join(BENCHMARKS)})", param="name")
    ifeval.checkers()  # a missing checker install fails here, before a model loads
    out = Path(out)
    params = SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens)
    answers = sample(
        str(ifeval.prompts_file()),
        out / "answers",
        engine,
        params=params,
        limit=limit,
        batch_size=batch_size,
        resume=resume,
    )
    result = BenchmarkResult(out, answers)
    if not answers.ok:
        return result
    items = ifeval.load_items()  # parsed once, for the scores and the export
    result.scored, result.summary = score_answers(out / "answers", out / "scores", items)
    export_official(out / "answers", out / OFFICIAL_FILE, items)
    return result


def _checker() -> str:
    try:
        return f"lm_eval {version('lm_eval')} ifeval"
    except PackageNotFoundError:  # pragma: no cover - checkers() has already required it
        return "lm_eval ifeval"


def score_answers(answers: Path, out: Path, items: dict[str, ifeval.Item] | None = None) -> tuple[int, dict[str, Any]]:
    """Score every answer of the samples run `answers` not scored yet into the `ifeval` run `out`;
    return (rows scored now, the summary over all rows)."""
    manifest = load_manifest(answers)
    if manifest.status != RunStatus.COMPLETE:
        raise UserError("the answers run is not complete: rerun the benchmark to finish it", file=answers)
    items = items if items is not None else ifeval.load_items()
    config = {"answers": str(answers), "answers_run_id": manifest.run_id, "checker": _checker()}
    rows = read_run(answers, "samples").filter(pl.col("finish_reason") != "error")
    store = RunStore.open(out, IFEVAL, Stage.BENCHMARK, config)
    with store:
        new = []
        done = [key[0] for key in store.done]
        for row in rows.filter(~pl.col("prompt_id").is_in(done)).iter_rows(named=True):
            item = items.get(row["source_id"])
            if item is None:
                raise UserError(f"answer to a prompt IFEval does not have (id {row['source_id']!r})", file=answers)
            s = ifeval.score(item, row["response"] or "")
            new.append(
                {
                    **{k: row[k] for k in ("prompt_id", "messages", "source_id", "response", "finish_reason")},
                    **{k: row[k] for k in ("completion_tokens", "model", "engine", "template_hash", "params", "seed")},
                    "instruction_ids": list(item.instruction_ids),
                    "strict": list(s.strict),
                    "loose": list(s.loose),
                    "prompt_strict": s.prompt_strict,
                    "prompt_loose": s.prompt_loose,
                    "checker": config["checker"],
                    "answers_run_id": manifest.run_id,
                    "run_id": store.run_id,
                    "created_at": utc_now(),
                }
            )
        written = store.write(new)
        summary = ifeval.summarize(scores_of(store.root))
        store.finish(summary)
    return written, summary


def scores_of(run: Path) -> list[ifeval.Score]:
    """The verdicts of an `ifeval` run, in the benchmark's key order."""
    if not part_files(run):
        return []
    df = read_run(run, "ifeval").sort("source_id")
    return [
        ifeval.Score(r["source_id"], tuple(r["instruction_ids"]), tuple(r["strict"]), tuple(r["loose"]))
        for r in df.iter_rows(named=True)
    ]


def export_official(answers: Path, target: Path, items: dict[str, ifeval.Item] | None = None) -> Path:
    """The answers as google-research's `evaluation_main --input_response_data` reads them:
    one JSON line per prompt with `prompt` and `response`."""
    items = items if items is not None else ifeval.load_items()
    rows = read_run(answers, "samples").filter(pl.col("finish_reason") != "error").sort("source_id")
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w") as f:
        for r in rows.iter_rows(named=True):
            f.write(json.dumps({"prompt": items[r["source_id"]].prompt, "response": r["response"]}) + "\n")
    tmp.replace(target)
    return target
