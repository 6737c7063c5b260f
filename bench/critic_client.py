"""Requests/s of seftgen's SRT critic stage against a bare `AsyncOpenAI` loop, concurrency 64.

The endpoint is a LOAD TARGET, not a model: a minimal OpenAI-compatible HTTP server on loopback
(aiohttp, in its own process) that answers every chat completion at once with a fixed critic
reply. Both clients send the same number of requests to it; the ratio is seftgen's overhead
(rate limiter, retries wrapper, parsing, Parquet parts, manifest) over the bare loop.

    python bench/critic_client.py [--rows 600 --concurrency 64 --repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from report import print_ratio

REPLY = (
    "Weaknesses: the answer is vague.\nOverall Score: [[4]]\nSuggestions: give the number.\n\n"
    "### Improved Response\nWater boils at 100 degrees Celsius at sea level."
)


def serve(port: int) -> None:
    from aiohttp import web

    body = {
        "id": "x",
        "object": "chat.completion",
        "created": 0,
        "model": "load-target",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": REPLY}}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 40, "total_tokens": 90},
    }

    async def chat(_: web.Request) -> web.Response:
        return web.json_response(body)

    async def models(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"id": "load-target", "object": "model"}]})

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/v1/models", models)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def bare_loop(base_url: str, requests: int, concurrency: int) -> float:
    from openai import AsyncOpenAI

    gate = asyncio.Semaphore(concurrency)
    async with AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0) as client:

        async def one() -> None:
            async with gate:
                await client.chat.completions.create(
                    model="load-target",
                    messages=[{"role": "user", "content": "Critique this."}],
                    temperature=0.0,
                    max_tokens=1024,
                )

        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        return requests / (time.perf_counter() - start)


def samples_run(path: Path, rows: int) -> Path:
    """A sample run of `rows` hand-written responses, written through seftgen's store."""
    from seftgen.io.schema import SAMPLES
    from seftgen.io.store import RunStore

    store = RunStore.open(path, SAMPLES, "sample", {"bench": True})
    now = datetime.now(timezone.utc)
    store.write(
        [
            {
                "prompt_id": f"{i:016x}",
                "sample_idx": 0,
                "messages": [{"role": "user", "content": f"Question {i}?"}],
                "response": "It is hot.",
                "prompt_tokens": 5,
                "completion_tokens": 4,
                "finish_reason": "stop",
                "error": None,
                "model": "bench",
                "engine": "none",
                "template_hash": "t",
                "params": "{}",
                "seed": 0,
                "run_id": store.run_id,
                "created_at": now,
            }
            for i in range(rows)
        ]
    )
    store.finish({})
    return path


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep stdout for the JSON result
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600, help="sample rows; the critic stage sends 3 requests per row")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from seftgen.engines import EngineSpec
    from seftgen.io.store import load_manifest
    from seftgen.stages.revise import revise_srt

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{port}/v1"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base_url}/models", timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    spec = EngineSpec(model="load-target", kind="openai", base_url=base_url, concurrency=args.concurrency)
    bare_rates, seftgen_rates = [], []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            samples = samples_run(Path(tmp) / "samples", args.rows)
            for k in range(args.repeats):
                bare_rates.append(asyncio.run(bare_loop(base_url, 3 * args.rows, args.concurrency)))
                start = time.perf_counter()
                revise_srt(samples, Path(tmp) / f"critic-{k}", spec, batch_size=args.concurrency * 4)
                elapsed = time.perf_counter() - start
                seftgen_rates.append(load_manifest(Path(tmp) / f"critic-{k}")["totals"]["requests"] / elapsed)
    finally:
        server.terminate()
    print_ratio(vars(args), "requests_per_s", ("bare_asyncopenai", bare_rates), ("seftgen_critic", seftgen_rates))


if __name__ == "__main__":
    main()
