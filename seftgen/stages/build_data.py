"""SFT datasets built from preference records: the SEFT reviser's and SELF-JUDGE's (JSFT).

Both write chat-format rows (`messages` ending in the assistant target) into an `sft` run folder,
ready for `export-axolotl --kind sft`.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import Stage
from seftgen.io.preferences import PreferenceColumns, PreferenceRecord, Response, iter_preferences
from seftgen.io.schema import SFT
from seftgen.io.store import RunStore, scan_run
from seftgen.provenance import stable_hash, utc_now
from seftgen.stages.common import StageResult, chunked, finish, value_counts
from seftgen.stages.config import JSFT_DATA, REVISE
from seftgen.stages.judging import judge_turns
from seftgen.templates import PromptTemplate, instruction_text, load_template

BATCH = 1024


@dataclass(frozen=True)
class RevisionLabels:
    """How a rating gap becomes a revision label. Ratings are on the source's scale (1-10 for
    UltraFeedback and our demo data; ranks turned into 1..n for Nectar)."""

    keep_min_rating: float = 8.0  # a response this good is a keep example
    min_target_rating: float = 7.0  # never teach a rewrite towards a response worse than this
    minor_gap: float = 1.0  # gap >= minor_gap -> minor
    major_gap: float = 4.0  # gap >= major_gap -> major

    def label(self, gap: float) -> str | None:
        if gap >= self.major_gap:
            return "major"
        if gap >= self.minor_gap:
            return "minor"
        return None


def _provenance(store: RunStore, source: str, template: PromptTemplate, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": f"data:{Path(source).name}",
        "engine": "none",
        "template_hash": template.hash,
        "params": json.dumps(params, sort_keys=True),
        "seed": 0,
        "run_id": store.run_id,
        "created_at": utc_now(),
    }


def _example(
    messages: list[dict[str, str]], kind: str, source_id: str, prov: dict[str, Any], target_from: int | None = None
) -> dict[str, Any]:
    return {
        "example_id": stable_hash(messages),
        "messages": messages,
        "kind": kind,
        "source_id": source_id,
        "target_from": target_from,
        **prov,
    }


def _build(
    source: str,
    out: str | Path,
    stage: Stage,
    template: PromptTemplate,
    params: dict[str, Any],
    cols: PreferenceColumns,
    limit: int | None,
    make,
) -> StageResult:
    config = {
        "source": str(Path(source).resolve()) if Path(source).exists() else source,
        "columns": asdict(cols),
        "template": template.name,
        "template_hash": template.hash,
        "params": params,
        "limit": limit,
    }
    for _ in iter_preferences(source, cols, limit):  # validate every record before writing anything
        pass
    store = RunStore.open(out, SFT, stage, config)
    result = StageResult(Path(out), resumed=len(store.done))
    prov = _provenance(store, source, template, params)
    skipped: Counter[str] = Counter()
    with store:
        for batch in chunked(iter_preferences(source, cols, limit), BATCH):
            rows = []
            for record in batch:
                built, why = make(record, prov)
                rows.extend(built)
                if why:
                    skipped[why] += 1
            result.written += store.write(rows)
    rows_of = scan_run(out)
    return finish(
        store,
        result,
        {
            "examples": rows_of.select(pl.len()).collect().item(),
            "by_kind": value_counts(rows_of, "kind"),
            "records_skipped": dict(skipped),
        },
    )


def build_reviser_data(
    source: str,
    out: str | Path,
    *,
    columns: PreferenceColumns = PreferenceColumns(),
    labels: RevisionLabels = RevisionLabels(),
    template: str = REVISE.template,
    limit: int | None = None,
) -> StageResult:
    """SEFT reviser SFT data: a weak response with a better one becomes a minor/major revision
    example (by rating gap); a top response becomes a keep example."""
    tpl = load_template(template)
    names = [str(x) for x in tpl.get("labels", ["keep", "minor", "major"])]

    def make(record: PreferenceRecord, prov: dict[str, Any]) -> tuple[list[dict], str | None]:
        ranked = record.ranked()
        best = ranked[0]
        if best.rating < labels.min_target_rating:
            return [], "best response rated below min_target_rating"
        instruction = instruction_text(record.messages)

        def example(response: str, label: str, revised: str) -> dict[str, Any]:
            messages = [
                {
                    "role": "user",
                    "content": tpl.render("user", instruction=instruction, response=response, labels=names),
                },
                {"role": "assistant", "content": tpl.render("target", label=label, revised=revised)},
            ]
            return _example(messages, label, record.record_id, prov)

        rows = []
        if best.rating >= labels.keep_min_rating:
            rows.append(example(best.text, names[0], ""))
        for weak in ranked[1:]:
            label = labels.label(best.rating - weak.rating)
            if label:
                rows.append(example(weak.text, label, best.text))
        return rows, None if rows else "no response pair with a large enough gap"

    params = asdict(labels) | {"labels": names}
    return _build(source, out, Stage.BUILD_REVISER_DATA, tpl, params, columns, limit, make)


def build_jsft_data(
    source: str,
    out: str | Path,
    *,
    columns: PreferenceColumns = PreferenceColumns(),
    template: str | list[str] = JSFT_DATA.template,
    min_gap: float = JSFT_DATA.min_gap,
    include_sft: bool = JSFT_DATA.include_sft,
    limit: int | None = None,
) -> StageResult:
    """Judge-augmented SFT data: the best response as an SFT example, plus pairwise judge examples
    in BOTH presentation orders.

    A general judge template gets best vs each clearly worse response (`min_gap`). A principle
    template in the decision-first layout (`train_from_prefix`, e.g. the four `principle_*`; give
    several) gets, per principle, one pair whose ratings on that aspect differ, with the aspects'
    rationales as the evaluations, chosen as the SELF-JUDGE reference does (the best-ranked
    response that has such a pair, one of its pairs at random, seeded by the record; rationales
    holding "Text" skipped); its examples train only what follows the prefix (`target_from`)."""
    names = [template] if isinstance(template, str) else list(template)
    templates = [load_template(name) for name in names]

    def make(record: PreferenceRecord, prov: dict[str, Any]) -> tuple[list[dict], str | None]:
        rows = []
        if include_sft:
            best = record.ranked()[0]
            rows.append(
                _example([*record.messages, {"role": "assistant", "content": best.text}], "sft", record.record_id, prov)
            )
        whys = []
        for tpl in templates:
            built, why = (_principle_examples if tpl.get("train_from_prefix") else _judge_examples)(
                tpl, record, prov, min_gap
            )
            rows.extend(built)
            whys += [why] if why else []
        return rows, whys[0] if whys and len(rows) == int(include_sft) else None

    first = templates[0]
    token_a, token_b = (str(t) for t in first.get("answer_tokens", [" A", " B"]))
    params = {"min_gap": min_gap, "include_sft": include_sft, "answer_tokens": [token_a, token_b]}
    if len(templates) > 1:
        params["templates"] = {t.name: t.hash for t in templates}
    return _build(source, out, Stage.BUILD_JSFT_DATA, first, params, columns, limit, make)


Built = tuple[list[dict[str, Any]], str | None]


def _judge_turns(tpl: PromptTemplate, record: PreferenceRecord, first: str, second: str, target: str) -> list[dict]:
    return [*judge_turns(tpl, record.messages, first, second), {"role": "assistant", "content": target}]


def _judge_examples(tpl: PromptTemplate, record: PreferenceRecord, prov: dict[str, Any], min_gap: float) -> Built:
    """Best vs each response rated at least `min_gap` lower, in both orders."""
    prefix = str(tpl.get("assistant_prefix", ""))
    token_a, token_b = (str(t) for t in tpl.get("answer_tokens", [" A", " B"]))
    if tpl.get("rationale", False) and not record.rationale:
        return [], "template needs a rationale and the record has none"
    ranked = record.ranked()
    best, rows = ranked[0], []
    for worse in ranked[1:]:
        if best.rating - worse.rating < min_gap:
            continue
        for first, second, answer in ((best, worse, token_a), (worse, best, token_b)):
            target = tpl.render("target", assistant_prefix=prefix, answer=answer, rationale=record.rationale or "")
            rows.append(
                _example(_judge_turns(tpl, record, first.text, second.text, target), "judge", record.record_id, prov)
            )
    return rows, None


def principle_pair(record: PreferenceRecord, principle: str) -> tuple[Response, Response] | None:
    """(better, worse) on one aspect: for the best-ranked response that differs from another on
    this aspect, one such pair at random (seeded by the record and principle)."""

    def usable(r: Response) -> bool:
        aspect = r.aspects.get(principle)
        return aspect is not None and aspect.rating is not None and "Text" not in (aspect.rationale or "")

    for target in record.ranked():
        if not usable(target):
            continue
        rating = target.aspects[principle].rating
        pairs = [
            (target, other) if rating > other.aspects[principle].rating else (other, target)  # type: ignore[operator]
            for other in record.responses
            if usable(other) and other.aspects[principle].rating != rating
        ]
        if pairs:
            return random.Random(stable_hash([record.record_id, principle])).choice(pairs)
    return None


def _principle_examples(tpl: PromptTemplate, record: PreferenceRecord, prov: dict[str, Any], _: float) -> Built:
    """One pair per principle, both orders, decision first, loss after the prefix."""
    principle = str(tpl.get("principle", ""))
    pair = principle_pair(record, principle)
    if pair is None:
        return [], f"no two responses rated differently on {principle!r} (with a rationale)"
    prefix = str(tpl.get("assistant_prefix", ""))
    token_a, token_b = (str(t) for t in tpl.get("answer_tokens", [" A", " B"]))
    better, worse = pair
    why_better, why_worse = (r.aspects[principle].rationale or "" for r in pair)
    rows = []
    for first, second, answer, why_a, why_b in (
        (better, worse, token_a, why_better, why_worse),
        (worse, better, token_b, why_worse, why_better),
    ):
        target = tpl.render("target", assistant_prefix=prefix, answer=answer, rationale_a=why_a, rationale_b=why_b)
        turns = _judge_turns(tpl, record, first.text, second.text, target)
        rows.append(_example(turns, f"judge:{principle}", record.record_id, prov, target_from=len(prefix)))
    return rows, None
