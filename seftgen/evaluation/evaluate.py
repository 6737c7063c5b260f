"""`seftgen evaluate`: does the candidate policy beat the baseline? Pairwise, in both orders.

For every prompt present in both sample runs, the first sample of each side is judged with the
SELF-JUDGE call (`stages.judging.Judge`: answer-token probabilities, or text verdicts from an
API) with the candidate shown first and then second, so position bias cancels out. Each prompt
gets a win, loss or tie (tie: the orders disagree or the margin is below `tie_margin`); the
summary has the win rate (ties half), its bootstrap interval, position consistency and the win
rate within length buckets, so a gain that is only longer answers shows.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import ErrorKind, Stage, Verdict
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine
from seftgen.errors import UserError, choice
from seftgen.evaluation.stats import outcome, summarize
from seftgen.io.schema import EVALS
from seftgen.io.store import RunStore, read_run, scan_run
from seftgen.stages.common import StageResult, ensure_engine, finish, provenance
from seftgen.stages.config import EVALUATE
from seftgen.stages.judging import Judge
from seftgen.stages.runner import run_batches, source_info
from seftgen.templates import load_template

_SIDE_COLUMNS = ["prompt_id", "messages", "source_id", "response", "completion_tokens", "model", "run_id"]
_SHARED = ("prompt_id", "messages", "source_id")  # the same on both sides: kept once, from the candidate


def common_prompts(candidate: str | Path, baseline: str | Path) -> pl.DataFrame:
    """One row per prompt answered in both runs: the first successful sample of each side."""

    def side(run: str | Path, name: str) -> pl.DataFrame:
        rows = read_run(run, "samples").filter(pl.col("finish_reason") != "error")
        first = rows.sort("prompt_id", "sample_idx").unique("prompt_id", keep="first", maintain_order=True)
        renamed = {c: f"{name}_{c}" for c in _SIDE_COLUMNS if c not in _SHARED}
        return first.select(_SIDE_COLUMNS).rename(renamed | {"response": name})

    joined = side(candidate, "candidate").join(side(baseline, "baseline").drop("messages", "source_id"), on="prompt_id")
    return joined.rename(
        {"candidate_completion_tokens": "candidate_tokens", "baseline_completion_tokens": "baseline_tokens"}
    ).sort("prompt_id")


def evaluate(
    candidate: str | Path,
    baseline: str | Path,
    out: str | Path,
    judge_engine: Engine | EngineSpec,
    *,
    template: str = EVALUATE.template,
    verdict: Verdict | str = EVALUATE.verdict,
    tie_margin: float = EVALUATE.tie_margin,
    limit: int | None = None,
    batch_size: int = EVALUATE.batch_size,
    resume: bool = True,
    constrain: bool = EVALUATE.constrain,
) -> StageResult:
    """Judge the candidate run's answers against the baseline run's, prompt by prompt.

    Everything about the input (both runs are sample runs, they share prompts, the template
    fits the verdict mode, the answer labels are single tokens) is checked before anything is
    written."""
    verdict = choice(Verdict, verdict, "verdict")
    sources = {"candidate": source_info(candidate, "samples", out), "baseline": source_info(baseline, "samples", out)}
    items = common_prompts(candidate, baseline)
    if items.is_empty():
        raise UserError("the candidate and baseline runs have no prompt in common", file=baseline)
    if limit is not None:
        items = items.head(limit)
    tpl = load_template(template)
    if verdict == Verdict.TEXT and tpl.output is None:
        raise UserError("text verdicts need a template with an 'output' format", file=tpl.path, param="verdict")
    judge = Judge(ensure_engine(judge_engine), tpl, verdict, constrain)
    if verdict == Verdict.LOGPROBS:
        judge.engine.check_answer_tokens(judge.tokens)
    params = judge.settings | {"tie_margin": tie_margin, "prompts": items.height}
    config = {
        "candidate": sources["candidate"],
        "baseline": sources["baseline"],
        "model": judge.engine.model,
        "engine": judge.engine.kind,
        "template": tpl.name,
        "template_hash": tpl.hash,
        "params": params,
        "seed": judge.engine.seed,
    }
    store = RunStore.open(out, EVALS, Stage.EVALUATE, config, resume=resume)
    params_json = json.dumps(params, sort_keys=True)

    def process(batch: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        scores = judge.judge([(r["messages"], r["candidate"], r["baseline"]) for r in batch])
        prov = provenance(judge.engine, store, tpl.hash, params_json)
        rows, failures = [], []
        for r, s in zip(batch, scores, strict=True):
            if s.error_kind == ErrorKind.ENGINE:  # no verdict: not written, retried on rerun
                failures.append({"prompt_id": r["prompt_id"], "error": s.error})
                continue
            judged = s.score_a is not None
            rows.append(
                {
                    **r,
                    "p_c_first": s.p_a_ab,
                    "p_c_second": s.p_a_ba,
                    "score": s.score_a,
                    "consistent": s.consistent,
                    "margin": s.margin,
                    "outcome": outcome(s.score_a, s.consistent, tie_margin) if judged else None,
                    "reason": s.error,
                    "raw": s.raw,
                    **prov,
                }
            )
        return rows, failures

    todo = (r for r in items.iter_rows(named=True) if (r["prompt_id"],) not in store.done)
    result = run_batches(
        store,
        todo,
        process,
        engine=judge.engine,
        batch_size=batch_size,
        total=items.height - len(store.done),
        label="evaluate",
        tokens_of=lambda _: 0,
    )
    return finish(store, result, evaluation_summary(out))


def evaluation_summary(run: str | Path) -> dict[str, Any]:
    """The summary of an evals run (recomputed from its rows, so a resumed run sums all attempts)."""
    cols = ["outcome", "consistent", "candidate_tokens", "baseline_tokens"]
    return summarize(scan_run(run, "evals").select(cols).collect().to_dicts())
