"""`seftgen benchmark ifeval`: its answers' tokens/s against raw `vllm.LLM.chat` on the same IFEval
prompts, and the time to score all 541 responses with the benchmark's checkers.

The same engine serves both sides (greedy, the same max_tokens); seftgen adds the prompt file
reading, batches, Parquet parts, scoring and the official-format export. The scoring time is
measured on 541 stand-in responses (each prompt's own text), as it does not depend on the model.

    python bench/ifeval_bench.py [--prompts 32 --max-tokens 96 --batch-size 8]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import add_common, alternate, cold, engine_from_args, quiet, raw_chat, result


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    add_common(parser)
    args = parser.parse_args(argv)

    from vllm import SamplingParams

    from seftgen.evaluation import ifeval
    from seftgen.evaluation.benchmark import run_benchmark
    from seftgen.io.store import scan_run

    items = list(ifeval.load_items().values())
    began = time.perf_counter()
    for item in items:
        ifeval.score(item, item.prompt)
    scoring_s = time.perf_counter() - began

    engine = engine or engine_from_args(args.model)
    conversations = [[{"role": "user", "content": i.prompt}] for i in items[: args.prompts]]
    raw_params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    engine.llm.chat(conversations[:2], raw_params, use_tqdm=False)  # warm-up

    raw = raw_chat(engine, conversations, raw_params)

    def ours() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "ifeval"
            run_benchmark(
                "ifeval", out, engine, limit=args.prompts, max_tokens=args.max_tokens, batch_size=args.batch_size
            )
            return scan_run(out / "answers").select("completion_tokens").sum().collect().item()

    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(engine))
    workload = vars(args) | {"scoring_541_s": round(scoring_s, 2)}  # the checkers alone, all 541 responses
    return result("benchmark ifeval", workload, "tokens/s", ("raw LLM.chat", raw_rates), ("run_benchmark()", our_rates))


if __name__ == "__main__":
    main()
