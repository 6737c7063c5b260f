"""`seftgen round`: a whole SEFT loop with real training (axolotl in .venv-train, cpu preset)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import yaml
from conftest import REPO, SERVED_NAME, run_cli

from seftgen.devices import cpu_engine_env, in_process
from seftgen.errors import UserError
from seftgen.io.store import read_run
from seftgen.rounds import load_recipe, parse_rounds, run_round
from seftgen.training.env import find_axolotl

pytestmark = pytest.mark.engine
needs_axolotl = pytest.mark.skipif(find_axolotl() is None, reason="needs axolotl's environment (make train-env)")


def tiny(recipe: str, tmp_path: Path, **changes) -> Path:
    """A shipped recipe cut down to a few prompts and tokens, and two training steps. Its engines
    are the session's (the demo model as the start policy, the test session's memory share)."""
    data = yaml.safe_load((REPO / "recipes" / f"{recipe}.yaml").read_text())
    # The first 10 demo prompts: the recipe's eval holds out 4 of them (prompt-id hash below 0.25);
    # the other 6 split 2/4 between the rounds (split_rounds), so both rounds get prompts.
    data["prompts"]["limit"] = 10
    data["sample"]["max_tokens"] = 16
    for step in data["train"]:
        step["set"] = {**step.get("set", {}), "max_steps": 2}  # after the preset's 4: the step count is not the point
    # 16-token samples all stop at max_tokens, and the untrained demo critic repeats itself: let
    # them train, as before the gates (which test_quality.py tests). The loop is tested here.
    data["quality"] = {"keep_truncated": True, "max_growth": 100.0, "max_repeated_ngrams": 1.0, "headings": False}
    data.update(changes)
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@needs_axolotl
def test_two_seft_rounds_train_and_chain(engine, tmp_path: Path) -> None:
    """Round 1 trains the reviser, revises with it and trains the policy; round 2 samples with
    round 1's trained policy and reuses the reviser. Every row names the model that wrote it."""
    shipped_eval = yaml.safe_load((REPO / "recipes" / "seft.yaml").read_text())["eval"]
    ifeval = {"benchmarks": ["ifeval"], "benchmark_prompts": 3, "benchmark_max_tokens": 16}
    recipe = tiny(
        "seft", tmp_path, revise={"reviser": {"model": "train:reviser"}, "max_tokens": 48}, eval=shipped_eval | ifeval
    )
    work = tmp_path / "w"
    code = run_cli(
        "round", recipe, "--rounds", "1-2", "--train", "--preset", "cpu", "--workdir", work, "--base-dir", REPO
    )
    assert code == 0
    one = json.loads((work / "round-1" / "round.json").read_text())
    two = json.loads((work / "round-2" / "round.json").read_text())
    reviser = one["models"]["reviser"]
    assert Path(reviser, "config.json").is_file() and one["training"]["reviser"]["losses"]
    assert one["training"]["policy"]["steps"] == 2 and one["next_policy"] == one["models"]["policy"]
    assert all(c["validated"] for c in one["configs"])
    # On the CPU each LoRA trains and merges in one process (axolotl's imports once, not twice).
    log = (work / "round-1" / "logs" / "train-policy.log").read_text()
    assert log.count("\n$ ") == 3 and "in one process" in log and "\n$ axolotl merge-lora " in log
    # Where the time went: each stage with its generation and writing, each training step.
    time = one["time"]
    assert time["sample"]["generation_s"] > 0 and time["sample"]["rows_per_s"] > 0
    assert time["revise"]["generation_s"] > 0 and time["train:policy"]["total_s"] > 0
    assert time["round"]["total_s"] >= sum(t["total_s"] for name, t in time.items() if name != "round")
    # Round 1's revisions come from the trained reviser, constrained: every reply that finished parses.
    revised = read_run(work / "round-1" / "revised")
    unparsed = revised.filter(pl.col("reason_kind") == "parse")["reason"].to_list()
    assert (revised["model"] == reviser).all() and all(r.endswith("max_tokens: truncated)") for r in unparsed)
    assert set(revised["label"]) <= {"keep", "minor", "major"}
    assert json.loads(revised["params"][0])["constrained"] is True
    # Round 2: sampled by round 1's policy, revised by the same (not retrained) reviser. Where
    # engines coexist, round 1's evaluation left that policy's engine open, so round 2's sampling
    # started none; where they run in this process (small CPUs), the judge's start closed it. The
    # reviser's engine, closed for round 1's training, starts again.
    samples2 = read_run(work / "round-2" / "samples")
    reused = not in_process(cpu_engine_env())
    assert (two["time"]["sample"]["engine_start_s"] == 0) is reused and two["time"]["revise"]["engine_start_s"] > 0
    assert two["policy"] == one["next_policy"] and (samples2["model"] == one["next_policy"]).all()
    assert two["models"]["reviser"] == reviser and "reviser" not in two["training"]
    assert Path(two["next_policy"], "config.json").is_file()
    # Fresh prompts per round (split_rounds: 2).
    assert not set(read_run(work / "round-1" / "samples")["prompt_id"]) & set(samples2["prompt_id"])
    # Held-out evaluation after each trained round, with one fixed judge (the starting policy).
    eval_ids = set(read_run(work / "eval" / "round-0" / "samples")["prompt_id"])
    trained_ids = set(read_run(work / "round-1" / "samples")["prompt_id"]) | set(samples2["prompt_id"])
    assert len(eval_ids) == 4 and not eval_ids & trained_ids
    assert "vs_previous" not in one["eval"] and set(two["eval"]) >= {"vs_start", "vs_previous"}
    for plan, name in ((one, "vs_start"), (two, "vs_start"), (two, "vs_previous")):
        summary = plan["eval"][name]
        assert summary["prompts"] == 4 and summary["judged"] == 4, summary
        assert 0 <= summary["ci95"][0] <= summary["win_rate"] <= summary["ci95"][1] <= 1
        evals = read_run(plan["eval"]["runs"][name], "evals")
        assert (evals["candidate_model"] == plan["next_policy"]).all()
        assert set(evals["prompt_id"]) == eval_ids and (evals["model"] == one["eval"]["judge"]).all()
    assert (read_run(work / "round-2" / "eval" / "vs-previous")["baseline_model"] == one["next_policy"]).all()
    assert one["time"]["eval"]["total_s"] > 0
    # IFEval on the same 3 prompts for round 0 (once), round 1 and round 2, compared prompt by prompt.
    bench = work / "eval" / "round-0" / "benchmarks" / "ifeval" / "answers"
    assert (read_run(bench)["model"] != one["next_policy"]).all()
    for plan in (one, two):
        result = plan["eval"]["benchmarks"]["ifeval"]
        assert result["round"]["prompts"] == result["start"]["prompts"] == result["vs_start"]["prompts"] == 3
        assert (read_run(Path(result["run"]) / "answers")["model"] == plan["next_policy"]).all()
    assert "vs_previous" not in one["eval"]["benchmarks"]["ifeval"]
    assert two["eval"]["benchmarks"]["ifeval"]["vs_previous"]["prompts"] == 3
    # A rerun skips what is done: no stage writes rows, no step trains again.
    assert run_cli("round", recipe, "-k", "2", "--train", "--preset", "cpu", "--workdir", work, "--base-dir", REPO) == 0
    again = json.loads((work / "round-2" / "round.json").read_text())
    assert again["training"]["policy"]["skipped"] is True


def test_without_train_the_round_stops_where_a_trained_model_is_needed(engine, tmp_path: Path) -> None:
    recipe = load_recipe(str(tiny("seft", tmp_path)), REPO)
    result = run_round(recipe, tmp_path / "w", 1)
    assert result.blocked and "training step 'reviser'" in result.blocked
    assert (
        " train " in result.commands[0]
        and result.commands[0].endswith("train-reviser.yml --launcher python")
        and (tmp_path / "w" / "round-1" / "train-reviser.yml").is_file()
    )
    assert "revise" not in result.stages
    with pytest.raises(UserError, match="trained policy is missing"):
        run_round(recipe, tmp_path / "w", 2)


def test_rounds_and_recipe_errors(tmp_path: Path, capsys) -> None:
    assert parse_rounds("1-3") == [1, 2, 3] and parse_rounds("2") == [2]
    with pytest.raises(UserError):
        parse_rounds("3-1")
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: seft\nprompts: {source: x.jsonl}\nsample: {n: 2, temprature: 0.7}\n")
    assert run_cli("round", bad, "--workdir", tmp_path) == 2
    err = capsys.readouterr().err
    assert "field 'sample.temprature'" in err and str(bad) in err


@needs_axolotl
@pytest.mark.server
def test_srt_stage2_comes_from_the_stage1_model_on_new_prompts(server, engine, tmp_path: Path) -> None:
    """Stage 1 learns from the API critic (vllm serve); with --train, the stage-1 model answers the
    stage-2 split of the prompts (never stage 1's), critiques and scores itself, and stage 2's DPO
    starts from it."""
    critic = {"model": SERVED_NAME, "engine": "openai", "base_url": server.base_url, "concurrency": 8}
    recipe = tiny(
        "srt",
        tmp_path,
        critique={"critic": critic, "max_tokens": 200},  # the feedback takes under 80 tokens
        self_critique={
            "model": {"model": "train:stage1"},
            "split": 0.5,
            "sample": {"n": 2, "temperature": 0.7, "max_tokens": 16},
            "max_tokens": 200,
        },
        eval=None,
    )
    work = tmp_path / "w"
    assert run_cli("round", recipe, "--train", "--preset", "cpu", "--workdir", work, "--base-dir", REPO) == 0
    plan = json.loads((work / "round-1" / "round.json").read_text())
    stage1 = plan["models"]["stage1"]
    assert Path(stage1, "config.json").is_file() and plan["training"]["stage1"]["losses"]
    first = set(read_run(work / "round-1" / "samples")["prompt_id"])
    second = read_run(work / "round-1" / "stage2-samples")
    critiqued = read_run(work / "round-1" / "self-critique")
    assert first and second.height and not first & set(second["prompt_id"])  # new prompts
    assert (second["model"] == stage1).all() and (critiqued["model"] == stage1).all()
    assert (critiqued["method"] == "srt-self").all() and critiqued.height == second.height
    assert critiqued.filter("kept").select((pl.col("revised_score") > pl.col("original_score")).all()).item()
    if critiqued["kept"].any():
        stage2 = yaml.safe_load((work / "round-1" / "train-stage2.yml").read_text())
        assert stage2["base_model"] == stage1 and stage2["rl"] == "dpo" and stage2["rl_beta"] == 0.01
        assert plan["next_policy"] == plan["models"]["stage2"]
    else:
        assert "stage2" in plan["skipped_training_steps"]


@needs_axolotl
def test_self_judge_round_starts_from_jsft_and_judges_with_it(engine, tmp_path: Path) -> None:
    """Round 1's policy is the JSFT model; the frozen JSFT model judges the samples (its path is
    each pair's `model`), and DPO trains the policy."""
    # Every judged pair is kept (the untrained JSFT model is rarely consistent in both orders), so DPO runs.
    judge = {"judge": {"model": "train:jsft"}, "template": "judge_general", "require_consistent": False}
    recipe = tiny("self-judge", tmp_path, eval=None, judge=judge)
    work = tmp_path / "w"
    blocked = run_round(load_recipe(str(recipe), REPO), work, 1)
    assert blocked.blocked and "training step 'jsft'" in blocked.blocked and "sample" not in blocked.stages
    assert run_cli("round", recipe, "--train", "--preset", "cpu", "--workdir", work, "--base-dir", REPO) == 0
    plan = json.loads((work / "round-1" / "round.json").read_text())
    jsft = plan["models"]["jsft"]
    assert plan["policy"] == jsft and Path(jsft, "config.json").is_file()
    assert (read_run(work / "round-1" / "samples")["model"] == jsft).all()
    pairs = read_run(work / "round-1" / "pairs")
    assert pairs.height and (pairs["model"] == jsft).all()
    # The recipe's quality gates reach the judge (16-token samples all hit max_tokens: kept here).
    assert json.loads(pairs["params"][0])["quality"]["keep_truncated"] is True
    assert not pairs["reason"].str.starts_with("truncated").any()
    assert yaml.safe_load((work / "round-1" / "train-dpo.yml").read_text())["base_model"] == jsft
    assert plan["training"]["dpo"]["losses"] and plan["next_policy"] == plan["models"]["dpo"]


@needs_axolotl
def test_verifier_round_needs_no_judge_model_and_measures_ifeval(engine, tmp_path: Path) -> None:
    """SELF-JUDGE with a verifier: best-of by IFEval's checkers (no judge model starts), SFT on the
    winners, and benchmarks only (no pairwise judge) for the trained policy and round 0: IFEval, and
    AlpacaEval judged by the starting policy (the recipe's `benchmark_judge`)."""
    ifeval = {
        "pairwise": False,
        "benchmarks": ["ifeval", "alpaca_eval"],
        "benchmark_prompts": 3,
        "benchmark_max_tokens": 16,
        "benchmark_judge": {"model": "start"},
    }
    # 16-token answers rarely follow every instruction: keep every winner, so the step trains.
    best = {"verifier": "instructions", "min_score": 0.0}
    recipe = tiny("self-judge-verifier", tmp_path, eval=ifeval, best_of=best, sample={"n": 3, "max_tokens": 16})
    work = tmp_path / "w"
    assert run_cli("round", recipe, "--train", "--preset", "cpu", "--workdir", work, "--base-dir", REPO) == 0
    plan = json.loads((work / "round-1" / "round.json").read_text())
    assert plan["time"]["best_of"]["engine_start_s"] == 0  # no model was loaded to judge
    rows = read_run(work / "round-1" / "best-of")
    samples = read_run(work / "round-1" / "samples")
    assert rows.height == 10 and (rows["verifier"] == "instructions").all() and (rows["engine"] == "none").all()
    assert samples["verifiable"].is_not_null().all()  # carried from the prompts file
    for row in rows.iter_rows(named=True):  # the winner has the top score of its prompt's samples
        scores = {k: v["score"] for k, v in json.loads(row["verification"]).items() if k != "tie_break"}
        assert len(scores) == 3 and scores[str(row["winner_idx"])] == max(scores.values())
    assert plan["training"]["policy"]["steps"] == 2 and Path(plan["next_policy"], "config.json").is_file()
    result = plan["eval"]["benchmarks"]["ifeval"]
    assert result["round"]["prompts"] == result["start"]["prompts"] == result["vs_start"]["prompts"] == 3
    assert set(plan["eval"]) == {"benchmarks"} and not (work / "eval" / "round-0" / "samples").exists()
    alpaca = plan["eval"]["benchmarks"]["alpaca_eval"]
    judged = read_run(Path(alpaca["run"]) / "scores", "alpaca_eval")
    assert judged.height == 3 and (judged["model"] == engine.model).all()  # judged by the start model
    assert (judged["policy_model"] == plan["next_policy"]).all()  # answered by the trained policy
    assert alpaca["round"]["judge"] == engine.model and alpaca["vs_start"]["prompts"] == alpaca["round"]["prompts"]
    assert (Path(alpaca["run"]) / "model_outputs.json").is_file()
