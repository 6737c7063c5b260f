"""Decode tokens/s of the same model in bfloat16 and float32 on this CPU (raw `vllm.LLM.chat`).

seftgen's local engines default to float32 on CPUs without bf16 instructions
(`seftgen.devices.default_dtype`): there PyTorch emulates bf16 arithmetic. This measures the
choice on the machine at hand: two engines, one after another, the same greedy requests
(`ignore_eos`, so both sides decode the same number of tokens).

    python bench/cpu_dtype.py [--seqs 8 --max-tokens 64 --repeats 2]
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from harness import decode_parser, decode_rates, quiet


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    args = decode_parser(__doc__).parse_args(argv)
    from seftgen.devices import cpu_has_bf16, default_dtype

    variants = {dtype: ({"dtype": dtype}, {}) for dtype in ("bfloat16", "float32")}
    rates = decode_rates(variants, model=args.model, seqs=args.seqs, max_tokens=args.max_tokens, repeats=args.repeats)
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
