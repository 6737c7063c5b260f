"""Small hand-written runs, written through the real RunStore, for tests that need known content
(the 135M demo model's replies rarely pass the parsers, so kept rows must come from here)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from seftgen.io.schema import BEST_OF, PAIRS, REVISIONS, Table
from seftgen.io.store import RunStore

PROMPT = [{"role": "user", "content": "What is the boiling point of water at sea level?"}]
GOOD = "Water boils at 100 degrees Celsius at sea level."
WEAK = "It boils when it is hot."


def prov(store: RunStore) -> dict[str, Any]:
    return {
        "model": "hand-written",
        "engine": "none",
        "template_hash": "t",
        "params": "{}",
        "seed": 0,
        "run_id": store.run_id,
        "created_at": datetime.now(UTC),
    }


def write_run(path: Path, table: Table, stage: str, config: dict[str, Any], rows: list[dict[str, Any]]) -> Path:
    store = RunStore.open(path, table, stage, config)
    store.write([{**prov(store), **r} for r in rows])
    store.finish({})
    return path


def revisions(path: Path, method: str) -> Path:
    base = {
        "messages": PROMPT,
        "method": method,
        "original": WEAK,
        "revised": GOOD,
        "similarity": 0.3,
        "raw": "",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "policy_model": "p",
        "source_run_id": "s",
    }
    if method == "srt":
        base |= {
            "feedback": "Weaknesses: vague.\nOverall Score: [[3]]\nSuggestions: give the temperature.",
            "critic_score": 3,
            "original_score": 3,
            "revised_score": 8,
        }
    rows = [
        {**base, "prompt_id": "p1", "sample_idx": 0, "label": "major" if method == "seft" else None, "kept": True},
        {
            **base,
            "prompt_id": "p1",
            "sample_idx": 1,
            "label": "keep" if method == "seft" else None,
            "kept": True,
            "revised": WEAK,
            **({"revised_score": 7} if method == "srt" else {}),  # p1's other refinement, scored lower
        },
        {
            **base,
            "prompt_id": "p2",
            "sample_idx": 0,
            "kept": False,
            "reason": "no '### Label' section",
            "reason_kind": "parse",
        },
    ]
    if method == "srt":  # a second prompt: its one refinement is its stage-1 target
        rows.append({**base, "prompt_id": "p3", "sample_idx": 0, "label": None, "kept": True})
    return write_run(
        path, REVISIONS, "revise", {"method": method, "template": "srt_critic" if method == "srt" else "reviser"}, rows
    )


def pairs(path: Path) -> Path:
    rows = [
        {
            "prompt_id": "p1",
            "messages": PROMPT,
            "idx_a": 0,
            "idx_b": 1,
            "p_a_ab": 0.8,
            "p_a_ba": 0.7,
            "score_a": 0.75,
            "consistent": True,
            "margin": 0.5,
            "chosen": GOOD,
            "rejected": WEAK,
            "chosen_idx": 0,
            "kept": True,
            "policy_model": "p",
            "source_run_id": "s",
        }
    ]
    return write_run(path, PAIRS, "judge", {}, rows)


def best_of(path: Path) -> Path:
    rows = [
        {
            "prompt_id": "p1",
            "messages": PROMPT,
            "winner_idx": 0,
            "response": GOOD,
            "num_candidates": 2,
            "judgments": 1,
            "bracket": "[]",
            "policy_model": "p",
            "source_run_id": "s",
        }
    ]
    return write_run(path, BEST_OF, "best-of", {}, rows)
