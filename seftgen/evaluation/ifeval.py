"""IFEval (Zhou et al., 2023): 541 prompts with verifiable instructions, scored offline.

The prompts, the canonical checkers and their offline set-up are in `stages/instructions.py`
(the verifier judges use them too); this module scores runs with them.

Scores: prompt-level (every instruction of the prompt followed) and instruction-level accuracy,
strict and loose (the loose check also tries the response without its first or last line and
without `*` markup), accuracy per instruction id, and a seeded bootstrap interval over prompts.
Two runs on the same prompts compare prompt by prompt (`paired`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from seftgen.evaluation.stats import interval_rounded
from seftgen.evaluation.stats import paired as stats_paired
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
        out[f"prompt_{mode}_ci95"] = interval_rounded(prompt_flags, seed=seed)
        out[f"instruction_{mode}"] = _share([f for s in scores for f in getattr(s, mode)])
    out["by_instruction"] = {
        inst: {"n": len(v), "strict": _share([a for a, _ in v]), "loose": _share([b for _, b in v])}
        for inst, v in sorted(per_id.items())
    }
    return out


def paired(scores: Iterable[Score], baseline: Iterable[Score], *, seed: int = 0) -> dict[str, Any]:
    """Prompt-level strict accuracy of `scores` against `baseline` on their common prompts: the
    difference, a paired bootstrap interval of it, and McNemar's exact test (the prompts that
    only one side follows decide it)."""
    now = {s.key: float(s.prompt_strict) for s in scores}
    return stats_paired(now, {s.key: float(s.prompt_strict) for s in baseline}, seed=seed)


def headline(summary: dict[str, Any]) -> str:
    low, high = summary.get("prompt_strict_ci95") or (None, None)
    return (
        f"IFEval prompt-level strict {summary['prompt_strict']} [{low}, {high}], loose {summary['prompt_loose']}; "
        f"instruction-level strict {summary['instruction_strict']}, loose {summary['instruction_loose']} "
        f"({summary['prompts']} prompts)"
    )
