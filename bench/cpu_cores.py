"""Decode tokens/s with vLLM's reserved EngineCore core and without it (raw `vllm.LLM.chat`).

vLLM's CPU worker keeps one core per rank off the model's OpenMP threads for EngineCore; on
machines of at most `seftgen.devices.SMALL_CPU` cores seftgen reserves none
(`seftgen.devices.cpu_engine_env`). This measures the choice on the machine at hand: two engines,
one after another, the same greedy requests (`ignore_eos`), in seftgen's default dtype.

    python bench/cpu_cores.py [--seqs 8 --max-tokens 64 --repeats 2]
"""

from __future__ import annotations

from typing import Any

from harness import decode_comparison, decode_parser, quiet


def main(argv: list[str] | None = None) -> dict[str, Any]:
    quiet()
    args = decode_parser(__doc__).parse_args(argv)
    from seftgen.devices import RESERVED_CPU_ENV, default_dtype, usable_cores

    variants = {f"reserved {n}": ({}, {RESERVED_CPU_ENV: str(n)}) for n in (1, 0)}
    return decode_comparison(
        "cpu cores", args, variants, "none_over_one_reserved", cores=usable_cores(), dtype=default_dtype()
    )


if __name__ == "__main__":
    main()
