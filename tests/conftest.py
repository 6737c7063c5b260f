"""Shared fixtures: one real vLLM engine and one real `vllm serve` per test session.

Both run the embedded SmolLM2-135M-Instruct on the CPU. The engine fixture uses the default
EngineSpec, so CLI commands run in-process reuse the same engine from the cache.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("AXOLOTL_DO_NOT_TRACK", "1")
# On a GPU the session's engines share one device: the in-process engine, `vllm serve` (0.2) and a
# round's own engines must add up to less than the whole (vLLM refuses an engine whose share
# exceeds the free memory). On CPU the share is of ALL RAM: 0.15 (3.5 GB of KV cache here, far more
# than the tests' few short prompts need) lets a round's engines run beside the session's and the
# server, so round tests use the session engine for the start model instead of starting another.
os.environ.setdefault("SEFTGEN_MEMORY_SHARE", "0.15")

REPO = Path(__file__).resolve().parents[1]
DEMO_PROMPTS = REPO / "data" / "demo" / "prompts.jsonl"
DEMO_PREFS = REPO / "data" / "demo" / "preferences.jsonl"
SERVED_NAME = "demo-served"


@pytest.fixture(scope="session")
def demo_model() -> Path:
    from seftgen.models import prepare_demo_model

    return prepare_demo_model()


@pytest.fixture(scope="session")
def engine(demo_model: Path):
    from seftgen.engines import EngineSpec, get_engine

    yield get_engine(EngineSpec())
    from seftgen.engines import release_engines

    release_engines()  # while pytest's streams are still open (vLLM logs on shutdown)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Fixtures that start a model: a test that uses one is marked so (`make test-fast` skips them).
ENGINE_FIXTURES = {"engine": "engine", "sample_run": "engine", "server": "server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use an engine or server fixture get its marker; Ray tests go last: they free the
    session engine and server first (memory on a 2-core box)."""
    for item in items:
        for fixture, marker in ENGINE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))
    items.sort(key=lambda item: item.get_closest_marker("ray") is not None)


class Server:
    """A real `vllm serve` of the demo model on loopback; can be stopped and started again."""

    running: ClassVar[set[Server]] = set()

    def __init__(self, model: Path, log: Path) -> None:
        self.model = model
        self.port = free_port()
        self.log = log
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, timeout: float = 600) -> None:
        from seftgen.devices import default_dtype

        cmd = [
            sys.executable,
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model",
            str(self.model),
            "--served-model-name",
            SERVED_NAME,
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dtype",
            default_dtype(),  # what seftgen's own engines use here (float32 on CPUs without bf16)
            "--max-model-len",
            "2048",
            "--enforce-eager",
            "--gpu-memory-utilization",
            "0.2",  # on CPU a share of ALL RAM: leave room for the others
            "--max-logprobs",
            "20",
        ]
        from seftgen.devices import IN_PROCESS_ENV, cpu_engine_env
        from seftgen.watchdog import ensure_watchdog

        ensure_watchdog()  # the server ends with the test session, even if pytest is killed
        env = os.environ | cpu_engine_env()  # the cores seftgen's own engines decode on
        env.pop(IN_PROCESS_ENV, None)  # but its processes as vLLM lays them out for `vllm serve`
        self.proc = subprocess.Popen(
            cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True, env=env
        )
        Server.running.add(self)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"vllm serve exited early; see {self.log}")
            try:
                with urllib.request.urlopen(f"{self.base_url}/models", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"vllm serve did not come up; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, 15)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.proc = None
        Server.running.discard(self)


@pytest.fixture(scope="session")
def server(demo_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(demo_model, tmp_path_factory.mktemp("server") / "vllm-serve.log")
    srv.start()
    yield srv
    srv.stop()


def run_cli(*args: str) -> int:
    """Run `seftgen ARGS` in this process (sharing the session engine); return the exit code."""
    from seftgen.cli.app import main

    try:
        main([str(a) for a in args])
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


@pytest.fixture(scope="session")
def sample_run(engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 demo prompts x 3 samples (3 pairs per prompt, and a bye in each tournament)."""
    from seftgen.engines.base import SamplingConfig
    from seftgen.stages.sample import sample

    out = tmp_path_factory.mktemp("shared") / "samples"
    sample(str(DEMO_PROMPTS), out, engine, params=SamplingConfig(n=3, max_tokens=24), limit=3)
    return out


def check_constrained(df, min_parsed: float = 0.5) -> None:
    """Critic rows written under constrained decoding: every reply that was allowed to finish
    parsed (a reply cut by max_tokens may not: the untrained demo model can run on in a free-text
    line), and at least `min_parsed` of the rows parsed (unconstrained, the demo model follows the
    format in 0 of 64 replies). Parsed: kept, or left out by a filter or a quality gate."""
    import polars as pl

    unparsed = df.filter(pl.col("reason_kind") == "parse")["reason"].to_list()
    assert all(r.endswith("(the reply hit max_tokens: truncated)") for r in unparsed), unparsed
    parsed = pl.col("reason").is_null() | pl.col("reason_kind").is_in(["filter", "quality"])
    assert df.filter(parsed).height >= min_parsed * df.height, df["reason"].to_list()
