"""The OpenAI-compatible client's retries, 429 cool-down, rate limit and per-row errors.

`FlakyEndpoint` is a STAND-IN on loopback, not a model server: a real `vllm serve` cannot be made
to answer 429 or 500 on demand, and these tests are about how seftgen reacts to exactly that.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from seftgen.engines.base import SamplingConfig
from seftgen.engines.openai_engine import OpenAIEngine
from seftgen.engines.ratelimit import RateLimiter


def chat_reply(prompt_tokens: int = 3, completion_tokens: int = 1, finish: str = "stop") -> bytes:
    """The body of an OpenAI chat completion answering 'ok', billed as given."""
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens}
    return json.dumps(
        {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": "m",
            "choices": [{"index": 0, "finish_reason": finish, "message": {"role": "assistant", "content": "ok"}}],
            "usage": usage | {"total_tokens": prompt_tokens + completion_tokens},
        }
    ).encode()


class StandIn(BaseHTTPRequestHandler):
    """What every loopback stand-in below shares: quiet, and one way to answer."""

    def log_message(self, *args) -> None:
        pass

    def answer(self, body: bytes, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in {"Content-Type": "application/json", **(headers or {})}.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class FlakyEndpoint(StandIn):
    """STAND-IN: answers the first `fail` requests with `status` (and Retry-After), then succeeds."""

    fail: ClassVar[int] = 0
    status: ClassVar[int] = 429
    finish_reason: ClassVar[str] = "stop"  # what a success ends with (not `finish`: a handler method)
    seen: ClassVar[list[float]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            FlakyEndpoint.seen.append(time.monotonic())
            failing = len(FlakyEndpoint.seen) <= FlakyEndpoint.fail
        if failing:
            error = json.dumps({"error": {"message": "slow down", "type": "rate_limit"}}).encode()
            self.answer(error, self.status, {"Retry-After": "0.3"})
        else:
            self.answer(chat_reply(finish=FlakyEndpoint.finish_reason))


@pytest.fixture
def flaky():
    FlakyEndpoint.seen, FlakyEndpoint.finish_reason = [], "stop"
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


@pytest.mark.parametrize("finish", ["error", "abort"])
def test_a_request_the_server_gave_up_on_is_a_row_error(flaky, finish: str) -> None:
    """vLLM ends a request "error" when, for one, its grammar did not compile (`v1/request.py`);
    the row must carry that, not fail to parse an empty reply."""
    _, url = flaky
    FlakyEndpoint.fail, FlakyEndpoint.finish_reason = 0, finish
    engine = OpenAIEngine("m", base_url=url, max_retries=0)
    (gen,) = engine.generate(MSG, SamplingConfig(max_tokens=4))
    assert (
        gen.completions == []
        and gen.error == f"the engine ended the request with finish_reason '{finish}' (its log says why)"
    )
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


class CountingEndpoint(StandIn):
    """STAND-IN: an instant chat endpoint that records when each request arrived and bills it
    `PROMPT + COMPLETION` tokens. A TPM test needs a server far faster than the limit, which the
    CPU model server is not; what is tested is the client's pacing, not the model."""

    PROMPT: ClassVar[int] = 20
    COMPLETION: ClassVar[int] = 80
    arrivals: ClassVar[list[float]] = []
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.lock:
            CountingEndpoint.arrivals.append(time.monotonic())
        self.answer(chat_reply(self.PROMPT, self.COMPLETION))


def test_tokens_per_minute_limit_holds() -> None:
    """A TPM limit far below what the server could take holds: in every window of w seconds the
    server sees at most tpm * w / 60 tokens plus the burst (BURST_S seconds of budget) plus one
    request. Estimates (max_tokens 300, 3x the real 100) are settled with the real usage, so the
    run is paced by real tokens: it must not take much longer than real tokens / rate."""
    from seftgen.engines.ratelimit import BURST_S

    CountingEndpoint.arrivals = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), CountingEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    tpm, requests = 6000.0, 16  # 100 tokens/s; 1600 real tokens
    engine = OpenAIEngine("m", base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", concurrency=8, tpm=tpm)
    try:
        start = time.monotonic()
        gens = engine.generate(MSG * requests, SamplingConfig(max_tokens=300))
        elapsed = time.monotonic() - start
    finally:
        engine.close()
        server.shutdown()
    assert all(g.error is None for g in gens)
    per_request, rate, burst = 100, tpm / 60, tpm * BURST_S / 60
    arrivals = CountingEndpoint.arrivals
    assert len(arrivals) == requests
    for i, first in enumerate(arrivals):
        for j in range(i, len(arrivals)):
            served = (j - i + 1) * per_request
            assert served <= rate * (arrivals[j] - first) + burst + per_request, (i, j, arrivals[j] - first)
    # Paced by the real usage: without settling, 300-token estimates would take about 3x as long.
    needed = (requests * per_request - burst) / rate
    assert needed * 0.8 <= elapsed <= needed * 1.5 + 1.0, (elapsed, needed)


class FaultyEndpoint(StandIn):
    """STAND-IN: a chat endpoint that fails in the ways a real server or proxy can, on demand:
    `garbage` (200 with a body that is not JSON), `shape` (200 with JSON that is not a chat
    completion), `cut` (the reply stops mid-body and the connection closes), `hang` (no reply
    within the client's --timeout); `ok` answers."""

    mode: ClassVar[str] = "ok"
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = chat_reply()
        if self.mode == "hang":
            time.sleep(3)
        elif self.mode == "garbage":
            body = b"<html>502 Bad Gateway</html>"
        elif self.mode == "shape":
            body = b'{"id": "x", "choices": [{"index": 0, "text": "a completion, not a chat message"}]}'
        elif self.mode == "cut":
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.answer(body)

    def finish(self) -> None:  # a cut connection cannot be flushed; that is the point
        with contextlib.suppress(OSError):
            super().finish()


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("garbage", "APIResponseValidationError|JSON"),
        ("shape", "MalformedReply: not a chat completion"),
        ("cut", "Connection|Protocol|incomplete"),
        ("hang", "Timeout"),
    ],
)
def test_api_faults_become_row_failures_and_complete_on_rerun(tmp_path, capsys, mode: str, reason: str) -> None:
    import re

    from conftest import DEMO_PROMPTS, run_cli

    from seftgen.choices import RunStatus
    from seftgen.io.store import load_manifest, read_run

    server = ThreadingHTTPServer(("127.0.0.1", 0), FaultyEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    args = ["sample", DEMO_PROMPTS, "-o", tmp_path / "run", "--limit", "3", "--engine", "openai", "--base-url", url]
    args += ["-m", "m", "--timeout", "1", "--max-retries", "1"]
    try:
        FaultyEndpoint.mode = mode
        assert run_cli(*args) == 1  # the run finished; some rows failed
        manifest = load_manifest(tmp_path / "run")
        assert manifest.status == RunStatus.INCOMPLETE and manifest.rows == 0
        assert len(manifest.failures) == 3
        assert all(re.search(reason, f["error"]) for f in manifest.failures), manifest.failures
        assert "rerun the same command" in capsys.readouterr().err
        FaultyEndpoint.mode = "ok"
        assert run_cli(*args) == 0
    finally:
        server.shutdown()
    manifest = load_manifest(tmp_path / "run")
    assert manifest.status == RunStatus.COMPLETE and manifest.rows == 3 == read_run(tmp_path / "run").height
    assert [a.status for a in manifest.attempts] == [RunStatus.INCOMPLETE, RunStatus.COMPLETE]
