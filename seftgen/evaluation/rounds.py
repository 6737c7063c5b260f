"""What `seftgen report` shows, read from a round workdir: each round's plan (round.json) with
its stage summaries and evaluation, and the rows a researcher browses (revisions, judged pairs,
evaluations), with a word-level diff of every revision."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.errors import UserError
from seftgen.evaluation.benchmark import get
from seftgen.io.store import is_run, load_manifest, read_run
from seftgen.io.workdir import RoundPlan, Workdir

MAX_ROWS_PER_RUN = 400  # the page stays small; the run folders hold everything
_TOKENS = re.compile(r"\s+|[^\s]+")


@dataclass
class RoundView:
    round: int
    dir: Path
    plan: RoundPlan

    def stage(self, name: str) -> dict[str, Any]:
        return self.plan.stages.get(name) or {}

    def eval_summary(self, name: str) -> dict[str, Any] | None:
        summary = (self.plan.eval or {}).get(name)
        return summary if summary and "win_rate" in summary else None

    def benchmark(self, name: str) -> dict[str, Any] | None:
        """The round's result on a benchmark (`round`, `start`, `vs_start`, ...), if it ran one."""
        return ((self.plan.eval or {}).get("benchmarks") or {}).get(name)


@dataclass
class RoundsView:
    root: Path
    rounds: list[RoundView] = field(default_factory=list)


def load_workdir(root: str | Path) -> RoundsView:
    work = Workdir.at(root)
    ks = work.rounds()
    if not ks:
        raise UserError("no round.json in round-*/ folders: not a `seftgen round` workdir", file=root)
    return RoundsView(work.root, [RoundView(k, work.round_dir(k), work.read_plan(k)) for k in ks])


def word_diff(before: str | None, after: str | None) -> list[list[str]]:
    """[op, text] segments of a word-level diff: op is '=' (same), '-' (only before), '+' (only
    after). Whitespace stays with the words, so joining the '=' and '+' texts gives `after`."""
    a, b = _TOKENS.findall(before or ""), _TOKENS.findall(after or "")
    out: list[list[str]] = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        if op == "equal":
            out.append(["=", "".join(a[i1:i2])])
            continue
        if i2 > i1:
            out.append(["-", "".join(a[i1:i2])])
        if j2 > j1:
            out.append(["+", "".join(b[j1:j2])])
    return out


def _rows(run: Path) -> pl.DataFrame | None:
    if not is_run(run):
        return None
    return read_run(run).head(MAX_ROWS_PER_RUN)


def _text(messages: list[dict[str, str]] | None) -> str:
    turns = [m for m in messages or [] if m["role"] == "user"]
    return turns[-1]["content"] if turns else ""


def browse_rows(work: RoundsView) -> list[dict[str, Any]]:
    """Rows of every round's revisions, pairs and evaluations, in one flat shape for the page."""
    out: list[dict[str, Any]] = []
    for rnd in work.rounds:
        for name, info in rnd.plan.stages.items():
            run = Path(info["path"])
            table = load_manifest(run).table if is_run(run) else None
            df = _rows(run) if table in ("revisions", "pairs") else None
            if df is None:
                continue
            for r in df.iter_rows(named=True):
                base = {
                    "round": rnd.round,
                    "table": f"{name} ({table})",
                    "prompt_id": r["prompt_id"],
                    "prompt": _text(r["messages"]),
                    "kept": r.get("kept"),
                    "reason": r.get("reason"),
                }
                if table == "revisions":
                    out.append(
                        base
                        | {
                            "label": r.get("label"),
                            "diff": word_diff(r["original"], r["revised"]) if r["revised"] is not None else None,
                            "original": r["original"],
                            "feedback": r.get("feedback"),
                            "scores": [r.get("critic_score"), r.get("original_score"), r.get("revised_score")],
                        }
                    )
                else:
                    out.append(
                        base
                        | {
                            "label": "consistent" if r["consistent"] else "inconsistent",
                            "first": r["chosen"] if r["chosen_idx"] == r["idx_a"] else r["rejected"],
                            "second": r["rejected"] if r["chosen_idx"] == r["idx_a"] else r["chosen"],
                            "probs": [r["p_a_ab"], r["p_a_ba"]],
                            "winner": "first" if r["chosen_idx"] == r["idx_a"] else "second",
                        }
                    )
        for name, run in ((rnd.plan.eval or {}).get("runs") or {}).items():
            df = _rows(Path(run))
            for r in df.iter_rows(named=True) if df is not None else ():
                out.append(
                    {
                        "round": rnd.round,
                        "table": f"eval {name.replace('_', ' ')}",
                        "prompt_id": r["prompt_id"],
                        "prompt": _text(r["messages"]),
                        "kept": None,
                        "reason": r["reason"],
                        "label": r["outcome"],
                        "first": r["candidate"],
                        "second": r["baseline"],
                        "probs": [r["p_c_first"], r["p_c_second"]],
                        "winner": {"win": "first", "loss": "second"}.get(r["outcome"] or ""),
                    }
                )
    out += _benchmark_rows(work)
    return out


def _benchmark_rows(work: RoundsView) -> list[dict[str, Any]]:
    """Each benchmark answer (round 0's once, then each round's) with its verdict: IFEval's per
    instruction, AlpacaEval's against the reference, MT-Bench's rating per turn with the judgment."""
    workdir = Workdir.at(work.root)
    runs: dict[tuple[int, str], Path] = {}
    for rnd in work.rounds:
        for name in (rnd.plan.eval or {}).get("benchmarks") or {}:
            runs.setdefault((0, name), workdir.benchmark_dir(0, name) / "scores")
            runs[(rnd.round, name)] = workdir.benchmark_dir(rnd.round, name) / "scores"
    out: list[dict[str, Any]] = []
    for (k, name), run in sorted(runs.items()):
        if is_run(run):  # a benchmark's scores run, read once by its own rows
            rows = get(name).page_rows(run)[:MAX_ROWS_PER_RUN]
            out += [{"reason": None, **row, "round": k, "table": name} for row in rows]
    return out
