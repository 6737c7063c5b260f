"""Reply formats, declared once in each template's `output:` list and used twice: as a regex that
constrains decoding (vLLM structured outputs) and as the strict parser of the reply.

A format is a sequence of fields. Each field is the literal text the model writes before it
(`before`, e.g. "### Label\\n") and a value:

- `choice`: one of a list (a list, or the name of a template key holding one, such as `labels`);
- `int`: an integer in [low, high], optionally wrapped (`wrap: ["[[", "]]"]`);
- `line`: one line of free text;
- `text`: free text to the end of the reply (last field only).

Free text is not bounded in length by the regex: the reply's `max_tokens` bounds it, and a reply
cut there is marked truncated and gated. A bound in the regex would cut a value mid-sentence with
finish_reason "stop" (a truncation the gates cannot see), and xgrammar compiles each counted
repetition such as `[^\\n]{0,299}` in about 2 s on a 2-core CPU (the critic's format took 4.3 s,
measured 2026-12-07), close to the 5 s after which vLLM fails the request
(`VLLM_REGEX_COMPILATION_TIMEOUT_S`, `v1/structured_output/utils.py`).

`empty_when: {label: [keep]}` lets a `text` field be empty when an earlier choice took one of those
values (the reviser's keep). `optional: true` lets the parser accept a reply without the field
(unconstrained API replies); constrained decoding always writes it.

The regex is a sub-language of what the parser accepts: every constrained reply parses (tested).
The parser is tolerant of markdown decoration around headings (`**Weaknesses:**`, `## Label`),
but strict about presence and order: a reply that lacks a field is an error, never a guess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from seftgen.errors import UserError

KINDS = ("choice", "int", "line", "text")
_REGEX_SPECIAL = set(".^$*+?{}[]\\|()")


def regex_literal(text: str) -> str:
    """Escape only what is special in a regex; grammar backends reject escapes like `\\#`."""
    return "".join(("\\" + ch if ch in _REGEX_SPECIAL else ch) for ch in text).replace("\n", "\\n")


@dataclass(frozen=True)
class Field:
    name: str
    kind: str
    before: str = ""
    choices: tuple[str, ...] = ()
    low: int = 1
    high: int = 10
    wrap: tuple[str, str] = ("", "")
    empty_when: tuple[str, tuple[str, ...]] | None = None
    optional: bool = False

    @property
    def heading(self) -> str:
        """What the parser looks for: `before` without its surrounding whitespace."""
        return self.before.strip()

    def value_regex(self) -> str:
        if self.kind == "choice":
            return "(?:" + "|".join(regex_literal(c) for c in self.choices) + ")"
        if self.kind == "int":
            numbers = "|".join(str(n) for n in range(self.high, self.low - 1, -1))
            return regex_literal(self.wrap[0]) + f"(?:{numbers})" + regex_literal(self.wrap[1])
        # Free text starts with a visible character: a blank value would not parse.
        if self.kind == "line":
            return "[^\\s][^\\n]*"
        return "[^\\s][\\s\\S]*"


@dataclass(frozen=True)
class Parsed:
    values: dict[str, Any] = field(default_factory=dict)
    starts: dict[str, int] = field(default_factory=dict)  # where each field's heading begins
    error: str | None = None  # what does not follow the format (an `ErrorKind.PARSE` reason)


@dataclass(frozen=True)
class OutputFormat:
    fields: tuple[Field, ...]

    @classmethod
    def from_template(cls, spec: Any, data: dict[str, Any], file: Any = None) -> OutputFormat:
        """Build from a template's `output:` list; `choices: labels` names a template key."""
        if not isinstance(spec, list) or not spec:
            raise UserError("'output' must be a non-empty list of fields", file=file, field="output")
        fields = []
        for i, item in enumerate(spec):
            where = f"output[{i}]"
            if not isinstance(item, dict) or "name" not in item:
                raise UserError("each output field needs a 'name'", file=file, field=where)
            kind = next((k for k in KINDS if k in item), None)
            if kind is None:
                raise UserError(f"field needs one of {', '.join(KINDS)}", file=file, field=where)
            if "max_chars" in item:
                raise UserError(
                    "'max_chars' is not supported: the reply's max_tokens bounds free text", file=file, field=where
                )
            value = item[kind]
            kwargs: dict[str, Any] = {}
            if kind == "choice":
                choices = data.get(value) if isinstance(value, str) else value
                if not isinstance(choices, list) or not choices:
                    raise UserError("choice needs a list or the name of a template key", file=file, field=where)
                kwargs["choices"] = tuple(str(c) for c in choices)
            elif kind == "int":
                if not (isinstance(value, list) and len(value) == 2):
                    raise UserError("int needs [low, high]", file=file, field=where)
                kwargs["low"], kwargs["high"] = int(value[0]), int(value[1])
                kwargs["wrap"] = tuple(item.get("wrap", ["", ""]))
            if "empty_when" in item:
                (ref, vals), *_ = item["empty_when"].items()
                kwargs["empty_when"] = (str(ref), tuple(str(v) for v in ([vals] if isinstance(vals, str) else vals)))
            before = str(item.get("before", "")).format_map({k: v for k, v in data.items() if isinstance(v, str)})
            fields.append(
                Field(
                    name=str(item["name"]),
                    kind=kind,
                    before=before,
                    optional=bool(item.get("optional", False)),
                    **kwargs,
                )
            )
        if any(f.kind == "text" for f in fields[:-1]):
            raise UserError("a 'text' field must be the last one", file=file, field="output")
        return cls(tuple(fields))

    # -- constrained decoding --------------------------------------------------------------------
    def regex(self) -> str:
        """The reply's language for structured outputs. An `empty_when` splits it in two branches."""
        dependent = next((f for f in self.fields if f.empty_when), None)
        if dependent is None:
            return self._sequence({})
        ref, triggers = dependent.empty_when  # type: ignore[misc]
        source = next(f for f in self.fields if f.name == ref)
        others = tuple(c for c in source.choices if c not in triggers)
        branches = [self._sequence({ref: triggers}, empty=dependent.name)]
        if others:
            branches.append(self._sequence({ref: others}))
        return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"

    def _sequence(self, restrict: dict[str, tuple[str, ...]], empty: str | None = None) -> str:
        out = []
        for f in self.fields:
            if f.name == empty:
                out.append(regex_literal(f.before.rstrip("\n")) + "(?:\\n)?")
                continue
            shown = Field(f.name, f.kind, f.before, restrict[f.name]) if f.name in restrict else f
            out.append(regex_literal(shown.before) + shown.value_regex())
        return "".join(out)

    # -- parsing ---------------------------------------------------------------------------------
    def parse(self, text: str) -> Parsed:
        """Values by field name, or an error naming the first field that is missing or wrong."""
        found: list[tuple[Field, int, int]] = []  # field, heading start, value start
        pos = 0
        for f in self.fields:
            if not f.heading:
                found.append((f, pos, pos))
                continue
            match = _heading(f).search(text, pos)
            if match is None:
                if f.optional:
                    continue
                return Parsed(error=f"no '{f.heading}' section")
            found.append((f, match.start(), match.end()))
            pos = match.end()
        values: dict[str, Any] = {}
        starts: dict[str, int] = {}
        for i, (f, start, value_start) in enumerate(found):
            end = found[i + 1][1] if i + 1 < len(found) else len(text)
            raw = text[value_start:end].strip()
            starts[f.name] = start
            value, error = self._value(f, raw, values)
            if error:
                return Parsed(values, starts, error)
            values[f.name] = value
        return Parsed(values, starts)

    def _value(self, f: Field, raw: str, earlier: dict[str, Any]) -> tuple[Any, str | None]:
        if f.kind == "choice":
            word = raw.strip("*_` \t").split()[0].strip("*_`.,:;!") if raw.strip("*_` \t") else ""
            for choice in f.choices:
                if word.lower() == choice.strip().lower():
                    return choice, None
            return None, f"'{f.heading}' is {word!r}, expected one of {', '.join(c.strip() for c in f.choices)}"
        if f.kind == "int":
            pattern = re.escape(f.wrap[0]) + r"\s*(\d{1,3})\s*" + re.escape(f.wrap[1])
            numbers = [int(n) for n in re.findall(pattern, raw)]
            valid = [n for n in numbers if f.low <= n <= f.high]
            if not valid:
                return None, f"no {f.wrap[0]}{f.low}-{f.high}{f.wrap[1]} after '{f.heading}'"
            return valid[-1], None
        if not raw:
            if f.empty_when and earlier.get(f.empty_when[0]) in f.empty_when[1]:
                return "", None
            if f.optional:
                return None, None
            return None, f"'{f.heading or f.name}' is empty"
        return raw, None

    def skeleton(self) -> str:
        """The format as the prompt shows it, from the same declaration."""
        parts = []
        for f in self.fields:
            if f.kind == "choice":
                value = "<" + " | ".join(c.strip() for c in f.choices) + ">"
            elif f.kind == "int":
                value = f"{f.wrap[0]}<{f.low}-{f.high}>{f.wrap[1]}"
            else:
                value = f"<{f.name.replace('_', ' ')}>"
            parts.append(f.before + value)
        return "".join(parts)


def _heading(f: Field) -> re.Pattern[str]:
    """A heading with optional markdown around it: `## Label`, `**Weaknesses:**`, `1. Suggestions`."""
    core = f.heading.lstrip("#").strip()
    words = r"\s+".join(re.escape(w) for w in core.rstrip(":").split())
    colon = r"\**\s*:?\**"
    if f.kind == "int":  # inline: 'Overall Score: [[7]]' may close a sentence
        return re.compile(rf"\**{words}{colon}[ \t]*", re.IGNORECASE)
    if f.kind == "choice" and not f.before.endswith("\n"):  # inline verdict sentence
        return re.compile(rf"{words}{colon}", re.IGNORECASE)
    return re.compile(rf"(?m)^[ \t>*#\d.)-]*{words}{colon}[ \t]*\n?", re.IGNORECASE)
