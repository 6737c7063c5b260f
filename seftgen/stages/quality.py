"""Quality gates: a generated text becomes a training target only if it passes them.

Every text that a stage would keep as a target (a SEFT revision or a kept original, an SRT
refinement and the response it trains on, a judged pair's chosen response, a tournament winner)
goes through `QualityGates.check`. A text that fails is written with `kept = false`,
`reason_kind = quality` and a reason naming the gate ("truncated: ...", "repetition: ...").
The thresholds live here, are set by a recipe's `quality:` section or the CLI's `--keep-truncated`
/ `--gate KEY=VALUE`, and are recorded in each run's manifest config (`quality`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import asdict, dataclass, fields, replace
from functools import cache
from typing import Any

from seftgen.errors import UserError
from seftgen.resources import resource_dir

LENGTH = "length"  # vLLM's and the OpenAI API's finish_reason when max_tokens cut the text
_WORD = re.compile(r"\w+|[^\w\s]")
_HEADING = re.compile(r"^[ \t]*#{2,4}[ \t]*(.+?)[ \t]*:?[ \t]*$", re.MULTILINE)


@dataclass(frozen=True)
class QualityGates:
    """Thresholds of the quality gates.

    Fields:
        keep_truncated: let texts that hit max_tokens (finish_reason 'length') be targets.
        ngram: the n of the repetition gate (word n-grams).
        max_repeated_ngrams: the largest share of a text's n-grams that may be repeats of earlier
            ones (a paragraph repeated nine times scores about 0.85; ordinary prose under 0.15).
        min_words_for_repetition: texts shorter than this are not judged for repetition.
        headings: reject texts holding a heading of our own templates on a line of its own
            ("### Response", "### Label"): the template leaked into the answer.
        max_growth: the largest length of a rewrite against its original (words), and
            `growth_slack` words more, before it counts as a blow-up.
        growth_slack: see max_growth (short originals may grow a lot and still be fine).
    """

    keep_truncated: bool = False
    ngram: int = 4
    max_repeated_ngrams: float = 0.3
    min_words_for_repetition: int = 24
    headings: bool = True
    max_growth: float = 4.0
    growth_slack: int = 64

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def check(self, text: str | None, *, finish_reason: str | None = None, original: str | None = None) -> str | None:
        """Why `text` may not be a training target, or None when it passes every gate."""
        if text is None or not text.strip():
            return "empty: no text"
        if finish_reason == LENGTH and not self.keep_truncated:
            return "truncated: the text hit max_tokens (finish_reason length)"
        words = _WORD.findall(text)
        if len(words) >= self.min_words_for_repetition:
            share = repeated_ngram_share(words, self.ngram)
            if share > self.max_repeated_ngrams:
                return f"repetition: {share:.0%} of its {self.ngram}-grams repeat (max {self.max_repeated_ngrams:.0%})"
        if self.headings and (heading := leaked_heading(text)):
            return f"heading: our template's heading '{heading}' is in the text"
        if original is not None:
            before = len(_WORD.findall(original))
            if len(words) > self.max_growth * before + self.growth_slack:
                limit = f"{self.max_growth:g}x + {self.growth_slack}"
                return f"blow-up: {len(words)} words from an original of {before} (max {limit})"
        return None

    def with_settings(self, settings: dict[str, Any] | list[str] | None) -> QualityGates:
        """These gates with some thresholds changed: a mapping, or 'key=value' strings (the CLI)."""
        if not settings:
            return self
        if isinstance(settings, list):
            pairs = {}
            for item in settings:
                key, sep, value = item.partition("=")
                if not sep:
                    raise UserError(f"expects key=value, got {item!r}", param="gate")
                pairs[key.strip()] = value.strip()
            settings = pairs
        known = {f.name: f.type for f in fields(self)}
        changes: dict[str, Any] = {}
        for key, value in settings.items():
            if key not in known:
                raise UserError(f"unknown gate setting {key!r} (known: {', '.join(known)})", param="gate")
            current = getattr(self, key)
            try:
                if isinstance(current, bool):
                    changes[key] = value if isinstance(value, bool) else str(value).lower() in ("1", "true", "yes")
                else:
                    changes[key] = type(current)(value)
            except ValueError as exc:
                raise UserError(f"{key}: {value!r} is not a {type(current).__name__}", param="gate") from exc
        return replace(self, **changes)


GATES = QualityGates()


def repeated_ngram_share(words: list[str], n: int) -> float:
    """The share of a text's word n-grams that repeat an earlier n-gram of the same text."""
    grams = [tuple(words[i : i + n]) for i in range(len(words) - n + 1)]
    if not grams:
        return 0.0
    counts = Counter(grams)
    return sum(c - 1 for c in counts.values()) / len(grams)


@cache
def template_headings() -> frozenset[str]:
    """The section headings our shipped templates use (`### Response`, `### Label`, ...)."""
    found: set[str] = set()
    for path in resource_dir("prompts").glob("*.yaml"):
        found.update(h.strip().lower() for h in _HEADING.findall(path.read_text()) if len(h) <= 40)
    return frozenset(found)


def leaked_heading(text: str) -> str | None:
    headings = template_headings()
    for match in _HEADING.finditer(text):
        if match.group(1).strip().lower() in headings:
            return match.group(0).strip()
    return None
