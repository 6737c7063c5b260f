"""SELF-JUDGE arithmetic and the judging call, shared by `judge` and `best-of`.

The verdict comes from the next-token probabilities of the two answer tokens (' A', ' B') after
a fixed assistant prefix, asked in both presentation orders:

    p_a_ab = P(A) / (P(A) + P(B))   with a shown first   (order AB)
    p_a_ba = P(B) / (P(A) + P(B))   with a shown second  (order BA)
    score_a = (p_a_ab + p_a_ba) / 2

Normalising over the two answer tokens makes scores comparable when the model puts mass
elsewhere. `consistent` means both orders prefer the same response; `margin` = |2 score_a - 1|.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field, replace
from typing import Any

from seftgen.choices import ErrorKind, Verdict
from seftgen.engines.base import Engine, Messages, SamplingConfig
from seftgen.errors import UserError
from seftgen.provenance import template_hash
from seftgen.stages.common import constrained
from seftgen.stages.parsing import parse_verdict
from seftgen.stages.verifiers import Verification, Verifier, verify_row
from seftgen.templates import PromptTemplate, instruction_text

RATIONALE_PARAMS = SamplingConfig(temperature=0.0, max_tokens=256)
TEXT_VERDICT_PARAMS = SamplingConfig(temperature=0.0, max_tokens=64)


@dataclass(frozen=True)
class PairScore:
    p_a_ab: float | None
    p_a_ba: float | None
    score_a: float | None
    consistent: bool
    margin: float | None
    error: str | None = None
    raw: str | None = None
    error_kind: ErrorKind | None = None  # ENGINE: no verdict (retried on rerun); PARSE: no answer
    verdict_a: bool | None = None  # a panel's majority verdict (else score_a decides)
    principles: tuple[dict[str, Any], ...] = ()  # a panel's per-principle scores

    @classmethod
    def failed(cls, kind: ErrorKind, error: str, raw: str | None = None) -> PairScore:
        return cls(None, None, None, False, None, error, raw, kind)

    @property
    def a_wins(self) -> bool:
        """Ties and failures go to a (first in the pair); callers filter on margin/error."""
        if self.verdict_a is not None:
            return self.verdict_a
        return self.score_a is None or self.score_a >= 0.5


def judge_turns(template: PromptTemplate, messages: Messages, first: str, second: str) -> Messages:
    """A judge's turns for (instruction, first response, second response): the template's system
    text (principle judges state their principle there), then the user turn. Judging and the
    JSFT examples that teach it use this one rendering."""
    user = template.render("user", instruction=instruction_text(messages), response_a=first, response_b=second)
    system = [{"role": "system", "content": template.render("system")}] if template.get("system") else []
    return [*system, {"role": "user", "content": user}]


def share(probs: dict[str, float], token: str, other: str) -> float | None:
    total = probs.get(token, 0.0) + probs.get(other, 0.0)
    return None if total <= 0 else probs.get(token, 0.0) / total


def combine(p_a_ab: float | None, p_a_ba: float | None, raw: str | None = None) -> PairScore:
    if p_a_ab is None or p_a_ba is None:
        return PairScore(
            p_a_ab, p_a_ba, None, False, None, "no answer token in the judge's reply", raw, ErrorKind.PARSE
        )
    score = (p_a_ab + p_a_ba) / 2
    consistent = (p_a_ab > 0.5 and p_a_ba > 0.5) or (p_a_ab < 0.5 and p_a_ba < 0.5)
    return PairScore(p_a_ab, p_a_ba, score, consistent, abs(2 * score - 1), None, raw)


def pair_score(probs_ab: dict[str, float], probs_ba: dict[str, float], tokens: tuple[str, str]) -> PairScore:
    token_a, token_b = tokens
    return combine(share(probs_ab, token_a, token_b), share(probs_ba, token_b, token_a))


@dataclass
class Judge:
    """Judges (prompt, a, b) triples in both orders, with one engine call per order batch."""

    engine: Engine
    template: PromptTemplate
    verdict: Verdict = Verdict.LOGPROBS  # TEXT for APIs without logprobs
    constrain: bool = True  # follow the template's `output` format where the engine supports it

    def _params(self, params: SamplingConfig) -> SamplingConfig:
        return constrained(params, self.template, self.engine, self.constrain)

    @property
    def constrained(self) -> bool:
        """Whether any generated judge text (verdict sentence, rationale) is constrained."""
        uses_text = self.verdict == Verdict.TEXT or bool(self.template.get("rationale", False))
        return uses_text and self._params(TEXT_VERDICT_PARAMS).regex is not None

    @property
    def tokens(self) -> tuple[str, str]:
        a, b = self.template.get("answer_tokens", [" A", " B"])
        return str(a), str(b)

    @property
    def prefix(self) -> str:
        return str(self.template.get("assistant_prefix", ""))

    @property
    def settings(self) -> dict[str, Any]:
        """What a run records about its judge (its params; a resume compares them)."""
        return {
            "verdict": self.verdict,
            "answer_tokens": list(self.tokens),
            "assistant_prefix": self.prefix,
            "constrained": self.constrained,
        }

    @property
    def principle(self) -> str:
        return str(self.template.get("principle", self.template.name))

    def prompt(self, messages: Messages, first: str, second: str) -> Messages:
        return judge_turns(self.template, messages, first, second)

    def judge(self, triples: list[tuple[Messages, str, str]], keys: list[str] | None = None) -> list[PairScore]:
        """Returns one PairScore per (messages, a, b); an engine failure becomes an error score.
        `keys` name the triples (row keys): each call's request id is `<key>:<call>:<order>`."""
        convs = [self.prompt(m, a, b) for m, a, b in triples] + [self.prompt(m, b, a) for m, a, b in triples]
        k = len(triples)

        def ids(call: str) -> list[str] | None:
            return None if keys is None else [f"{key}:{call}-{order}" for order in ("ab", "ba") for key in keys]

        if self.verdict == Verdict.TEXT:
            fmt = self.template.output
            if fmt is None:
                raise UserError(
                    "text verdicts need a template with an 'output' format", file=self.template.path, param="verdict"
                )
            gens = self.engine.generate(convs, self._params(TEXT_VERDICT_PARAMS), ids=ids("verdict"))
            out = []
            for i in range(k):
                g_ab, g_ba = gens[i], gens[k + i]
                if g_ab.error or g_ba.error:
                    out.append(PairScore.failed(ErrorKind.ENGINE, str(g_ab.error or g_ba.error)))
                    continue
                t_ab, t_ba = g_ab.completions[0].text, g_ba.completions[0].text
                v_ab, v_ba = parse_verdict(fmt, t_ab), parse_verdict(fmt, t_ba)
                raw = json.dumps({"ab": t_ab, "ba": t_ba})
                out.append(
                    combine(
                        None if v_ab is None else float(v_ab == "A"), None if v_ba is None else float(v_ba == "B"), raw
                    )
                )
            return out
        raw_rationales: list[str | None] = [None] * len(convs)
        if self.template.get("rationale", False):
            # Principle judges explain first; the fixed prefix then follows the rationale.
            gens = self.engine.generate(convs, self._params(RATIONALE_PARAMS), ids=ids("rationale"))
            for i, g in enumerate(gens):
                text = "" if g.error else g.completions[0].text
                raw_rationales[i] = text.split(self.prefix.strip())[0].strip() if self.prefix else text.strip()
        prefixed = [
            [*c, {"role": "assistant", "content": (f"{r}\n\n{self.prefix}" if r else self.prefix)}]
            for c, r in zip(convs, raw_rationales, strict=True)
        ]
        probs = self.engine.next_token_probs(prefixed, self.tokens, ids=ids("verdict"))
        too_long = self.engine.context_errors(prefixed, continue_final=True)
        out = []
        for i in range(k):
            p_ab, p_ba = probs[i], probs[k + i]
            if reason := too_long[i] or too_long[k + i]:
                out.append(PairScore.failed(ErrorKind.ENGINE, reason, None))
                continue
            raw = (
                json.dumps({"ab": raw_rationales[i], "ba": raw_rationales[k + i]})
                if raw_rationales[i] is not None
                else None
            )
            if p_ab is None or p_ba is None:
                out.append(PairScore.failed(ErrorKind.ENGINE, "judge call failed", raw))
                continue
            out.append(replace(pair_score(p_ab, p_ba, self.tokens), raw=raw))
        return out


def majority(scores: list[PairScore], names: list[str]) -> PairScore:
    """One pair judged under several principles: the verdict is the majority of the principles
    (a principle prefers a when its score_a > 0.5), a tie broken by the mean score (as the
    SELF-JUDGE reference's trainer does); score_a, both orders' shares and the margin are the
    means over principles, and each principle's score is kept. A failed principle fails the pair."""
    if failed := next((s for s in scores if s.error), None):
        return replace(failed, principles=tuple(_principle(n, s) for n, s in zip(names, scores, strict=True)))
    n = len(scores)
    mean = sum(s.score_a or 0.0 for s in scores) / n
    wins = sum(1 for s in scores if (s.score_a or 0.0) > 0.5)
    verdict = wins > n / 2 or (wins == n / 2 and mean > 0.5)
    p_ab = sum(s.p_a_ab or 0.0 for s in scores) / n
    p_ba = sum(s.p_a_ba or 0.0 for s in scores) / n
    return PairScore(
        p_ab,
        p_ba,
        mean,
        (p_ab > 0.5 and p_ba > 0.5) or (p_ab < 0.5 and p_ba < 0.5),
        abs(2 * mean - 1),
        raw=json.dumps({n: s.raw for n, s in zip(names, scores, strict=True)}) if any(s.raw for s in scores) else None,
        verdict_a=verdict,
        principles=tuple(_principle(n, s) for n, s in zip(names, scores, strict=True)),
    )


def _principle(name: str, score: PairScore) -> dict[str, Any]:
    return {"principle": name, "score_a": score.score_a, "consistent": score.consistent}


@dataclass
class Panel:
    """Several judges (one per principle) on the same pairs; see `majority`. With one judge it
    is that judge."""

    judges: list[Judge]

    @property
    def engine(self) -> Engine:
        return self.judges[0].engine

    @property
    def template(self) -> PromptTemplate:
        return self.judges[0].template

    @property
    def template_id(self) -> str:
        """The hash recorded as the rows' template_hash: the template's, or all of the panel's."""
        return "+".join(j.template.hash for j in self.judges)

    @property
    def settings(self) -> dict[str, Any]:
        first = self.judges[0].settings
        if len(self.judges) == 1:
            return first
        return first | {"principles": [j.principle for j in self.judges], "verdict_rule": "majority, ties by mean"}

    def judge(self, triples: list[tuple[Messages, str, str]], keys: list[str] | None = None) -> list[PairScore]:
        if len(self.judges) == 1:
            return self.judges[0].judge(triples, keys)
        names = [j.principle for j in self.judges]
        per = [j.judge(triples, None if keys is None else [f"{k}:{j.principle}" for k in keys]) for j in self.judges]
        return [majority(list(scores), names) for scores in zip(*per, strict=True)]


@dataclass
class Bracket:
    """Single-elimination tournament over candidate indices: shuffle (seeded), pair neighbours,
    winners advance, the odd one out gets a bye; n - 1 matches in all."""

    alive: list[int]
    record: list[dict[str, Any]] = field(default_factory=list)
    round: int = 1

    @classmethod
    def start(cls, candidates: list[int], rng: random.Random) -> Bracket:
        order = list(candidates)
        rng.shuffle(order)
        return cls(order)

    @property
    def done(self) -> bool:
        return len(self.alive) <= 1

    @property
    def winner(self) -> int:
        return self.alive[0]

    def matches(self) -> list[tuple[int, int]]:
        return list(zip(self.alive[0::2], self.alive[1::2], strict=False))

    def advance(self, scores: list[PairScore]) -> None:
        """Apply this round's results (one per `matches()` entry, score of the first index)."""
        matches = self.matches()
        winners = []
        for (a, b), score in zip(matches, scores, strict=True):
            win = a if score.a_wins else b
            winners.append(win)
            self.record.append({"round": self.round, "a": a, "b": b, "score_a": score.score_a, "winner": win})
        if len(self.alive) % 2:
            bye = self.alive[-1]
            winners.append(bye)
            self.record.append({"round": self.round, "bye": bye})
        self.alive = winners
        self.round += 1

    @property
    def judgments(self) -> int:
        return sum(1 for r in self.record if "winner" in r)


def verifier_pair(a: Verification, b: Verification) -> PairScore:
    """A pair decided by two samples' verifier scores: score_a = 0.5 + (score(a) - score(b)) / 2,
    the same for both orders (a program has no position bias). A sample with nothing checked
    (no facts, or its check failed) ranks below any score; equal scores are a tie (margin 0)."""
    sa = -1.0 if a.score is None else a.score
    sb = -1.0 if b.score is None else b.score
    score_a = round(min(1.0, max(0.0, 0.5 + (sa - sb) / 2)), 4)
    return PairScore(score_a, score_a, score_a, True, round(abs(2 * score_a - 1), 4))


Row = dict[str, Any]


@dataclass
class PairJudge:
    """What decides a pair of sample rows: an LLM panel, a verifier, or a verifier whose ties
    (both samples pass, or both fail alike) the panel breaks. `judge` and `best-of` use it."""

    panel: Panel | None
    verifier: Verifier | None = None

    def __post_init__(self) -> None:
        if self.panel is None and self.verifier is None:
            raise UserError("give a judge model, or a verifier", param="model")

    @property
    def engine(self) -> Engine | None:
        return None if self.panel is None else self.panel.engine

    @property
    def model(self) -> str:
        return self.panel.engine.model if self.panel is not None else f"verifier:{self.verifier.name}"  # type: ignore[union-attr]

    @property
    def kind(self) -> str:
        return self.panel.engine.kind if self.panel is not None else "none"

    @property
    def seed(self) -> int | None:
        return self.panel.engine.seed if self.panel is not None else None

    @property
    def template_id(self) -> str:
        return self.panel.template_id if self.panel is not None else template_hash(f"verifier:{self.verifier.name}")  # type: ignore[union-attr]

    @property
    def settings(self) -> dict[str, Any]:
        out = {} if self.panel is None else dict(self.panel.settings)
        if self.verifier is not None:
            out |= {"verifier": self.verifier.name, "tie_break": self.panel is not None}
        return out

    def decide(
        self, pairs: list[tuple[Row, Row]], keys: list[str] | None = None, cache: dict | None = None
    ) -> list[tuple[PairScore, dict[str, Any] | None]]:
        """One (score, verification record) per pair of sample rows. `cache` keeps each sample's
        verification across calls (a tournament's rounds meet a sample again)."""
        triples = [(a["messages"], a["response"], b["response"]) for a, b in pairs]
        if self.verifier is None:
            return [(s, None) for s in self.panel.judge(triples, keys)]  # type: ignore[union-attr]
        cache = {} if cache is None else cache

        def check(row: Row) -> Verification:
            key = (row["prompt_id"], row["sample_idx"])
            if key not in cache:
                cache[key] = verify_row(self.verifier, row)  # type: ignore[arg-type]
            return cache[key]

        scores = [verifier_pair(check(a), check(b)) for a, b in pairs]
        ties = [i for i, s in enumerate(scores) if s.margin == 0] if self.panel is not None else []
        if ties:
            broken = self.panel.judge(  # type: ignore[union-attr]
                [triples[i] for i in ties], None if keys is None else [keys[i] for i in ties]
            )
            for i, s in zip(ties, broken, strict=True):
                scores[i] = s
        tied = set(ties)
        records = [
            {
                str(a["sample_idx"]): check(a).record(),
                str(b["sample_idx"]): check(b).record(),
                "tie_break": i in tied,
            }
            for i, (a, b) in enumerate(pairs)
        ]
        return list(zip(scores, records, strict=True))
