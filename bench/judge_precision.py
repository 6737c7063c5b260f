"""Judge precision: how bf16 logits move SELF-JUDGE verdicts, and what a float32 head costs.

The judge's probability of ' A' vs ' B' is a softmax over two logits. In bf16 a logit near 20 is
stored in steps of 0.125, so P(A | A or B) = 1 / (1 + e^(-d)) takes few values and ties and
margin thresholds act on a coarse grid. This judges the same pairs (both orders) with three
engines, one after another: bf16 (the default on GPUs and bf16-capable CPUs), bf16 with a float32 lm_head
(`--head-dtype float32`, vLLM's hf_overrides head_dtype) and a float32 model (`--dtype float32`,
the reference), and prints how many distinct probabilities each gives, how often a verdict, a
position-consistency flag or a margin-threshold decision differs from the reference, and the
judging time of each.

    python bench/judge_precision.py [--prompts 24 --n 2]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from harness import demo_samples, quiet

ENGINES = {
    "bf16": {"dtype": "bfloat16"},
    "bf16 + fp32 head": {"dtype": "bfloat16", "head_dtype": "float32"},
    "fp32": {"dtype": "float32"},
}
THRESHOLDS = (0.05, 0.1, 0.2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=24)
    parser.add_argument("--n", type=int, default=2, help="samples per prompt (pairs: n choose 2 per prompt)")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--repeats", type=int, default=3, help="timed judging runs per engine")
    args = parser.parse_args(argv)

    from seftgen.engines import EngineSpec, cached_engines, get_engine, release_engines
    from seftgen.io.store import read_run
    from seftgen.stages.judging import Judge
    from seftgen.templates import load_template

    callers = cached_engines()  # a caller's engines (the test suite's) stay open
    tmp = tempfile.TemporaryDirectory()
    # The platform's default engine samples (in the test suite, the session's own engine).
    samples = demo_samples(get_engine(EngineSpec(model=args.model)), Path(tmp.name) / "s", args.prompts, args.n, 64)
    release_engines(callers)
    rows = read_run(samples).sort("prompt_id", "sample_idx")
    triples = [
        (a["messages"], a["response"], b["response"])
        for _, group in rows.group_by("prompt_id", maintain_order=True)
        for a, b in itertools.combinations(group.iter_rows(named=True), 2)
    ]
    scores: dict[str, list[Any]] = {}
    seconds: dict[str, float] = {}
    for name, options in ENGINES.items():
        judge = Judge(get_engine(EngineSpec(model=args.model, **options)), load_template("judge_general"))
        judge.judge(triples[:2])  # warm-up
        times = []
        for _ in range(args.repeats):
            judge.engine.llm.reset_prefix_cache()
            start = time.perf_counter()
            scores[name] = judge.judge(triples)
            times.append(time.perf_counter() - start)
        seconds[name] = sorted(times)[len(times) // 2]
        release_engines(callers)
    reference = scores["fp32"]
    out: dict[str, Any] = {"pairs": len(triples), "judgments": 2 * len(triples), "engines": {}}
    for name, got in scores.items():
        both = list(zip(got, reference, strict=True))
        probs = [p for s in got for p in (s.p_a_ab, s.p_a_ba) if p is not None]
        out["engines"][name] = {
            "distinct_probabilities": len({round(p, 6) for p in probs}),
            "max_abs_diff_vs_fp32": round(max(abs(a.score_a - b.score_a) for a, b in both), 4),
            "verdict_changes_vs_fp32": sum(a.a_wins != b.a_wins for a, b in both),
            "consistency_changes_vs_fp32": sum(a.consistent != b.consistent for a, b in both),
            "tie_changes_vs_fp32": {str(t): sum((a.margin < t) != (b.margin < t) for a, b in both) for t in THRESHOLDS},
            "exact_ties": sum(s.margin == 0 for s in got),
            "judging_s": round(seconds[name], 2),
            "time_vs_bf16": round(seconds[name] / seconds["bf16"], 3),
        }
    tmp.cleanup()
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
