"""Preference records (a prompt, several responses, a rating for each) from any shape of data.

Column mapping flags or a preset say where the fields are. Presets:
- `seftgen`: `prompt`, `responses: [{text, rating}]`, optional `rationale` (our demo data);
- `ultrafeedback`: `instruction`, `completions: [{response, annotations}]`: each response rated
  by the mean of its aspect ratings (helpfulness, honesty, instruction following, truthfulness;
  `N/A` skipped; `overall_score` where a response has none), ties going to the longer response,
  as the SELF-JUDGE reference ranks them; the
  aspects (rating and rationale) feed principle judges (`build-jsft-data --template principle_*`);
- `nectar`: `prompt` ("Human: ... Assistant:" turns), `answers: [{answer, rank}]` (rank 1 best).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from seftgen.errors import UserError
from seftgen.io.readers import check_messages, iter_rows
from seftgen.provenance import prompt_id


@dataclass(frozen=True)
class PreferenceColumns:
    prompt: str = "prompt"
    responses: str = "responses"
    text: str = "text"
    rating: str = "rating"
    id: str | None = "id"
    rationale: str | None = "rationale"
    higher_is_better: bool = True  # False for ranks (1 = best): turned into ratings n..1
    turns_format: str | None = None  # "human-assistant" for Nectar-style prompt strings
    aspects: str | None = "aspects"  # per-response {aspect: {rating, rationale}} (UltraFeedback's annotations)
    rating_from_aspects: bool = False  # the response's rating is the mean of its aspect ratings
    ties_to_longer: bool = False  # equal ratings rank the longer response first


PRESETS: dict[str, PreferenceColumns] = {
    "seftgen": PreferenceColumns(),
    "ultrafeedback": PreferenceColumns(
        prompt="instruction",
        responses="completions",
        text="response",
        rating="overall_score",
        id=None,
        rationale=None,
        aspects="annotations",
        rating_from_aspects=True,
        ties_to_longer=True,
    ),
    "nectar": PreferenceColumns(
        prompt="prompt",
        responses="answers",
        text="answer",
        rating="rank",
        id=None,
        rationale=None,
        higher_is_better=False,
        turns_format="human-assistant",
    ),
}


def columns_for(preset: str, **overrides: Any) -> PreferenceColumns:
    if preset not in PRESETS:
        raise UserError(f"unknown preset {preset!r} (choose {', '.join(PRESETS)})")
    return replace(PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class Aspect:
    """One aspect's annotation of a response (UltraFeedback: Rating, Rationale)."""

    rating: float | None  # None: not applicable ("N/A")
    rationale: str | None


@dataclass(frozen=True)
class Response:
    text: str
    rating: float  # higher is better, whatever the source scale was
    aspects: dict[str, Aspect] = field(default_factory=dict)


@dataclass(frozen=True)
class PreferenceRecord:
    record_id: str
    messages: list[dict[str, str]]
    responses: list[Response]
    rationale: str | None
    row: int
    ties_to_longer: bool = False

    def ranked(self) -> list[Response]:
        """Responses best first (ties: the longer first with `ties_to_longer`, else stable)."""
        return sorted(self.responses, key=lambda r: (-r.rating, -len(r.text) if self.ties_to_longer else 0))


_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):\s*")


def _human_assistant(text: str) -> list[dict[str, str]]:
    """'Human: hi\n\nAssistant: hello\n\nHuman: more\n\nAssistant:' -> chat messages."""
    pieces = _TURN.split(text)
    messages = []
    for speaker, content in zip(pieces[1::2], pieces[2::2], strict=True):
        if content.strip():
            messages.append({"role": "user" if speaker == "Human" else "assistant", "content": content.strip()})
    return messages or [{"role": "user", "content": text.strip()}]


def iter_preferences(source: str, cols: PreferenceColumns, limit: int | None = None) -> Iterator[PreferenceRecord]:
    for count, (row, record) in enumerate(iter_rows(source)):
        if limit is not None and count >= limit:
            return
        yield _record(record, cols, source, row)


def _record(record: dict[str, Any], cols: PreferenceColumns, source: str, row: int) -> PreferenceRecord:
    def need(field: str) -> Any:
        if field not in record or record[field] is None:
            raise UserError("missing column", file=source, row=row, field=field)
        return record[field]

    prompt = need(cols.prompt)
    if isinstance(prompt, str):
        if not prompt.strip():
            raise UserError("empty prompt", file=source, row=row, field=cols.prompt)
        messages = _human_assistant(prompt) if cols.turns_format else [{"role": "user", "content": prompt}]
    else:
        messages = check_messages(prompt, source, row, cols.prompt)
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    responses_value = need(cols.responses)
    if not isinstance(responses_value, list) or len(responses_value) < 1:
        raise UserError("expected a list of responses", file=source, row=row, field=cols.responses)
    responses = []
    for i, item in enumerate(responses_value):
        where = f"{cols.responses}[{i}]"
        if not isinstance(item, dict):
            raise UserError("expected an object", file=source, row=row, field=where)
        text, rating = item.get(cols.text), item.get(cols.rating)
        if not isinstance(text, str) or not text.strip():
            raise UserError("missing or empty response text", file=source, row=row, field=f"{where}.{cols.text}")
        aspects = _aspects(item.get(cols.aspects) if cols.aspects else None, source, row, f"{where}.{cols.aspects}")
        rated = [a.rating for a in aspects.values() if a.rating is not None]
        if cols.rating_from_aspects and rated:  # else the rating column (e.g. UltraFeedback's overall_score)
            rating = sum(rated) / len(rated)
        if isinstance(rating, bool) or not isinstance(rating, int | float):
            raise UserError("rating must be a number", file=source, row=row, field=f"{where}.{cols.rating}")
        responses.append(Response(text.strip(), float(rating), aspects))
    if not cols.higher_is_better:  # ranks (1 = best) become ratings on a 1..n scale, n = best
        responses = [replace(r, rating=len(responses) + 1 - r.rating) for r in responses]
    record_id = str(record[cols.id]) if cols.id and record.get(cols.id) is not None else prompt_id(messages)
    rationale = record.get(cols.rationale) if cols.rationale else None
    rationale = rationale if isinstance(rationale, str) else None
    return PreferenceRecord(record_id, messages, responses, rationale, row, cols.ties_to_longer)


def _aspects(value: Any, source: str, row: int, where: str) -> dict[str, Aspect]:
    """{aspect: {Rating|rating, Rationale|rationale, "Rationale For Rating"}}; ratings may be
    numbers or numeric strings, "N/A" means not applicable."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError("expected an object of aspects", file=source, row=row, field=where)
    out = {}
    for name, note in value.items():
        if not isinstance(note, dict):
            raise UserError("expected {rating, rationale}", file=source, row=row, field=f"{where}.{name}")
        raw = note.get("Rating", note.get("rating"))
        try:
            rating = None if raw in (None, "N/A") else float(raw)
        except (TypeError, ValueError):
            raise UserError(f"rating {raw!r} is not a number", file=source, row=row, field=f"{where}.{name}") from None
        parts = [note.get(k) for k in ("Rationale", "rationale", "Rationale For Rating")]
        rationale = " ".join(p.strip() for p in parts if isinstance(p, str) and p.strip()) or None
        out[str(name)] = Aspect(rating, rationale)
    return out
