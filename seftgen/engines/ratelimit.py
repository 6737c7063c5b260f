"""Requests-per-minute and tokens-per-minute limits shared by all workers, plus a global
cool-down: after a 429 every worker waits, instead of each one hammering the server.

Both limits are token buckets that refill continuously (rpm/60 requests and tpm/60 tokens per
second) and hold at most `burst_s` seconds of budget, so in any window of w seconds at most
`limit * (w + burst_s) / 60` goes out: the limit holds per minute and on the shorter periods
providers also enforce. Tokens are charged before a request with an estimate (the prompt's
characters / 4 plus `max_tokens * n`, which is how providers count a request against TPM) and
settled with the reply's real usage afterwards; a failed request is refunded.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

BURST_S = 6.0


def estimate_tokens(contents: Iterable[str | None], max_tokens: int, n: int = 1) -> int:
    """What a chat request will cost at most: ~4 characters per prompt token, a few tokens per
    message for the chat template, and every completion at full length."""
    texts = [c or "" for c in contents]
    return sum(len(t) for t in texts) // 4 + 4 * len(texts) + max_tokens * n


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None, burst_s: float = BURST_S) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._req_cap = max(1.0, rpm * burst_s / 60) if rpm else 0.0
        self._tok_cap = tpm * burst_s / 60 if tpm else 0.0
        self._req_tokens = self._req_cap
        self._tok_tokens = self._tok_cap
        self._last = time.monotonic()
        self._resume_at = 0.0
        self._lock: asyncio.Lock | None = None  # made on first use, inside the engine's event loop

    @property
    def active(self) -> bool:
        """Whether `acquire` can ever wait (a limit, or a cool-down after a 429)."""
        return bool(self.rpm or self.tpm or self._resume_at)

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        self._last = now
        if self.rpm:
            self._req_tokens = min(self._req_cap, self._req_tokens + elapsed * self.rpm / 60)
        if self.tpm:
            self._tok_tokens = min(self._tok_cap, self._tok_tokens + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int = 0) -> int:
        """Wait for the cool-down, one request and `tokens` (an estimate) of budget; returns the
        tokens charged, to pass to `settle` once the real usage is known."""
        if not self.active:
            return 0
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._resume_at:
                    await asyncio.sleep(self._resume_at - now)
                    continue
                self._refill(now)
                # A request larger than the bucket waits for a full bucket and leaves a debt.
                need_tok = min(tokens, self._tok_cap) if self.tpm else 0
                wait = 0.0
                if self.rpm and self._req_tokens < 1:
                    wait = max(wait, (1 - self._req_tokens) * 60 / self.rpm)
                if self.tpm and self._tok_tokens < need_tok:
                    wait = max(wait, (need_tok - self._tok_tokens) * 60 / self.tpm)
                if wait <= 0:
                    if self.rpm:
                        self._req_tokens -= 1
                    if self.tpm:
                        self._tok_tokens -= tokens
                        return tokens
                    return 0
                await asyncio.sleep(wait)

    def settle(self, charged: int, used: int) -> None:
        """Replace the estimate charged by `acquire` with the tokens really used (0 on failure)."""
        if self.tpm and charged:
            self._tok_tokens = min(self._tok_cap, self._tok_tokens + charged - used)

    def cool_down(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
