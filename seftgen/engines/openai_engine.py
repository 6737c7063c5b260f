"""Any OpenAI-compatible server (vLLM serve, hosted APIs): async, bounded, retried, accounted.

One AsyncOpenAI client per engine (on one event loop thread, reused across batches); one semaphore
for concurrency, shared by overlapping batches (the next batch's requests take the slots the
current batch's last requests leave, so batch boundaries do not drain the pipe); RPM/TPM limits
(tokens charged by estimate, settled with the real usage); exponential backoff with jitter, a
global cool-down on 429, a per-request timeout. A request that still fails
becomes a per-row error (the stage reports it and a rerun retries it); it never stops the batch.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from seftgen.choices import EngineKind
from seftgen.engines.base import (
    Completion,
    Engine,
    Generation,
    Messages,
    SamplingConfig,
    ends_in_prefix,
    failed_finish,
)
from seftgen.engines.ratelimit import RateLimiter, estimate_tokens
from seftgen.engines.vllm_engine import TOP_LOGPROBS
from seftgen.errors import UserError

T = TypeVar("T")
# vLLM-served models accept these to continue a final assistant message (judge prefixes).
CONTINUE_FINAL = {"add_generation_prompt": False, "continue_final_message": True}


class OpenAIEngine(Engine):
    kind = EngineKind.OPENAI
    overlaps = True  # calls from two threads share the engine's event loop and its slots

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
        self._gate: asyncio.Semaphore | None = None  # made in the event loop, on first use

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

    def _run(self, body: dict[str, Any], conversations: list[Messages], ids: Sequence[str] | None = None) -> list[Any]:
        """One chat completion per conversation (the same `body` besides the messages),
        concurrently; replies are the JSON bodies as dicts, exceptions are returned, not raised.

        The per-request path is kept lean, because on a fast server the client's own CPU time is
        what bounds requests/s: the request goes through the client's `post` (same connection
        pool, timeouts and error types as `chat.completions.create`) with a plain JSON body, and
        the reply stays a dict, skipping the SDK's per-request parameter transform and
        response-model construction (about a fifth of its CPU time per request)."""
        tpm_max = body["max_tokens"] * body.get("n", 1) if self._limiter.tpm else None

        async def main() -> list[Any]:
            client = self._client()
            if self._gate is None:  # one gate for the engine: overlapping batches share its slots
                self._gate = asyncio.Semaphore(self.concurrency)
            gate = self._gate
            post = client.post

            async def guarded(messages: Messages) -> Any:
                estimate = estimate_tokens((m.get("content") for m in messages), tpm_max) if tpm_max else 0
                request = {**body, "messages": messages}
                async with gate:
                    return await self._with_retries(
                        lambda: post("/chat/completions", body=request, cast_to=object), estimate
                    )

            return await asyncio.gather(*(guarded(m) for m in conversations), return_exceptions=True)

        replies = asyncio.run_coroutine_threadsafe(main(), self._loop()).result()
        self.count(requests=len(conversations))  # first attempts; retries count themselves
        return replies

    def close(self) -> None:
        loop, client = self._event_loop, self._async_client
        if loop is not None:
            if client is not None:
                asyncio.run_coroutine_threadsafe(client.close(), loop).result(timeout=10)
            loop.call_soon_threadsafe(loop.stop)
        self._event_loop = self._async_client = self._gate = None

    async def _with_retries(self, call: Callable[[], Awaitable[T]], estimate: int) -> T:
        """One request with retries; each attempt is charged `estimate` tokens against the TPM
        limit, settled with the reply's usage (or refunded when the attempt fails)."""
        limiter = self._limiter
        attempt = 0
        while True:
            charged = await limiter.acquire(estimate) if limiter.active else 0
            try:
                reply = await call()
            except BaseException as exc:
                limiter.settle(charged, 0)
                # BadRequestError (our request is wrong) and anything else: retrying will not help.
                if not isinstance(exc, _retryable()) or attempt >= self.max_retries:
                    raise
                delay = self.backoff * 2**attempt * (1 + random.random() / 2)
                if isinstance(exc, _retryable()[0]):  # RateLimitError: the server says how long
                    response = getattr(exc, "response", None)
                    retry_after = response.headers.get("retry-after") if response is not None else None
                    delay = max(delay, float(retry_after)) if retry_after else delay
                    limiter.cool_down(delay)
                attempt += 1
                self.count(retries=1, requests=1)
                await asyncio.sleep(delay)
                continue
            if charged:
                usage = reply.get("usage") if isinstance(reply, dict) else None
                limiter.settle(charged, (usage or {}).get("total_tokens") or estimate)
            return reply

    def _account(self, replies: list[Any]) -> None:
        """Tokens and cost of a call's replies, counted once for the call; failures counted."""
        p = c = failures = 0
        for reply in replies:
            if isinstance(reply, BaseException):
                failures += 1
                continue
            usage = reply.get("usage") or {}
            p += usage.get("prompt_tokens") or 0
            c += usage.get("completion_tokens") or 0
        cost = (p * self.price_in + c * self.price_out) / 1e6
        self.count(prompt_tokens=p, completion_tokens=c, cost_usd=cost, failures=failures)

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
        self,
        conversations: list[Messages],
        params: SamplingConfig,
        *,
        continue_final: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Generation]:
        extra = dict(CONTINUE_FINAL) if continue_final else {}
        if params.regex and self.constrains:
            extra["structured_outputs"] = {"regex": params.regex}
        # Only what differs from the API's defaults: every field costs client time per request.
        body: dict[str, Any] = {"model": self.model, "max_tokens": params.max_tokens, "temperature": params.temperature}
        if params.n != 1:
            body["n"] = params.n
        if params.top_p != 1.0:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = list(params.stop)
        replies = _checked(self._run(body | extra, conversations, ids), _choices)
        self._account(replies)
        results = []
        for reply in replies:
            if isinstance(reply, BaseException):
                results.append(Generation(error=self._error_text(reply)))
                continue
            choices = sorted(reply["choices"], key=lambda ch: ch.get("index", 0))
            usage = reply.get("usage") or {}
            per_choice = (usage.get("completion_tokens") or 0) // max(len(choices), 1)
            completions = [
                Completion(ch["message"].get("content") or "", ch.get("finish_reason") or "stop", per_choice)
                for ch in choices
            ]
            failed = failed_finish(completions)  # a vLLM server's "error"/"abort" finish
            results.append(Generation(usage.get("prompt_tokens") or 0, [] if failed else completions, error=failed))
        return results

    def next_token_probs(
        self, conversations: list[Messages], candidates: tuple[str, ...], *, ids: Sequence[str] | None = None
    ) -> list[dict[str, float] | None]:
        body = {
            "model": self.model,
            "max_tokens": 1,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": TOP_LOGPROBS,
        }
        if ends_in_prefix(conversations):  # a judge prefix (vLLM servers); else a fresh turn (any API)
            body |= CONTINUE_FINAL
        replies = _checked(self._run(body, conversations, ids), _top_logprobs)
        self._account(replies)
        results: list[dict[str, float] | None] = []
        for reply in replies:
            if isinstance(reply, BaseException):
                results.append(None)
                continue
            top = _top_logprobs(reply)
            if top is None:
                raise UserError("the server returned no logprobs; use `verdict` text for this API")
            results.append({c: math.exp(top[c]) if c in top else 0.0 for c in candidates})
        return results


class MalformedReply(Exception):
    """A 200 reply without the fields a chat completion has (a broken proxy, a cut body)."""


def _choices(reply: Any) -> None:
    if not isinstance(reply.get("choices"), list) or not reply["choices"]:
        raise KeyError("choices")
    for choice in reply["choices"]:
        if not isinstance(choice.get("message"), dict):
            raise KeyError("choices[].message")


def _top_logprobs(reply: dict[str, Any]) -> dict[str, float] | None:
    """The first token's top logprobs as {token: logprob}; None when the server sent none."""
    logprobs = reply["choices"][0].get("logprobs") or {}
    content = logprobs.get("content") or []
    return {t["token"]: t["logprob"] for t in content[0].get("top_logprobs") or []} if content else None


def _checked(replies: list[Any], check: Callable[[Any], Any]) -> list[Any]:
    """Replies whose shape `check` rejects become per-row errors (recorded, retried on rerun)."""
    out: list[Any] = []
    for reply in replies:
        if isinstance(reply, BaseException):
            out.append(reply)
            continue
        try:
            if not isinstance(reply, dict):
                raise TypeError(type(reply).__name__)
            check(reply)
            out.append(reply)
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            out.append(MalformedReply(f"not a chat completion ({exc})"))
    return out


@functools.cache
def _retryable() -> tuple[type[BaseException], ...]:
    """Errors worth another attempt (RateLimitError first); imported once, on first failure."""
    import openai

    return (openai.RateLimitError, openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError)
