"""The rounds at a glance, one PNG (matplotlib, no display needed): win rate per round with its
95% interval, what the data stages kept and labelled, score distributions, and the judges'
position consistency."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from seftgen.evaluation.benchmark import get
from seftgen.evaluation.rounds import RoundsView, RoundView
from seftgen.io.store import is_run, read_run

# The per-row value whose spread each model stage shows (first present column wins).
SCORE_COLUMNS = {"refined": "revised_score", "revised": "similarity", "pairs": "margin"}


def _outcomes(rnd: RoundView) -> dict[str, int]:
    """Kept / labelled rows of the round's model stages (labels when the stage has them)."""
    counts: dict[str, int] = {}
    for name, info in rnd.plan.stages.items():
        summary = info.get("summary") or {}
        if "labels" in summary:
            counts |= {f"{name}: {k}": v for k, v in summary["labels"].items()}
        elif "kept" in summary and name != "samples":
            rows = summary.get("rows", summary.get("pairs", 0)) or 0
            counts |= {f"{name}: kept": summary["kept"], f"{name}: not kept": rows - summary["kept"]}
    return counts


def _scores(rnd: RoundView) -> tuple[str, list[float]] | None:
    for folder, column in SCORE_COLUMNS.items():
        run = rnd.dir / folder
        if is_run(run):
            values = read_run(run).get_column(column).drop_nulls().cast(pl.Float64).to_list()
            if values:
                return f"{folder}: {column}", values
    return None


def draw(work: RoundsView, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in CI
    import matplotlib.pyplot as plt

    rounds = [r.round for r in work.rounds]
    fig, axes = plt.subplots(2, 3, figsize=(17, 8), constrained_layout=True)
    fig.suptitle(f"seftgen rounds: {work.root.name}")

    ax = axes[0][0]
    for name, marker in (("vs_start", "o"), ("vs_previous", "s")):
        points = [(r.round, s) for r in work.rounds if (s := r.eval_summary(name))]
        if points:
            xs = [x for x, _ in points]
            ys = [s["win_rate"] for _, s in points]
            err = [[s["win_rate"] - s["ci95"][0] for _, s in points], [s["ci95"][1] - s["win_rate"] for _, s in points]]
            ax.errorbar(xs, ys, yerr=err, marker=marker, capsize=4, label=name.replace("_", " "))
    ax.axhline(0.5, color="grey", linestyle="--", linewidth=1)
    ax.set(title="Win rate of the trained policy (95% CI)", xlabel="round", ylabel="win rate (ties half)", ylim=(0, 1))
    ax.set_xticks(rounds)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.6, "no evaluation yet (recipe `eval`, round --train)", ha="center", transform=ax.transAxes)

    ax = axes[0][1]
    outcomes = {r.round: _outcomes(r) for r in work.rounds}
    keys = sorted({k for c in outcomes.values() for k in c})
    bottom = [0] * len(rounds)
    for key in keys:
        heights = [outcomes[r].get(key, 0) for r in rounds]
        ax.bar(rounds, heights, bottom=bottom, label=key)
        bottom = [b + h for b, h in zip(bottom, heights, strict=True)]
    ax.set(title="Rows kept and labelled per round", xlabel="round", ylabel="rows")
    ax.set_xticks(rounds)
    if keys:
        ax.legend(fontsize="small")

    ax = axes[1][0]
    scored = [(r.round, s) for r in work.rounds if (s := _scores(r))]
    if scored:
        ax.boxplot([v for _, (_, v) in scored], positions=[x for x, _ in scored])
        ax.set_ylabel(", ".join(sorted({name for _, (name, _) in scored})))
    ax.set(title="Score distribution per round", xlabel="round")

    ax = axes[1][1]
    series: dict[str, list[tuple[int, float]]] = {}
    for r in work.rounds:
        for name, info in r.plan.stages.items():
            if (pc := (info.get("summary") or {}).get("position_consistency")) is not None:
                series.setdefault(f"{name} judge", []).append((r.round, pc))
        for name in ("vs_start", "vs_previous"):
            if s := r.eval_summary(name):
                series.setdefault(f"eval judge ({name.replace('_', ' ')})", []).append(
                    (r.round, s["position_consistency"])
                )
    for name, points in series.items():
        ax.plot([x for x, _ in points], [y for _, y in points], marker="o", label=name)
    ax.set(title="Judge position consistency", xlabel="round", ylabel="both orders agree", ylim=(0, 1.05))
    ax.set_xticks(rounds)
    if series:
        ax.legend(fontsize="small")

    names = list(dict.fromkeys(n for r in work.rounds for n in (r.plan.eval or {}).get("benchmarks") or {}))
    for ax, name in zip((axes[0][2], axes[1][2]), names or ["ifeval"], strict=False):
        _benchmark_panel(ax, work, name)
    if len(names) < 2:
        axes[1][2].axis("off")

    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _benchmark_panel(ax: Any, work: RoundsView, name: str) -> None:
    """A benchmark's headline per round, round 0 (the starting policy) included, with 95% intervals."""
    bench = get(name)
    metrics = [(bench.metric, bench.label)]
    if name == "ifeval":
        metrics = [("prompt_strict", "prompt-level strict"), ("prompt_loose", "prompt-level loose")]
    results = [(r.round, b) for r in work.rounds if (b := r.benchmark(name))]
    if results:
        points = [(0, results[0][1]["start"])] + [(k, b["round"]) for k, b in results]
        for (metric, label), marker in zip(metrics, ("o", "s"), strict=False):
            shown = [(k, s[metric], s.get(f"{metric}_ci95")) for k, s in points if s.get(metric) is not None]
            err = [[y - (b or (y, y))[0] for _, y, b in shown], [(b or (y, y))[1] - y for _, y, b in shown]]
            ax.errorbar(
                [k for k, _, _ in shown], [y for _, y, _ in shown], yerr=err, marker=marker, capsize=4, label=label
            )
        ax.set_xticks([k for k, _ in points])
        ax.legend(fontsize="small")
    else:
        ax.text(0.5, 0.6, f"no {name} yet (recipe eval.benchmarks)", ha="center", transform=ax.transAxes)
    top = 10.5 if name == "mt_bench" else 1
    ylabel = "accuracy" if name == "ifeval" else bench.label
    ax.set(title=f"{name} of the trained policy (95% CI; 0 = start)", xlabel="round", ylabel=ylabel, ylim=(0, top))


def figure_numbers(work: RoundsView) -> list[dict[str, Any]]:
    """The numbers the figure plots, per round (for the page's summary table and the card)."""
    return [
        {
            "round": r.round,
            "vs_start": r.eval_summary("vs_start"),
            "vs_previous": r.eval_summary("vs_previous"),
            "benchmarks": (r.plan.eval or {}).get("benchmarks") or {},
        }
        for r in work.rounds
    ]
