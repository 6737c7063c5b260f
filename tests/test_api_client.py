"""The OpenAI-compatible client's retries, 429 cool-down, rate limit and per-row errors.

`FlakyEndpoint` is a STAND-IN on loopback, not a model server: a real `vllm serve` cannot be made
to answer 429 or 500 on demand, and these tests are about how seftgen reacts to exactly that.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from seftgen.engines.base import SamplingConfig
from seftgen.engines.openai_engine import OpenAIEngine
from seftgen.engines.ratelimit import RateLimiter


class FlakyEndpoint(BaseHTTPRequestHandler):
    """STAND-IN: answers the first `fail` requests with `status` (and Retry-After), then succeeds."""

    fail: ClassVar[int] = 0
    status: ClassVar[int] = 429
    seen: ClassVar[list[float]] = []
    lock = threading.Lock()

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            FlakyEndpoint.seen.append(time.monotonic())
            failing = len(FlakyEndpoint.seen) <= FlakyEndpoint.fail
        if failing:
            body = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()
            self.send_response(self.status)
            self.send_header("Retry-After", "0.3")
        else:
            body = json.dumps(
                {
                    "id": "x",
                    "object": "chat.completion",
                    "created": 0,
                    "model": "m",
                    "choices": [
                        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "ok"}}
                    ],
                    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
                }
            ).encode()
            self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def flaky():
    FlakyEndpoint.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FlakyEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


MSG = [[{"role": "user", "content": "hi"}]]


def test_429_is_retried_after_a_cool_down(flaky) -> None:
    _, url = flaky
    FlakyEndpoint.fail, FlakyEndpoint.status = 2, 429
    engine = OpenAIEngine("m", base_url=url, max_retries=3, backoff=0.01, price_in=1e6, price_out=0)
    (gen,) = engine.generate(MSG, SamplingConfig(max_tokens=4))
    assert gen.error is None and gen.completions[0].text == "ok"
    assert len(FlakyEndpoint.seen) == 3
    assert FlakyEndpoint.seen[1] - FlakyEndpoint.seen[0] >= 0.3  # Retry-After was honoured
    usage = engine.take_usage()
    assert usage["retries"] == 2 and usage["requests"] == 3 and usage["cost_usd"] == pytest.approx(3.0)
    engine.close()


def test_retries_exhausted_become_a_row_error(flaky) -> None:
    _, url = flaky
    FlakyEndpoint.fail, FlakyEndpoint.status = 100, 500
    engine = OpenAIEngine("m", base_url=url, max_retries=1, backoff=0.01)
    gens = engine.generate(MSG * 2, SamplingConfig(max_tokens=4))
    assert all(g.error and "InternalServerError" in g.error for g in gens)
    assert engine.take_usage()["failures"] == 2
    engine.close()


def test_requests_per_minute_limit() -> None:
    import asyncio

    async def burst() -> float:
        limiter = RateLimiter(rpm=600)  # 10/s, bucket starts full at 600: drain it, then time 5 more
        limiter._req_tokens = 0
        start = time.monotonic()
        for _ in range(5):
            await limiter.acquire()
        return time.monotonic() - start

    assert asyncio.run(burst()) >= 0.45
