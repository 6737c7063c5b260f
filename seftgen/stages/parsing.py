"""Strict parsers for model replies, on top of each template's declared `output` format.

A reply that does not follow the format yields an error text (the row's `reason`, of kind
`parse`, kept with the raw reply), never an exception and never a silent drop.
"""

from __future__ import annotations

from dataclasses import dataclass

from seftgen.formats import OutputFormat


@dataclass(frozen=True)
class ReviserReply:
    label: str | None
    revised: str | None
    error: str | None = None


def parse_reviser(fmt: OutputFormat, text: str, labels: list[str], original: str) -> ReviserReply:
    """`### Label` then `### Revised Response`. The first label means keep: the original stands."""
    parsed = fmt.parse(text)
    label = parsed.values.get("label")
    if parsed.error:
        return ReviserReply(label, None, parsed.error)
    if label == labels[0]:
        return ReviserReply(label, original)
    return ReviserReply(label, parsed.values["revised"])


@dataclass(frozen=True)
class CriticReply:
    feedback: str | None
    score: int | None
    refinement: str | None
    error: str | None = None


def parse_critic(fmt: OutputFormat, text: str, feedback_fields: list[str]) -> CriticReply:
    """Feedback (weaknesses, score, suggestions) then the improved response. The feedback is the
    reply's text from the first feedback field up to the refinement's heading."""
    parsed = fmt.parse(text)
    if parsed.error:
        return CriticReply(None, parsed.values.get("score"), None, parsed.error)
    last = fmt.fields[-1].name
    first = min(parsed.starts[name] for name in feedback_fields if name in parsed.starts)
    feedback = text[first : parsed.starts[last]].strip()
    return CriticReply(feedback, parsed.values.get("score"), parsed.values[last])


def parse_score(fmt: OutputFormat, text: str) -> int | None:
    """The score of a separate scoring call, or None when the reply has none."""
    parsed = fmt.parse(text)
    return None if parsed.error else parsed.values.get("score")


def parse_verdict(fmt: OutputFormat, text: str) -> str | None:
    """Text-verdict judging: the answer after the fixed sentence ('A' or 'B'), or None."""
    parsed = fmt.parse(text)
    return None if parsed.error else str(parsed.values["verdict"]).strip()
