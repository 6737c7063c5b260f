"""SELF-JUDGE principle judges as the reference code does them: decision first, one JSFT pair per
principle from UltraFeedback-style aspect ratings, a majority verdict over principles, and JSFT
loss only after the decision prefix (checked through axolotl's own preprocessing)."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import REPO, run_cli
from test_export import AXOLOTL, _prepared, _preprocess

from seftgen.choices import ErrorKind
from seftgen.export.axolotl import export_axolotl
from seftgen.io.preferences import columns_for, iter_preferences
from seftgen.io.store import read_run
from seftgen.stages.build_data import build_jsft_data, principle_pair
from seftgen.stages.judge import judge_pairs
from seftgen.stages.judging import PairScore, combine, majority
from seftgen.templates import load_template

UF = str(REPO / "data" / "demo" / "ultrafeedback.jsonl")
PRINCIPLES = ["helpfulness", "honesty", "instruction_following", "truthfulness"]
TEMPLATES = [f"principle_{p}" for p in PRINCIPLES]


def scores(*values: float) -> list[PairScore]:
    return [combine(v, v) for v in values]


@pytest.mark.parametrize(
    ("values", "a_wins"),
    [
        ([0.9, 0.8, 0.7, 0.2], True),  # 3 of 4
        ([0.95, 0.45, 0.45, 0.45], False),  # 1 of 4 loses, though the mean (0.575) favours a
        ([0.7, 0.6, 0.4, 0.45], True),  # 2-2: the mean (0.5375) breaks the tie
        ([0.6, 0.6, 0.3, 0.3], False),  # 2-2, mean 0.45
        ([0.51, 0.51, 0.1], True),  # 2 of 3, mean 0.37
        ([0.5, 0.5], False),  # no principle prefers a, mean exactly 0.5: b (the reference's else)
    ],
)
def test_majority_over_principles_ties_by_mean(values: list[float], a_wins: bool) -> None:
    names = PRINCIPLES[: len(values)]
    verdict = majority(scores(*values), names)
    assert verdict.a_wins is a_wins
    assert verdict.score_a == pytest.approx(sum(values) / len(values))
    assert [p["principle"] for p in verdict.principles] == names
    assert [p["score_a"] for p in verdict.principles] == pytest.approx(values)


def test_a_failed_principle_fails_the_pair() -> None:
    failed = PairScore.failed(ErrorKind.ENGINE, "judge call failed")
    verdict = majority([*scores(0.9), failed], PRINCIPLES[:2])
    assert verdict.error_kind == ErrorKind.ENGINE and len(verdict.principles) == 2


def test_ultrafeedback_preset_ranks_by_mean_aspect_rating_ties_to_longer(tmp_path: Path) -> None:
    record = {
        "instruction": "Say hi.",
        "completions": [
            {"response": "Hi.", "annotations": {"helpfulness": {"Rating": "4"}, "honesty": {"Rating": "N/A"}}},
            {"response": "Hello there!", "annotations": {"helpfulness": {"Rating": "3"}, "honesty": {"Rating": "5"}}},
            {"response": "Hey.", "annotations": {"helpfulness": {"Rating": "2"}, "honesty": {"Rating": "3"}}},
        ],
    }
    path = tmp_path / "uf.jsonl"
    path.write_text(json.dumps(record) + "\n")
    (rec,) = iter_preferences(str(path), columns_for("ultrafeedback"))
    # Means: 4 (N/A skipped), 4, 2.5; the tie goes to the longer response.
    assert [r.text for r in rec.ranked()] == ["Hello there!", "Hi.", "Hey."]
    assert principle_pair(rec, "honesty")[0].text == "Hello there!"  # 5 > 3; "Hi." has no honesty rating
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(record | {"completions": [{"response": "x", "annotations": {"honesty": {"Rating": "?"}}}]})
    )
    assert run_cli("build-jsft-data", bad, "-o", tmp_path / "out", "--preset", "ultrafeedback") == 2
    assert not (tmp_path / "out").exists()


def reference_target(sentence: str, answer: str, why_a: str, why_b: str) -> str:
    """The reference's layout (preprocess.py, uf_jsft_pr): prefix sentence + "\\n", the decision
    "\\nDecision: Response" + " A" + "\\n", then "\\nEvaluation of Response X:" + " " + rationale for
    A and B; no end-of-sequence token of its own."""
    return (
        f"{sentence}\n"
        + "\nDecision: Response"
        + answer
        + "\n"
        + "\nEvaluation of Response A:"
        + " "
        + why_a
        + "\nEvaluation of Response B:"
        + " "
        + why_b
    )


def test_principle_jsft_rows_follow_the_reference_layout(tmp_path: Path) -> None:
    result = build_jsft_data(UF, tmp_path / "jsft", columns=columns_for("ultrafeedback"), template=TEMPLATES)
    df = read_run(tmp_path / "jsft")
    records = list(iter_preferences(UF, columns_for("ultrafeedback")))
    assert result.summary["by_kind"]["sft"] == len(records)
    for principle, template in zip(PRINCIPLES, TEMPLATES, strict=True):
        tpl = load_template(template)
        prefix = tpl.get("assistant_prefix")
        sentence = prefix.removesuffix("\n\nDecision: Response")
        judged = df.filter(pl.col("kind") == f"judge:{principle}")
        assert judged.height % 2 == 0 and judged.height > 0
        by_record = {r.record_id: r for r in records}
        for row in judged.iter_rows(named=True):
            system, user, assistant = row["messages"]
            assert system == {"role": "system", "content": tpl.get("system")}
            assert assistant["content"][: row["target_from"]] == prefix  # the loss starts at " A"/" B"
            better, worse = principle_pair(by_record[row["source_id"]], principle)
            a_first = user["content"].index(better.text) < user["content"].index(worse.text)
            why_better, why_worse = better.aspects[principle].rationale, worse.aspects[principle].rationale
            expected = (
                reference_target(sentence, " A", why_better, why_worse)
                if a_first
                else reference_target(sentence, " B", why_worse, why_better)
            )
            assert assistant["content"] == expected
        # Both orders of each pair: one says A, the other B.
        assert sorted(a["content"][len(prefix) : len(prefix) + 2] for a in judged["messages"].list.last()) == sorted(
            [" A", " B"] * (judged.height // 2)
        )


@pytest.mark.axolotl
@pytest.mark.skipif(AXOLOTL is None, reason="needs axolotl's environment (make train-env)")
def test_principle_jsft_trains_only_after_the_decision_prefix(demo_model, tmp_path: Path) -> None:
    """Token for token through axolotl's own preprocessing: the system, user and prefix tokens are
    masked; the answer token and the evaluations carry the loss; SFT examples train their whole
    assistant turn."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model)
    build_jsft_data(UF, tmp_path / "jsft", columns=columns_for("ultrafeedback"), template=TEMPLATES[:1], limit=3)
    rows = read_run(tmp_path / "jsft")
    exported = export_axolotl(tmp_path / "jsft", "sft", "demo", tmp_path / "jsft.yml", preset="cpu")
    assert exported.config["datasets"][0]["message_field_training_detail"] == "train_detail"
    _preprocess(exported.config_path)
    ds = _prepared(exported.config)
    assert ds.num_rows == rows.height
    checked = 0
    for row in rows.iter_rows(named=True):
        convo = row["messages"]
        full = tok.apply_chat_template(convo, tokenize=False)
        ex = next(e for e in ds if tok.decode(e["input_ids"]) == full)  # axolotl keeps the chat template's text
        trained = [t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != -100]
        target = convo[-1]["content"]
        start = row["target_from"] or 0
        expected = tok(target[start:], add_special_tokens=False)["input_ids"]
        # What carries the loss: exactly the target after the prefix, then the turn's end token.
        assert trained[: len(expected)] == expected, (tok.decode(trained), target[start:])
        assert tok.decode(trained[len(expected) :]).strip() in {tok.eos_token, "<|im_end|>"}
        if row["target_from"] is not None:
            assert tok.decode(trained).startswith(" A") or tok.decode(trained).startswith(" B")
            assert "Decision: Response" not in tok.decode(trained)
            checked += 1
    assert checked == 2 * 3  # one principle pair per record, both orders


@pytest.mark.usefixtures("engine")
def test_panel_of_principle_judges_stores_each_principle(engine, sample_run: Path, tmp_path: Path) -> None:
    judge_pairs(sample_run, tmp_path / "panel", engine, template=TEMPLATES)
    df = read_run(tmp_path / "panel")
    assert df.height == 9
    for row in df.iter_rows(named=True):
        per = row["principle_scores"]
        assert [p["principle"] for p in per] == PRINCIPLES
        values = [p["score_a"] for p in per]
        assert row["score_a"] == pytest.approx(sum(values) / 4)
        wins = sum(v > 0.5 for v in values)
        a_wins = wins > 2 or (wins == 2 and row["score_a"] > 0.5)
        assert row["chosen_idx"] == (row["idx_a"] if a_wins else row["idx_b"])
    single = judge_pairs(sample_run, tmp_path / "one", engine, template=TEMPLATES[0])
    assert single.written == 9 and read_run(tmp_path / "one")["principle_scores"].null_count() == 9
