"""Reviser and judge-augmented SFT data from preference records (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import DEMO_PREFS, run_cli

from seftgen.errors import UserError
from seftgen.io.preferences import columns_for, iter_preferences
from seftgen.io.store import read_run
from seftgen.stages.build_data import RevisionLabels, build_jsft_data, build_reviser_data
from seftgen.stages.parsing import parse_reviser
from seftgen.templates import load_template


def by_source(df, source_id):
    return df.filter(df["source_id"] == source_id)


def test_reviser_examples_are_graded_by_rating_gap(tmp_path: Path) -> None:
    build_reviser_data(str(DEMO_PREFS), tmp_path / "rd")
    df = read_run(tmp_path / "rd")
    # pref-005: ratings 9 (best), 2 (gap 7 -> major), 7 (gap 2 -> minor); best >= 8 -> keep.
    assert sorted(by_source(df, "pref-005")["kind"].to_list()) == ["keep", "major", "minor"]
    # pref-001: 9 and 2 -> keep + major.
    assert sorted(by_source(df, "pref-001")["kind"].to_list()) == ["keep", "major"]
    # Thresholds are configurable: with a major gap of 8 the gap-7 pair becomes minor.
    build_reviser_data(str(DEMO_PREFS), tmp_path / "rd8", labels=RevisionLabels(major_gap=8))
    assert sorted(by_source(read_run(tmp_path / "rd8"), "pref-005")["kind"].to_list()) == ["keep", "minor", "minor"]


def test_reviser_targets_round_trip_through_the_revise_parser(tmp_path: Path) -> None:
    build_reviser_data(str(DEMO_PREFS), tmp_path / "rd")
    tpl = load_template("reviser")
    labels = tpl.get("labels")
    for messages, kind in read_run(tmp_path / "rd").select("messages", "kind").iter_rows():
        assert [m["role"] for m in messages] == ["user", "assistant"]
        original = messages[0]["content"].split("### Response\n", 1)[1].split("\n\nReply in exactly")[0]
        reply = parse_reviser(tpl.output, messages[1]["content"], labels, original)
        assert reply.error is None and reply.label == kind
        assert (reply.revised == original) == (kind == "keep")


def test_jsft_judge_examples_in_both_orders(tmp_path: Path) -> None:
    build_jsft_data(str(DEMO_PREFS), tmp_path / "jd")
    df = read_run(tmp_path / "jd")
    rec = by_source(df, "pref-000")  # ratings 9, 2, 3: best vs each -> 2 pairs x 2 orders + 1 SFT
    assert sorted(rec["kind"].to_list()) == ["judge"] * 4 + ["sft"]
    judges = [m for m, k in rec.select("messages", "kind").iter_rows() if k == "judge"]
    answers = [m[1]["content"] for m in judges]
    assert answers.count("The better response is Response A") == 2 == answers.count("The better response is Response B")
    best = "15% of 80 is 12, because 0.15 x 80 = 12."
    for m in judges:  # the best response's position decides the answer
        first_is_best = m[0]["content"].index(best) < m[0]["content"].index("### Response B")
        assert m[1]["content"].endswith(" A" if first_is_best else " B")


def test_principle_template_needs_rationales(tmp_path: Path) -> None:
    src = tmp_path / "r.jsonl"
    src.write_text(
        "\n".join(
            json.dumps(r)
            for r in [
                {
                    "prompt": "Is it safe to eat raw chicken?",
                    "rationale": "Response A warns about salmonella; B does not.",
                    "responses": [
                        {"text": "No: raw chicken can carry salmonella.", "rating": 9},
                        {"text": "Yes.", "rating": 1},
                    ],
                },
                {"prompt": "Hi", "responses": [{"text": "Hello!", "rating": 8}, {"text": "...", "rating": 2}]},
            ]
        )
        + "\n"
    )
    result = build_jsft_data(str(src), tmp_path / "h", template="judge_harmlessness", include_sft=False)
    df = read_run(tmp_path / "h")
    assert df.height == 2 and result.summary["records_skipped"] == {
        "template needs a rationale and the record has none": 1
    }
    target = df["messages"][0].to_list()[1]["content"]
    assert target.startswith("Response A warns") and target.endswith("Therefore, the safer response is Response A")


def test_presets_for_ultrafeedback_and_nectar(tmp_path: Path) -> None:
    uf = tmp_path / "uf.jsonl"
    uf.write_text(
        json.dumps(
            {
                "instruction": "Say hi",
                "completions": [{"response": "Hi there!", "overall_score": 9}, {"response": "no", "overall_score": 3}],
            }
        )
        + "\n"
    )
    (rec,) = iter_preferences(str(uf), columns_for("ultrafeedback"))
    assert rec.messages == [{"role": "user", "content": "Say hi"}] and rec.ranked()[0].text == "Hi there!"
    nectar = tmp_path / "n.jsonl"
    nectar.write_text(
        json.dumps(
            {
                "prompt": "\n\nHuman: Name a color\n\nAssistant:",
                "answers": [
                    {"answer": "Maybe.", "rank": 3},
                    {"answer": "Blue.", "rank": 1},
                    {"answer": "Blue is a color.", "rank": 2},
                ],
            }
        )
        + "\n"
    )
    (rec,) = iter_preferences(str(nectar), columns_for("nectar"))
    assert rec.messages == [{"role": "user", "content": "Name a color"}]
    assert [(r.text, r.rating) for r in rec.ranked()] == [("Blue.", 3), ("Blue is a color.", 2), ("Maybe.", 1)]


def test_bad_preference_record_is_named(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"prompt": "x", "responses": [{"text": "a", "rating": 5}, {"text": "b", "rating": "high"}]}) + "\n"
    )
    with pytest.raises(UserError, match=r"row 1: field 'responses\[1\]\.rating': rating must be a number"):
        list(iter_preferences(str(bad), columns_for("seftgen")))
    assert run_cli("build-reviser-data", bad, "-o", tmp_path / "o") == 2
    assert "rating must be a number" in capsys.readouterr().err and not (tmp_path / "o").exists()
