"""Decode tokens/s of the same model in bfloat16 and float32 on this CPU (raw `vllm.LLM.chat`).

seftgen's local engines default to float32 on CPUs without bf16 instructions
(`seftgen.devices.default_dtype`): there PyTorch emulates bf16 arithmetic. This measures the
choice on the machine at hand: two engines, one after another, the same greedy requests
(`ignore_eos`, so both sides decode the same number of tokens).

    python bench/cpu_dtype.py [--seqs 8 --max-tokens 64 --repeats 2]
"""

from __future__ import annotations

from typing import Any

from harness import decode_comparison, decode_parser, quiet


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    args = decode_parser(__doc__).parse_args(argv)
    from seftgen.devices import cpu_has_bf16, default_dtype

    variants = {dtype: ({"dtype": dtype}, {}) for dtype in ("bfloat16", "float32")}
    return decode_comparison(
        "cpu dtype", args, variants, "float32_over_bfloat16", cpu_has_bf16=cpu_has_bf16(), default_dtype=default_dtype()
    )


if __name__ == "__main__":
    main()
