"""AlpacaEval 2, MT-Bench and Arena-Hard answers: the arithmetic against alpaca_eval's own functions,
FastChat's rating format, the official files, and whole runs with a real `vllm serve` as the judge.

Stand-in, named as such: `df_gamed.csv` (a Hub file, the length-controlled GLM's regulariser) is
replaced by a small synthetic table of the same columns; the GLM itself is alpaca_eval's.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import pytest
from conftest import SERVED_NAME, run_cli

from seftgen.evaluation import alpaca_eval, mt_bench
from seftgen.evaluation.benchmark import BENCHMARKS, arena_hard_answer, compare, round_headline
from seftgen.evaluation.stats import paired
from seftgen.io.store import load_manifest, read_run


def _completion(p_m: float) -> dict:
    """A chat completion as alpaca_eval's `logprob_parser` reads it (first token's top logprobs)."""
    top = [{"token": "m", "logprob": math.log(p_m)}, {"token": "M", "logprob": math.log(1 - p_m)}]
    return {"logprobs": {"content": [{"token": "m", "logprob": top[0]["logprob"], "top_logprobs": top}]}}


@pytest.mark.parametrize("p_m", [0.9, 0.5, 0.2, 0.01])
def test_preference_matches_alpaca_evals_parser(p_m: float) -> None:
    from alpaca_eval.completion_parsers import logprob_parser

    (official,) = logprob_parser(
        _completion(p_m), numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False
    )
    ours = alpaca_eval.preference({"m": p_m, "M": 1 - p_m}, is_swapped=False)
    assert ours == pytest.approx(official)
    # Shown the other way round, the same judgment favours the other side: 3 - x.
    assert alpaca_eval.preference({"m": p_m, "M": 1 - p_m}, is_swapped=True) == pytest.approx(3 - official)
    assert alpaca_eval.preference({"x": 1.0}, is_swapped=False) is None


def test_win_rate_matches_alpaca_eval_and_lc_needs_its_data(tmp_path: Path) -> None:
    from alpaca_eval.metrics import get_winrate

    prefs = [1.0, 2.0, 1.5, 1.8, 1.1, 1.9, 1.3, 2.0, 1.0, 1.6, 1.7, 1.2]
    rows = [
        {"source_id": str(i), "preference": p, "response": "x" * (10 + 5 * i), "reference": "y" * 40}
        for i, p in enumerate(prefs)
    ]
    out = alpaca_eval.summarize(
        [*rows, {**rows[0], "source_id": "99", "preference": None}], judge="j", gamed=tmp_path / "no.csv"
    )
    official = get_winrate([{"preference": p} for p in prefs])
    assert out["prompts"] == 12 and out["win_rate"] == pytest.approx(official["win_rate"] / 100, abs=1e-4)
    assert out["discrete_win_rate"] == pytest.approx(official["discrete_win_rate"] / 100, abs=1e-4)
    assert out["standard_error"] == pytest.approx(official["standard_error"] / 100, abs=1e-4)
    assert out["win_rate_ci95"][0] < out["win_rate"] < out["win_rate_ci95"][1]
    assert out["length_controlled_win_rate"] is None and "df_gamed.csv" in out["lc_note"]
    assert out["comparable_to_leaderboard"] is False

    # Stand-in for the Hub's df_gamed.csv: two "gamed" variants of the baseline on the same indices.
    gamed = tmp_path / "df_gamed.csv"
    lines = ["model,index,instruction_difficulty,preference,std_delta_len,not_gamed_baseline"]
    for model, sign in (("gamed_verbose", 1), ("gamed_concise", -1)):
        for i in range(len(prefs)):
            lines.append(f"{model},{i},{(i % 5 - 2) / 2},{0.5 + sign * 0.3},{sign * (0.5 + i / 10)},False")
    gamed.write_text("\n".join(lines) + "\n")
    lc = alpaca_eval.summarize(rows, judge=alpaca_eval.OFFICIAL_JUDGE, gamed=gamed)
    assert lc["lc_note"] is None and 0 < lc["length_controlled_win_rate"] < 1
    assert lc["comparable_to_leaderboard"] is True


def test_judge_prompt_is_the_official_annotators_and_order_is_seeded() -> None:
    item = next(iter(alpaca_eval.load_items().values()))
    messages = alpaca_eval.judge_messages(item, "MY {output_1} ANSWER")
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert item.instruction in user and item.reference in user and "MY {output_1} ANSWER" in user  # text stays text
    first = user.index("MY {output_1}") < user.index(item.reference)
    assert first == alpaca_eval.swapped(item.instruction)
    shares = [alpaca_eval.swapped(i.instruction) for i in alpaca_eval.load_items().values()]
    assert len(shares) == alpaca_eval.PROMPTS and 0.4 < sum(shares) / len(shares) < 0.6  # a fair coin


def test_mt_bench_prompts_ratings_and_official_file() -> None:
    questions = mt_bench.load_questions()
    assert len(questions) == mt_bench.QUESTIONS
    math_q = next(q for q in questions.values() if q.category == "math")
    writing = next(q for q in questions.values() if q.category == "writing")
    assert (
        mt_bench.judge_name(math_q, 2) == "single-math-v1-multi-turn" and mt_bench.judge_name(writing, 1) == "single-v1"
    )
    turn2 = mt_bench.judge_messages(math_q, 2, ("first {answer}", "second"))[1]["content"]
    assert math_q.references[1] in turn2 and "first {answer}" in turn2 and math_q.turns[1] in turn2
    assert "{question" not in turn2 and "{ref_answer" not in turn2
    # FastChat's two patterns, in order; a reply without a rating is not scored.
    assert mt_bench.parse_rating("Good. Rating: [[7]]") == 7.0
    assert mt_bench.parse_rating("score [8.5] overall") == 8.5 and mt_bench.parse_rating("no rating") is None
    import re

    assert re.fullmatch(mt_bench.rating_regex(40), "Helpful and correct. Rating: [[9]]")
    assert not re.fullmatch(mt_bench.rating_regex(40), "Rating: [[11]]")
    stamp = datetime(2026, 1, 1, tzinfo=UTC)
    first = [{"source_id": "81", "prompt_id": "p", "response": "a1", "created_at": stamp}]
    (line,) = mt_bench.official_answers(first, {"81": "a2"}, "my-model")
    assert line["question_id"] == 81 and line["choices"] == [{"index": 0, "turns": ["a1", "a2"]}]
    assert line["model_id"] == "my-model"


def test_arena_hard_answer_format() -> None:
    row = {
        "source_id": "2edbb5f36f5b42be",
        "prompt_id": "p1",
        "messages": [{"role": "user", "content": "Q"}],
        "response": "# Title\n\n1. one\n- two\n**bold** and __also__\n```\n# not a header\n```",
        "completion_tokens": 12,
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    line = arena_hard_answer(row, "my-model")
    assert line["uid"] == "2edbb5f36f5b42be" and line["messages"][1]["content"] == {"answer": row["response"]}
    meta = line["metadata"]
    assert meta["token_len"] == 12 and meta["header_count"]["h1"] == 1  # the one in code is not counted
    assert meta["list_count"] == {"ordered": 1, "unordered": 1} and meta["bold_count"] == {"**": 1, "__": 1}


def test_paired_values_sign_test() -> None:
    now = {str(k): 6.0 + (k % 3) for k in range(30)}
    base = {str(k): 5.0 for k in range(30)}
    out = paired(now, base)
    assert out["prompts"] == 30 and out["gained"] == 30 and out["lost"] == 0 and out["test"] == "sign test"
    assert out["difference"] == pytest.approx(2.0) and out["p"] < 1e-6 and out["ci95"][0] > 1.5


@pytest.mark.server
def test_alpaca_eval_and_mt_bench_with_vllm_serve_as_judge(server, engine, tmp_path: Path, capsys) -> None:
    """Answers from the session's engine (the demo model), judged by a real `vllm serve`."""
    judge = ("--judge", SERVED_NAME, "--judge-base-url", server.base_url)
    out = tmp_path / "alpaca"
    args = ("benchmark", "alpaca_eval", "-o", out, "--limit", "3", "--max-tokens", "16", *judge)
    assert run_cli(*args) == 0, capsys.readouterr().err
    scores = read_run(out / "scores", "alpaca_eval").sort("source_id")
    assert scores.height == 3 and sorted(scores["source_id"]) == ["0", "1", "2"]
    assert (scores["model"] == SERVED_NAME).all() and (scores["policy_model"] == engine.model).all()
    for r in scores.iter_rows(named=True):
        assert (r["preference"] is None) == (r["reason"] is not None)
        if r["preference"] is not None:  # the demo judge named m or M among its top tokens
            assert 1 <= r["preference"] <= 2
            expected = alpaca_eval.preference({"m": r["p_first"], "M": 1 - r["p_first"]}, r["swapped"])
            assert r["preference"] == pytest.approx(expected)
    summary = load_manifest(out / "scores").summary
    assert summary["judge"] == SERVED_NAME and summary["prompts"] == scores["preference"].is_not_null().sum()
    official = json.loads((out / "model_outputs.json").read_text())
    items = alpaca_eval.load_items()
    assert [o["instruction"] for o in official] == [items[k].instruction for k in ("0", "1", "2")]
    assert {o["generator"] for o in official} == {Path(engine.model).name}  # the model's folder name
    err = capsys.readouterr().err
    assert "win rate vs GPT-4 Turbo" in err
    assert run_cli(*args) == 0 and "scored 0 new answers" in capsys.readouterr().err  # resumed: nothing again

    out = tmp_path / "mt"
    args = (
        "benchmark",
        "mt_bench",
        "-o",
        out,
        "--limit",
        "2",
        "--max-tokens",
        "16",
        "--judge-max-tokens",
        "64",
        *judge,
    )
    assert run_cli(*args) == 0, capsys.readouterr().err
    rows = read_run(out / "scores", "mt_bench").sort("source_id", "turn")
    assert rows.height == 4 and rows["turn"].to_list() == [1, 2, 1, 2]
    turn2 = read_run(out / "answers-turn2", "samples")
    assert all(len(m) == 3 and m[1]["role"] == "assistant" for m in turn2["messages"])  # the first exchange
    for r in rows.iter_rows(named=True):  # constrained through vllm serve: every reply that finished parses
        assert r["score"] is not None or "truncated" in r["reason"], r["judgment"]
        assert r["score"] is None or 1 <= r["score"] <= 10
    summary = load_manifest(out / "scores").summary
    assert summary["questions"] >= 1 and summary["judge"] == SERVED_NAME
    official_file = out / "model_answer" / f"{Path(engine.model).name}.jsonl"
    answers = [json.loads(line) for line in official_file.read_text().splitlines()]
    assert [a["question_id"] for a in answers] == sorted(int(q) for q in rows["source_id"].unique())
    assert all(len(a["choices"][0]["turns"]) == 2 for a in answers)
    # A round compares two such runs prompt by prompt, and says so in one line.
    vs = compare("mt_bench", out / "scores", out / "scores")
    assert vs["prompts"] == summary["questions"] and vs["difference"] == 0 and vs["gained"] == vs["lost"] == 0
    line = round_headline("mt_bench", {"round": summary, "start": summary, "vs_start": vs})
    assert line.startswith("mean rating (1-10)") and "sign test p=1.0" in line


def test_judged_benchmark_needs_a_judge(tmp_path: Path, capsys) -> None:
    assert run_cli("benchmark", "mt_bench", "-o", tmp_path / "x") == 2
    assert "--judge" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert set(BENCHMARKS) == {"ifeval", "alpaca_eval", "mt_bench", "arena_hard"}


def test_a_recipe_names_the_judge_of_its_judged_benchmarks(tmp_path: Path, capsys) -> None:
    from pydantic import ValidationError

    from seftgen.rounds.recipe import EvalSection

    with pytest.raises(ValidationError, match=r"alpaca_eval, mt_bench need eval\.benchmark_judge"):
        EvalSection(pairwise=False, benchmarks=["alpaca_eval", "mt_bench"])
    judged = EvalSection(pairwise=False, benchmarks=["alpaca_eval"], benchmark_judge={"model": "start"})
    assert (
        judged.benchmark_judge is not None
        and judged.benchmark_judge.ref.resolve(policy="p", start="s", models={}) == "s"
    )
    # Through the CLI, a recipe without the judge is one line and exit 2, nothing written.
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "method: self-judge\npolicy: demo\nprompts: {source: data/demo/prompts.jsonl}\n"
        "eval: {pairwise: false, benchmarks: [mt_bench]}\n"
    )
    assert run_cli("round", recipe, "--workdir", tmp_path / "w", "--dry-run") == 2
    assert "need eval.benchmark_judge" in capsys.readouterr().err and not (tmp_path / "w").exists()


def test_data_parallel_answers_need_local_engines(tmp_path: Path, capsys) -> None:
    """`--data-parallel` spreads the answers over local vLLM workers (`stages/parallel.py`, tested in
    test_parallel.py); an API engine is refused with one line, before anything is written."""
    api = ("--engine", "openai", "--base-url", "http://127.0.0.1:9/v1", "-m", "served")
    assert run_cli("benchmark", "ifeval", "-o", tmp_path / "x", *api, "--data-parallel", "2") == 2
    err = capsys.readouterr().err
    assert "--data-parallel runs local vLLM engines" in err and "--concurrency" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
