"""Verifier judges: known answers for each verifier, pairs and tournaments decided by them (no
model loaded), a user's function, the LLM breaking ties, and the instruction prompt builder."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import polars as pl
import pytest

from seftgen.cli.app import main
from seftgen.errors import UserError
from seftgen.io.readers import PromptColumns, iter_prompts
from seftgen.io.schema import SAMPLES
from seftgen.io.store import read_run
from seftgen.stages import instructions
from seftgen.stages.instruct import instruct_prompts
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.verifiers import MatchVerifier, load_verifier
from tests.rows import write_run

LOWER = {"instruction_id_list": ["change_case:english_lowercase", "punctuation:no_comma"], "kwargs": [{}, {}]}
ASK = "Describe a cat. Your entire response should be in English, and in all lowercase letters. Do not use commas."


def _row(pid: str, idx: int, response: str, facts: dict | None, prompt: str = ASK, finish: str = "stop") -> dict:
    return {
        "prompt_id": pid,
        "messages": [{"role": "user", "content": prompt}],
        "source_id": pid,
        "verifiable": json.dumps(facts) if facts else None,
        "sample_idx": idx,
        "response": response,
        "prompt_tokens": 10,
        "completion_tokens": 10,
        "finish_reason": finish,
        "error": None,
    }


def _samples(path: Path, rows: list[dict]) -> Path:
    return write_run(path, SAMPLES, "sample", {"model": "hand-written"}, rows)


def test_instruction_verifier_known_answers() -> None:
    v = load_verifier("instructions")
    msgs = [{"role": "user", "content": ASK}]
    both = v.verify("the cat sleeps all day and purrs at night.", LOWER, msgs)
    assert both.score == 1.0 and both.passed
    assert both.checks == {"change_case:english_lowercase": True, "punctuation:no_comma": True}
    one = v.verify("the cat sleeps, eats and purrs.", LOWER, msgs)
    assert one.score == 0.5 and one.checks["punctuation:no_comma"] is False and not one.passed
    none = v.verify("The Cat sleeps, eats and purrs.", LOWER, msgs)
    assert none.score == 0.0
    # the same verdicts as IFEval's canonical function on the same response
    item = instructions.Item("0", ASK, tuple(LOWER["instruction_id_list"]), ({}, {}))
    assert tuple(one.checks.values()) == instructions.score(item, "the cat sleeps, eats and purrs.").strict
    missing = v.verify("anything", {}, msgs)
    assert missing.score is None and "instruction_id_list" in missing.error


def test_match_verifier_known_answers() -> None:
    m = MatchVerifier()
    assert m.verify("First 2 + 2 = 4, so the total is 1,234.", {"reference": 1234}, []).passed
    assert not m.verify("The total is 1233.", {"reference": "1234"}, []).passed
    assert m.verify("Let me think.\nParis", {"reference": "paris"}, []).passed
    assert not m.verify("It is Lyon.", {"reference": "Paris"}, []).passed
    assert m.verify("x", {}, []).score is None


def test_unknown_verifier_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown verifier"):
        load_verifier("nonsense")
    with pytest.raises(UserError, match="cannot load verifier"):
        load_verifier("no_such_module_here:verify")


def test_judge_pairs_by_verifier_without_a_model(tmp_path: Path) -> None:
    good, half, bad = "the cat sleeps and purrs.", "the cat sleeps, and purrs.", "The Cat, it sleeps."
    rows = [
        _row("p1", 0, half, LOWER),
        _row("p1", 1, good, LOWER),
        _row("p1", 2, bad, LOWER),
        _row("p2", 0, good, LOWER),
        _row("p2", 1, good.replace("purrs", "naps"), LOWER),  # both pass: a tie
        _row("p3", 0, "no facts here", None),
        _row("p3", 1, "none here either", None),
    ]
    samples = _samples(tmp_path / "s", rows)
    result = judge_pairs(samples, tmp_path / "pairs", None, verifier="instructions")
    assert result.ok
    pairs = read_run(tmp_path / "pairs").sort(["prompt_id", "idx_a", "idx_b"])
    assert pairs.height == 3 + 1 + 1
    p1 = pairs.filter(pl.col("prompt_id") == "p1")
    # every p1 pair goes to the sample with more checks passed: 1 > 0 > 2
    assert p1["chosen_idx"].to_list() == [1, 0, 1]
    assert p1["margin"].to_list() == [0.5, 0.5, 1.0]
    assert p1["kept"].all() and (p1["verifier"] == "instructions").all()
    record = json.loads(p1["verification"][0])
    assert record["0"]["score"] == 0.5 and record["1"]["checks"]["punctuation:no_comma"] is True
    assert record["tie_break"] is False
    tie = pairs.filter(pl.col("prompt_id") == "p2").row(0, named=True)
    assert not tie["kept"] and tie["reason"] == "tie"
    unverifiable = pairs.filter(pl.col("prompt_id") == "p3").row(0, named=True)
    assert not unverifiable["kept"] and "no instruction_id_list" in unverifiable["verification"]
    assert (pairs["engine"] == "none").all() and (pairs["model"] == "verifier:instructions").all()
    assert pairs["verifiable"].drop_nulls().len() == 4


def test_best_of_by_verifier_keeps_only_a_passing_winner(tmp_path: Path) -> None:
    rows = [
        _row("p1", 0, "The Cat, it sleeps.", LOWER),
        _row("p1", 1, "the cat sleeps, and purrs.", LOWER),
        _row("p1", 2, "the cat sleeps and purrs.", LOWER),
        _row("p1", 3, "The cat sleeps.", LOWER),
        _row("p2", 0, "The Cat, it sleeps.", LOWER),
        _row("p2", 1, "the cat sleeps, and purrs.", LOWER),
        _row("p3", 0, "the cat sleeps and purrs", LOWER, finish="length"),  # passes, but truncated
    ]
    samples = _samples(tmp_path / "s", rows)
    for seed in (0, 1, 2):  # whatever the bracket's draw, the top-scoring sample wins
        out = tmp_path / f"best{seed}"
        assert best_of(samples, out, None, verifier="instructions", seed=seed).ok
        best = {r["prompt_id"]: r for r in read_run(out).iter_rows(named=True)}
        assert best["p1"]["winner_idx"] == 2 and best["p1"]["kept"]
        assert best["p2"]["winner_idx"] == 1 and not best["p2"]["kept"]
        assert best["p2"]["reason"] == "verifier: best score 0.5 < 1.0 (failed punctuation:no_comma)"
        assert best["p2"]["reason_kind"] == "filter"
        assert best["p3"]["reason_kind"] == "quality" and not best["p3"]["kept"]
        assert set(json.loads(best["p1"]["verification"])) == {"0", "1", "2", "3", "tie_break"}


def test_a_users_function_through_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_checks.py").write_text(
        "def short(response, facts, messages):\n"
        "    return {'short': len(response) < 20, 'polite': 'please' in response}\n"
        "def broken(response, facts, messages):\n"
        "    raise RuntimeError('boom')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    rows = [_row("p1", 0, "please sit down now, thank you", None), _row("p1", 1, "please sit", None)]
    samples = _samples(tmp_path / "s", rows)
    main(["judge", str(samples), "-o", str(tmp_path / "pairs"), "--verifier", "my_checks:short"])
    pair = read_run(tmp_path / "pairs").row(0, named=True)
    assert pair["chosen_idx"] == 1 and pair["kept"] and pair["verifier"] == "my_checks:short"
    assert json.loads(pair["verification"])["0"]["checks"] == {"short": False, "polite": True}
    assert best_of(samples, tmp_path / "b", None, verifier="my_checks:broken").ok
    broken = read_run(tmp_path / "b").row(0, named=True)
    assert not broken["kept"] and broken["reason"] == "verifier: RuntimeError: boom"
    sys.modules.pop("my_checks", None)


def test_cli_verifier_errors_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    samples = _samples(tmp_path / "s", [_row("p1", 0, "a", LOWER), _row("p1", 1, "b", LOWER)])
    with pytest.raises(SystemExit) as done:
        main(["best-of", str(samples), "-o", str(tmp_path / "b"), "--verifier", "nope"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    assert "--verifier" in err and "Traceback" not in err
    assert not (tmp_path / "b").exists()
    with pytest.raises(SystemExit) as done:
        main(["judge", str(samples), "-o", str(tmp_path / "p"), "--tie-break"])
    assert done.value.code == 2 and "--tie-break: only breaks a verifier" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


@pytest.mark.engine
def test_tie_break_by_the_llm(engine, tmp_path: Path) -> None:
    rows = [_row("p1", 0, "the cat naps.", LOWER), _row("p1", 1, "the cat sleeps.", LOWER)]
    samples = _samples(tmp_path / "s", rows)
    assert judge_pairs(samples, tmp_path / "pairs", engine, verifier="instructions", tie_break=True).ok
    pair = read_run(tmp_path / "pairs").row(0, named=True)
    assert json.loads(pair["verification"])["tie_break"] is True
    assert pair["p_a_ab"] != pair["p_a_ba"]  # the model's two orders, not the verifier's symmetric score
    assert pair["engine"] == "vllm"


def test_instruct_builder(tmp_path: Path) -> None:
    base = tmp_path / "base.jsonl"
    items = list(instructions.load_items().values())
    base.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {"id": "a", "prompt": "Write a short note to a neighbour about a lost cat."},
                {"id": "b", "prompt": "Explain what a rainbow is."},
                {"id": "ifeval", "prompt": items[3].prompt},  # the benchmark's own: never used
            ]
        )
        + "\n"
    )
    out = tmp_path / "ip.jsonl"
    result = instruct_prompts(str(base), out, max_count=3, variants=3, seed=7)
    assert result.written == 6 and result.skipped_ifeval == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a:0", "b:0", "a:1", "b:1", "a:2", "b:2"]  # variant by variant
    _, conflicts = instructions.registry()
    for r in rows:
        assert 1 <= len(r["instruction_id_list"]) <= 3 and len(r["kwargs"]) == len(r["instruction_id_list"])
        assert r["prompt"].startswith(r["base_prompt"])
        ids = r["instruction_id_list"]
        assert not any(b in conflicts.get(a, set()) for a in ids for b in ids if a != b)
    # seeded per prompt: the same draw in another order and another run; another seed differs
    again = instruct_prompts(str(base), tmp_path / "again.jsonl", max_count=3, variants=3, seed=7)
    assert again.written == 6 and (tmp_path / "again.jsonl").read_text() == out.read_text()
    other = instruct_prompts(str(base), tmp_path / "other.jsonl", max_count=3, variants=3, seed=8)
    assert other.written == 6 and (tmp_path / "other.jsonl").read_text() != out.read_text()
    # the rows are prompts for `sample`, with their facts carried as `verifiable`
    prompts = list(iter_prompts(str(out), PromptColumns()))
    facts = json.loads(prompts[0].verifiable)
    assert facts["instruction_id_list"] == rows[0]["instruction_id_list"]
    # a checker accepts the arguments the builder drew (no exception, a verdict per instruction)
    v = load_verifier("instructions")
    for r in rows:
        check = v.verify("a reply", r, [{"role": "user", "content": r["prompt"]}])
        assert check.score is not None and len(check.checks) == len(r["instruction_id_list"])
    with pytest.raises(UserError, match="exists"):
        instruct_prompts(str(base), out)
    random.seed(1)
    state = random.getstate()
    instruct_prompts(str(base), out, force=True)
    assert random.getstate() == state  # the global random is left as it was


def test_malformed_facts_name_the_row(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "hi"})
        + "\n"
        + json.dumps({"prompt": "x", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}, {}]})
        + "\n"
    )
    with pytest.raises(UserError) as err:
        list(iter_prompts(str(bad), PromptColumns()))
    assert err.value.row == 2 and err.value.field == "kwargs"


def test_the_shipped_instruction_prompts_are_the_builders(tmp_path: Path) -> None:
    """data/demo/instruct.jsonl is what its documented command writes (nothing edited by hand)."""
    repo = Path(__file__).parents[1]
    out = tmp_path / "instruct.jsonl"
    instruct_prompts(str(repo / "data" / "demo" / "prompts.jsonl"), out, max_count=2, variants=4, seed=0)
    assert out.read_text() == (repo / "data" / "demo" / "instruct.jsonl").read_text()
