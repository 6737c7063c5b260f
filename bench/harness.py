"""What every benchmark shares: alternating runs, one result format, and real sample runs.

Each benchmark runs the same model work twice per repeat, raw vLLM (or a bare client) and
seftgen's stage, alternating so that drift of the machine hits both sides alike. The result is
the ratio of each alternating pair (seftgen / raw), reported as its median with the spread of
all pairs, never the best run alone.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PROMPTS = str(REPO / "data" / "demo" / "prompts.jsonl")


def quiet() -> None:
    """Keep stdout for the JSON result (vLLM logs to stdout by default)."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def timed(fn: Callable[[], float]) -> float:
    """`fn` returns the amount of work it did (tokens, judgments, requests); returns work/s."""
    start = time.perf_counter()
    work = fn()
    return work / (time.perf_counter() - start)


def alternate(
    repeats: int, raw: Callable[[], float], ours: Callable[[], float], before: Callable[[], Any] | None = None
) -> tuple[list[float], list[float]]:
    """Rates of `repeats` alternating runs of each side (raw first); `before` runs, untimed,
    ahead of every run (see `cold`)."""
    raw_rates, our_rates = [], []
    for _ in range(repeats):
        for side, rates in ((raw, raw_rates), (ours, our_rates)):
            if before is not None:
                before()
            rates.append(timed(side))
    return raw_rates, our_rates


def raw_chat(engine: Any, conversations: list[Any], params: Any) -> Callable[[], float]:
    """The raw side of a generation benchmark: one `LLM.chat` call; returns the tokens generated."""

    def raw() -> float:
        outs = engine.llm.chat(conversations, params, use_tqdm=False)
        return sum(len(c.token_ids) for o in outs for c in o.outputs)

    return raw


def cold(engine: Any) -> Callable[[], Any]:
    """Empty vLLM's prefix cache before a run. Each side sends the same prompts again, and a
    stage meets each row once: without this every run after the first skips the prefill that
    production pays, and the benchmark measures decode alone (where batch width is everything)."""
    return engine.llm.reset_prefix_cache


def result(
    name: str,
    workload: dict[str, Any],
    unit: str,
    baseline: tuple[str, list[float]],
    ours: tuple[str, list[float]],
    target: float = 0.95,
) -> dict[str, Any]:
    """The one result format; printed as JSON (the last line of stdout is what `run_all` reads)."""
    (base_name, base_rates), (our_name, our_rates) = baseline, ours
    ratios = [o / b for o, b in zip(our_rates, base_rates, strict=True)]
    out = {
        "benchmark": name,
        "workload": workload,
        "unit": unit,
        "baseline": base_name,
        "ours": our_name,
        "baseline_median": round(statistics.median(base_rates), 2),
        "ours_median": round(statistics.median(our_rates), 2),
        "ratio_median": round(statistics.median(ratios), 3),
        "ratio_min": round(min(ratios), 3),
        "ratio_max": round(max(ratios), 3),
        "target": target,
        "runs": {base_name: [round(r, 2) for r in base_rates], our_name: [round(r, 2) for r in our_rates]},
    }
    print(json.dumps(out))
    return out


def decode_rates(
    variants: dict[str, tuple[dict[str, Any], dict[str, str]]], *, model: str, seqs: int, max_tokens: int, repeats: int
) -> dict[str, list[float]]:
    """Raw `LLM.chat` decode tokens/s of the same greedy requests (`ignore_eos`: every side decodes
    the same tokens) on one engine per variant, started one after another. A variant is
    (EngineSpec fields, environment for vLLM's processes); the caller's engines stay open."""
    from vllm import SamplingParams

    from seftgen.engines import EngineSpec, cached_engines, get_engine, release_engines

    callers = cached_engines()
    conversations = [[{"role": "user", "content": f"Tell a long story about dragon {i}."}] for i in range(seqs)]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    rates: dict[str, list[float]] = {}
    for name, (spec, env) in variants.items():
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            engine = get_engine(EngineSpec(model=model, **spec))
            engine.llm.chat(conversations[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
            rates[name] = [round(timed(raw_chat(engine, conversations, params)), 2) for _ in range(repeats)]
        finally:
            release_engines(callers)
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return rates


def decode_comparison(
    name: str, args: Any, variants: dict[str, tuple[dict[str, Any], dict[str, str]]], ratio: str, **machine: Any
) -> dict[str, Any]:
    """Run two decode variants (`decode_rates`) and print their result: the runs and `ratio`, the
    median of the second variant over the first's."""
    rates = decode_rates(variants, model=args.model, seqs=args.seqs, max_tokens=args.max_tokens, repeats=args.repeats)
    first, second = (statistics.median(r) for r in rates.values())
    out = {"benchmark": name, "workload": vars(args), "unit": "tokens/s", **machine, "runs": rates}
    out[ratio] = round(second / first, 3)
    print(json.dumps(out))
    return out


def demo_samples(engine: Any, path: Path, prompts: int, n: int, max_tokens: int) -> Path:
    """A real samples run of the demo prompts (setup, not measured)."""
    from seftgen.engines.base import SamplingConfig
    from seftgen.stages.sample import sample

    sample(PROMPTS, path, engine, params=SamplingConfig(n=n, temperature=1.0, max_tokens=max_tokens), limit=prompts)
    return path


def engine_from_args(model: str) -> Any:
    """The engine both sides use: vLLM in this process (CUDA or CPU, whatever vLLM finds)."""
    from seftgen.engines import EngineSpec, get_engine

    return get_engine(EngineSpec(model=model))


def add_common(parser: Any, repeats: int = 3) -> None:
    parser.add_argument("--model", default="demo", help="model folder or hub id ('demo': the bundled model)")
    parser.add_argument("--repeats", type=int, default=repeats)


def free_port() -> int:
    """A free port on loopback, for a server the benchmark starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until_serving(
    base_url: str, *, poll: float, timeout: float, attempts: int | None = None, proc: Any = None
) -> bool:
    """Poll `BASE_URL/models` until it answers (True), `attempts` polls have failed (False), or
    `proc` (a Popen) has exited (RuntimeError)."""
    tried = 0
    while attempts is None or tried < attempts:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=timeout):
                return True
        except OSError:
            tried += 1
            time.sleep(poll)
    return False


def by_side(runs: dict[str, list[dict[str, float]]], figures: tuple[str, ...]) -> dict[str, Any]:
    """The medians of each side's figures, and every run's figures, rounded for the JSON line."""
    return {
        "medians": {
            side: {f: round(statistics.median(r[f] for r in rs), 2) for f in figures} for side, rs in runs.items()
        },
        "runs": {side: [{f: round(r[f], 2) for f in figures} for r in rs] for side, rs in runs.items()},
    }


def decode_parser(doc: str) -> Any:
    """The options of the raw decode benchmarks (cpu_dtype, cpu_cores)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    return parser


def judge_parser(doc: str, n: int, n_help: str) -> Any:
    """The options of the judging benchmarks (judge, best-of)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=n, help=n_help)
    parser.add_argument("--sample-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=6, help="prompts per seftgen batch")
    add_common(parser)
    return parser


class JudgeBench:
    """What both judging benchmarks share: the engine, a real samples run, the self-judge, and
    the raw call (one token, top-20 logprobs, continuing the judge's assistant prefix)."""

    def __init__(self, args: Any, engine: Any) -> None:
        import tempfile

        from vllm import SamplingParams

        from seftgen.engines.vllm_engine import TOP_LOGPROBS
        from seftgen.stages.judging import Judge
        from seftgen.templates import load_template

        self.engine = engine or engine_from_args(args.model)
        self._tmp = tempfile.TemporaryDirectory()
        self.dir = Path(self._tmp.name)
        self.samples = demo_samples(self.engine, self.dir / "samples", args.prompts, args.n, args.sample_tokens)
        self.judge = Judge(self.engine, load_template("judge_general"))
        self._prefix = {"role": "assistant", "content": self.judge.prefix}
        self._params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=TOP_LOGPROBS)

    def conversation(self, messages: list[dict[str, str]], first: str, second: str) -> list[dict[str, str]]:
        return [*self.judge.prompt(messages, first, second), self._prefix]

    def raw(self, conversations: list[list[dict[str, str]]]) -> list[Any]:
        return self.engine.llm.chat(
            conversations, self._params, use_tqdm=False, add_generation_prompt=False, continue_final_message=True
        )

    def close(self) -> None:
        self._tmp.cleanup()
