"""`seftgen judge` and `seftgen best-of`: SELF-JUDGE over the samples of each prompt.

`judge` turns every pair of samples of a prompt into a preference pair (DPO layout) with both
orders' probabilities, position consistency and margin; `--min-margin` and
`--require-consistent` decide `kept`. `best_of` runs a seeded single-elimination tournament over
the n samples of each prompt (n - 1 judgments) and keeps the winner with its bracket.
"""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import ErrorKind, Stage, Verdict
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine
from seftgen.errors import UserError, choice
from seftgen.io.schema import BEST_OF, PAIRS, Table
from seftgen.io.store import RunStore, Shard, scan_run
from seftgen.stages.common import (
    RunIO,
    StageResult,
    ensure_engine,
    finish,
    gate_counts,
    provenance,
    reason_counts,
    rejection,
)
from seftgen.stages.config import JUDGE, TOURNAMENT
from seftgen.stages.judging import Bracket, Judge, PairJudge, PairScore, Panel
from seftgen.stages.quality import GATES, QualityGates
from seftgen.stages.runner import downstream_config, iter_prompt_groups, run_batches, source_info
from seftgen.stages.verifiers import Verification, load_verifier, verify_row
from seftgen.templates import load_template

Group = list[dict[str, Any]]


def _open(
    io: RunIO,
    engine: Engine | EngineSpec | None,
    table: Table,
    stage: Stage,
    template: str | list[str],
    verdict: Verdict | str,
    *,
    extra: dict[str, Any],
    constrain: bool,
    verifier: str | None,
    tie_break: bool,
) -> tuple[PairJudge, RunStore, dict]:
    samples, out, shard, resume = io.source, io.out, io.shard, io.resume
    verdict = choice(Verdict, verdict, "verdict")
    source = source_info(samples, "samples", out)
    if tie_break and not verifier:
        raise UserError("only breaks a verifier's ties: give a verifier too", param="tie_break")
    check = load_verifier(verifier) if verifier else None
    names = [template] if isinstance(template, str) else list(template)
    if not names:
        raise UserError("give at least one judge template")
    templates = [load_template(name) for name in names]
    panel = None
    if check is None or tie_break:  # a verifier alone needs no model
        if engine is None:
            raise UserError(
                "give a judge model" + (" for the verifier's tie-breaks" if check else ", or a verifier"), param="model"
            )
        engine = ensure_engine(engine)
        panel = Panel([Judge(engine, tpl, verdict, constrain) for tpl in templates])
    judge = PairJudge(panel, check)
    params = judge.settings | extra
    if panel is not None and len(templates) > 1:  # a panel: every template and its hash
        params["templates"] = {t.name: t.hash for t in templates}
    config = downstream_config(source, judge, templates[0] if panel is not None else None, params)
    store = RunStore.open(out, table, stage, config, shard=shard, resume=resume)
    return judge, store, params


def judge_pairs(
    samples: str | Path,
    out: str | Path,
    judge_engine: Engine | EngineSpec | None,
    *,
    template: str | list[str] = JUDGE.template,
    verdict: Verdict = JUDGE.verdict,
    min_margin: float = JUDGE.min_margin,
    require_consistent: bool = JUDGE.require_consistent,
    batch_size: int = JUDGE.batch_size,
    shard: Shard = Shard(),
    resume: bool = True,
    constrain: bool = JUDGE.constrain,
    quality: QualityGates = GATES,
    verifier: str | None = JUDGE.verifier,
    tie_break: bool = JUDGE.tie_break,
) -> StageResult:
    """Judge every pair of samples of each prompt (both orders); write preference pairs.

    `template`: one judge template, or several (principle judges, e.g. the four
    `principle_*`): each judges every pair, and the pair's verdict is their majority (ties by
    the mean score); the per-principle scores go into `principle_scores`.
    `verifier`: a program scores each sample and decides the pairs (`stages/verifiers.py`);
    `judge_engine` may then be None unless `tie_break`."""
    judge, store, params = _open(
        RunIO(samples, out, shard, resume),
        judge_engine,
        PAIRS,
        Stage.JUDGE,
        template,
        verdict,
        extra={"min_margin": min_margin, "require_consistent": require_consistent, "quality": quality.as_dict()},
        constrain=constrain,
        verifier=verifier,
        tie_break=tie_break,
    )
    params_json = json.dumps(params, sort_keys=True)

    def pending(group: Group) -> list[tuple[dict, dict]]:
        ordered = sorted(group, key=lambda r: r["sample_idx"])
        return [
            (a, b)
            for a, b in itertools.combinations(ordered, 2)
            if (a["prompt_id"], a["sample_idx"], b["sample_idx"]) not in store.done
        ]

    def process(groups: list[Group]) -> tuple[list[dict], list[dict]]:
        pairs = [p for g in groups for p in pending(g)]
        decided = judge.decide(pairs, keys=[f"{a['prompt_id']}:{a['sample_idx']}:{b['sample_idx']}" for a, b in pairs])
        prov = provenance(judge, store, judge.template_id, params_json)
        rows, failures = [], []
        for (a, b), (s, verification) in zip(pairs, decided, strict=True):
            if s.error_kind == ErrorKind.ENGINE:
                failures.append(
                    {"prompt_id": a["prompt_id"], "pair": [a["sample_idx"], b["sample_idx"]], "error": s.error}
                )
                continue
            chosen, rejected = (a, b) if s.a_wins else (b, a)
            kind, reason = (
                (s.error_kind, s.error)
                if s.error
                else (ErrorKind.FILTER, _filter_reason(s, min_margin, require_consistent))
            )
            if reason is None:  # the chosen response becomes DPO's target
                kind, reason = (
                    ErrorKind.QUALITY,
                    quality.check(chosen["response"], finish_reason=chosen["finish_reason"]),
                )
            rows.append(
                {
                    "prompt_id": a["prompt_id"],
                    "messages": a["messages"],
                    "source_id": a.get("source_id"),
                    "verifiable": a.get("verifiable"),
                    "idx_a": a["sample_idx"],
                    "idx_b": b["sample_idx"],
                    "p_a_ab": s.p_a_ab,
                    "p_a_ba": s.p_a_ba,
                    "score_a": s.score_a,
                    "consistent": s.consistent,
                    "margin": s.margin,
                    "chosen": chosen["response"],
                    "rejected": rejected["response"],
                    "chosen_idx": chosen["sample_idx"],
                    **rejection(kind, reason),
                    "raw": s.raw,
                    "principle_scores": list(s.principles) or None,
                    "verifier": judge.verifier.name if judge.verifier else None,
                    "verification": verification and json.dumps(verification),
                    "policy_model": a["model"],
                    "source_run_id": a["run_id"],
                    **prov,
                }
            )
        return rows, failures

    groups = (g for g in iter_prompt_groups(samples, shard) if len(g) >= 2 and pending(g))
    result = run_batches(
        store,
        groups,
        process,
        engine=judge.engine,
        batch_size=batch_size,
        total=None,
        label="judge",
        tokens_of=lambda _: 0,
    )
    summary = pairs_summary(scan_run(out))
    return finish(store, result, summary | ({"verifier": judge.verifier.name} if judge.verifier else {}))


def _filter_reason(s: PairScore, min_margin: float, require_consistent: bool) -> str | None:
    if s.margin == 0:
        return "tie"
    if require_consistent and not s.consistent:
        return "position-inconsistent"
    if s.margin is not None and s.margin < min_margin:
        return f"margin {s.margin:.3f} < {min_margin}"
    return None


def _verifier_reason(best: Verification, min_score: float) -> str:
    if best.score is None:
        return f"verifier: {best.error}"
    failed = [name for name, ok in best.checks.items() if not ok]
    return f"verifier: best score {best.score} < {min_score}" + (f" (failed {', '.join(failed)})" if failed else "")


def pairs_summary(rows: pl.LazyFrame) -> dict[str, Any]:
    """Counts for the manifest and the dataset card, on a lazy scan of the run."""
    judged = pl.col("score_a").is_not_null()
    stats = (
        rows.select(
            pl.len().alias("pairs"),
            pl.col("kept").sum().alias("kept"),
            pl.col("consistent").filter(judged).cast(pl.Float64).mean().alias("position_consistency"),
            pl.col("margin").filter(judged).mean().alias("mean_margin"),
        )
        .collect()
        .row(0, named=True)
    )
    if not stats["pairs"]:
        return {"pairs": 0}
    return {
        "pairs": stats["pairs"],
        "kept": int(stats["kept"]),
        **{k: None if stats[k] is None else round(stats[k], 4) for k in ("position_consistency", "mean_margin")},
        "not_kept_by_reason": reason_counts(rows),
        "gates": gate_counts(rows),
    }


def best_of(
    samples: str | Path,
    out: str | Path,
    judge_engine: Engine | EngineSpec | None,
    *,
    template: str | list[str] = TOURNAMENT.template,
    verdict: Verdict = TOURNAMENT.verdict,
    seed: int = TOURNAMENT.seed,
    batch_size: int = TOURNAMENT.batch_size,
    shard: Shard = Shard(),
    resume: bool = True,
    constrain: bool = TOURNAMENT.constrain,
    quality: QualityGates = GATES,
    verifier: str | None = TOURNAMENT.verifier,
    tie_break: bool = TOURNAMENT.tie_break,
    min_score: float = TOURNAMENT.min_score,
) -> StageResult:
    """Tournament rejection sampling: the best of the n samples of each prompt.

    With a `verifier`, its scores decide the matches (the winner has the top score; the LLM
    breaks ties if `tie_break`), and the winner is kept only if it scores at least `min_score`."""
    judge, store, params = _open(
        RunIO(samples, out, shard, resume),
        judge_engine,
        BEST_OF,
        Stage.BEST_OF,
        template,
        verdict,
        extra={"tournament_seed": seed, "quality": quality.as_dict()} | ({"min_score": min_score} if verifier else {}),
        constrain=constrain,
        verifier=verifier,
        tie_break=tie_break,
    )
    params_json = json.dumps(params, sort_keys=True)

    def process(groups: list[Group]) -> tuple[list[dict], list[dict]]:
        by_idx = [{r["sample_idx"]: r for r in g} for g in groups]
        # One bracket per prompt, seeded by (seed, prompt id): the draw does not depend on batching.
        brackets = [
            Bracket.start(sorted(m), random.Random(f"{seed}:{g[0]['prompt_id']}"))
            for m, g in zip(by_idx, groups, strict=True)
        ]
        failed: dict[int, str] = {}
        verified: dict = {}  # each sample's verification, across the bracket's rounds
        ties_broken = [0] * len(groups)
        while True:
            live = [(i, b) for i, b in enumerate(brackets) if not b.done and i not in failed]
            if not live:
                break
            matches = [(by_idx[i][a], by_idx[i][c]) for i, b in live for a, c in b.matches()]
            decided = judge.decide(matches, cache=verified)
            start = 0
            for i, b in live:  # each bracket's matches are contiguous in `matches`
                mine = decided[start : start + len(b.matches())]
                start += len(mine)
                if err := next((s.error for s, _ in mine if s.error_kind == ErrorKind.ENGINE), None):
                    failed[i] = err
                else:
                    ties_broken[i] += sum(1 for _, v in mine if v and v["tie_break"])
                    b.advance([s for s, _ in mine])
        prov = provenance(judge, store, judge.template_id, params_json)
        rows, failures = [], []
        for i, (group, b) in enumerate(zip(groups, brackets, strict=True)):
            if i in failed:
                failures.append({"prompt_id": group[0]["prompt_id"], "error": failed[i]})
                continue
            win = by_idx[i][b.winner]
            kind, reason = ErrorKind.QUALITY, quality.check(win["response"], finish_reason=win["finish_reason"])
            verification = None
            if judge.verifier is not None:
                checked = {idx: verified.get((win["prompt_id"], idx)) for idx in sorted(by_idx[i])}
                verification = {str(k): v.record() for k, v in checked.items() if v is not None}
                verification["tie_break"] = ties_broken[i]
                best = checked.get(b.winner)
                if best is None:  # a single candidate meets no match: check it here
                    best = checked[b.winner] = verify_row(judge.verifier, win)
                    verification[str(b.winner)] = best.record()
                if best.score is None or best.score < min_score:
                    kind, reason = ErrorKind.FILTER, _verifier_reason(best, min_score)
            rows.append(
                {
                    "prompt_id": win["prompt_id"],
                    "messages": win["messages"],
                    "source_id": win.get("source_id"),
                    "verifiable": win.get("verifiable"),
                    "winner_idx": b.winner,
                    "response": win["response"],
                    "num_candidates": len(group),
                    "judgments": b.judgments,
                    "bracket": json.dumps(b.record),
                    "verifier": judge.verifier.name if judge.verifier else None,
                    "verification": verification and json.dumps(verification),
                    "policy_model": win["model"],
                    "source_run_id": win["run_id"],
                    **rejection(kind, reason),
                    **prov,
                }
            )
        return rows, failures

    groups = (g for g in iter_prompt_groups(samples, shard) if (g[0]["prompt_id"],) not in store.done)
    result = run_batches(
        store,
        groups,
        process,
        engine=judge.engine,
        batch_size=batch_size,
        total=None,
        label="best-of",
        tokens_of=lambda _: 0,
    )
    rows = scan_run(out)
    stats = rows.select(pl.len().alias("prompts"), pl.col("judgments").sum(), pl.col("kept").sum()).collect()
    prompts, judgments, kept = stats.row(0)
    summary = {"prompts": prompts, "judgments": int(judgments or 0), "kept": int(kept or 0), "gates": gate_counts(rows)}
    if judge.verifier is not None:
        summary["verifier"] = judge.verifier.name
    return finish(store, result, summary)
