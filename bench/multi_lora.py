"""Two LoRA models of one base: two merged engines one after another, or one engine serving both.

A SEFT round 2 runs the round-1 policy (sampling) and the trained reviser (revising), both LoRA
fine-tunes of the demo model; SELF-JUDGE's JSFT judge and evaluation's trained policy against the
start model are the same case. seftgen merges every adapter and starts one engine per model. vLLM
can serve the adapters from one engine of the base (`enable_lora`, a `LoRARequest` per call;
vLLM 0.32 `entrypoints/llm.py` `generate(..., lora_request=...)`, and `config/lora.py`
`max_lora_rank` / `max_loras`). This measures, with raw vLLM, in a fresh process per side (so
each side pays its own engine start-ups, as a round does):

- `merged`: start the merged policy, answer the prompts, shut down; the same for the reviser;
- `lora`: start the base with `enable_lora`, answer the prompts with each adapter, shut down.

It prints the wall time of each side (median of the repeats, alternating), the saving, decode
tokens/s per model, and how many greedy answers are the same token for token on both sides.

    python bench/multi_lora.py --adapters runs/demo/round-1   # its train-policy-output, train-reviser-output
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import quiet

ADAPTERS = ("policy", "reviser")


def one_side(side: str, folders: dict[str, Path], prompts: int, max_tokens: int) -> dict[str, Any]:
    """In this (fresh) process: one side's start-ups and generations, timed."""
    quiet()
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    from seftgen.devices import cpu_engine_env, default_dtype
    from seftgen.models import prepare_demo_model

    os.environ.update(cpu_engine_env())
    common = {"dtype": default_dtype(), "enforce_eager": True, "max_model_len": 2048, "gpu_memory_utilization": 0.3}
    conversations = [[{"role": "user", "content": f"Explain idea number {i} of good writing."}] for i in range(prompts)]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens)
    began = time.perf_counter()
    out: dict[str, Any] = {"side": side, "start_s": 0.0, "models": {}}

    def answer(llm: Any, name: str, **kw: Any) -> None:
        start = time.perf_counter()
        got = llm.chat(conversations, params, use_tqdm=False, **kw)
        seconds = time.perf_counter() - start
        tokens = [list(c.token_ids) for o in got for c in o.outputs]
        n = sum(len(t) for t in tokens)
        out["models"][name] = {"tokens": tokens, "tokens_per_s": round(n / seconds, 2)}

    def start(**kw: Any) -> Any:
        t = time.perf_counter()
        llm = LLM(**common, **kw)
        out["start_s"] += time.perf_counter() - t
        return llm

    if side == "merged":
        for name in ADAPTERS:
            llm = start(model=str(folders[name] / "merged"))
            answer(llm, name)
            llm.llm_engine.engine_core.shutdown()
            del llm
    else:
        llm = start(model=str(prepare_demo_model()), enable_lora=True, max_lora_rank=16, max_loras=len(ADAPTERS))
        for i, name in enumerate(ADAPTERS, start=1):
            answer(llm, name, lora_request=LoRARequest(name, i, str(folders[name])))
        llm.llm_engine.engine_core.shutdown()
    out["total_s"] = round(time.perf_counter() - began, 2)
    out["start_s"] = round(out["start_s"], 2)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--adapters", type=Path, required=True, help="a round folder with train-*-output adapters")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--side", choices=("merged", "lora"), help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args(argv)
    folders = {name: args.adapters / f"train-{name}-output" for name in ADAPTERS}
    if args.side:
        print(json.dumps(one_side(args.side, folders, args.prompts, args.max_tokens)))
        return {}
    runs: dict[str, list[dict[str, Any]]] = {"merged": [], "lora": []}
    for _ in range(args.repeats):
        for side in runs:
            cmd = [sys.executable, __file__, *(argv or sys.argv[1:]), "--side", side]
            done = subprocess.run(cmd, capture_output=True, text=True, check=True)
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))
    merged, lora = runs["merged"][-1]["models"], runs["lora"][-1]["models"]
    same = {n: sum(a == b for a, b in zip(merged[n]["tokens"], lora[n]["tokens"], strict=True)) for n in ADAPTERS}
    med = {side: statistics.median(r["total_s"] for r in rs) for side, rs in runs.items()}
    out = {
        "benchmark": "multi-lora",
        "workload": {"prompts": args.prompts, "max_tokens": args.max_tokens, "repeats": args.repeats},
        "total_s": {side: [r["total_s"] for r in rs] for side, rs in runs.items()},
        "start_s": {side: [r["start_s"] for r in rs] for side, rs in runs.items()},
        "tokens_per_s": {
            side: {n: [r["models"][n]["tokens_per_s"] for r in rs] for n in ADAPTERS} for side, rs in runs.items()
        },
        "saved_s": round(med["merged"] - med["lora"], 2),
        "lora_over_merged_time": round(med["lora"] / med["merged"], 3),
        "same_greedy_answers": {n: f"{same[n]}/{args.prompts}" for n in ADAPTERS},
    }
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
