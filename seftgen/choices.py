"""The closed sets seftgen's modules pass to each other, one Enum each.

The CLI (Typer lists and validates the choices), the library and the recipes (pydantic) share
these types. They are `StrEnum`s, so each member is also its plain string value: manifests, rows
and JSON hold the string, and existing string comparisons keep working.
"""

from __future__ import annotations

from enum import StrEnum


class EngineKind(StrEnum):
    """What runs a model."""

    VLLM = "vllm"  # offline vLLM in this process
    OPENAI = "openai"  # any OpenAI-compatible server (vllm serve, hosted APIs)
    RAY = "ray"  # Ray Data LLM: vLLM replicas across a cluster


class Verdict(StrEnum):
    """How a pairwise judge's answer is read."""

    LOGPROBS = "logprobs"  # probabilities of the two answer tokens after the fixed prefix
    TEXT = "text"  # the generated answer, parsed (APIs without logprobs)


class TrainKind(StrEnum):
    """What a training step (axolotl config) does with a run's rows."""

    SFT = "sft"
    DPO = "dpo"


class ReviseMethod(StrEnum):
    """Who revised a sample (the `method` column of revisions)."""

    SEFT = "seft"  # the SEFT reviser
    SRT = "srt"  # SRT stage 1: an (API) critic
    SRT_SELF = "srt-self"  # SRT stage 2: the stage-1 model critiques itself


class Variant(StrEnum):
    """What an axolotl config trains, from which run: each has its own defaults and row layout."""

    SEFT_REVISER = "seft-reviser"
    SEFT_POLICY = "seft-policy"
    SEFT_DPO = "seft-dpo"
    JSFT = "jsft"
    SELF_JUDGE_DPO = "self-judge-dpo"
    BEST_OF = "best-of"
    SRT_STAGE1 = "srt-stage1"
    SRT_STAGE2 = "srt-stage2"


class ErrorKind(StrEnum):
    """Why a row is not usable. ENGINE rows are not written (a rerun retries them); PARSE, FILTER
    and QUALITY rows are written with `kept = false` and the kind in `reason_kind`."""

    ENGINE = "engine"  # the model call failed (API down, timeout)
    PARSE = "parse"  # the reply does not follow the template's output format
    FILTER = "filter"  # a method's filter rejected it (score, margin, consistency, tie)
    QUALITY = "quality"  # a quality gate rejected its target text (truncated, repetition, leaked heading, blow-up)


class RunStatus(StrEnum):
    """A run folder's state, in its manifest and in each attempt."""

    RUNNING = "running"  # an attempt is under way (or was killed with SIGKILL)
    COMPLETE = "complete"  # every row written
    INCOMPLETE = "incomplete"  # finished, but some rows failed: rerun the command to retry them
    INTERRUPTED = "interrupted"  # stopped by a signal or an error: rerun the command to resume
    PARTIAL = "partial"  # merged from some of its shards only (`merge --allow-partial`)


class Stage(StrEnum):
    """The stages that write run folders (the `stage` of a manifest)."""

    SAMPLE = "sample"
    REVISE = "revise"
    JUDGE = "judge"
    BEST_OF = "best-of"
    BUILD_REVISER_DATA = "build-reviser-data"
    BUILD_JSFT_DATA = "build-jsft-data"
    EVALUATE = "evaluate"
    BENCHMARK = "benchmark"


class Outcome(StrEnum):
    """A candidate's result against the baseline on one prompt (`evaluate`)."""

    WIN = "win"
    LOSS = "loss"
    TIE = "tie"
