"""Decode tokens/s of the same model in bfloat16 and float32 on this CPU (raw `vllm.LLM.chat`).

seftgen's local engines default to float32 on CPUs without bf16 instructions
(`seftgen.devices.default_dtype`): there PyTorch emulates bf16 arithmetic. This measures the
choice on the machine at hand: two engines, one after another, the same greedy requests
(`ignore_eos`, so both sides decode the same number of tokens).

    python bench/cpu_dtype.py [--seqs 8 --max-tokens 64 --repeats 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Any

from harness import quiet


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--seqs", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)

    from vllm import SamplingParams

    from seftgen.devices import cpu_has_bf16, default_dtype
    from seftgen.engines import EngineSpec, cached_engines, get_engine, release_engines

    callers = cached_engines()
    conversations = [[{"role": "user", "content": f"Tell a long story about dragon {i}."}] for i in range(args.seqs)]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, ignore_eos=True)
    rates: dict[str, list[float]] = {}
    for dtype in ("bfloat16", "float32"):
        engine = get_engine(EngineSpec(model=args.model, dtype=dtype))
        engine.llm.chat(conversations[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
        for _ in range(args.repeats):
            start = time.perf_counter()
            outs = engine.llm.chat(conversations, params, use_tqdm=False)
            tokens = sum(len(o.outputs[0].token_ids) for o in outs)
            rates.setdefault(dtype, []).append(round(tokens / (time.perf_counter() - start), 2))
        release_engines(callers)
    out = {
        "benchmark": "cpu dtype",
        "workload": vars(args),
        "unit": "tokens/s",
        "cpu_has_bf16": cpu_has_bf16(),
        "default_dtype": default_dtype(),
        "runs": rates,
        "float32_over_bfloat16": round(statistics.median(rates["float32"]) / statistics.median(rates["bfloat16"]), 3),
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
