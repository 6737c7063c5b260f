"""`vllm serve` on a small CPU: the model in EngineCore against vLLM's worker process (raw HTTP).

`vllm serve` always runs EngineCore in a process of its own (AsyncLLM's client is a multiprocess
one, `v1/engine/async_llm.py`). On the CPU, vLLM's platform then forces the MP executor, a third
process for the worker, unless `VLLM_ENABLE_V1_MULTIPROCESSING=0` (`platforms/cpu.py`: it forces
"mp" only when that variable is "1"); at "0" the model runs in EngineCore. This measures the two
layouts on the machine at hand, alternating, each a fresh server on loopback: the time from the
command to a server that lists its model, and decode tokens/s of the same concurrent greedy
requests (`ignore_eos`) in seftgen's default dtype. The test suite's server uses "0" on small CPUs.

    python bench/serve_layout.py [--seqs 8 --max-tokens 64 --repeats 2]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from harness import by_side, decode_parser, free_port, quiet, wait_until_serving

SIDES = {"worker process": "1", "model in EngineCore": "0"}  # VLLM_ENABLE_V1_MULTIPROCESSING


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=600) as resp:
        return json.loads(resp.read())


def one_server(model: str, value: str, seqs: int, max_tokens: int) -> dict[str, float]:
    """Start `vllm serve` with VLLM_ENABLE_V1_MULTIPROCESSING=value, time it, decode, stop it."""
    from seftgen.devices import IN_PROCESS_ENV, RESERVED_CPU_ENV, default_dtype

    port = free_port()
    cmd = [
        *(sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", model),
        *("--served-model-name", "m", "--host", "127.0.0.1", "--port", str(port), "--dtype", default_dtype()),
        *("--max-model-len", "2048", "--enforce-eager", "--gpu-memory-utilization", "0.1"),
    ]
    # Every core decodes on both sides (seftgen's small-CPU default, bench/cpu_cores.py).
    env = os.environ | {IN_PROCESS_ENV: value, RESERVED_CPU_ENV: "0"}
    began = time.monotonic()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_until_serving(f"http://127.0.0.1:{port}/v1", poll=0.2, timeout=2, proc=proc)
        ready = time.monotonic() - began
        url = f"http://127.0.0.1:{port}/v1/chat/completions"

        def ask(i: int, tokens: int = max_tokens) -> int:
            body = {
                "model": "m",
                "messages": [{"role": "user", "content": f"Tell a long story about dragon {i}."}],
                "max_tokens": tokens,
                "temperature": 0.0,
                "ignore_eos": True,
            }
            return _post(url, body)["usage"]["completion_tokens"]

        ask(0, 4)  # warm-up
        with ThreadPoolExecutor(seqs) as pool:
            t = time.perf_counter()
            tokens = sum(pool.map(ask, range(seqs)))
            rate = tokens / (time.perf_counter() - t)
        return {"ready_s": ready, "decode_tokens_per_s": rate}
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(60)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    parser = decode_parser(__doc__)
    args = parser.parse_args(argv)
    from seftgen.devices import usable_cores
    from seftgen.models import resolve_model

    model = resolve_model(args.model)
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    for _ in range(args.repeats):
        for side, value in SIDES.items():
            runs[side].append(one_server(model, value, args.seqs, args.max_tokens))

    figures = ("ready_s", "decode_tokens_per_s")
    out = {
        "benchmark": "vllm serve layout",
        "workload": vars(args) | {"cores": usable_cores()},
        **by_side(runs, figures),
    }
    here, there = out["medians"]["model in EngineCore"], out["medians"]["worker process"]
    out["ready_speedup"] = round(there["ready_s"] / here["ready_s"], 2)
    out["decode_ratio"] = round(here["decode_tokens_per_s"] / there["decode_tokens_per_s"], 3)
    print(json.dumps(out))
    return out


if __name__ == "__main__":
    main()
