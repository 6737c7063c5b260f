"""`--engine ray`: Ray Data LLM's vLLM processor on a local Ray instance, CPU only, one replica.

Runs last (see conftest): the session's in-process engine and `vllm serve` are shut down first,
so the Ray replica has the memory.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from conftest import DEMO_PROMPTS, Server

from seftgen.engines import EngineSpec, release_engines
from seftgen.engines.base import SamplingConfig
from seftgen.io.schema import SAMPLES
from seftgen.io.store import load_manifest, part_files, read_run
from seftgen.stages.sample import sample

pytest.importorskip("ray.data.llm")
pytestmark = [pytest.mark.ray, pytest.mark.engine, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_spec(demo_model):
    release_engines()
    for server in list(Server.running):
        server.stop()
    spec = EngineSpec(kind="ray", replicas=1, ray_batch_size=8)
    yield spec
    release_engines()


def test_ray_engine_sample_and_resume(ray_spec, tmp_path: Path) -> None:
    params = SamplingConfig(n=2, max_tokens=8)
    run = tmp_path / "ray"
    result = sample(str(DEMO_PROMPTS), run, ray_spec, params=params, limit=3, batch_size=2)
    df = read_run(run)
    assert result.ok and df.schema == SAMPLES.schema and df.height == 6
    assert (df["engine"] == "ray").all() and (df["completion_tokens"] <= 8).all()
    assert sorted(df["sample_idx"].to_list()) == [0, 0, 0, 1, 1, 1]
    assert set(df["finish_reason"]) <= {"stop", "length"}
    # Resume: lose the first part; the rerun regenerates only its prompts.
    lost = part_files(run)[0]
    lost_rows = pl.read_parquet(lost).height  # 2 prompts x 2 samples
    lost.unlink()
    again = sample(str(DEMO_PROMPTS), run, ray_spec, params=params, limit=3, batch_size=2)
    assert lost_rows == 4 and again.written == lost_rows and again.resumed == 6 - lost_rows
    keys = list(read_run(run).select("prompt_id", "sample_idx").iter_rows())
    assert len(keys) == len(set(keys)) == 6
    assert len(load_manifest(run).attempts) == 2
