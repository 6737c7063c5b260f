"""`seftgen revise`: improve policy samples with the SEFT reviser or the SRT critic.

SEFT: a reviser model (trained with `build-reviser-data`) labels each sample keep / minor / major
and rewrites it unless it keeps it. SRT: a critic (usually a stronger model behind an API) writes
feedback with a score and an improved response; then the original and the refinement are scored
in two SEPARATE calls, and the refinement is kept only if the feedback is complete and the
refinement scores no lower than the original. Every row is written with its verdict and reason.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import ErrorKind, ReviseMethod, Stage
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine, Generation, Messages, SamplingConfig
from seftgen.errors import UserError
from seftgen.formats import OutputFormat
from seftgen.io.schema import REVISIONS
from seftgen.io.store import RunStore, Shard, scan_run
from seftgen.stages.common import (
    RunIO,
    StageResult,
    constrained,
    ensure_engine,
    finish,
    gate_counts,
    mean_of,
    provenance,
    reason_counts,
    rejection,
    value_counts,
)
from seftgen.stages.config import CRITIQUE, REVISE, SELF_CRITIQUE, CritiqueConfig, SelfCritiqueConfig
from seftgen.stages.parsing import parse_critic, parse_reviser, parse_score
from seftgen.stages.quality import GATES, LENGTH, QualityGates
from seftgen.stages.runner import downstream_config, iter_run_rows, run_batches, source_info
from seftgen.templates import PromptTemplate, instruction_text, load_template

SRT_BATCH_SIZE = 64  # samples per call to an online critic
SAMPLE_COLUMNS = ["prompt_id", "source_id", "sample_idx", "messages", "response", "finish_reason", "model", "run_id"]


def similarity(a: str, b: str | None) -> float | None:
    return None if b is None else difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@dataclass
class _Setup:
    engine: Engine
    store: RunStore
    params: SamplingConfig
    todo: Any
    total: int


def _open(
    io: RunIO,
    engine: Engine | EngineSpec,
    method: ReviseMethod,
    template: PromptTemplate,
    params: SamplingConfig,
    *,
    extra: dict[str, Any],
    constrain: bool,
) -> _Setup:
    samples, out, shard, resume = io.source, io.out, io.shard, io.resume
    source = source_info(samples, "samples", out)
    engine = ensure_engine(engine)
    params = constrained(params, template, engine, constrain)
    config = downstream_config(source, engine, template, params.as_dict(), method=method, **extra)
    store = RunStore.open(out, REVISIONS, Stage.REVISE, config, shard=shard, resume=resume)
    todo = (
        r
        for r in iter_run_rows(samples, shard, SAMPLE_COLUMNS)
        if (r["prompt_id"], r["sample_idx"]) not in store.done and r["finish_reason"] != "error"
    )
    return _Setup(engine, store, params, todo, max(source["rows"] - len(store.done), 0))


def _base_row(sample: dict[str, Any], method: str, prov: dict[str, Any]) -> dict[str, Any]:
    return {
        "prompt_id": sample["prompt_id"],
        "messages": sample["messages"],
        "source_id": sample["source_id"],
        "sample_idx": sample["sample_idx"],
        "method": method,
        "original": sample["response"],
        "policy_model": sample["model"],
        "source_run_id": sample["run_id"],
        **prov,
    }


def request_id(sample: dict[str, Any], call: str) -> str:
    """The name of one model call for one row (a Batch API request's `custom_id`)."""
    return f"{sample['prompt_id']}:{sample['sample_idx']}:{call}"


def _failure(sample: dict[str, Any], error: str) -> dict[str, Any]:
    return {"prompt_id": sample["prompt_id"], "sample_idx": sample["sample_idx"], "error": error}


def revise_seft(
    samples: str | Path,
    out: str | Path,
    reviser: Engine | EngineSpec,
    *,
    template: str = REVISE.template,
    params: SamplingConfig = REVISE.params,
    batch_size: int = REVISE.batch_size,
    shard: Shard = Shard(),
    resume: bool = True,
    constrain: bool = REVISE.constrain,
    quality: QualityGates = GATES,
) -> StageResult:
    """Run the SEFT reviser over every sample of the run folder `samples`.

    With `constrain` (default) decoding follows the template's `output` format where the engine
    supports it, so even a weak reviser writes a label and a revision that parse. The target (the
    revision, or the original where the label is keep) must pass the quality `gates`."""
    tpl = load_template(template)
    fmt = _need_format(tpl)
    labels = [str(label) for label in tpl.get("labels", ["keep", "minor", "major"])]
    extra = {"labels": labels, "quality": quality.as_dict()}
    s = _open(
        RunIO(samples, out, shard, resume), reviser, ReviseMethod.SEFT, tpl, params, extra=extra, constrain=constrain
    )

    def process(batch: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        prompts = [
            _user(
                tpl.render("user", instruction=instruction_text(r["messages"]), response=r["response"], labels=labels)
            )
            for r in batch
        ]
        gens = s.engine.generate(prompts, s.params)
        prov = provenance(s.engine, s.store, tpl.hash, s.params.to_json())
        rows, failures = [], []
        for sample, gen in zip(batch, gens, strict=True):
            if gen.error:
                failures.append(_failure(sample, gen.error))
                continue
            raw = gen.completions[0].text
            reply = parse_reviser(fmt, raw, labels, sample["response"])
            kind, reason = ErrorKind.PARSE, cut_short(reply.error, gen)
            if reason is None:
                kept_original = reply.label == labels[0]
                kind, reason = (
                    ErrorKind.QUALITY,
                    quality.check(
                        reply.revised,
                        finish_reason=sample["finish_reason"] if kept_original else gen.completions[0].finish_reason,
                        original=None if kept_original else sample["response"],
                    ),
                )
            rows.append(
                {
                    **_base_row(sample, ReviseMethod.SEFT, prov),
                    "revised": reply.revised,
                    "label": reply.label,
                    "similarity": similarity(sample["response"], reply.revised),
                    **rejection(kind, reason),
                    "raw": raw,
                    "prompt_tokens": gen.prompt_tokens,
                    "completion_tokens": gen.completions[0].completion_tokens,
                }
            )
        return rows, failures

    result = run_batches(
        s.store, s.todo, process, engine=s.engine, batch_size=batch_size, total=s.total, label="revise (SEFT)"
    )
    return finish(s.store, result, revision_summary(scan_run(out)))


def revise_srt(
    samples: str | Path,
    out: str | Path,
    critic: Engine | EngineSpec,
    *,
    template: str = CRITIQUE.template,
    score_template: str = CRITIQUE.score_template,
    max_tokens: int = CRITIQUE.max_tokens,
    batch_size: int | None = CRITIQUE.batch_size,
    shard: Shard = Shard(),
    resume: bool = True,
    constrain: bool = CRITIQUE.constrain,
    quality: QualityGates = GATES,
) -> StageResult:
    """Run the SRT critic (feedback + refinement), then score original and refinement separately.

    The critic's and the scorer's replies follow their templates' `output` formats (constrained
    decoding where the engine supports it); the feedback must hold weaknesses, a score and
    suggestions (the paper's rule 1), and the refinement must score no lower (rule 2).

    `batch_size`: samples per engine call and part file; by default 64, or the engine's
    `batch_rows` (10,000 through the Batch API, where every call is a provider batch)."""
    tpl, scorer = load_template(template), load_template(score_template)

    def critique(sample: dict[str, Any]) -> Messages:
        return _user(tpl.render("user", instruction=instruction_text(sample["messages"]), response=sample["response"]))

    def score(sample: dict[str, Any], response: str) -> Messages:
        return _user(scorer.render("user", instruction=instruction_text(sample["messages"]), response=response))

    way = _Critique(ReviseMethod.SRT, critique, score, continue_final=False, strict=False)
    config = CritiqueConfig(template, score_template, max_tokens, batch_size, constrain)
    return _run_critique(samples, out, critic, way, tpl, scorer, config, shard=shard, resume=resume, quality=quality)


def revise_self(
    samples: str | Path,
    out: str | Path,
    model: Engine | EngineSpec,
    *,
    template: str = SELF_CRITIQUE.template,
    score_template: str = SELF_CRITIQUE.score_template,
    max_tokens: int = SELF_CRITIQUE.max_tokens,
    batch_size: int | None = SELF_CRITIQUE.batch_size,
    shard: Shard = Shard(),
    resume: bool = True,
    constrain: bool = SELF_CRITIQUE.constrain,
    quality: QualityGates = GATES,
) -> StageResult:
    """SRT stage 2: the stage-1 model critiques and refines its own samples (`srt-self` rows).

    The stage-1 model learnt the critic template's `target` layout (response, "### Feedback",
    feedback, "### Improved Response", refinement). Each sample's conversation gets that target
    up to the feedback as the assistant turn, and the model continues it: its feedback with an
    "Overall Score: [[N]]" and a refinement, parsed by the critic's strict parser and constrained
    the same way. The same model then scores the initial response and the refinement in two
    separate calls (the same layout, stopping after the score). A row is kept only if the
    refinement scores strictly higher (the paper's stage-2 filter): chosen = refinement, rejected
    = initial response, for DPO."""
    tpl, scorer = load_template(template), load_template(score_template)
    layout = load_template(str(tpl.get("stage1", "srt_critic")))

    def score(sample: dict[str, Any], response: str) -> Messages:
        return stage1_turns(layout, sample["messages"], response)

    way = _Critique(ReviseMethod.SRT_SELF, lambda r: score(r, r["response"]), score, continue_final=True, strict=True)
    config = SelfCritiqueConfig(template, score_template, max_tokens, batch_size, constrain)
    return _run_critique(samples, out, model, way, tpl, scorer, config, shard=shard, resume=resume, quality=quality)


_FEEDBACK = "\x00feedback\x00"


def stage1_prefix(layout: PromptTemplate, response: str) -> str:
    """The stage-1 target (`layout`'s `target`) for `response`, up to where the feedback starts."""
    return layout.render("target", response=response, feedback=_FEEDBACK, refinement="").split(_FEEDBACK)[0]


def stage1_turns(layout: PromptTemplate, messages: Messages, response: str) -> Messages:
    """The conversation a stage-1 model continues with its feedback on `response`."""
    return [*messages, {"role": "assistant", "content": stage1_prefix(layout, response)}]


@dataclass(frozen=True)
class _Critique:
    """One way of asking for SRT critiques and scores: the API critic, or the model itself."""

    method: ReviseMethod
    critique: Callable[[dict[str, Any]], Messages]  # a sample -> the critique request
    score: Callable[[dict[str, Any], str], Messages]  # (sample, response) -> one scoring request
    continue_final: bool  # the requests end in an assistant prefix the model continues
    strict: bool  # stage 2: the refinement must score strictly higher (stage 1: no lower)

    def gate(self, gates: QualityGates, sample: dict[str, Any], refinement: str | None, gen: Generation) -> str | None:
        """The quality gates on what this way trains: the refinement always; in stage 1 also the
        initial response, since the SFT target is response + feedback + refinement (in stage 2 the
        response is DPO's rejected side, which may be poor)."""
        why = gates.check(refinement, finish_reason=gen.completions[0].finish_reason, original=sample["response"])
        if why is not None or self.strict:
            return why
        initial = gates.check(sample["response"], finish_reason=sample["finish_reason"])
        return None if initial is None else f"{initial} (the initial response, part of the stage-1 target)"


def _run_critique(
    samples: str | Path,
    out: str | Path,
    engine: Engine | EngineSpec,
    way: _Critique,
    tpl: PromptTemplate,
    scorer: PromptTemplate,
    config: CritiqueConfig,
    *,
    shard: Shard,
    resume: bool,
    quality: QualityGates,
) -> StageResult:
    max_tokens, constrain = config.max_tokens, config.constrain
    fmt, score_fmt = _need_format(tpl), _need_format(scorer)
    feedback_fields = [str(f) for f in tpl.get("feedback_fields", [f.name for f in fmt.fields[:-1]])]
    source_info(samples, "samples", out)  # the input checks, before the critic's model loads
    engine = ensure_engine(engine)
    params = SamplingConfig(temperature=float(tpl.get("temperature", 0.0)), max_tokens=max_tokens)
    score_params = constrained(
        SamplingConfig(temperature=float(scorer.get("temperature", 0.0)), max_tokens=max_tokens),
        scorer,
        engine,
        constrain,
    )
    extra = {
        "score_template": scorer.name,
        "score_template_hash": scorer.hash,
        "score_params": score_params.as_dict(),
        "quality": quality.as_dict(),
    }
    s = _open(RunIO(samples, out, shard, resume), engine, way.method, tpl, params, extra=extra, constrain=constrain)
    params = s.params
    template_id = f"{tpl.hash}+{scorer.hash}"
    params_json = json.dumps({"critic": params.as_dict(), "score": extra["score_params"]}, sort_keys=True)

    def process(batch: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        critiques = s.engine.generate(
            [way.critique(r) for r in batch],
            params,
            continue_final=way.continue_final,
            ids=[request_id(r, "critique") for r in batch],
        )
        replies = [
            parse_critic(fmt, g.completions[0].text, feedback_fields) if not g.error else None for g in critiques
        ]
        # Separate scoring calls: the original, and the refinement with no feedback in view.
        to_score = [
            (i, text, call)
            for i, (r, rep) in enumerate(zip(batch, replies, strict=True))
            if rep and rep.refinement
            for text, call in ((r["response"], "score-original"), (rep.refinement, "score-refined"))
        ]
        scored = (
            s.engine.generate(
                [way.score(batch[i], text) for i, text, _ in to_score],
                score_params,
                continue_final=way.continue_final,
                ids=[request_id(batch[i], call) for i, _, call in to_score],
            )
            if to_score
            else []
        )
        score_gens: dict[int, list[Generation]] = {}
        for (i, _, _), gen in zip(to_score, scored, strict=True):
            score_gens.setdefault(i, []).append(gen)
        prov = provenance(s.engine, s.store, template_id, params_json)
        rows, failures = [], []
        for i, (sample, gen, reply) in enumerate(zip(batch, critiques, replies, strict=True)):
            pair = score_gens.get(i, [])
            error = gen.error or next((g.error for g in pair if g.error), None)
            if error or reply is None:
                failures.append(_failure(sample, error or "critic call failed"))
                continue
            raw = gen.completions[0].text
            original_score = parse_score(score_fmt, pair[0].completions[0].text) if pair else None
            revised_score = parse_score(score_fmt, pair[1].completions[0].text) if pair else None
            kind, reason = ErrorKind.PARSE, cut_short(reply.error, gen)
            if reason is None:
                if original_score is None or revised_score is None:
                    unscored = pair[0] if original_score is None else pair[1]
                    reason = cut_short("no 'Overall Score: [[N]]' in a scoring reply", unscored)
                else:
                    kind, reason = ErrorKind.FILTER, score_filter(original_score, revised_score, strict=way.strict)
            if reason is None:
                kind, reason = ErrorKind.QUALITY, way.gate(quality, sample, reply.refinement, gen)
            rows.append(
                {
                    **_base_row(sample, way.method, prov),
                    "revised": reply.refinement,
                    "feedback": reply.feedback,
                    "critic_score": reply.score,
                    "original_score": original_score,
                    "revised_score": revised_score,
                    "similarity": similarity(sample["response"], reply.refinement),
                    **rejection(kind, reason),
                    "raw": json.dumps(
                        {
                            "critic": raw,
                            "score_original": pair[0].completions[0].text if pair else None,
                            "score_revised": pair[1].completions[0].text if pair else None,
                        }
                    ),
                    "prompt_tokens": gen.prompt_tokens + sum(g.prompt_tokens for g in pair),
                    "completion_tokens": gen.completions[0].completion_tokens
                    + sum(g.completions[0].completion_tokens for g in pair),
                }
            )
        return rows, failures

    batch_size = config.batch_size or s.engine.batch_rows or SRT_BATCH_SIZE
    label = "revise (SRT self-critique)" if way.strict else "revise (SRT)"
    result = run_batches(s.store, s.todo, process, engine=s.engine, batch_size=batch_size, total=s.total, label=label)
    return finish(s.store, result, revision_summary(scan_run(out)))


def cut_short(error: str | None, gen: Generation) -> str | None:
    """A parse error, saying so when the reply hit max_tokens: constrained decoding guarantees a
    reply that parses only if it is allowed to finish, so the cure differs (a larger budget)."""
    if error is None or gen.completions[0].finish_reason != LENGTH:
        return error
    return f"{error} (the reply hit max_tokens: truncated)"


def score_filter(original: int, revised: int, *, strict: bool) -> str | None:
    """Why a refinement is not kept by its scores: stage 1 (API critic) keeps it unless it scores
    lower; stage 2 (self-critique) only if it scores strictly higher."""
    if strict and revised <= original:
        return f"refinement scored {revised}, not above original {original}"
    if revised < original:
        return f"refinement scored {revised} < original {original}"
    return None


def _need_format(template: PromptTemplate) -> OutputFormat:
    if template.output is None:
        raise UserError("template declares no 'output' format, so its replies cannot be parsed", file=template.path)
    return template.output


def revision_summary(rows: pl.LazyFrame) -> dict[str, Any]:
    """Counts for the manifest and the dataset card: kept, labels, why rows were not kept.
    Computed on a lazy scan, so memory stays flat however large the run."""
    counts = rows.select(pl.len().alias("rows"), pl.col("kept").sum().alias("kept")).collect().row(0, named=True)
    if not counts["rows"]:
        return {"rows": 0}
    summary: dict[str, Any] = {
        "rows": counts["rows"],
        "kept": int(counts["kept"]),
        "not_kept_by_reason": reason_counts(rows),
        "gates": gate_counts(rows),
    }
    if labels := value_counts(rows, "label"):
        summary["labels"] = labels
    summary |= mean_of(rows, ["similarity"])
    summary |= mean_of(rows, ["original_score", "revised_score"], digits=3)
    return summary
