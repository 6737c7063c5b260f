"""Judgments/s of `seftgen best-of` (tournament) against raw `vllm.LLM.chat` with logprobs.

A single-elimination bracket over each prompt's n samples: n - 1 judgments per prompt, in
rounds that depend on the previous round's winners. Raw vLLM plays the same brackets (same
seeded draw, same prefixed conversations, one call per round for all prompts, winner by the
answer-token probabilities of both orders); seftgen plays them in batches of `--batch-size`
prompts and writes each winner with its bracket.

    python bench/best_of.py [--prompts 24 --n 4 --batch-size 6]
"""

from __future__ import annotations

import math
import random
from typing import Any

from harness import JudgeBench, alternate, cold, judge_parser, quiet, result


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    args = judge_parser(__doc__, 4, "candidates per prompt: n - 1 judgments each").parse_args(argv)

    from seftgen.io.store import scan_run
    from seftgen.stages.judge import best_of
    from seftgen.stages.judging import Bracket, pair_score
    from seftgen.stages.runner import iter_prompt_groups

    bench = JudgeBench(args, engine)
    tokens = bench.judge.tokens
    groups = [{r["sample_idx"]: r for r in g} for g in iter_prompt_groups(bench.samples)]
    ids = [bench.engine.tokenizer.encode(t, add_special_tokens=False)[0] for t in tokens]
    runs = iter(range(args.repeats))

    def probs(out: Any) -> dict[str, float]:
        top = out.outputs[0].logprobs[0]
        return {t: math.exp(top[i].logprob) if i in top else 0.0 for t, i in zip(tokens, ids, strict=True)}

    def raw() -> float:
        brackets = [Bracket.start(sorted(g), random.Random(f"0:{g[0]['prompt_id']}")) for g in groups]
        judged = 0
        while live := [(g, b) for g, b in zip(groups, brackets, strict=True) if not b.done]:
            matches = [(g, a, c) for g, b in live for a, c in b.matches()]
            outs = bench.raw(
                [
                    bench.conversation(g[a]["messages"], g[x]["response"], g[y]["response"])
                    for g, a, c in matches
                    for x, y in ((a, c), (c, a))
                ]
            )
            scores = [pair_score(probs(outs[2 * i]), probs(outs[2 * i + 1]), tokens) for i in range(len(matches))]
            start = 0
            for _, b in live:
                k = len(b.matches())
                b.advance(scores[start : start + k])
                start += k
            judged += len(matches)
        return judged

    def ours() -> float:
        out = bench.dir / f"best-{next(runs)}"
        best_of(bench.samples, out, bench.engine, batch_size=args.batch_size)
        return scan_run(out).select("judgments").sum().collect().item()

    raw()  # warm-up
    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(bench.engine))
    workload = vars(args) | {"judgments": args.prompts * (args.n - 1)}
    out = result("best-of", workload, "judgments/s", ("raw LLM.chat logprobs", raw_rates), ("best_of()", our_rates))
    bench.close()
    return out


if __name__ == "__main__":
    main()
