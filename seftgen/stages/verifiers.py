"""Verifier judges: a program, not a model, scores each sample, wherever the prompt is checkable.

A 135M judge cannot tell two answers apart; a checker can, when the instruction is verifiable.
Each verifier reads the prompt row's checkable facts (the samples' `verifiable` column, carried
from the input's `instruction_id_list`/`kwargs`/`reference` fields) and returns a `Verification`:
a score in [0, 1] (the share of checks passed) and each check's pass/fail.

- `instructions` (and `instructions-loose`): IFEval's canonical checkers, strict (or loose), one
  check per instruction id.
- `match`: the answer against the row's `reference`; numerically when the reference is a number
  (the last number in the answer, commas ignored), else exactly (case and spacing ignored) on the
  whole answer or its last line.
- `MODULE:FUNCTION`: a user's function, imported by name, called as

      def verify(response: str, facts: dict[str, Any], messages: list[dict[str, str]])
          -> bool | float | Mapping[str, bool]

  `facts` is the row's parsed `verifiable` (empty when the row has none). A bool is one check, a
  float in [0, 1] the score, and a mapping named checks (the score is the share passed). An
  exception is recorded on that sample, and the sample cannot win.
"""

from __future__ import annotations

import importlib
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from seftgen.engines.base import Messages
from seftgen.errors import UserError
from seftgen.stages import instructions


@dataclass(frozen=True)
class Verification:
    """One sample's verdict. `score` is None when there was nothing to check (or the check failed)."""

    score: float | None
    checks: dict[str, bool] = field(default_factory=dict)
    error: str | None = None

    @property
    def passed(self) -> bool:
        return self.score is not None and self.score >= 1.0

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"score": self.score, "checks": self.checks}
        if self.error:
            out["error"] = self.error
        return out


class Verifier(Protocol):
    name: str

    def verify(self, response: str, facts: dict[str, Any], messages: Messages) -> Verification: ...


def _share(checks: Mapping[str, bool]) -> float | None:
    return round(sum(checks.values()) / len(checks), 4) if checks else None


@dataclass(frozen=True)
class InstructionVerifier:
    """IFEval's checkers on the row's `instruction_id_list` and `kwargs`."""

    loose: bool = False

    @property
    def name(self) -> str:
        return "instructions-loose" if self.loose else "instructions"

    def verify(self, response: str, facts: dict[str, Any], messages: Messages) -> Verification:
        ids = facts.get("instruction_id_list")
        if not ids:
            return Verification(None, error="the prompt row has no instruction_id_list")
        item = instructions.Item("", _last_user(messages), tuple(ids), tuple(facts.get("kwargs") or [{}] * len(ids)))
        try:
            verdict = instructions.score(item, response)
        except (KeyError, ValueError, TypeError) as exc:  # an unknown id or bad arguments in the row
            return Verification(None, error=f"instruction check failed: {exc}")
        flags = verdict.loose if self.loose else verdict.strict
        checks = _named(ids, flags)
        return Verification(_share(checks), checks)


@dataclass(frozen=True)
class MatchVerifier:
    """The answer against the row's `reference`: numeric or exact."""

    name: str = "match"
    tolerance: float = 1e-6

    def verify(self, response: str, facts: dict[str, Any], messages: Messages) -> Verification:
        reference = facts.get("reference")
        if reference is None:
            return Verification(None, error="the prompt row has no reference")
        target = _number(str(reference))
        if target is not None:
            found = _NUMBER.findall(response.replace(",", ""))
            got = _number(found[-1]) if found else None
            ok = got is not None and math.isclose(got, target, rel_tol=self.tolerance, abs_tol=self.tolerance)
            return Verification(1.0 if ok else 0.0, {"numeric": ok})
        want = _normal(str(reference))
        lines = [line for line in response.splitlines() if line.strip()]
        ok = _normal(response) == want or (bool(lines) and _normal(lines[-1]) == want)
        return Verification(1.0 if ok else 0.0, {"exact": ok})


@dataclass(frozen=True)
class PythonVerifier:
    """A user's `module:function` (see the module docstring for its signature)."""

    name: str
    function: Callable[..., Any]

    def verify(self, response: str, facts: dict[str, Any], messages: Messages) -> Verification:
        try:
            value = self.function(response=response, facts=facts, messages=messages)
        except Exception as exc:  # the user's code: recorded on the sample, never fatal to the run
            return Verification(None, error=f"{type(exc).__name__}: {exc}")
        if isinstance(value, bool):
            return Verification(1.0 if value else 0.0, {"pass": value})
        if isinstance(value, int | float) and 0.0 <= value <= 1.0:
            return Verification(round(float(value), 4))
        if isinstance(value, Mapping) and value and all(isinstance(v, bool) for v in value.values()):
            checks = {str(k): v for k, v in value.items()}
            return Verification(_share(checks), checks)
        return Verification(None, error=f"returned {value!r}: expected a bool, a float in [0, 1] or {{name: bool}}")


BUILT_IN = {
    "instructions": InstructionVerifier(),
    "instructions-loose": InstructionVerifier(loose=True),
    "match": MatchVerifier(),
}


def load_verifier(spec: str) -> Verifier:
    """`instructions`, `instructions-loose`, `match`, or `module:function` (imported now, so a bad
    name fails before any work)."""
    if spec in BUILT_IN:
        if spec.startswith("instructions"):
            instructions.checkers()  # a missing checker install fails here
        return BUILT_IN[spec]
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UserError(
            f"unknown verifier {spec!r} (choose {', '.join(BUILT_IN)}, or module:function)", param="verifier"
        )
    try:
        function = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load verifier {spec!r} ({exc})", param="verifier") from exc
    if not callable(function):
        raise UserError(f"verifier {spec!r} is not a function", param="verifier")
    return PythonVerifier(spec, function)


def facts_of(row: Mapping[str, Any]) -> dict[str, Any]:
    """A samples row's checkable facts (its `verifiable` JSON), or {}."""
    raw = row.get("verifiable")
    return json.loads(raw) if raw else {}


def verify_row(verifier: Verifier, row: Mapping[str, Any]) -> Verification:
    return verifier.verify(row["response"], facts_of(row), row["messages"])


def _last_user(messages: Messages) -> str:
    return next((m["content"] for m in reversed(list(messages)) if m["role"] == "user"), "")


def _named(ids: list[str], flags: tuple[bool, ...]) -> dict[str, bool]:
    """{instruction id: followed}; a repeated id gets `#2`, `#3` so that no check is lost."""
    out: dict[str, bool] = {}
    for iid, ok in zip(ids, flags, strict=True):
        name, n = iid, 1
        while name in out:
            n += 1
            name = f"{iid}#{n}"
        out[name] = bool(ok)
    return out


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


def _number(text: str) -> float | None:
    text = text.strip().replace(",", "")
    if not _NUMBER.fullmatch(text):
        return None
    return float(text)


def _normal(text: str) -> str:
    return " ".join(text.casefold().split()).rstrip(".!")
