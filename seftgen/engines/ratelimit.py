"""Requests-per-minute and tokens-per-minute limits shared by all workers, plus a global
cool-down: after a 429 every worker waits, instead of each one hammering the server."""

from __future__ import annotations

import asyncio
import time


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._req_tokens = float(rpm or 0)
        self._tok_tokens = float(tpm or 0)
        self._last = time.monotonic()
        self._resume_at = 0.0
        self._lock: asyncio.Lock | None = None  # made on first use, inside the engine's event loop

    def _refill(self, now: float) -> None:
        elapsed = now - self._last
        self._last = now
        if self.rpm:
            self._req_tokens = min(self.rpm, self._req_tokens + elapsed * self.rpm / 60)
        if self.tpm:
            self._tok_tokens = min(self.tpm, self._tok_tokens + elapsed * self.tpm / 60)

    async def acquire(self, tokens: int = 0) -> None:
        """Wait for the cool-down and for one request (and `tokens` tokens) of budget."""
        if not (self.rpm or self.tpm or self._resume_at):
            return
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            while True:
                now = time.monotonic()
                if now < self._resume_at:
                    await asyncio.sleep(self._resume_at - now)
                    continue
                self._refill(now)
                need_tok = min(tokens, self.tpm) if self.tpm else 0
                wait = 0.0
                if self.rpm and self._req_tokens < 1:
                    wait = max(wait, (1 - self._req_tokens) * 60 / self.rpm)
                if self.tpm and self._tok_tokens < need_tok:
                    wait = max(wait, (need_tok - self._tok_tokens) * 60 / self.tpm)
                if wait <= 0:
                    if self.rpm:
                        self._req_tokens -= 1
                    if self.tpm:
                        self._tok_tokens -= need_tok
                    return
                await asyncio.sleep(wait)

    def cool_down(self, seconds: float) -> None:
        self._resume_at = max(self._resume_at, time.monotonic() + seconds)
