"""Run folder mechanics without a model: shards, dedup on write, settings checks."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import polars as pl
import pytest
import rows

from seftgen.choices import RunStatus
from seftgen.errors import UserError
from seftgen.io.manifest import MANIFEST_DOCS, Manifest
from seftgen.io.schema import PAIRS, schema_markdown
from seftgen.io.store import RunStore, Shard, load_manifest, read_run
from seftgen.provenance import shard_of
from seftgen.stages.runner import iter_run_rows


def many_pairs(path: Path, n: int = 40) -> Path:
    base = read_run(rows.pairs(path.with_name("one"))).row(0, named=True)
    store = RunStore.open(path, PAIRS, "judge", {})
    store.write(
        [{**base, "prompt_id": f"{i * 2654435761 % 2**32:08x}{i:08x}", "run_id": store.run_id} for i in range(n)]
    )
    return path


def test_shards_partition_a_run(tmp_path: Path) -> None:
    run = many_pairs(tmp_path / "p")
    whole = {r["prompt_id"] for r in iter_run_rows(run)}
    parts = [{r["prompt_id"] for r in iter_run_rows(run, Shard(i, 3))} for i in range(3)]
    assert set().union(*parts) == whole and sum(map(len, parts)) == len(whole) == 40
    assert all(shard_of(p, 3) == i for i, part in enumerate(parts) for p in part)


def test_write_skips_keys_already_written(tmp_path: Path) -> None:
    run = many_pairs(tmp_path / "p", 5)
    store = RunStore.open(run, PAIRS, "judge", {})
    again = read_run(run).to_dicts()
    assert store.write(again) == 0 and read_run(run).height == 5


def test_parts_from_an_older_version_read_with_the_new_columns_null(tmp_path: Path) -> None:
    """A run resumed by a newer seftgen: its older parts lack columns added since."""
    run = many_pairs(tmp_path / "p", 3)
    old = tmp_path / "p" / "parts" / "part-00000-000099-abcdef.parquet"
    newer = read_run(run)
    newer.head(1).with_columns(prompt_id=pl.lit("ffffffff00000000")).drop("principle_scores").write_parquet(old)
    both = read_run(run)
    assert both.height == 4 and both.schema == newer.schema
    assert both.filter(pl.col("prompt_id") == "ffffffff00000000")["principle_scores"].to_list() == [None]


def test_settings_and_shard_must_match_to_resume(tmp_path: Path) -> None:
    run = many_pairs(tmp_path / "p", 2)
    with pytest.raises(UserError, match=r"settings differ.*min_margin"):
        RunStore.open(run, PAIRS, "judge", {"min_margin": 0.2})
    with pytest.raises(UserError, match="shard"):
        RunStore.open(run, PAIRS, "judge", {}, shard=Shard(1, 2))
    with pytest.raises(UserError, match="already holds a run"):
        RunStore.open(run, PAIRS, "judge", {}, resume=False)
    with pytest.raises(UserError, match=r"`shard`: must look like i/N"):
        Shard.parse("2")
    with pytest.raises(UserError, match=r"need 0 <= i < N"):
        Shard.parse("3/3")


def test_an_interrupted_attempt_is_closed_with_its_counters(tmp_path: Path) -> None:
    base = read_run(rows.pairs(tmp_path / "one")).row(0, named=True)
    run = tmp_path / "p"
    with pytest.raises(KeyboardInterrupt), RunStore.open(run, PAIRS, "judge", {}) as store:
        store.write([base])
        store.add_totals({"requests": 3})
        raise KeyboardInterrupt
    manifest = load_manifest(run)
    attempt = manifest.attempts[-1]
    assert manifest.status == RunStatus.INTERRUPTED == attempt.status
    assert attempt.finished_at and attempt.error == "interrupted by signal" and attempt.totals == {"requests": 3}
    assert manifest.rows == 1 and manifest.totals == {"requests": 3}


def test_an_attempt_killed_without_notice_is_marked_on_the_next(tmp_path: Path) -> None:
    run = tmp_path / "p"
    RunStore.open(run, PAIRS, "judge", {})  # never finished: as after SIGKILL
    assert load_manifest(run).status == RunStatus.RUNNING
    store = RunStore.open(run, PAIRS, "judge", {})
    store.finish({})
    first, second = load_manifest(run).attempts
    assert first.status == RunStatus.INTERRUPTED and "killed" in first.error
    assert second.status == RunStatus.COMPLETE == load_manifest(run).status


def test_manifest_fields_are_documented_and_the_docs_show_the_schema(tmp_path: Path) -> None:
    run = rows.pairs(tmp_path / "one")
    written = json.loads((run / "manifest.json").read_text())
    assert set(written) <= set(MANIFEST_DOCS) == {f.name for f in fields(Manifest)}
    page = (Path(__file__).parents[1] / "docs" / "reference" / "tables.md").read_text()
    assert schema_markdown().strip() in page, "docs/reference/tables.md is stale: paste `seftgen schema` into it"


def test_manifest_and_output_path_mistakes_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad"
    (bad / "parts").mkdir(parents=True)
    (bad / "manifest.json").write_text('{"table": "pairs"}')
    with pytest.raises(UserError, match="not a seftgen manifest"):
        load_manifest(bad)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(UserError, match="is a file"):
        RunStore.open(afile, PAIRS, "judge", {})
    with pytest.raises(UserError, match="is a file"):
        RunStore.open(afile / "below", PAIRS, "judge", {})


def test_a_running_attempt_whose_process_is_gone_reads_as_interrupted(tmp_path: Path) -> None:
    run = tmp_path / "p"
    RunStore.open(run, PAIRS, "judge", {})
    data = json.loads((run / "manifest.json").read_text())
    data["attempts"][0]["pid_start"] = "0"  # as if the recorded process had ended and its pid was reused
    (run / "manifest.json").write_text(json.dumps(data))
    manifest = load_manifest(run)
    assert manifest.status == RunStatus.INTERRUPTED == manifest.attempts[0].status
    assert "killed" in manifest.attempts[0].error


def test_a_run_folder_another_live_process_writes_is_refused(tmp_path: Path) -> None:
    import subprocess
    import sys

    run = tmp_path / "p"
    code = (
        "import sys, time\n"
        "from seftgen.io.schema import PAIRS\n"
        "from seftgen.io.store import RunStore\n"
        "RunStore.open(sys.argv[1], PAIRS, 'judge', {}); print('open', flush=True); time.sleep(60)"
    )
    writer = subprocess.Popen([sys.executable, "-c", code, str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "open"
        with pytest.raises(UserError, match=f"process {writer.pid} is still writing"):
            RunStore.open(run, PAIRS, "judge", {})
    finally:
        writer.kill()
        writer.wait()
    RunStore.open(run, PAIRS, "judge", {}).finish({})  # its writer is gone: the run resumes
    assert [a.status for a in load_manifest(run).attempts] == [RunStatus.INTERRUPTED, RunStatus.COMPLETE]
