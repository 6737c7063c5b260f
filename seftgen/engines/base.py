"""What every engine does: chat generation and next-token probabilities, plus usage accounting."""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from seftgen.choices import EngineKind

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters shared by all engines. The seed is engine-level (vLLM's CPU backend
    crashes on per-request seeds), so it lives in `EngineSpec`. `regex` constrains decoding to a
    template's declared output format where the engine supports it (see `Engine.constrains`)."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    regex: str | None = None

    def as_dict(self) -> dict[str, object]:
        """Plain JSON types (`stop` as a list), as recorded in manifests and rows; the regex is
        recorded as `constrained` (the format itself is part of the template and its hash)."""
        out = asdict(self) | {"stop": list(self.stop), "constrained": self.regex is not None}
        out.pop("regex")
        return out

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), sort_keys=True)


def ends_in_prefix(conversations: Sequence[Messages]) -> bool:
    """Whether the conversations end in an assistant prefix to continue (a judge's fixed prefix)
    rather than a user turn that a fresh assistant turn answers (AlpacaEval's judge)."""
    return bool(conversations) and conversations[0][-1]["role"] == "assistant"


# vLLM's finish reasons for a request the engine gave up on (`v1/request.py`: FINISHED_ERROR ->
# "error", FINISHED_ABORTED -> "abort"), e.g. a grammar that failed to compile: its text is empty
# or partial, and the row must say so rather than fail to parse.
FAILED_FINISH = ("error", "abort")


@dataclass
class Completion:
    text: str
    finish_reason: str
    completion_tokens: int


def failed_finish(completions: Sequence[Completion]) -> str | None:
    """Why an engine gave up on a request whose completions end in a failed finish, or None."""
    reason = next((c.finish_reason for c in completions if c.finish_reason in FAILED_FINISH), None)
    if reason is None:
        return None
    return f"the engine ended the request with finish_reason '{reason}' (its log says why)"


@dataclass
class Generation:
    """All completions of one prompt, or the error that prevented them."""

    prompt_tokens: int = 0
    completions: list[Completion] = field(default_factory=list)
    error: str | None = None


@dataclass
class Usage:
    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def as_totals(self) -> dict[str, float]:
        return {k: v for k, v in asdict(self).items() if v}


def _add(usage: Usage, deltas: dict[str, float]) -> None:
    for name, value in deltas.items():
        setattr(usage, name, getattr(usage, name) + value)


class BatchJournal(Protocol):
    """Where an engine that submits provider batches records them (a run folder: its files under
    `root`, the entries in its manifest), so a rerun finds them again. Entries are keyed by `file`."""

    root: Path

    def batches(self) -> list[dict[str, Any]]: ...

    def record_batch(self, entry: dict[str, Any]) -> None: ...


class Engine(ABC):
    """A loaded model. `kind` and `model` go into every row's provenance.

    `overlaps`: calls may come from two threads at once and share the running batch, so the stage
    runner starts the next batch while the current one finishes (no drain at batch boundaries,
    and the engine stays busy while parts are written). `capacity`: sequences the engine runs
    at once (vLLM's max_num_seqs), so the runner keeps that many rows in flight even with small
    batches; None when unknown. `startup_s`: how long loading took."""

    kind: EngineKind
    model: str
    seed: int
    chat_template: str | None
    overlaps: bool = False
    capacity: int | None = None
    batch_rows: int | None = None

    def __init__(self) -> None:
        self.usage = Usage()
        self.startup_s = 0.0
        self._usage_lock = threading.Lock()

    def count(self, **deltas: float) -> None:
        """Add to the usage counters (thread-safe: overlapping calls count at the same time)."""
        with self._usage_lock:
            _add(self.usage, deltas)

    @property
    def constrains(self) -> bool:
        """Whether `SamplingConfig.regex` is enforced (vLLM structured outputs)."""
        return True

    def take_usage(self) -> dict[str, float]:
        """Counters since the last call (so a stage can add them to its manifest per part)."""
        with self._usage_lock:
            totals = self.usage.as_totals()
            self.usage = Usage()
        return totals

    def take_startup(self) -> float:
        """Seconds spent loading, charged once: to the first stage that asks."""
        seconds, self.startup_s = self.startup_s, 0.0
        return seconds

    @abstractmethod
    def generate(
        self,
        conversations: list[Messages],
        params: SamplingConfig,
        *,
        continue_final: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Generation]:
        """One Generation per conversation, in order. With `continue_final`, the last (assistant)
        message is a prefix the model continues instead of a finished turn."""

    @abstractmethod
    def next_token_probs(
        self, conversations: list[Messages], candidates: tuple[str, ...], *, ids: Sequence[str] | None = None
    ) -> list[dict[str, float] | None]:
        """For each conversation: the probability of each candidate string as the very next token
        (0.0 when outside the top 20), or None if the call failed. A conversation that ends in an
        assistant prefix is continued; one that ends in a user turn gets a fresh assistant turn."""

    def context_errors(self, conversations: list[Messages], *, continue_final: bool = False) -> list[str | None]:
        """Per conversation: why its prompt cannot fit the model's context, or None. Engines that
        hold the tokenizer check before generation; an API answers such a request with an error."""
        return [None] * len(conversations)

    def check_answer_tokens(self, candidates: tuple[str, ...]) -> None:  # noqa: B027 - optional hook
        """Raise a UserError unless each candidate is a single token of this model; engines
        that hold the tokenizer check it before any work starts (an API cannot be asked)."""

    @property
    def settings(self) -> dict[str, Any]:
        """The engine's settings with the platform's defaults resolved (the manifest records them
        per attempt, so a run shows what dtype, context and memory share it ran with)."""
        return {}

    def bind(self, journal: BatchJournal) -> None:  # noqa: B027 - optional hook
        """The run folder this engine's next calls belong to (the stage runner binds it); engines
        that submit provider batches record them there."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (engines are cached per process and closed at exit)."""
