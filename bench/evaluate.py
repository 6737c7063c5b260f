"""Judgments/s of `seftgen evaluate` (candidate vs baseline, both orders) against raw
`vllm.LLM.chat` with logprobs on the same pairs.

The demo policy answers each prompt twice; the first answers form the candidate run, the second
the baseline run. Raw vLLM gets the same prefixed judge conversations (both orders) and the same
sampling (1 token, top-20 logprobs) in one call; seftgen joins the two runs, judges in several
batches (`--batch-size` prompts) and writes the evals table with outcomes and the summary.

    python bench/evaluate.py [--prompts 24 --batch-size 6]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness import JudgeBench, alternate, cold, judge_parser, quiet, result


def split_sides(samples: Path, root: Path) -> tuple[Path, Path]:
    """Sample 0 of each prompt as the candidate run, sample 1 as the baseline run."""
    import polars as pl

    from seftgen.choices import Stage
    from seftgen.io.schema import SAMPLES
    from seftgen.io.store import RunStore, read_run

    rows = read_run(samples)
    sides = []
    for idx, name in ((0, "candidate"), (1, "baseline")):
        store = RunStore.open(root / name, SAMPLES, Stage.SAMPLE, {"source": f"sample {idx} of {samples}"})
        side = rows.filter(pl.col("sample_idx") == idx).with_columns(pl.lit(0).cast(pl.Int32).alias("sample_idx"))
        store.write(side.to_dicts())
        store.finish({})
        sides.append(root / name)
    return sides[0], sides[1]


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    args = judge_parser(__doc__, 2, "samples per prompt (2: candidate and baseline)").parse_args(argv)

    from seftgen.evaluation.evaluate import common_prompts, evaluate
    from seftgen.io.store import scan_run

    bench = JudgeBench(args, engine)
    candidate, baseline = split_sides(bench.samples, bench.dir)
    items = common_prompts(candidate, baseline).to_dicts()
    conversations = [
        bench.conversation(r["messages"], first, second)
        for r in items
        for first, second in ((r["candidate"], r["baseline"]), (r["baseline"], r["candidate"]))
    ]
    runs = iter(range(args.repeats))

    def raw() -> float:
        bench.raw(conversations)
        return len(items)

    def ours() -> float:
        out = bench.dir / f"evals-{next(runs)}"
        evaluate(candidate, baseline, out, bench.engine, batch_size=args.batch_size)
        return scan_run(out).select("score").count().collect().item()

    raw()  # warm-up
    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(bench.engine))
    workload = vars(args) | {"pairs": len(items)}
    out = result(
        "evaluate", workload, "judgments/s", ("raw LLM.chat logprobs", raw_rates), ("evaluate()", our_rates), 0.9
    )
    bench.close()
    return out


if __name__ == "__main__":
    main()
