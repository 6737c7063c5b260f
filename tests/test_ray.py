"""`--engine ray`: Ray Data LLM's vLLM processor on a local Ray instance, CPU only, one replica.

Runs last when pytest runs alone, first in an xdist worker (see conftest): the in-process engine
and `vllm serve` of its process are shut down first, so the Ray replica has the memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import DEMO_PROMPTS, Server

from seftgen.choices import RunStatus
from seftgen.engines import EngineSpec, get_engine, release_engines
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
    """Interrupted after its first Ray Data job (each job starts its actor), then resumed by a
    rerun that generates only the prompts it had not written: two jobs in all."""
    params = SamplingConfig(n=2, max_tokens=8)
    run = tmp_path / "ray"
    engine = get_engine(ray_spec)
    generate, calls = engine.generate, []

    def once_then_interrupt(*args: Any, **kwargs: Any) -> Any:  # Ctrl-C after the first batch
        if calls:
            raise KeyboardInterrupt
        calls.append(1)
        return generate(*args, **kwargs)

    engine.generate = once_then_interrupt  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        sample(str(DEMO_PROMPTS), run, engine, params=params, limit=3, batch_size=2)
    engine.generate = generate  # type: ignore[method-assign]
    first = read_run(run)
    assert load_manifest(run).status == RunStatus.INTERRUPTED and first.height == 4  # 2 prompts x 2 samples
    assert (first["engine"] == "ray").all() and (first["completion_tokens"] <= 8).all()
    assert first.schema == SAMPLES.schema and sorted(first["sample_idx"].to_list()) == [0, 0, 1, 1]
    assert set(first["finish_reason"]) <= {"stop", "length"}
    again = sample(str(DEMO_PROMPTS), run, engine, params=params, limit=3, batch_size=2)
    assert again.ok and again.written == 2 and again.resumed == 4
    keys = list(read_run(run).select("prompt_id", "sample_idx").iter_rows())
    assert len(keys) == len(set(keys)) == 6
    assert len(load_manifest(run).attempts) == 2 and len(part_files(run)) == 2
