"""`seftgen sample` on the real vLLM engine (and a real `vllm serve`) with the embedded model."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import DEMO_PROMPTS, SERVED_NAME, run_cli

from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.io.schema import SAMPLES
from seftgen.io.store import Shard, load_manifest, merge_runs, part_files, read_run
from seftgen.stages.sample import sample

pytestmark = pytest.mark.engine
FEW = SamplingConfig(n=2, max_tokens=8)


def keys(df: pl.DataFrame) -> list[tuple[str, int]]:
    return list(df.select("prompt_id", "sample_idx").iter_rows())


def test_sample_rows_schema_and_provenance(engine, tmp_path: Path) -> None:
    result = sample(str(DEMO_PROMPTS), tmp_path / "run", engine, params=FEW, limit=4, batch_size=3)
    df = read_run(tmp_path / "run", "samples")
    assert df.schema == SAMPLES.schema
    assert result.written == df.height == 8
    assert sorted(keys(df)) == sorted({(pid, i) for pid in df["prompt_id"].unique() for i in range(2)})
    assert df["completion_tokens"].max() <= 8 and df["prompt_tokens"].min() > 0
    for column in ("model", "engine", "template_hash", "params", "run_id", "created_at", "seed"):
        assert df[column].null_count() == 0, column
    assert json.loads(df["params"][0])["max_tokens"] == 8
    manifest = load_manifest(tmp_path / "run")
    assert manifest.status == "complete" and manifest.rows == 8
    assert manifest.totals["completion_tokens"] == df["completion_tokens"].sum()
    assert len(part_files(tmp_path / "run")) == 2  # 4 prompts in batches of 3


def test_resume_regenerates_only_what_is_missing(engine, tmp_path: Path) -> None:
    run = tmp_path / "run"
    sample(str(DEMO_PROMPTS), run, engine, params=FEW, limit=4, batch_size=2)
    before = read_run(run)
    lost = part_files(run)[0]
    lost_keys = set(keys(pl.read_parquet(lost)))
    lost.unlink()  # as if that batch had never finished
    result = sample(str(DEMO_PROMPTS), run, engine, params=FEW, limit=4, batch_size=2)
    after = read_run(run)
    assert result.written == len(lost_keys) and result.resumed == before.height - len(lost_keys)
    assert sorted(keys(after)) == sorted(keys(before))
    assert len(load_manifest(run).attempts) == 2


def test_resume_refuses_other_settings(engine, tmp_path: Path, capsys) -> None:
    sample(str(DEMO_PROMPTS), tmp_path / "run", engine, params=FEW, limit=2)
    code = run_cli("sample", DEMO_PROMPTS, "-o", tmp_path / "run", "--limit", "2", "-n", "2", "--max-tokens", "9")
    assert code == 2
    assert "cannot resume: settings differ" in capsys.readouterr().err


def test_shards_partition_and_merge(engine, tmp_path: Path) -> None:
    for i in range(2):
        sample(str(DEMO_PROMPTS), tmp_path / f"s{i}", engine, params=FEW, limit=6, shard=Shard(i, 2))
    shard_keys = [set(keys(read_run(tmp_path / f"s{i}"))) for i in range(2)]
    assert not shard_keys[0] & shard_keys[1]
    manifest = merge_runs([tmp_path / "s0", tmp_path / "s1"], tmp_path / "merged")
    merged = read_run(tmp_path / "merged")
    assert set(keys(merged)) == shard_keys[0] | shard_keys[1] and merged.height == 12 == manifest.rows
    with pytest.raises(Exception, match="shards \\[1\\] are missing"):
        merge_runs([tmp_path / "s0"], tmp_path / "partial")


def test_cli_sample_in_process(engine, tmp_path: Path) -> None:
    code = run_cli(
        "sample",
        DEMO_PROMPTS,
        "-o",
        tmp_path / "cli",
        "--limit",
        "3",
        "-n",
        "1",
        "--max-tokens",
        "8",
        "--system",
        "You are concise.",
    )
    assert code == 0
    df = read_run(tmp_path / "cli")
    assert df.height == 3 and all(m[0]["role"] == "system" for m in df["messages"].to_list())


@pytest.mark.server
def test_openai_engine_against_vllm_serve(server, engine, tmp_path: Path) -> None:
    spec = EngineSpec(model=SERVED_NAME, kind="openai", base_url=server.base_url, concurrency=4)
    result = sample(str(DEMO_PROMPTS), tmp_path / "api", spec, params=FEW, limit=3)
    api = read_run(tmp_path / "api")
    local = read_run(sample(str(DEMO_PROMPTS), tmp_path / "local", engine, params=FEW, limit=3).run_dir)
    assert result.ok and api.schema == local.schema == SAMPLES.schema
    assert set(keys(api)) == set(keys(local))
    assert (api["engine"] == "openai").all() and (api["completion_tokens"] > 0).all()


def test_overlapping_calls_each_get_their_own_outputs(engine) -> None:
    """Two threads share the engine (the runner overlaps batches): each call gets the outputs of
    its own conversations, in its order, the same as when it runs alone."""
    import threading

    short = [[{"role": "user", "content": "Hi."}]] * 3
    long = [[{"role": "user", "content": "Tell me about rivers. " * (4 + i)}] for i in range(5)]
    params = SamplingConfig(n=2, max_tokens=6)
    alone = {name: engine.generate(convs, params) for name, convs in (("short", short), ("long", long))}
    together: dict[str, list] = {}
    threads = [
        threading.Thread(target=lambda n=name, c=convs: together.__setitem__(n, engine.generate(c, params)))
        for name, convs in (("long", long), ("short", short))
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for name in ("short", "long"):
        assert [g.prompt_tokens for g in together[name]] == [g.prompt_tokens for g in alone[name]]
        assert all(len(g.completions) == 2 for g in together[name])
    assert len({g.prompt_tokens for g in together["long"]}) == 5  # each prompt's own output


def test_batches_overlap_and_the_attempt_records_its_time(engine, tmp_path: Path) -> None:
    result = sample(str(DEMO_PROMPTS), tmp_path / "run", engine, params=FEW, limit=6, batch_size=1)
    df = read_run(tmp_path / "run")
    assert result.written == df.height == 12 and len(part_files(tmp_path / "run")) == 6
    assert sorted(keys(df)) == sorted(set(keys(df)))
    timing = load_manifest(tmp_path / "run").attempts[-1].timing
    assert timing == result.timing
    assert set(timing) == {"engine_start_s", "generation_s", "write_s", "wall_s", "rows_per_s"}
    assert timing["generation_s"] > 0 and timing["write_s"] > 0 and timing["rows_per_s"] > 0
    assert timing["generation_s"] + timing["write_s"] <= timing["wall_s"] + 0.05


def test_a_failing_batch_stops_the_run_and_keeps_the_batches_before_it(engine, tmp_path: Path) -> None:
    """With overlapping batches, an error in a batch on the worker thread reaches the caller; the
    parts written before it stay, and the attempt is closed as interrupted."""
    from seftgen.io.store import RunStore
    from seftgen.stages.runner import run_batches

    store = RunStore.open(tmp_path / "run", SAMPLES, "sample", {"test": True})
    template = read_run(sample(str(DEMO_PROMPTS), tmp_path / "src", engine, params=FEW, limit=1).run_dir).row(
        0, named=True
    )

    def process(batch: list[int]) -> tuple[list[dict], list[dict]]:
        if 4 in batch:
            raise RuntimeError("batch 3 broke")
        return [template | {"prompt_id": f"{i:016x}", "run_id": store.run_id} for i in batch], []

    with pytest.raises(RuntimeError, match="batch 3 broke"):
        run_batches(store, iter(range(8)), process, engine=engine, batch_size=2, total=8, label="t")
    assert sorted(read_run(tmp_path / "run")["prompt_id"]) == [f"{i:016x}" for i in range(4)]
    assert load_manifest(tmp_path / "run").status == "interrupted"


def test_enough_batches_in_flight_to_fill_the_engine(engine) -> None:
    """Small batches still keep vLLM's batch full: one more batch than its capacity holds."""
    from types import SimpleNamespace

    from seftgen.stages.runner import MAX_IN_FLIGHT, in_flight

    assert engine.capacity == engine.llm.llm_engine.vllm_config.scheduler_config.max_num_seqs
    assert in_flight(SimpleNamespace(overlaps=True, capacity=32), 8) == 5
    assert in_flight(SimpleNamespace(overlaps=True, capacity=32), 256) == 2  # never fewer than two
    assert in_flight(SimpleNamespace(overlaps=True, capacity=None), 8) == 2  # capacity unknown (APIs)
    assert in_flight(SimpleNamespace(overlaps=True, capacity=256), 1) == MAX_IN_FLIGHT
    assert in_flight(SimpleNamespace(overlaps=False, capacity=256), 8) == 1
    assert in_flight(None, 8) == 1
