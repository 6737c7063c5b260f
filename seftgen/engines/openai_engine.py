"""Any OpenAI-compatible server (vLLM serve, hosted APIs): async, bounded, retried, accounted.

One AsyncOpenAI client per engine (on one event loop thread, reused across batches), a semaphore
for concurrency, RPM/TPM limits (tokens charged by estimate, settled with the real usage),
exponential backoff with jitter, a global cool-down on 429, a per-request timeout. A request that still fails
becomes a per-row error (the stage reports it and a rerun retries it); it never stops the batch.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from seftgen.choices import EngineKind
from seftgen.engines.base import Completion, Engine, Generation, Messages, SamplingConfig
from seftgen.engines.ratelimit import RateLimiter, estimate_tokens
from seftgen.engines.vllm_engine import TOP_LOGPROBS
from seftgen.errors import UserError

T = TypeVar("T")
# vLLM-served models accept these to continue a final assistant message (judge prefixes).
CONTINUE_FINAL = {"add_generation_prompt": False, "continue_final_message": True}


class OpenAIEngine(Engine):
    kind = EngineKind.OPENAI

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        rpm: float | None = None,
        tpm: float | None = None,
        max_retries: int = 5,
        backoff: float = 1.0,
        timeout: float = 120.0,
        price_in: float = 0.0,
        price_out: float = 0.0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.model = model
        self.base_url = base_url
        self.api_key = os.environ.get(api_key_env) or "EMPTY"
        self.concurrency = concurrency
        self.rpm, self.tpm = rpm, tpm
        self.max_retries = max_retries
        self.backoff = backoff
        self.timeout = timeout
        self.price_in, self.price_out = price_in, price_out  # USD per million tokens
        self.seed = seed
        self.chat_template = None  # the server applies its own; recorded as 'none'
        self._event_loop: asyncio.AbstractEventLoop | None = None
        self._async_client: Any = None
        self._limiter = RateLimiter(rpm, tpm)  # shared by every batch, so limits hold across batches
        self._is_vllm: bool | None = None

    # -- one batch -------------------------------------------------------------------------------
    # One event loop thread and one AsyncOpenAI client live as long as the engine, so HTTP
    # connections are reused across batches (a fresh client per batch reconnects every time).
    def _loop(self) -> asyncio.AbstractEventLoop:
        if self._event_loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="seftgen-openai", daemon=True).start()
            self._event_loop = loop
        return self._event_loop

    def _client(self) -> Any:
        if self._async_client is None:
            from openai import AsyncOpenAI

            self._async_client = AsyncOpenAI(
                base_url=self.base_url, api_key=self.api_key, max_retries=0, timeout=self.timeout
            )
        return self._async_client

    def _run(self, jobs: list[tuple[Callable[[Any], Awaitable[T]], int]]) -> list[T | BaseException]:
        """Run (call, estimated tokens) jobs concurrently; exceptions are returned, not raised."""

        async def main() -> list[T | BaseException]:
            client = self._client()
            gate = asyncio.Semaphore(self.concurrency)

            async def guarded(job: Callable[[Any], Awaitable[T]], estimate: int) -> T:
                async with gate:
                    return await self._with_retries(lambda: job(client), estimate)

            return await asyncio.gather(*(guarded(j, e) for j, e in jobs), return_exceptions=True)

        return asyncio.run_coroutine_threadsafe(main(), self._loop()).result()

    def close(self) -> None:
        loop, client = self._event_loop, self._async_client
        if loop is not None:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        self._event_loop = self._async_client = None

    async def _with_retries(self, call: Callable[[], Awaitable[T]], estimate: int) -> T:
        """One request with retries; each attempt is charged `estimate` tokens against the TPM
        limit, settled with the reply's usage (or refunded when the attempt fails)."""
        import openai

        limiter = self._limiter
        attempt = 0
        while True:
            charged = await limiter.acquire(estimate)
            try:
                self.usage.requests += 1
                reply = await call()
            except BaseException as exc:
                limiter.settle(charged, 0)
                retryable = (
                    openai.RateLimitError,
                    openai.APIConnectionError,
                    openai.APITimeoutError,
                    openai.InternalServerError,
                )
                # BadRequestError (our request is wrong) and anything else: retrying will not help.
                if not isinstance(exc, retryable) or attempt >= self.max_retries:
                    raise
                delay = self.backoff * 2**attempt * (1 + random.random() / 2)
                if isinstance(exc, openai.RateLimitError):
                    retry_after = exc.response.headers.get("retry-after") if exc.response else None
                    delay = max(delay, float(retry_after)) if retry_after else delay
                    limiter.cool_down(delay)
                attempt += 1
                self.usage.retries += 1
                await asyncio.sleep(delay)
                continue
            usage = getattr(reply, "usage", None)
            limiter.settle(charged, getattr(usage, "total_tokens", None) or estimate)
            return reply

    def _account(self, usage: Any) -> tuple[int, int]:
        p = getattr(usage, "prompt_tokens", 0) or 0
        c = getattr(usage, "completion_tokens", 0) or 0
        self.usage.prompt_tokens += p
        self.usage.completion_tokens += c
        self.usage.cost_usd += (p * self.price_in + c * self.price_out) / 1e6
        return p, c

    @staticmethod
    def _error_text(exc: BaseException) -> str:
        return f"{type(exc).__name__}: {exc}"[:500]

    @property
    def constrains(self) -> bool:
        """vLLM servers take a regex in the `structured_outputs` extra body field; other APIs do not
        (their replies are parsed unconstrained). A vLLM server says `owned_by: vllm` in /models."""
        if self._is_vllm is None:

            async def probe() -> bool:
                page = await self._client().models.list()
                return any(getattr(m, "owned_by", None) == "vllm" for m in page.data)

            try:
                self._is_vllm = asyncio.run_coroutine_threadsafe(probe(), self._loop()).result(timeout=self.timeout)
            except Exception:  # an unreachable server fails later, per row, with its reason
                self._is_vllm = False
        return self._is_vllm

    # -- Engine API ------------------------------------------------------------------------------
    def generate(
        self, conversations: list[Messages], params: SamplingConfig, *, continue_final: bool = False
    ) -> list[Generation]:
        extra = dict(CONTINUE_FINAL) if continue_final else {}
        if params.regex and self.constrains:
            extra["structured_outputs"] = {"regex": params.regex}

        def job(messages: Messages) -> tuple[Callable[[Any], Awaitable[Any]], int]:
            estimate = estimate_tokens((m.get("content") for m in messages), params.max_tokens, params.n)
            return lambda client: client.chat.completions.create(
                model=self.model,
                messages=messages,
                n=params.n,
                temperature=params.temperature,
                top_p=params.top_p,
                max_tokens=params.max_tokens,
                stop=list(params.stop) or None,
                extra_body=extra or None,
            ), estimate

        results = []
        for resp in self._run([job(m) for m in conversations]):
            if isinstance(resp, BaseException):
                self.usage.failures += 1
                results.append(Generation(error=self._error_text(resp)))
                continue
            prompt_tokens, completion_tokens = self._account(resp.usage)
            choices = sorted(resp.choices, key=lambda ch: ch.index)
            per_choice = completion_tokens // max(len(choices), 1)
            results.append(
                Generation(
                    prompt_tokens,
                    [Completion(ch.message.content or "", ch.finish_reason or "stop", per_choice) for ch in choices],
                )
            )
        return results

    def next_token_probs(
        self, conversations: list[Messages], candidates: tuple[str, ...]
    ) -> list[dict[str, float] | None]:
        def job(messages: Messages) -> tuple[Callable[[Any], Awaitable[Any]], int]:
            estimate = estimate_tokens((m.get("content") for m in messages), 1)
            return lambda client: client.chat.completions.create(
                model=self.model,
                messages=messages,
                max_tokens=1,
                temperature=0.0,
                logprobs=True,
                top_logprobs=TOP_LOGPROBS,
                extra_body=CONTINUE_FINAL,
            ), estimate

        results: list[dict[str, float] | None] = []
        for resp in self._run([job(m) for m in conversations]):
            if isinstance(resp, BaseException):
                self.usage.failures += 1
                results.append(None)
                continue
            self._account(resp.usage)
            content = resp.choices[0].logprobs.content if resp.choices[0].logprobs else None
            if not content:
                raise UserError("the server returned no logprobs; use --verdict text for this API")
            top = {t.token: t.logprob for t in content[0].top_logprobs}
            results.append({c: math.exp(top[c]) if c in top else 0.0 for c in candidates})
        return results
