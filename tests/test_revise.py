"""`seftgen revise` on the real engine (SEFT reviser) and a real `vllm serve` (SRT critic).

The embedded 135M model writes weak text, so these tests check plumbing, parsing and filters:
every sample gets exactly one row, and every row is either kept or carries its reason.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from conftest import SERVED_NAME, check_constrained, run_cli

from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.io.schema import REVISIONS
from seftgen.io.store import load_manifest, part_files, read_run
from seftgen.stages.quality import QualityGates
from seftgen.stages.revise import revise_seft, revise_srt

pytestmark = pytest.mark.engine


def sample_keys(run: Path) -> set[tuple[str, int]]:
    return set(read_run(run).select("prompt_id", "sample_idx").iter_rows())


def test_seft_reviser_rows(engine, sample_run: Path, tmp_path: Path) -> None:
    """The untrained 135M model as reviser: constrained decoding makes its replies parse."""
    # Parsing is the point here: the short samples are truncated, so let them be targets.
    gates = QualityGates(keep_truncated=True)
    params = SamplingConfig(temperature=0.0, max_tokens=32)
    result = revise_seft(sample_run, tmp_path / "rev", engine, params=params, quality=gates)
    df = read_run(tmp_path / "rev", "revisions")
    assert df.schema == REVISIONS.schema
    assert set(df.select("prompt_id", "sample_idx").iter_rows()) == sample_keys(sample_run)
    assert (df["raw"].str.len_chars() > 0).all() and (df["method"] == "seft").all()
    assert df["kept"].mean() >= 0.95, df.filter(~df["kept"])["reason"].to_list()
    assert json.loads(df["params"][0])["constrained"] is True
    for row in df.filter(df["kept"]).iter_rows(named=True):
        assert row["label"] in ("keep", "minor", "major") and row["revised"]
        assert (row["revised"] == row["original"]) == (row["label"] == "keep")
    assert result.summary["rows"] == df.height
    # Without constraints the same model does not follow the format (why constraints are on).
    free = revise_seft(sample_run, tmp_path / "free", engine, params=params, constrain=False, quality=gates)
    assert free.summary["kept"] < result.summary["kept"]
    assert read_run(tmp_path / "free").filter(~pl.col("kept"))["reason_kind"].eq("parse").all()
    assert revise_seft(sample_run, tmp_path / "rev", engine, params=params, quality=gates).written == 0  # resumed


def test_revise_cli_needs_exactly_one_mode(sample_run: Path, tmp_path: Path, capsys) -> None:
    assert run_cli("revise", sample_run, "-o", tmp_path / "x") == 2
    assert "exactly one of --reviser" in capsys.readouterr().err


@pytest.mark.server
def test_srt_critic_filters_and_separate_scores(server, sample_run: Path, tmp_path: Path) -> None:
    critic = EngineSpec(
        model=SERVED_NAME, kind="openai", base_url=server.base_url, concurrency=8, price_in=1.0, price_out=2.0
    )
    # Budget: the feedback before the refinement (two lines and the score) took 21-73 tokens on
    # these rows (2026-12-03); 200 leaves more than twice that, and the refinement is cut (gated).
    result = revise_srt(sample_run, tmp_path / "srt", critic, max_tokens=200)
    df = read_run(tmp_path / "srt")
    # The untrained model as critic through `vllm serve`: the regex goes in the request's
    # structured_outputs field, and the replies follow the format.
    check_constrained(df)
    assert json.loads(df["params"][0])["critic"]["constrained"] is True
    assert set(df.select("prompt_id", "sample_idx").iter_rows()) == sample_keys(sample_run)
    for row in df.iter_rows(named=True):
        raw = json.loads(row["raw"])
        assert raw["critic"]  # the critic's reply is always kept for audit
        assert row["kept"] == (row["reason"] is None)
        if row["revised"] is not None:  # a refinement was parsed: both separate scoring calls ran
            assert raw["score_original"] is not None and raw["score_revised"] is not None
        if row["kept"]:
            assert row["revised_score"] >= row["original_score"]
    manifest = load_manifest(tmp_path / "srt")
    totals = manifest.totals
    assert totals["prompt_tokens"] > 0
    assert totals["cost_usd"] == pytest.approx((totals["prompt_tokens"] + 2 * totals["completion_tokens"]) / 1e6)
    assert sum(result.summary.get("not_kept_by_reason", {}).values()) + result.summary["kept"] == df.height


@pytest.mark.server
@pytest.mark.slow
def test_server_stopped_mid_run_then_rerun_completes(server, sample_run: Path, tmp_path: Path) -> None:
    """The critic's server dies part-way: failed rows are reported, not written; a rerun after the
    server is back writes exactly those, so every sample ends up once."""
    out = tmp_path / "fault"
    critic = EngineSpec(
        model=SERVED_NAME, kind="openai", base_url=server.base_url, concurrency=2, max_retries=1, timeout=20
    )
    results = {}
    worker = threading.Thread(
        target=lambda: results.setdefault("r", revise_srt(sample_run, out, critic, max_tokens=48, batch_size=1))
    )
    worker.start()
    deadline = time.time() + 300
    while time.time() < deadline and not part_files(out):
        time.sleep(0.05)
    server.stop()
    worker.join(600)
    try:
        first = results["r"]
        assert first.failures, "the server was stopped before any request could fail"
        assert load_manifest(out).status == "incomplete"
        written = sample_keys(sample_run) - {(f["prompt_id"], f["sample_idx"]) for f in first.failures}
        assert set(read_run(out).select("prompt_id", "sample_idx").iter_rows()) == written
    finally:
        server.start()
    second = revise_srt(sample_run, out, critic, max_tokens=48, batch_size=1)
    assert second.ok and second.written == len(first.failures)
    df = read_run(out)
    keys = list(df.select("prompt_id", "sample_idx").iter_rows())
    assert len(keys) == len(set(keys)) and set(keys) == sample_keys(sample_run)
    assert load_manifest(out).status == "complete"
    assert df.filter(pl.col("run_id") != df["run_id"][0]).is_empty()  # one run id across attempts
