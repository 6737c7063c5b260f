"""Judgments/s of `seftgen judge` (SELF-JUDGE pairs) against raw `vllm.LLM.chat` with logprobs.

Every pair of a prompt's samples is judged in both orders: two one-token calls with the judge's
assistant prefix, reading the answer tokens' logprobs. Raw vLLM gets the same prefixed
conversations (rendered by the same template) and the same sampling (1 token, top-20 logprobs) in
one call; seftgen works in several batches (`--batch-size` prompts) and writes pairs with their
scores.

    python bench/judge.py [--prompts 24 --n 3 --batch-size 6]
"""

from __future__ import annotations

import itertools
from typing import Any

from harness import JudgeBench, alternate, cold, judge_parser, quiet, result


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    args = judge_parser(__doc__, 3, "samples per prompt: n(n-1)/2 pairs each").parse_args(argv)

    from seftgen.io.store import scan_run
    from seftgen.stages.judge import judge_pairs
    from seftgen.stages.runner import iter_prompt_groups

    bench = JudgeBench(args, engine)
    pairs = [(a, b) for g in iter_prompt_groups(bench.samples) for a, b in itertools.combinations(g, 2)]
    conversations = [
        bench.conversation(a["messages"], first["response"], second["response"])
        for a, b in pairs
        for first, second in ((a, b), (b, a))
    ]
    runs = iter(range(args.repeats))

    def raw() -> float:
        bench.raw(conversations)
        return len(pairs)

    def ours() -> float:
        out = bench.dir / f"pairs-{next(runs)}"
        judge_pairs(bench.samples, out, bench.engine, batch_size=args.batch_size)
        return scan_run(out).select("score_a").count().collect().item()

    raw()  # warm-up
    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(bench.engine))
    workload = vars(args) | {"pairs": len(pairs)}
    out = result("judge", workload, "judgments/s", ("raw LLM.chat logprobs", raw_rates), ("judge_pairs()", our_rates))
    bench.close()
    return out


if __name__ == "__main__":
    main()
