"""Offline vLLM: whole batches go to the engine so continuous batching stays full.

A call renders and enqueues its conversations (`LLM.enqueue_chat`), then steps the engine until
its own requests are finished. Calls may overlap from two threads: they share one engine, and
whichever caller is waiting steps it and hands each finished output to the call it belongs to.
So the stage runner can enqueue the next batch while the current one's longest sequences finish,
and vLLM's EngineCore keeps generating while the caller parses and writes (EngineCore is its own
process on GPUs; on small CPUs it runs in this one, where the model's steps release the GIL).

A step holds the engine lock while it waits for EngineCore's next output, and a thread that
releases a lock usually takes it straight back: a caller waiting to enqueue could wait for many
steps while the engine runs below its width. So enqueueing has priority: steppers stand aside
(`_turn`) while any caller is waiting to enqueue.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from seftgen.choices import EngineKind
from seftgen.devices import (
    accelerator,
    cpu_engine_env,
    default_dtype,
    default_eager,
    default_max_model_len,
    in_process,
)
from seftgen.engines.base import (
    Completion,
    Engine,
    Generation,
    Messages,
    SamplingConfig,
    ends_in_prefix,
    failed_finish,
)
from seftgen.engines.memory import KV_SPACE_ENV, in_process_kv_bytes
from seftgen.errors import UserError

# Room for a chat template's own text (role markers, a default system prompt) in the byte bound
# of `context_errors`; conversations within it are never tokenized twice.
CHAT_TEMPLATE_BYTES = 1024
TOP_LOGPROBS = 20  # vLLM's default max_logprobs, and the OpenAI API's top_logprobs limit


def default_memory_share() -> float:
    """vLLM's gpu_memory_utilization. On GPUs vLLM's own 0.9; on the CPU backend it is the share of
    ALL RAM reserved per engine, and 0.9 fails at start-up, so 0.3 (about 7 GiB of 24).
    $SEFTGEN_MEMORY_SHARE overrides both (the test suite runs several engines on one device)."""
    if share := os.environ.get("SEFTGEN_MEMORY_SHARE"):
        return float(share)
    return 0.9 if accelerator() == "cuda" else 0.3


def answer_token_id(tokenizer: Any, text: str, model: str) -> int:
    """The single vocabulary id of a judge answer such as ' A', from the judge's own tokenizer."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise UserError(f"judge answer {text!r} is {len(ids)} tokens for {model}; choose labels that are one token")
    return ids[0]


@dataclass
class _Call:
    """One caller's requests: outputs in the caller's order, filled as they finish."""

    outputs: list[Any] = field(default_factory=list)
    left: int = 0


class VLLMEngine(Engine):
    kind = EngineKind.VLLM
    overlaps = True

    def __init__(
        self,
        model: str,
        *,
        dtype: str | None = None,
        head_dtype: str | None = None,
        max_model_len: int | None = None,
        eager: bool | None = None,
        memory_share: float | None = None,
        tensor_parallel_size: int = 1,
        max_num_seqs: int | None = None,
        seed: int = 0,
        chat_template: str | None = None,
        before_start: Callable[[], None] | None = None,
    ) -> None:
        """The engine starts (EngineCore and its worker, the weights, the KV cache: tens of seconds
        here, minutes for a large model on a GPU) on first use, not here: a stage whose run is
        already complete, as on the rerun of a round, never starts one. The tokenizer (all that
        resume checks and context checks need) loads now, by vLLM's own loader.
        `before_start` runs just before the start (the residency policy makes room there)."""
        super().__init__()
        from vllm.tokenizers import get_tokenizer

        self.model = model
        self.seed = seed
        max_model_len = max_model_len or default_max_model_len()
        self._max_model_len = max_model_len
        self._settings: dict[str, Any] = {
            "model": model,
            "dtype": dtype or default_dtype(),  # the platform's: fp32 on CPUs without bf16 instructions
            "max_model_len": max_model_len,
            "gpu_memory_utilization": memory_share or default_memory_share(),
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
            **({"max_num_seqs": max_num_seqs} if max_num_seqs else {}),
            # bf16 logits put judge probabilities on a coarse grid (docs, "Judge precision").
            **({"hf_overrides": {"head_dtype": head_dtype}} if head_dtype else {}),
            # The platform's: CUDA graphs on GPUs, eager on CPUs (devices.default_eager).
            "enforce_eager": default_eager() if eager is None else eager,
        }
        self._before_start = before_start
        self._env = cpu_engine_env()  # set when the engine starts: vLLM's processes inherit it
        if accelerator() == "cpu" and in_process(self._env) and KV_SPACE_ENV not in os.environ:
            # vLLM would charge this engine for everything the process holds (engines/memory.py).
            kv = in_process_kv_bytes(model, self._settings["dtype"], self._settings["gpu_memory_utilization"])
            if kv is not None:
                self._settings["kv_cache_memory_bytes"] = kv
        self._llm: Any = None
        self._start_lock = threading.Lock()
        self.pids: set[int] = set()  # the engine's own processes (EngineCore, its worker), once started
        self.tokenizer = get_tokenizer(model)
        self._template_override = chat_template
        self.chat_template = chat_template or getattr(self.tokenizer, "chat_template", None)
        self._lock = threading.Lock()  # one thread at a time enqueues or steps the engine
        self._turn = threading.Condition()  # steppers wait here while callers wait to enqueue
        self._enqueuing = 0
        self._waiting: dict[str, tuple[_Call, int]] = {}  # request id -> (its call, its slot)

    @property
    def settings(self) -> dict[str, Any]:
        return {k: v for k, v in self._settings.items() if k != "model"} | {"device": accelerator()} | self._env

    @property
    def max_model_len(self) -> int:
        """The context length: as given, or where vLLM auto-fits it (-1, GPUs) as the started
        engine found it (so this starts the engine; its one caller, the context check, runs just
        before the conversations are enqueued, which would start it anyway)."""
        if self._max_model_len > 0:
            return self._max_model_len
        return self.llm.llm_engine.model_config.max_model_len

    @property
    def started(self) -> bool:
        return self._llm is not None

    @property
    def llm(self) -> Any:
        """vLLM's `LLM`, started on first use (once, whichever thread asks first)."""
        if self._llm is None:
            with self._start_lock:
                if self._llm is None:
                    from vllm import LLM

                    from seftgen.engines.residency import child_pids

                    if self._before_start is not None:
                        self._before_start()
                    os.environ.update(self._env)
                    here = in_process(self._env)
                    if here:
                        # An engine that ran in this process left vLLM's environment cached
                        # (`v1/engine/core.py` calls `envs.enable_envs_cache()` once EngineCore is
                        # up); this one must read the environment just set.
                        from vllm import envs

                        envs.disable_envs_cache()
                    began, before = time.monotonic(), child_pids()
                    llm = LLM(**self._settings)
                    self.pids = child_pids() - before
                    if here:
                        # EngineCore froze this whole process's heap for the garbage collector
                        # (`utils/gc_utils.py: freeze_gc_heap`, "invoked after server init"): thaw
                        # it, or cycles that outlive a closed engine are never collected.
                        gc.unfreeze()
                    self.startup_s += time.monotonic() - began
                    self._llm = llm
        return self._llm

    @property
    def capacity(self) -> int | None:  # type: ignore[override]
        """Sequences decoded together: the engine's own setting (it starts the engine)."""
        return self.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs

    def context_errors(self, conversations: list[Messages], *, continue_final: bool = False) -> list[str | None]:
        """Per conversation: why it cannot run (its prompt fills the model's context), or None.

        vLLM rejects a prompt of more than max_model_len tokens with an exception for the whole
        call (`renderers/params.py`: "This model's maximum context length is ..."), so one
        over-long row would fail a batch. A token covers at least one UTF-8 byte, so only
        conversations whose bytes (plus the chat template's own text) could reach the limit
        are tokenized."""
        errors: list[str | None] = []
        for conv in conversations:
            size = sum(len(m["content"].encode()) for m in conv) + CHAT_TEMPLATE_BYTES
            if size < self.max_model_len:
                errors.append(None)
                continue
            text = self.tokenizer.apply_chat_template(
                conv,
                tokenize=False,
                add_generation_prompt=not continue_final,
                continue_final_message=continue_final,
                chat_template=self._template_override,
            )
            tokens = len(self.tokenizer.encode(text, add_special_tokens=False))
            fits = tokens < self.max_model_len  # at least one token must be left to generate
            errors.append(None if fits else f"prompt is {tokens} tokens; the model's context is {self.max_model_len}")
        return errors

    def _chat(self, conversations: list[Messages], sampling: Any, continue_final: bool) -> list[Any]:
        """`LLM.chat`, except that several calls may run at once (see the module docstring).
        A conversation too long for the context gets its reason (a str) in place of an output."""
        errors = self.context_errors(conversations, continue_final=continue_final)
        if any(errors):
            fit = [i for i, e in enumerate(errors) if e is None]
            ran = self._chat([conversations[i] for i in fit], sampling, continue_final) if fit else []
            merged: list[Any] = list(errors)
            for i, out in zip(fit, ran, strict=True):
                merged[i] = out
            return merged
        call = _Call([None] * len(conversations), len(conversations))
        with self._turn:
            self._enqueuing += 1
        try:
            with self._lock:
                ids = self.llm.enqueue_chat(
                    conversations,
                    sampling,
                    use_tqdm=False,
                    chat_template=self._template_override,
                    add_generation_prompt=not continue_final,
                    continue_final_message=continue_final,
                )
                # Outputs carry the id given to the engine; vLLM appends a random suffix internally.
                for slot, request_id in enumerate(ids):
                    self._waiting[request_id.split("-")[0]] = (call, slot)
        finally:
            with self._turn:
                self._enqueuing -= 1
                self._turn.notify_all()
        try:
            while call.left:
                with self._turn:
                    self._turn.wait_for(lambda: self._enqueuing == 0)
                with self._lock:
                    if call.left:
                        self._step()
        except BaseException:
            with self._lock:
                mine = [rid for rid, (c, _) in self._waiting.items() if c is call]
                for rid in mine:
                    del self._waiting[rid]
                with contextlib.suppress(Exception):  # a dead engine cannot abort; keep the real error
                    self.llm.llm_engine.abort_request(mine, internal=False)
            raise
        return call.outputs

    def _step(self) -> None:
        for out in self.llm.llm_engine.step():
            if out.finished and (entry := self._waiting.pop(out.request_id, None)):
                call, slot = entry
                call.outputs[slot] = out
                call.left -= 1

    def generate(
        self,
        conversations: list[Messages],
        params: SamplingConfig,
        *,
        continue_final: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        sampling = SamplingParams(
            n=params.n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_tokens,
            stop=list(params.stop) or None,
            structured_outputs=StructuredOutputsParams(regex=params.regex) if params.regex else None,
        )
        results = []
        for out in self._chat(conversations, sampling, continue_final):
            if isinstance(out, str):
                results.append(Generation(error=out))
                continue
            completions = [Completion(c.text, c.finish_reason or "stop", len(c.token_ids)) for c in out.outputs]
            failed = failed_finish(completions)  # e.g. a grammar that did not compile
            results.append(Generation(len(out.prompt_token_ids or []), [] if failed else completions, error=failed))
        self.count(
            requests=len(conversations),
            prompt_tokens=sum(g.prompt_tokens for g in results),
            completion_tokens=sum(c.completion_tokens for g in results for c in g.completions),
        )
        return results

    def check_answer_tokens(self, candidates: tuple[str, ...]) -> None:
        for cand in candidates:
            answer_token_id(self.tokenizer, cand, self.model)

    def next_token_probs(
        self, conversations: list[Messages], candidates: tuple[str, ...], *, ids: Sequence[str] | None = None
    ) -> list[dict[str, float] | None]:
        from vllm import SamplingParams

        answer_ids = {cand: answer_token_id(self.tokenizer, cand, self.model) for cand in candidates}
        sampling = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)
        results: list[dict[str, float] | None] = []
        outs = self._chat(conversations, sampling, continue_final=ends_in_prefix(conversations))
        for out in outs:
            if isinstance(out, str):
                results.append(None)
                continue
            top = out.outputs[0].logprobs[0] if out.outputs[0].logprobs else {}
            results.append({c: math.exp(top[i].logprob) if i in top else 0.0 for c, i in answer_ids.items()})
        self.count(
            requests=len(conversations),
            prompt_tokens=sum(len(o.prompt_token_ids or []) for o in outs if not isinstance(o, str)),
            completion_tokens=sum(1 for o in outs if not isinstance(o, str)),
        )
        return results

    def close(self) -> None:
        llm, self._llm = self._llm, None
        if llm is not None and hasattr(llm, "llm_engine"):
            engine_core = getattr(llm.llm_engine, "engine_core", None)
            if engine_core is not None and hasattr(engine_core, "shutdown"):
                engine_core.shutdown()
            if in_process(self._env):
                del llm, engine_core
                gc.collect()  # in this process the weights and KV cache go with the last reference
