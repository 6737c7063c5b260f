"""`--batch-api`: the SRT critic and API judges through OpenAI's Files and Batches endpoints.

No provider can be reached here, so the endpoints are a STAND-IN (tests/batch_standin.py) that runs
every request on the session's real `vllm serve`: the replies are real model text, and the
stand-in counts what it was asked to run, as a provider would bill it.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
from batch_standin import BatchStandIn
from conftest import SERVED_NAME, check_constrained, run_cli
from test_revise import sample_keys

from seftgen.engines import EngineSpec
from seftgen.engines.openai_batch import BATCH_DISCOUNT, OpenAIBatchEngine
from seftgen.io.store import load_manifest, read_run
from seftgen.stages.revise import revise_srt

pytestmark = pytest.mark.server


@pytest.fixture
def standin(server) -> Iterator[BatchStandIn]:
    with BatchStandIn(server.base_url) as stand_in:
        yield stand_in


def batch_spec(standin: BatchStandIn, **kwargs) -> EngineSpec:
    return EngineSpec(
        model=SERVED_NAME, kind="openai", base_url=standin.base_url, batch_api=True, batch_poll=0.05, **kwargs
    )


def cli_args(samples: Path, out: Path, standin: BatchStandIn) -> list[str]:
    return [
        "revise", str(samples), "-o", str(out), "--critic", "openai", "--base-url", standin.base_url,
        "-m", SERVED_NAME, "--batch-api", "--batch-poll", "0.05", "--max-tokens", "48",
    ]  # fmt: skip


def test_full_run_two_phases_at_batch_price(standin: BatchStandIn, sample_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "srt"
    result = revise_srt(sample_run, out, batch_spec(standin, price_in=1.0, price_out=2.0), max_tokens=200)
    df = read_run(out)
    assert result.ok, (result.failures, standin.upstream_errors)
    assert set(df.select("prompt_id", "sample_idx").iter_rows()) == sample_keys(sample_run)
    # The same parser and filters as the online critic: constrained replies parse.
    check_constrained(df)
    assert json.loads(df["params"][0])["critic"]["constrained"] is True
    manifest = load_manifest(out)
    phases = [b["phase"] for b in manifest.batches or []]
    assert phases == ["critique", "score-original,score-refined"]
    assert all(b["status"] == "completed" and b["id"] and (out / b["file"]).is_file() for b in manifest.batches)
    # One request per row and call, each submitted once; custom_id = row key + call.
    critiques = {k for k in standin.submitted if k.endswith(":critique")}
    assert critiques == {f"{p}:{i}:critique" for p, i in sample_keys(sample_run)}
    assert set(standin.submitted.values()) == {1} and standin.submitted == standin.executed
    scored = df.filter(pl.col("revised").is_not_null())
    assert sum(1 for k in standin.submitted if ":score-" in k) == 2 * scored.height
    totals = manifest.totals
    assert totals["cost_usd"] == pytest.approx(
        BATCH_DISCOUNT * (totals["prompt_tokens"] + 2 * totals["completion_tokens"]) / 1e6
    )


def test_split_failed_and_expired_requests_retried_on_rerun(
    standin: BatchStandIn, sample_run: Path, tmp_path: Path
) -> None:
    out = tmp_path / "srt"
    keys = sample_keys(sample_run)
    first_row = read_run(sample_run).row(0, named=True)  # the first request of the first file
    standin.fail = {f"{first_row['prompt_id']}:{first_row['sample_idx']}:critique"}
    standin.expire_after = 3  # each file's fourth request expires
    engine = OpenAIBatchEngine(SERVED_NAME, base_url=standin.base_url, poll=0.05, max_requests=4)
    first = revise_srt(sample_run, out, engine, max_tokens=48)
    critique_batches = [b for b in load_manifest(out).batches or [] if b["phase"] == "critique"]
    assert [b["requests"] for b in critique_batches] == [4, 4, 1]  # 9 requests, at most 4 per file
    assert {b["status"] for b in critique_batches} == {"expired"}
    # Lost: the failed request and every expired one (critiques, and scores of rows critiqued).
    lost = {k for k in standin.submitted if not standin.executed[k]} | standin.fail
    lost_rows = {(k.split(":")[0], int(k.split(":")[1])) for k in lost}
    assert {(f["prompt_id"], f["sample_idx"]) for f in first.failures} == lost_rows
    assert sum(k.endswith(":critique") for k in lost) == 3 and load_manifest(out).status == "incomplete"
    assert read_run(out).height == len(keys) - len(lost_rows)  # failed rows are not written

    standin.fail, standin.expire_after = set(), None
    second = revise_srt(sample_run, out, engine, max_tokens=48)
    assert second.ok and second.written == len(lost_rows)
    assert set(read_run(out).select("prompt_id", "sample_idx").iter_rows()) == keys
    # Exactly the requests without a result went again; results already returned were reused.
    assert {k for k, n in standin.submitted.items() if n > 1} == lost
    assert set(standin.submitted.values()) <= {1, 2}
    assert load_manifest(out).status == "complete"


def test_killed_while_batches_run_then_resumed_pays_once(
    standin: BatchStandIn, sample_run: Path, tmp_path: Path
) -> None:
    """Ctrl-C, then SIGKILL, while the provider still holds the batch; the rerun reattaches."""
    out = tmp_path / "srt"
    standin.hold.clear()  # batches stay in progress
    for sig in (signal.SIGINT, signal.SIGKILL):
        with (tmp_path / f"{sig.name}.log").open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "seftgen.cli.app", *cli_args(sample_run, out, standin)], stdout=log, stderr=log
            )
            polls, deadline = standin.polls, time.time() + 120
            while time.time() < deadline and standin.polls <= polls + 1:  # it polls the held batch
                time.sleep(0.05)
            assert any(b.get("id") for b in load_manifest(out).batches or [])  # recorded before the wait
            proc.send_signal(sig)
            code = proc.wait(60)
        assert code == (130 if sig == signal.SIGINT else -signal.SIGKILL), (tmp_path / f"{sig.name}.log").read_text()
        assert len(standin.created()) == 1  # the second attempt reattached instead of submitting
    ctrl_c = (tmp_path / "SIGINT.log").read_text()
    assert "Traceback" not in ctrl_c and "interrupted: finished parts are kept" in ctrl_c
    standin.hold.set()
    assert run_cli(*cli_args(sample_run, out, standin)) == 0
    assert set(read_run(out).select("prompt_id", "sample_idx").iter_rows()) == sample_keys(sample_run)
    assert set(standin.submitted.values()) == {1}  # nothing paid twice
    assert load_manifest(out).status == "complete"


def test_api_judges_through_batches(standin: BatchStandIn, sample_run: Path, tmp_path: Path) -> None:
    base = ["-m", SERVED_NAME, "--engine", "openai", "--base-url", standin.base_url, "--batch-api"]
    for verdict in ("text", "logprobs"):
        out = tmp_path / verdict
        assert run_cli("judge", sample_run, "-o", out, "--verdict", verdict, "--batch-poll", "0.05", *base) == 0
        df = read_run(out)
        assert df.height == 9 and load_manifest(out).batches
        assert df.filter(pl.col("score_a").is_null())["reason_kind"].eq("parse").all()
    if (logprob := read_run(tmp_path / "logprobs")).height:
        assert logprob["score_a"].null_count() == 0  # logprobs come back through the batch outputs too
    ids = {k for k in standin.submitted if k.endswith(":verdict-ab") or k.endswith(":verdict-ba")}
    assert len(ids) == 18 and set(standin.submitted.values()) == {2}  # both runs, same ids


def test_batch_api_needs_an_api_engine(sample_run: Path, tmp_path: Path, capsys) -> None:
    assert run_cli("judge", sample_run, "-o", tmp_path / "x", "--batch-api") == 2
    err = capsys.readouterr().err
    assert "--batch-api: the Batch API is for API engines: set --engine openai and --base-url" in err
    assert not (tmp_path / "x").exists()
