"""Requests/s of seftgen's SRT critic stage against a bare `AsyncOpenAI` loop, concurrency 64.

The endpoint is a LOAD TARGET, not a model: a minimal OpenAI-compatible HTTP server on loopback
(aiohttp, in its own process) that answers every chat completion at once with a fixed critic
reply. Both clients send the same requests to it (the critic and scoring prompts of each row,
rendered by the same templates); the ratio is seftgen's overhead (rate limiter, retries wrapper,
rendering, parsing, filters, Parquet parts, manifest) over the bare loop. The bare loop gets every
request at once; seftgen works in batches of `--batch-size` rows, critique then scores.

    python bench/critic_client.py [--rows 600 --concurrency 64 --batch-size 64 --repeats 5]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from harness import alternate, free_port, quiet, result, wait_until_serving

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


class BareLoop:
    """The baseline: one AsyncOpenAI client on its own event loop, kept across runs (as seftgen's
    engine keeps its client), sending `requests` chat completions with `concurrency` in flight."""

    def __init__(self, base_url: str, concurrency: int) -> None:
        from openai import AsyncOpenAI

        self.loop = asyncio.new_event_loop()
        self.gate = asyncio.Semaphore(concurrency)
        self.client = AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)

    async def _one(self, messages: list[dict[str, str]]) -> None:
        async with self.gate:
            await self.client.chat.completions.create(
                model="load-target", messages=messages, temperature=0.0, max_tokens=1024
            )

    def __call__(self, requests: list[list[dict[str, str]]]) -> float:
        async def everything() -> None:
            await asyncio.gather(*(self._one(m) for m in requests))

        self.loop.run_until_complete(everything())
        return len(requests)


def same_requests(rows: int) -> list[list[dict[str, str]]]:
    """The requests the critic stage sends for `rows` samples, rendered by the same templates:
    a critique per row, then the original and the refinement (the load target's) scored."""
    from seftgen.stages.parsing import parse_critic
    from seftgen.templates import load_template

    critic, scorer = load_template("srt_critic"), load_template("srt_score")
    assert critic.output is not None
    refinement = parse_critic(critic.output, REPLY, [f.name for f in critic.output.fields[:-1]]).refinement
    requests = []
    for i in range(rows):
        question, answer = f"Question {i}?", "It is hot."
        requests.append(critic.render("user", instruction=question, response=answer))
        requests += [scorer.render("user", instruction=question, response=r) for r in (answer, refinement)]
    return [[{"role": "user", "content": text}] for text in requests]


def samples_run(path: Path, rows: int) -> Path:
    """A sample run of `rows` hand-written responses, written through seftgen's store."""
    from seftgen.io.schema import SAMPLES
    from seftgen.io.store import RunStore

    store = RunStore.open(path, SAMPLES, "sample", {"bench": True})
    now = datetime.now(UTC)
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=600, help="sample rows; the critic stage sends 3 requests per row")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64, help="rows per seftgen batch")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)

    from seftgen.engines import EngineSpec, get_engine
    from seftgen.io.store import load_manifest
    from seftgen.stages.revise import revise_srt

    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(port,), daemon=True)
    server.start()
    base_url = f"http://127.0.0.1:{port}/v1"
    wait_until_serving(base_url, poll=0.1, timeout=1, attempts=100)
    spec = EngineSpec(model="load-target", kind="openai", base_url=base_url, concurrency=args.concurrency)
    engine = get_engine(spec)  # one client for every run, as in a real stage
    runs = iter(range(args.repeats + 1))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            samples = samples_run(Path(tmp) / "samples", args.rows)

            loop, requests = BareLoop(base_url, args.concurrency), same_requests(args.rows)

            def bare() -> float:
                return loop(requests)

            def ours() -> float:
                out = Path(tmp) / f"critic-{next(runs)}"
                revise_srt(samples, out, engine, batch_size=args.batch_size)
                return load_manifest(out).totals["requests"]

            bare(), ours()  # warm-up: connections, imports, Jinja compilation
            bare_rates, our_rates = alternate(args.repeats, bare, ours)
    finally:
        server.terminate()
    return result(
        "revise (SRT critic, API client)",
        vars(args),
        "requests/s",
        ("bare AsyncOpenAI loop", bare_rates),
        ("revise_srt()", our_rates),
    )


if __name__ == "__main__":
    main()
