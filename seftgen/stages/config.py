"""Stage settings, one dataclass per stage, in the manner of trl's `*Config`.

These are the ONE source of every stage default: the stage functions' keyword defaults, the CLI
options and the recipe fields all read the instances below (`SAMPLE`, `REVISE`, ...), so
`seftgen X`, a recipe and `seftgen.stages.X(...)` do the same thing unasked. A test compares them.
"""

from __future__ import annotations

from dataclasses import dataclass

from seftgen.choices import Verdict
from seftgen.engines.base import SamplingConfig


@dataclass(frozen=True)
class SampleConfig:
    """`sample`: the policy answers prompts.

    Fields:
        batch_size: prompts per engine call and per part file (a killed run loses at most one).
        params: sampling parameters (n, temperature, top_p, max_tokens, stop).
    """

    batch_size: int = 256
    params: SamplingConfig = SamplingConfig()  # noqa: RUF009 - frozen: one shared instance is safe


@dataclass(frozen=True)
class ReviseConfig:
    """`revise --method seft`: the adaptive reviser labels each answer keep / minor / major and
    rewrites it unless it keeps it.

    Fields:
        template: the reviser prompt (prompts/reviser.yaml); its output format is constrained and parsed.
        params: greedy decoding and room for a rewrite of a full answer.
        batch_size: samples per engine call and part file.
        constrain: constrain decoding to the template's output format where the engine can.
    """

    template: str = "reviser"
    params: SamplingConfig = SamplingConfig(temperature=0.0, max_tokens=512)  # noqa: RUF009 - frozen
    batch_size: int = 256
    constrain: bool = True


@dataclass(frozen=True)
class CritiqueConfig:
    """`revise --method srt`: a critic writes feedback, `Overall Score: [[N]]` and an improved
    response (temperature 0); original and refinement are scored in two separate calls.

    Fields:
        template: the critic prompt (SRT Table 1's sections).
        score_template: the separate scoring prompt.
        max_tokens: tokens for feedback plus refinement (the paper gives the critic 2048).
        batch_size: samples per call; None: the engine's (10,000 rows with the Batch API) or 64.
        constrain: constrain decoding to the critic's format where the engine can.
    """

    template: str = "srt_critic"
    score_template: str = "srt_score"
    max_tokens: int = 1024
    batch_size: int | None = None
    constrain: bool = True


@dataclass(frozen=True)
class SelfCritiqueConfig(CritiqueConfig):
    """`revise --self-critic`: SRT stage 2, the stage-1 model critiques, refines and scores its own
    answers in its stage-1 target layout; a refinement is kept only if it scores strictly higher."""

    template: str = "srt_self"
    score_template: str = "srt_self_score"


@dataclass(frozen=True)
class JudgeConfig:
    """`judge`: pairwise verdicts on a prompt's samples, in both presentation orders.

    Fields:
        template: one judge template, or several (principle judges: majority verdict).
        verdict: logprobs (p(" A") vs p(" B") after the fixed prefix) or text (APIs without logprobs).
        min_margin: drop pairs whose debiased score is within this of 0.5.
        require_consistent: drop pairs whose two orders disagree.
        batch_size: pairs per engine call and part file.
        constrain: constrain text verdicts to the template's format.
        verifier: a verifier judge in place of the LLM (`instructions`, `instructions-loose`, `match`,
            `module:function`; see `stages/verifiers.py`); None: the LLM judges.
        tie_break: with a verifier, the LLM judge decides the pairs the verifier scores equal
            (else they are dropped as ties and no model is loaded).
    """

    template: str | list[str] = "judge_general"
    verdict: Verdict = Verdict.LOGPROBS
    min_margin: float = 0.0
    require_consistent: bool = False
    batch_size: int = 64
    constrain: bool = True
    verifier: str | None = None
    tie_break: bool = False


@dataclass(frozen=True)
class BestOfConfig:
    """`best-of`: a tournament over a prompt's n samples (n-1 judgments; an odd one gets a bye).

    Fields:
        template / verdict / constrain: as for `JudgeConfig`.
        seed: the bracket's shuffle (recorded in every row).
        batch_size: prompts per part file.
        verifier / tie_break: as for `JudgeConfig`: the verifier's scores decide every match.
        min_score: with a verifier, the winner is a training target only if it scores at least
            this (1.0: it passed every check): rejection sampling keeps no failing answer.
    """

    template: str | list[str] = "judge_general"
    verdict: Verdict = Verdict.LOGPROBS
    seed: int = 0
    batch_size: int = 64
    constrain: bool = True
    verifier: str | None = None
    tie_break: bool = False
    min_score: float = 1.0


@dataclass(frozen=True)
class EvaluateConfig:
    """`evaluate`: a candidate run against a baseline run, judged pairwise in both orders.

    Fields:
        template / verdict / constrain: as for `JudgeConfig`.
        tie_margin: a debiased score within this of 0.5 is a tie.
        batch_size: prompts per engine call.
    """

    template: str = "judge_general"
    verdict: Verdict = Verdict.LOGPROBS
    tie_margin: float = 0.0
    batch_size: int = 64
    constrain: bool = True


@dataclass(frozen=True)
class JsftDataConfig:
    """`build-jsft-data`: judge-augmented SFT data from preference records.

    Fields:
        template: judge template(s); the four principle_* give the reference's principle variant.
        min_gap: smallest rating gap that makes a judge pair.
        include_sft: also emit the top response as an SFT example.
    """

    template: str | list[str] = "judge_general"
    min_gap: float = 1.0
    include_sft: bool = True


@dataclass(frozen=True)
class BenchmarkConfig:
    """`benchmark`: the model answers a benchmark's prompts, which are then scored.

    Fields:
        max_tokens: answer length (1280, as lm-evaluation-harness generates for IFEval).
        batch_size: prompts per engine call and per part file.
        judge_max_tokens: the judge's reply length for MT-Bench (2048, as FastChat's judge;
            AlpacaEval's judge answers one token).
        judge_constrain: constrain the MT-Bench judge's reply to an explanation and
            `Rating: [[N]]` where the engine can (vLLM); hosted APIs are never constrained.
        judge_batch_size: judgments per engine call and per part file.
    """

    max_tokens: int = 1280
    batch_size: int = 256
    judge_max_tokens: int = 2048
    judge_constrain: bool = True
    judge_batch_size: int = 64


SAMPLE = SampleConfig()
REVISE = ReviseConfig()
CRITIQUE = CritiqueConfig()
SELF_CRITIQUE = SelfCritiqueConfig()
JUDGE = JudgeConfig()
TOURNAMENT = BestOfConfig()
EVALUATE = EvaluateConfig()
BENCHMARK = BenchmarkConfig()
JSFT_DATA = JsftDataConfig()

__all__ = [
    "BENCHMARK",
    "CRITIQUE",
    "EVALUATE",
    "JSFT_DATA",
    "JUDGE",
    "REVISE",
    "SAMPLE",
    "SELF_CRITIQUE",
    "TOURNAMENT",
    "BenchmarkConfig",
    "BestOfConfig",
    "CritiqueConfig",
    "EvaluateConfig",
    "JsftDataConfig",
    "JudgeConfig",
    "ReviseConfig",
    "SampleConfig",
    "SelfCritiqueConfig",
]
