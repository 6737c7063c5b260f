"""Tokens/s of `seftgen sample` against raw `vllm.LLM.chat` on the same prompts.

The same engine serves both, so the only difference is seftgen's own work: input validation,
batching, Parquet part files, manifest, provenance. seftgen sends several batches (`--batch-size`)
while raw vLLM gets every prompt in one call, so the cost of batch boundaries shows.

Greedy by default: both sides then generate the same tokens, so the ratio measures seftgen's cost
alone. At temperature 1.0 (`--temperature 1`) the two sides draw different answers from the
engine's one random stream; on a CPU a step costs about the same whatever the number of running
sequences, so tokens/s followed each side's token total (5,051 to 5,389 over six runs of the same
workload, 2026-12-06), not seftgen's work.

    python bench/sample_throughput.py [--prompts 64 --n 1 --max-tokens 96 --batch-size 8 --temperature 0]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from harness import PROMPTS, add_common, alternate, cold, engine_from_args, quiet, raw_chat, result


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=1)  # greedy takes n = 1 (vLLM)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--temperature", type=float, default=0.0)
    add_common(parser)
    args = parser.parse_args(argv)

    from vllm import SamplingParams

    from seftgen.engines.base import SamplingConfig
    from seftgen.io.readers import PromptColumns, iter_prompts
    from seftgen.io.store import scan_run
    from seftgen.stages.sample import sample

    engine = engine or engine_from_args(args.model)
    conversations = [p.messages for p in iter_prompts(PROMPTS, PromptColumns(), args.prompts)]
    top_p = 0.9 if args.temperature > 0 else 1.0  # greedy: no nucleus
    params = SamplingConfig(n=args.n, temperature=args.temperature, top_p=top_p, max_tokens=args.max_tokens)
    raw_params = SamplingParams(n=args.n, temperature=args.temperature, top_p=top_p, max_tokens=args.max_tokens)
    engine.llm.chat(conversations[:2], raw_params, use_tqdm=False)  # warm-up

    raw = raw_chat(engine, conversations, raw_params)

    def ours() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            run = Path(tmp) / "run"
            sample(PROMPTS, run, engine, params=params, limit=args.prompts, batch_size=args.batch_size)
            return scan_run(run).select("completion_tokens").sum().collect().item()

    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(engine))
    out = result("sample", vars(args), "tokens/s", ("raw LLM.chat", raw_rates), ("sample()", our_rates))
    return out


if __name__ == "__main__":
    main()
