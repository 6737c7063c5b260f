"""SRT stage 2 and inference: the stage-1 model critiques itself in its own training layout, the
paper's strict filter, and one self-refinement at inference (`sample --self-refine`)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import DEMO_PROMPTS, check_constrained, run_cli

from seftgen.export.axolotl import export_axolotl
from seftgen.io.store import load_manifest, read_run
from seftgen.stages.parsing import parse_critic, parse_score
from seftgen.stages.revise import revise_self, score_filter, stage1_prefix
from seftgen.templates import load_template

FIELDS = ["weaknesses", "score", "suggestions"]
REPLY = (
    "Weaknesses: It names the city but gives no context.\nOverall Score: [[4]]\n"
    "Suggestions: Say which country it is the capital of.\n\n### Improved Response\nParis is the capital of France."
)


def test_self_critique_replies_parse_with_the_critics_own_format() -> None:
    fmt = load_template("srt_self").output
    assert fmt is not None and fmt.regex() == load_template("srt_critic").output.regex()  # declared once
    reply = parse_critic(fmt, REPLY, FIELDS)
    assert reply.error is None and reply.score == 4 and reply.refinement == "Paris is the capital of France."
    assert reply.feedback.startswith("Weaknesses:") and reply.feedback.endswith("capital of.")
    for broken in (
        REPLY.replace("Overall Score: [[4]]\n", ""),  # no score: the paper's rule 1
        REPLY.replace("Suggestions: Say which country it is the capital of.\n", ""),
        REPLY.split("\n\n### Improved Response")[0],  # no refinement
        REPLY.replace("[[4]]", "[[11]]"),
    ):
        assert parse_critic(fmt, broken, FIELDS).error
    scorer = load_template("srt_self_score").output
    assert parse_score(scorer, "Weaknesses: Too short.\nOverall Score: [[7]]") == 7
    assert parse_score(scorer, "Weaknesses: Too short.") is None


@pytest.mark.parametrize(
    ("original", "revised", "strict", "kept"),
    [(5, 6, True, True), (5, 5, True, False), (6, 5, True, False), (5, 5, False, True), (6, 5, False, False)],
)
def test_stage2_keeps_only_strictly_higher_refinements(original: int, revised: int, strict: bool, kept: bool) -> None:
    assert (score_filter(original, revised, strict=strict) is None) is kept


def test_the_self_critique_prompt_is_the_stage1_target_up_to_the_feedback() -> None:
    layout = load_template("srt_critic")
    prefix = stage1_prefix(layout, "Paris.")
    assert prefix == "Paris.\n\n### Feedback\n"
    feedback, refinement = REPLY.split("\n\n### Improved Response\n")
    full = layout.render("target", response="Paris.", feedback=feedback, refinement=refinement)
    assert full == prefix + REPLY  # stage 1 trains exactly what stage 2 asks the model to continue


def test_revise_self_with_a_real_model(engine, sample_run: Path, tmp_path: Path) -> None:
    """The demo model as 'stage-1 model': constrained, every reply parses; a row is kept exactly
    when its refinement scored strictly higher, in separate calls."""
    out = tmp_path / "self"
    result = revise_self(sample_run, out, engine, max_tokens=200)
    df = read_run(out)
    assert result.ok and df.height == 9 and (df["method"] == "srt-self").all()
    assert json.loads(df["params"][0])["critic"]["constrained"] is True
    check_constrained(df, min_parsed=0.3)  # 5 of 9 parsed on 2026-12-07; the rest ran to max_tokens
    for row in df.iter_rows(named=True):
        raw = json.loads(row["raw"])
        if row["revised"] is not None:
            assert raw["score_original"] and raw["score_revised"]  # two separate scoring calls
            scored = row["original_score"] is not None and row["revised_score"] is not None
            higher = scored and row["revised_score"] > row["original_score"]
            assert row["kept"] == (higher and row["reason_kind"] != "quality"), row["reason"]
    assert load_manifest(out).kind.name == "revisions_srt_self"
    if df["kept"].any():
        exported = export_axolotl(out, "dpo", "demo", tmp_path / "stage2.yml", check=False)
        assert exported.variant == "srt-stage2" and exported.config["rl_beta"] == 0.01
        data = pl.read_parquet(exported.data_path)
        assert data["chosen"].to_list() == df.filter("kept")["revised"].to_list()


def test_sample_self_refine_writes_both_answers(engine, tmp_path: Path) -> None:
    out = tmp_path / "refined"
    args = ["sample", DEMO_PROMPTS, "-o", out, "--limit", "3", "--max-tokens", "24", "--temperature", "0"]
    assert run_cli(*args, "--self-refine") == 0
    df = read_run(out)
    assert df.height == 3 and df["initial"].null_count() == 0 and df["refined"].null_count() == 0
    assert df["refined"].sum() >= 2  # constrained: the demo model's refinements parse
    for row in df.iter_rows(named=True):
        if row["refined"]:
            assert row["feedback"].startswith("Weaknesses:") and row["response"]
        else:
            assert row["response"] == row["initial"]
    assert load_manifest(out).config["self_refine"]["template"] == "srt_self"
    plain = tmp_path / "plain"
    assert run_cli(*args[:3], plain, *args[4:]) == 0
    assert read_run(plain)["initial"].null_count() == 3 and read_run(plain)["refined"].null_count() == 3
