"""Throughput of `seftgen sample` against raw `vllm.LLM.chat` on the same workload.

One engine (the embedded model on this machine's CPU) serves both, so the only difference is
seftgen's own work: input validation, batching, Parquet part files, manifest, provenance.
Runs alternate (raw, seftgen, raw, seftgen, ...) and the best of each is compared.

    python bench/sample_throughput.py [--prompts 64 --n 2 --max-tokens 128 --repeats 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from report import print_ratio

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")  # keep stdout for the JSON result
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--n", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    from vllm import SamplingParams

    from seftgen.engines import EngineSpec, get_engine
    from seftgen.engines.base import SamplingConfig
    from seftgen.io.readers import PromptColumns, iter_prompts
    from seftgen.io.store import read_run
    from seftgen.stages.sample import sample

    source = str(REPO / "data" / "demo" / "prompts.jsonl")
    engine = get_engine(EngineSpec())
    conversations = [p.messages for p in iter_prompts(source, PromptColumns(), args.prompts)]
    params = SamplingConfig(n=args.n, temperature=1.0, top_p=0.9, max_tokens=args.max_tokens)
    raw_params = SamplingParams(n=args.n, temperature=1.0, top_p=0.9, max_tokens=args.max_tokens)
    engine.llm.chat(conversations[:2], raw_params, use_tqdm=False)  # warm-up

    raw_rates, seftgen_rates = [], []
    for _ in range(args.repeats):
        start = time.perf_counter()
        outs = engine.llm.chat(conversations, raw_params, use_tqdm=False)
        elapsed = time.perf_counter() - start
        raw_rates.append(sum(len(c.token_ids) for o in outs for c in o.outputs) / elapsed)

        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            sample(source, Path(tmp) / "run", engine, params=params, limit=args.prompts)
            elapsed = time.perf_counter() - start
            seftgen_rates.append(int(read_run(Path(tmp) / "run")["completion_tokens"].sum()) / elapsed)

    print_ratio(vars(args), "tokens_per_s", ("raw_vllm", raw_rates), ("seftgen", seftgen_rates))


if __name__ == "__main__":
    main()
