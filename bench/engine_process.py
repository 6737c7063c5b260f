"""A local engine in this process against vLLM's own processes: start-up and decode (raw `LLM.chat`).

vLLM starts EngineCore in a process of its own, and on the CPU its worker in another
(`VLLM_ENABLE_V1_MULTIPROCESSING=1`, the default); each imports torch and vLLM again. At "0" both
run in the calling process. On CPUs of at most `seftgen.devices.SMALL_CPU` cores seftgen starts its
engines so (`seftgen.devices.cpu_engine_env`). This measures the choice on the machine at hand.

Each repeat runs both sides, alternating, each in a fresh Python process, as a `seftgen` command
meets it: the first engine's start-up (imports included, from the process's start to an engine
that answers), a second engine's start-up in the same process (a round starts several), and
decode tokens/s of the same greedy requests (`ignore_eos`) in seftgen's default dtype.

    python bench/engine_process.py [--seqs 8 --max-tokens 64 --repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import by_side, decode_parser, quiet

SIDES = {"processes": "1", "in process": "0"}  # VLLM_ENABLE_V1_MULTIPROCESSING


def child(model: str, seqs: int, max_tokens: int) -> dict[str, float]:
    """One side, in this fresh process: two engines one after the other; prints its figures."""
    began = time.monotonic()  # the process started just before: imports are counted
    from vllm import LLM, SamplingParams

    from seftgen.devices import default_dtype
    from seftgen.models import resolve_model

    path = resolve_model(model)
    conversations = [[{"role": "user", "content": f"Tell a long story about dragon {i}."}] for i in range(seqs)]
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)
    settings = {"model": path, "dtype": default_dtype(), "max_model_len": 2048, "enforce_eager": True}
    out: dict[str, float] = {}
    for k in range(2):
        llm = LLM(**settings, gpu_memory_utilization=0.15, seed=k)
        out[f"start_{k + 1}_s"] = time.monotonic() - began
        llm.chat(conversations[:2], SamplingParams(max_tokens=4), use_tqdm=False)  # warm-up
        if k == 0:
            t = time.perf_counter()
            outs = llm.chat(conversations, params, use_tqdm=False)
            tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
            out["decode_tokens_per_s"] = tokens / (time.perf_counter() - t)
        llm.llm_engine.engine_core.shutdown()
        del llm
        began = time.monotonic()
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    parser = decode_parser(__doc__)
    parser.set_defaults(repeats=3)
    parser.add_argument("--child", choices=list(SIDES.values()), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        figures = child(args.model, args.seqs, args.max_tokens)
        print(json.dumps(figures))
        sys.stdout.flush()
        os._exit(0)  # what vLLM left behind must not print after the figures
    from seftgen.devices import IN_PROCESS_ENV, RESERVED_CPU_ENV, usable_cores

    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side, value in SIDES.items():
            argv_child = [sys.executable, str(Path(__file__).resolve()), "--child", value]
            argv_child += ["--model", args.model, "--seqs", str(args.seqs), "--max-tokens", str(args.max_tokens)]
            # Every core decodes on both sides (seftgen's small-CPU default, bench/cpu_cores.py).
            env = os.environ | {IN_PROCESS_ENV: value, RESERVED_CPU_ENV: "0"}
            done = subprocess.run(argv_child, env=env, capture_output=True, text=True, check=True, timeout=1200)
            runs[side].append(json.loads(done.stdout.strip().splitlines()[-1]))

    figures = ("start_1_s", "start_2_s", "decode_tokens_per_s")
    out = {
        "benchmark": "engine in process",
        "workload": {k: v for k, v in vars(args).items() if k != "child"} | {"cores": usable_cores()},
        **by_side(runs, figures),
    }
    here, there = out["medians"]["in process"], out["medians"]["processes"]
    out["first_start_speedup"] = round(there["start_1_s"] / here["start_1_s"], 2)
    out["second_start_speedup"] = round(there["start_2_s"] / here["start_2_s"], 2)
    out["decode_ratio"] = round(here["decode_tokens_per_s"] / there["decode_tokens_per_s"], 3)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
