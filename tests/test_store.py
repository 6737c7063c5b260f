"""Run folder mechanics without a model: shards, dedup on write, settings checks."""

from __future__ import annotations

from pathlib import Path

import pytest
import rows

from seftgen.errors import UserError
from seftgen.io.schema import PAIRS
from seftgen.io.store import RunStore, Shard, read_run
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


def test_settings_and_shard_must_match_to_resume(tmp_path: Path) -> None:
    run = many_pairs(tmp_path / "p", 2)
    with pytest.raises(UserError, match=r"settings differ.*min_margin"):
        RunStore.open(run, PAIRS, "judge", {"min_margin": 0.2})
    with pytest.raises(UserError, match="shard"):
        RunStore.open(run, PAIRS, "judge", {}, shard=Shard(1, 2))
    with pytest.raises(UserError, match="already holds a run"):
        RunStore.open(run, PAIRS, "judge", {}, resume=False)
    with pytest.raises(UserError, match=r"--shard must look like i/N"):
        Shard.parse("2")
    with pytest.raises(UserError, match=r"need 0 <= i < N"):
        Shard.parse("3/3")
