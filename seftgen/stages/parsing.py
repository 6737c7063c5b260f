"""Strict parsers for model replies. A reply that does not follow the format yields an error
string (kept with the raw text in the row), never an exception and never a silent drop."""

from __future__ import annotations

import re
from dataclasses import dataclass

_LABEL = re.compile(r"^\s*#{2,4}\s*Label\s*:?\s*\n+\s*\**\s*([A-Za-z_-]+)", re.IGNORECASE | re.MULTILINE)
_REVISED = re.compile(r"^\s*#{2,4}\s*Revised Response\s*:?[ \t]*\n?(.*)\Z", re.IGNORECASE | re.MULTILINE | re.DOTALL)
_SCORE = re.compile(r"Overall Score\s*:?\s*\[\[\s*(\d{1,2})\s*\]\]", re.IGNORECASE)
_IMPROVED = re.compile(r"^\s*#{2,4}\s*Improved Response\s*:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_FEEDBACK_HEAD = re.compile(r"^\s*#{2,4}\s*Feedback\s*:?[ \t]*\n", re.IGNORECASE)
_VERDICT = re.compile(r"Response\s*\(?\s*([AB])\b")


@dataclass(frozen=True)
class ReviserReply:
    label: str | None
    revised: str | None
    error: str | None = None


def parse_reviser(text: str, labels: list[str], original: str) -> ReviserReply:
    """`### Label` then `### Revised Response`. The first label means keep: the original stands."""
    match = _LABEL.search(text)
    if not match:
        return ReviserReply(None, None, "parse: no '### Label' section")
    label = match.group(1).strip().lower()
    if label not in labels:
        return ReviserReply(None, None, f"parse: unknown label {label!r} (expected {', '.join(labels)})")
    if label == labels[0]:
        return ReviserReply(label, original)
    body = _REVISED.search(text, match.end())
    revised = body.group(1).strip() if body else ""
    if not revised:
        return ReviserReply(label, None, f"parse: label {label!r} but no revised response")
    return ReviserReply(label, revised)


@dataclass(frozen=True)
class CriticReply:
    feedback: str | None
    score: int | None
    refinement: str | None
    error: str | None = None


def parse_score(text: str) -> int | None:
    """The last `Overall Score: [[N]]` with 1 <= N <= 10, else None."""
    scores = [int(s) for s in _SCORE.findall(text)]
    valid = [s for s in scores if 1 <= s <= 10]
    return valid[-1] if valid else None


def parse_critic(text: str) -> CriticReply:
    """Feedback (with its score), then `### Improved Response` and the refinement."""
    parts = _IMPROVED.split(text, maxsplit=1)
    if len(parts) != 2:
        return CriticReply(None, parse_score(text), None, "parse: no '### Improved Response' section")
    feedback = _FEEDBACK_HEAD.sub("", parts[0], count=1).strip()
    refinement = parts[1].strip()
    score = parse_score(feedback)
    if not feedback:
        return CriticReply(None, score, refinement or None, "parse: empty feedback")
    if not refinement:
        return CriticReply(feedback, score, None, "parse: empty improved response")
    return CriticReply(feedback, score, refinement)


def feedback_gaps(feedback: str, score: int | None, required_parts: list[str]) -> list[str]:
    """What a complete SRT feedback lacks: weaknesses, a score, suggestions (by keyword)."""
    gaps = [part for part in required_parts if part.lower() not in feedback.lower()]
    if score is None:
        gaps.append("score")
    return gaps


def parse_verdict(text: str) -> str | None:
    """Text-verdict judging: the last 'Response A' / 'Response B' in the reply."""
    found = _VERDICT.findall(text)
    return found[-1] if found else None
