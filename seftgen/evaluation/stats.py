"""The statistics of a pairwise evaluation: outcomes, win rate, its interval, length buckets.

Pure functions over plain values, so they are tested on hand-made verdicts with known answers.
A tie counts half a win (the AlpacaEval / MT-Bench convention). The interval is a percentile
bootstrap over prompts: prompts are the unit that varies between evaluation sets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from seftgen.choices import Outcome

POINTS = {Outcome.WIN: 1.0, Outcome.TIE: 0.5, Outcome.LOSS: 0.0}
# Candidate length / baseline length: below the first bound the candidate is shorter, above the
# second it is longer; in between the two are "similar" (within 20%).
LENGTH_BOUNDS = (1 / 1.2, 1.2)


def outcome(score: float, consistent: bool, tie_margin: float) -> Outcome:
    """The candidate's outcome from its judge score (both orders averaged). A tie when the two
    orders disagree (the verdict depends on position) or the margin is below `tie_margin`."""
    if not consistent or abs(2 * score - 1) < tie_margin or score == 0.5:
        return Outcome.TIE
    return Outcome.WIN if score > 0.5 else Outcome.LOSS


def mirror(o: Outcome) -> Outcome:
    """The same verdict seen from the other side."""
    return {Outcome.WIN: Outcome.LOSS, Outcome.LOSS: Outcome.WIN}.get(o, Outcome.TIE)


def win_rate(outcomes: Sequence[str]) -> float | None:
    if not outcomes:
        return None
    return sum(POINTS[Outcome(o)] for o in outcomes) / len(outcomes)


def mean_interval(
    values: Sequence[float], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the mean of `values` (seeded: the same values give the
    same interval). Paired differences give a paired bootstrap."""
    if not len(values):
        return None
    points = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    means = points[rng.integers(0, len(points), size=(resamples, len(points)))].mean(axis=1)
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def bootstrap_interval(
    outcomes: Sequence[str], *, level: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the win rate (seeded: the same rows give the same interval)."""
    points = [POINTS[Outcome(o)] for o in outcomes]
    return mean_interval(points, level=level, resamples=resamples, seed=seed)


def length_bucket(candidate_tokens: int, baseline_tokens: int) -> str:
    ratio = candidate_tokens / max(baseline_tokens, 1)
    if ratio < LENGTH_BOUNDS[0]:
        return "candidate shorter"
    if ratio > LENGTH_BOUNDS[1]:
        return "candidate longer"
    return "similar length"


def summarize(rows: Sequence[dict[str, Any]], *, seed: int = 0) -> dict[str, Any]:
    """The evaluation summary over rows with `outcome`, `consistent`, `candidate_tokens` and
    `baseline_tokens` (rows without an outcome, where the judge gave no answer, are left out)."""
    judged = [r for r in rows if r.get("outcome")]
    outcomes = [r["outcome"] for r in judged]
    if not judged:
        return {"prompts": len(rows), "judged": 0}
    low, high = bootstrap_interval(outcomes, seed=seed) or (None, None)
    counts = {o.value: outcomes.count(o.value) for o in Outcome}
    buckets: dict[str, list[str]] = {}
    for r in judged:
        buckets.setdefault(length_bucket(r["candidate_tokens"] or 0, r["baseline_tokens"] or 0), []).append(
            r["outcome"]
        )
    rate = win_rate(outcomes)
    return {
        "prompts": len(rows),
        "judged": len(judged),
        "win_rate": round(rate, 4) if rate is not None else None,
        "ci95": [round(low, 4), round(high, 4)] if low is not None and high is not None else None,
        **{f"{k}s" if k != "loss" else "losses": v for k, v in counts.items()},
        "position_consistency": round(sum(bool(r["consistent"]) for r in judged) / len(judged), 4),
        "mean_tokens": {
            "candidate": round(sum(r["candidate_tokens"] or 0 for r in judged) / len(judged), 1),
            "baseline": round(sum(r["baseline_tokens"] or 0 for r in judged) / len(judged), 1),
        },
        "by_length": {
            name: {"prompts": len(b), "win_rate": round(win_rate(b) or 0.0, 4)} for name, b in sorted(buckets.items())
        },
    }


def headline(summary: dict[str, Any]) -> str:
    """One line of an evaluation summary, for consoles and cards."""
    if summary.get("skipped"):
        return f"skipped: {summary['skipped']}"
    if not summary.get("judged"):
        return f"no verdicts ({summary.get('prompts', 0)} prompts)"
    low, high = summary["ci95"]
    return (
        f"win rate {summary['win_rate']:.3f} [{low:.3f}, {high:.3f}] over {summary['judged']} prompts "
        f"({summary['wins']} W / {summary['losses']} L / {summary['ties']} T), "
        f"position consistency {summary['position_consistency']:.2f}"
    )


def interval_rounded(values: Sequence[float], *, seed: int = 0, digits: int = 4) -> list[float] | None:
    """`mean_interval` as a JSON-ready pair, rounded (summaries and `round.json`)."""
    bounds = mean_interval(values, seed=seed)
    return None if bounds is None else [round(bounds[0], digits), round(bounds[1], digits)]


def sign_test(better: int, worse: int) -> float:
    """Two-sided exact sign test: under no effect, the prompts that differ split as a fair coin.
    On pass/fail values this is McNemar's exact test."""
    n = better + worse
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(better, worse) + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired(now: dict[str, float], base: dict[str, float], *, seed: int = 0) -> dict[str, Any]:
    """Per-prompt values of a round against a baseline's, on their common prompts: the mean
    difference with a paired bootstrap interval, the prompts that got better (`gained`) and worse
    (`lost`), and the exact sign test on those (McNemar's exact test when values are 0/1)."""
    keys = [k for k in now if k in base]
    if not keys:
        return {"prompts": 0}
    diffs = [now[k] - base[k] for k in keys]
    gained, lost = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
    binary = all(v in (0, 1) for k in keys for v in (now[k], base[k]))
    return {
        "prompts": len(keys),
        "difference": round(sum(diffs) / len(diffs), 4),
        "ci95": interval_rounded(diffs, seed=seed),
        "gained": gained,
        "lost": lost,
        "p": float(f"{sign_test(gained, lost):.3g}"),
        "test": "McNemar exact" if binary else "sign test",
    }
