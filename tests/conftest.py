"""Shared fixtures: one real vLLM engine and one real `vllm serve` per test session.

Both run the embedded SmolLM2-135M-Instruct on the CPU. The engine fixture uses the default
EngineSpec, so CLI commands run in-process reuse the same engine from the cache.
"""

from __future__ import annotations

import contextlib
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
# On a GPU the session's engines share one device: the in-process engine, `vllm serve` (0.1) and a
# round's own engines must add up to less than the whole (vLLM refuses an engine whose share
# exceeds the free memory). On CPU the share is of ALL RAM: 0.1 (about 1.2 GB of KV cache here, far
# more than the tests' few short prompts need) leaves room for what two xdist workers hold at once:
# an engine each, the server, a round's engine and an axolotl training.
os.environ.setdefault("SEFTGEN_MEMORY_SHARE", "0.1")

# `make test` runs the suite in two pytest-xdist workers, each pinned to its own share of the cores
# before anything imports torch: its engines, `vllm serve` and trainings inherit the mask (vLLM's CPU
# worker reads it: `utils/cpu_resource_utils.get_allowed_cpu_list`), so the two never bind OpenMP
# threads to the same core (threads that wait for a preempted peer decode several times slower:
# docs/benchmarks.md). About half the suite's time one core was idle: imports, start-ups, waits.
ALL_CORES = frozenset(os.sched_getaffinity(0))


def pin(cores: frozenset[int] | set[int]) -> None:
    """Every thread of this process (execnet's own started before this file loaded) on `cores`."""
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError):  # the thread ended meanwhile
            os.sched_setaffinity(int(task.name), cores)


WORKER = os.environ.get("PYTEST_XDIST_WORKER")  # gw0, gw1, ...; unset when pytest runs alone
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if WORKER and len(ALL_CORES) >= WORKERS > 1:
    pin(set(sorted(ALL_CORES)[int(WORKER[2:]) :: WORKERS]))

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


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that use an engine or server fixture get its marker, and the server's tests one xdist
    group (one worker holds the session's `vllm serve`). Ray tests free the engine and server of
    their process first (memory on a 2-core box): alone they go last; in xdist workers first, so
    that the other worker's tests run beside them rather than nothing at the end."""
    for item in items:
        for fixture, marker in ENGINE_FIXTURES.items():
            if fixture in getattr(item, "fixturenames", ()) and item.get_closest_marker(marker) is None:
                item.add_marker(getattr(pytest.mark, marker))
        if "server" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("server"))

    def ray(item: pytest.Item) -> bool:
        return item.get_closest_marker("ray") is not None

    items.sort(key=lambda item: not ray(item) if WORKER else ray(item))  # sorted() is stable


@pytest.fixture
def whole_machine() -> Iterator[None]:
    """The test runs on every core, as outside the suite (`--data-parallel` pins one worker per
    core); the other xdist worker's engines share them meanwhile."""
    pinned = os.sched_getaffinity(0)
    pin(ALL_CORES)
    yield
    pin(pinned)


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
            "0.1",  # on CPU a share of ALL RAM: leave room for the others
            "--max-logprobs",
            "20",
        ]
        from seftgen.devices import cpu_engine_env
        from seftgen.watchdog import ensure_watchdog

        ensure_watchdog()  # the server ends with the test session, even if pytest is killed
        # The cores seftgen's own engines decode on, and on small CPUs their layout: `vllm serve`
        # always runs EngineCore in a process of its own (AsyncLLM's client is a multiprocess one),
        # but at VLLM_ENABLE_V1_MULTIPROCESSING=0 the CPU platform no longer forces the MP executor
        # (`platforms/cpu.py`), so the model runs in EngineCore instead of a third process: ready
        # in 21 s against 30 s here, decoding 1.06x as fast (bench/serve_layout.py, docs/benchmarks.md).
        env = os.environ | cpu_engine_env()
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
    if WORKER:  # one worker holds it (its tests share an xdist group); a second would double its RAM
        owner = tmp_path_factory.getbasetemp().parent / "vllm-serve.owner"
        with owner.open("a") as claims:
            claims.write(WORKER + "\n")
        holders = set(owner.read_text().split())
        assert holders == {WORKER}, f"`vllm serve` started by workers {sorted(holders)}: run with --dist loadgroup"
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
