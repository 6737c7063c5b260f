"""Quality gates and one-row failures: a generated text trains only if it passes the gates, and a
prompt too long for the model's context fails its own row, never the run."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import run_cli

from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.export.axolotl import export_axolotl
from seftgen.io.store import load_manifest, read_run
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.quality import GATES, QualityGates, repeated_ngram_share
from seftgen.stages.revise import revise_seft
from seftgen.stages.sample import sample

PROSE = (
    "Milk bread is soft because the dough is enriched with milk, butter and a little sugar. "
    "Knead it until it is smooth, let it rise once, shape the loaf, then bake it at a moderate "
    "heat until the crust turns golden and the inside sounds hollow when tapped."
)
# The degenerate revision the demo's trained reviser wrote (issue 24), in shape.
REPEATED = "Milkaemon: A bakery that sells bread.\n" + "### Response\nMilkaemon: A bakery that sells bread.\n" * 9


def test_gates_pass_ordinary_text_and_name_each_failure() -> None:
    assert GATES.check(PROSE, finish_reason="stop", original=PROSE) is None
    assert GATES.check("", finish_reason="stop").startswith("empty")
    assert GATES.check("   \n", finish_reason="stop").startswith("empty")
    assert GATES.check(PROSE, finish_reason="length").startswith("truncated")
    assert QualityGates(keep_truncated=True).check(PROSE, finish_reason="length") is None
    assert GATES.check(REPEATED, finish_reason="stop").startswith("repetition")
    leaked = "Here is a better answer.\n### Revised Response\n" + PROSE
    assert GATES.check(leaked, finish_reason="stop").startswith("heading")
    assert QualityGates(headings=False).check(leaked, finish_reason="stop") is None
    # A rewrite many times its original's length is a blow-up; a short original may grow a lot.
    assert GATES.check(PROSE * 6, original="Bread.").startswith(("blow-up", "repetition"))
    long_rewrite = " ".join(f"word{i}" for i in range(400))
    assert GATES.check(long_rewrite, original="Bake bread.").startswith("blow-up")
    assert GATES.check(PROSE, original="Bake bread.") is None
    assert repeated_ngram_share(REPEATED.split(), 4) > 0.7 > 0.15 > repeated_ngram_share(PROSE.split(), 4)


def test_gate_settings_from_mappings_and_strings() -> None:
    gates = GATES.with_settings(["max_repeated_ngrams=0.9", "headings=false"])
    assert gates.max_repeated_ngrams == 0.9 and gates.headings is False
    assert GATES.with_settings({"keep_truncated": True}).keep_truncated
    with pytest.raises(UserError, match="unknown gate setting 'max_repeat'"):
        GATES.with_settings({"max_repeat": 1})
    with pytest.raises(UserError, match="ngram: 'x' is not a int"):
        GATES.with_settings(["ngram=x"])


def long_prompt_file(tmp_path: Path, words: int) -> Path:
    path = tmp_path / "prompts.jsonl"
    rows = [
        {"id": "short-1", "prompt": "Name a fruit."},
        {"id": "huge", "prompt": " ".join(["word"] * words)},
        {"id": "short-2", "prompt": "Name a colour."},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.mark.engine
def test_an_overlong_prompt_fails_its_row_only(engine, tmp_path: Path, capsys) -> None:
    """5,000 words in a 2,048-token model: that row is a failure with its reason, the others are
    written, and the exit code says some rows failed (1)."""
    source = long_prompt_file(tmp_path, 5000)
    out = tmp_path / "samples"
    assert run_cli("sample", source, "-o", out, "--max-tokens", "8") == 1
    rows = read_run(out)
    assert sorted(rows["source_id"]) == ["short-1", "short-2"]
    manifest = load_manifest(out)
    (failure,) = manifest.failures
    assert failure["row"] == 2 and "prompt is" in failure["error"] and "context is 2048" in failure["error"]
    assert "model's context is 2048" in capsys.readouterr().err


@pytest.mark.engine
def test_a_judge_prompt_that_outgrows_the_context_fails_its_pairs_only(engine, tmp_path: Path) -> None:
    """The prompt fits for sampling, but the judge's prompt (two answers and the template) does not."""
    # As many words as leave 40 tokens to answer in: sampling fits, whatever the answers' lengths;
    # the judge's template (100+ words of its own) then cannot.
    tok = engine.tokenizer
    one = tok.apply_chat_template([{"role": "user", "content": "word"}], tokenize=False, add_generation_prompt=True)
    source = long_prompt_file(tmp_path, 2048 - 40 - len(tok.encode(one, add_special_tokens=False)) + 1)
    samples = tmp_path / "samples"
    sample(str(source), samples, engine, params=SamplingConfig(n=2, max_tokens=32))
    assert read_run(samples).height == 6
    result = judge_pairs(samples, tmp_path / "pairs", engine)
    pairs = read_run(tmp_path / "pairs")
    assert sorted(pairs["source_id"]) == ["short-1", "short-2"]
    (failure,) = result.failures
    assert "prompt is" in failure["error"] and "context is 2048" in failure["error"]


@pytest.mark.engine
def test_truncated_samples_never_become_targets(engine, tmp_path: Path) -> None:
    """Samples cut at max_tokens: judged pairs whose chosen side is truncated and truncated
    tournament winners are gated out (the reason says so), unless --keep-truncated asks for them."""
    samples = tmp_path / "samples"
    sample(str(long_prompt_file(tmp_path, 3)), samples, engine, params=SamplingConfig(n=2, max_tokens=3))
    finish = {(r["prompt_id"], r["sample_idx"]): r["finish_reason"] for r in read_run(samples).iter_rows(named=True)}
    assert list(finish.values()).count("length") >= 4  # of 6
    judge_pairs(samples, tmp_path / "pairs", engine)
    pairs = read_run(tmp_path / "pairs")
    for row in pairs.iter_rows(named=True):
        if finish[(row["prompt_id"], row["chosen_idx"])] == "length" and row["reason_kind"] != "parse":
            assert not row["kept"] and row["reason_kind"] in ("quality", "filter"), row
            assert row["reason_kind"] == "filter" or row["reason"].startswith("truncated"), row
    gated = pairs.filter(pl.col("reason_kind") == "quality")
    assert gated.height and gated["reason"].str.starts_with("truncated").all()
    manifest = load_manifest(tmp_path / "pairs")
    assert manifest.summary["gates"] == {"truncated": gated.height}
    assert manifest.config["params"]["quality"]["keep_truncated"] is False
    best_of(samples, tmp_path / "best", engine)
    for row in read_run(tmp_path / "best").iter_rows(named=True):
        truncated = finish[(row["prompt_id"], row["winner_idx"])] == "length"
        assert row["kept"] is not truncated and (row["reason"] or "").startswith("truncated") is truncated, row
    # Asked for, they are kept.
    assert run_cli("best-of", samples, "-o", tmp_path / "best-kept", "--keep-truncated") == 0
    assert read_run(tmp_path / "best-kept")["kept"].all()


@pytest.mark.engine
def test_source_ids_reach_the_export_provenance(engine, tmp_path: Path) -> None:
    source = long_prompt_file(tmp_path, 3)
    samples = tmp_path / "samples"
    sample(str(source), samples, engine, params=SamplingConfig(max_tokens=24))
    revise_seft(
        samples,
        tmp_path / "revised",
        engine,
        params=SamplingConfig(temperature=0.0, max_tokens=48),
        quality=QualityGates(keep_truncated=True, max_growth=100.0),
    )
    revised = read_run(tmp_path / "revised")
    assert sorted(revised["source_id"]) == ["huge", "short-1", "short-2"]
    assert load_manifest(tmp_path / "revised").config["quality"]["keep_truncated"] is True
    kept = revised.filter("kept")
    assert kept.height, revised["reason"].to_list()
    exported = export_axolotl(tmp_path / "revised", "sft", "demo", tmp_path / "cfg.yml", check=False)
    provenance = pl.read_parquet(exported.data_path.with_name("provenance.parquet"))
    assert sorted(provenance["source_id"]) == sorted(kept["source_id"])
