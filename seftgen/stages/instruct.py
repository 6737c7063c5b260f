"""`seftgen instruct`: prompts with verifiable instructions, for verifier judges.

Each base prompt gets 1 to `max_count` instructions drawn from IFEval's registry (seeded per
prompt by (seed, prompt id), so a prompt's draw does not depend on the file's order) and
described by IFEval's own builders. The output is a prompts file that `sample` reads: `id`,
`prompt`, `instruction_id_list`, `kwargs` (what the `instructions` verifier checks), and
`base_prompt` and `seed` to trace each row. IFEval's own 541 prompts are refused as bases, so
the benchmark stays held out.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

from seftgen.errors import UserError
from seftgen.io.readers import PromptColumns, iter_prompts
from seftgen.stages import instructions


@dataclass(frozen=True)
class InstructResult:
    out: Path
    written: int
    skipped_ifeval: int  # base prompts that are IFEval's own (never used)
    by_instruction: dict[str, int]


def instruct_prompts(
    source: str,
    out: str | Path,
    *,
    columns: PromptColumns = PromptColumns(),
    min_count: int = 1,
    max_count: int = 2,
    ids: list[str] | None = None,
    seed: int = 0,
    variants: int = 1,
    limit: int | None = None,
    force: bool = False,
) -> InstructResult:
    """Write `out` (JSON lines): every prompt of `source` (its last user turn) with instructions;
    `variants` > 1 draws that many instruction sets per prompt (ids `ID:v`), written variant by
    variant."""
    out = Path(out)
    if out.exists() and not force:
        raise UserError("output file exists", file=out, hint="pass --force to overwrite it")
    if variants < 1:
        raise UserError(f"variants must be at least 1 (got {variants})", param="variants")
    if not 1 <= min_count <= max_count:
        raise UserError(f"need 1 <= min_count <= max_count (got {min_count}, {max_count})", param="min_count")
    known = instructions.instruction_ids()
    chosen = sorted(set(ids)) if ids else known
    if unknown := [i for i in chosen if i not in known]:
        raise UserError(f"unknown instruction id {unknown[0]!r} (see `seftgen instruct --list`)", param="ids")
    held_out = instructions.held_out_texts()
    # Variant v of every prompt, then v + 1: the first N rows (a recipe's `limit`) are N base prompts.
    by_variant: list[list[dict]] = [[] for _ in range(variants)]
    skipped, counts = 0, dict.fromkeys(chosen, 0)
    for prompt in iter_prompts(source, columns, limit):
        base = next(m["content"] for m in reversed(prompt.messages) if m["role"] == "user")
        if instructions.is_ifeval_prompt(base, held_out):
            skipped += 1
            continue
        for v in range(variants):
            rng = random.Random(f"{seed}:{prompt.prompt_id}" + (f":{v}" if v else ""))
            attached = instructions.attach(base, rng, rng.randint(min_count, max_count), chosen)
            for iid in attached.instruction_id_list:
                counts[iid] += 1
            by_variant[v].append(
                {
                    "id": prompt.source_id if variants == 1 else f"{prompt.source_id}:{v}",
                    "prompt": attached.prompt,
                    "instruction_id_list": attached.instruction_id_list,
                    "kwargs": attached.kwargs,
                    "base_prompt": base,
                    "seed": seed,
                }
            )
    rows = [row for group in by_variant for row in group]
    if not rows:
        raise UserError("no prompt left to attach instructions to", file=source)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w") as handle:  # whole file or nothing: written aside, then renamed
        for row in rows:
            handle.write(json.dumps(row) + "\n")
    os.replace(tmp, out)
    return InstructResult(out, len(rows), skipped, {k: v for k, v in counts.items() if v})
