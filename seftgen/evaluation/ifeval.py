"""IFEval (Zhou et al., 2023): 541 prompts with verifiable instructions, scored offline.

The prompts, the canonical checkers and their offline set-up are in `stages/instructions.py`
(the verifier judges use them too); this module scores runs with them.

Scores: prompt-level (every instruction of the prompt followed) and instruction-level accuracy,
strict and loose (the loose check also tries the response without its first or last line and
without `*` markup), accuracy per instruction id, and a seeded bootstrap interval over prompts.
Two runs on the same prompts compare prompt by prompt (`paired`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from seftgen.evaluation.stats import mean_interval
from seftgen.stages.instructions import (  # noqa: F401 - re-exported: the benchmark's data and checks
    DATA_DIST,
    INSTALL_HINT,
    LICENCE,
    PROMPTS,
    Item,
    Score,
    checkers,
    load_items,
    prompts_file,
    score,
)


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(scores: Sequence[Score], *, seed: int = 0) -> dict[str, Any]:
    """IFEval's four accuracies, each prompt-level one with a 95% bootstrap interval over
    prompts, and accuracy per instruction id."""
    per_id: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for s in scores:
        for inst, st, lo in zip(s.instruction_ids, s.strict, s.loose, strict=True):
            per_id[inst].append((st, lo))
    out: dict[str, Any] = {"prompts": len(scores), "instructions": sum(len(s.strict) for s in scores)}
    for mode in ("strict", "loose"):
        prompt_flags = [getattr(s, f"prompt_{mode}") for s in scores]
        out[f"prompt_{mode}"] = _share(prompt_flags)
        out[f"prompt_{mode}_ci95"] = _interval(prompt_flags, seed)
        out[f"instruction_{mode}"] = _share([f for s in scores for f in getattr(s, mode)])
    out["by_instruction"] = {
        inst: {"n": len(v), "strict": _share([a for a, _ in v]), "loose": _share([b for _, b in v])}
        for inst, v in sorted(per_id.items())
    }
    return out


def _interval(values: Sequence[float], seed: int) -> list[float] | None:
    bounds = mean_interval(values, seed=seed)
    return None if bounds is None else [round(bounds[0], 4), round(bounds[1], 4)]


def paired(scores: Iterable[Score], baseline: Iterable[Score], *, seed: int = 0) -> dict[str, Any]:
    """Prompt-level strict accuracy of `scores` against `baseline` on their common prompts: the
    difference, a paired bootstrap interval of it, and McNemar's exact test (the prompts that
    only one side follows decide it)."""
    base = {s.key: s.prompt_strict for s in baseline}
    pairs = [(s.prompt_strict, base[s.key]) for s in scores if s.key in base]
    if not pairs:
        return {"prompts": 0}
    gained = sum(1 for a, b in pairs if a and not b)
    lost = sum(1 for a, b in pairs if b and not a)
    diffs = [int(a) - int(b) for a, b in pairs]
    return {
        "prompts": len(pairs),
        "difference": round(sum(diffs) / len(diffs), 4),
        "ci95": _interval(diffs, seed),
        "gained": gained,
        "lost": lost,
        "mcnemar_p": float(f"{mcnemar_exact(gained, lost):.3g}"),
    }


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no effect, the b + c discordant prompts split as a
    fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def headline(summary: dict[str, Any]) -> str:
    low, high = summary.get("prompt_strict_ci95") or (None, None)
    return (
        f"IFEval prompt-level strict {summary['prompt_strict']} [{low}, {high}], loose {summary['prompt_loose']}; "
        f"instruction-level strict {summary['instruction_strict']}, loose {summary['instruction_loose']} "
        f"({summary['prompts']} prompts)"
    )


def round_headline(result: dict[str, Any]) -> str:
    """One line of a round's benchmark result (`round.json` eval.benchmarks.ifeval)."""
    now, start, vs = result["round"], result["start"], result["vs_start"]
    low, high = now.get("prompt_strict_ci95") or (None, None)
    line = f"prompt-level strict {now['prompt_strict']} [{low}, {high}] vs round 0 {start['prompt_strict']}"
    if vs.get("prompts"):
        d_low, d_high = vs["ci95"]
        line += (
            f": {vs['difference']:+.4f} [{d_low:+.4f}, {d_high:+.4f}] over {vs['prompts']} prompts "
            f"({vs['gained']} gained, {vs['lost']} lost, McNemar p={vs['mcnemar_p']})"
        )
    return line


if __name__ == "__main__":  # `make model`: fetch the prompts and write punkt once, at install time
    checkers()
    print(f"IFEval: {len(load_items())} prompts in {prompts_file()}")
