"""Tokens/s of the SEFT reviser stage (`seftgen revise --reviser`) against raw `vllm.LLM.chat`.

Both sides send the same rendered reviser prompts with the same sampling and the same
structured-output regex (the template's declared format) to one engine. seftgen works in
several batches (`--batch-size`) and parses, diffs and writes each reply; raw vLLM gets all the
prompts in one call. The prefix cache is emptied before every run, as each row is new to a stage.

    python bench/reviser.py [--samples 32 --max-tokens 96 --batch-size 8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

from harness import add_common, alternate, cold, demo_samples, engine_from_args, quiet, raw_chat, result


def main(argv: list[str] | None = None, engine: Any = None) -> dict[str, Any]:
    """Run the benchmark; `engine` reuses a loaded one (the test suite's), else one is loaded."""
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=32, help="policy samples to revise (one per demo prompt)")
    parser.add_argument("--max-tokens", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=8)
    add_common(parser)
    args = parser.parse_args(argv)

    from vllm import SamplingParams
    from vllm.sampling_params import StructuredOutputsParams

    from seftgen.engines.base import SamplingConfig
    from seftgen.io.store import read_run, scan_run
    from seftgen.stages.revise import revise_seft
    from seftgen.templates import instruction_text, load_template

    engine = engine or engine_from_args(args.model)
    tmp = tempfile.TemporaryDirectory()
    samples = demo_samples(engine, Path(tmp.name) / "samples", args.samples, 1, 96)
    tpl = load_template("reviser")
    labels = list(tpl.get("labels"))
    assert tpl.output is not None
    conversations = [
        [
            {
                "role": "user",
                "content": tpl.render(
                    "user", instruction=instruction_text(r["messages"]), response=r["response"], labels=labels
                ),
            }
        ]
        for r in read_run(samples).iter_rows(named=True)
    ]
    params = SamplingConfig(temperature=0.0, max_tokens=args.max_tokens)
    raw_params = SamplingParams(
        temperature=0.0,
        max_tokens=args.max_tokens,
        structured_outputs=StructuredOutputsParams(regex=tpl.output.regex()),
    )
    runs = iter(range(args.repeats))

    raw = raw_chat(engine, conversations, raw_params)

    def ours() -> float:
        out = Path(tmp.name) / f"revised-{next(runs)}"
        revise_seft(samples, out, engine, params=params, batch_size=args.batch_size)
        return scan_run(out).select("completion_tokens").sum().collect().item()

    raw()  # warm-up: grammar compilation and the first large batch are not what is measured
    raw_rates, our_rates = alternate(args.repeats, raw, ours, before=cold(engine))
    out = result("revise (reviser)", vars(args), "tokens/s", ("raw LLM.chat", raw_rates), ("revise_seft()", our_rates))
    tmp.cleanup()
    return out


if __name__ == "__main__":
    main()
