"""Kill anywhere, lose nothing, leave nothing: real subprocesses, real signals.

Each model stage runs as `python -m seftgen.cli.app ...` in a subprocess, is killed at points
drawn from a seeded generator (printed, so a failure names them), and is then run to completion.
Checked after every kill: no process of the killed run (vLLM's EngineCore included) survives; and
at the end: every key exactly once, the same keys and count as an uninterrupted run, no temporary
files. Only the seftgen process itself is killed, never its process group: the engine's own
processes must go because seftgen's watchdog ends them. On this small CPU seftgen runs the engine
in its own process (`devices.cpu_engine_env`); the sample case forces vLLM's processes, as on a GPU,
so that the watchdog's part is proven too.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import DEMO_PROMPTS, SERVED_NAME, run_cli

from seftgen.choices import RunStatus
from seftgen.devices import IN_PROCESS_ENV
from seftgen.engines.base import SamplingConfig
from seftgen.io.store import load_manifest, part_files, read_run
from seftgen.stages.sample import sample
from seftgen.watchdog import _alive, _descendants

pytestmark = pytest.mark.engine
SEED = int(os.environ.get("SEFTGEN_KILL_SEED", "20261124"))
# A soak outside CI: SEFTGEN_SOAK=N repeats every stage's kills N times (CI: once).
SOAK = int(os.environ.get("SEFTGEN_SOAK", "1"))
# On CPU a share of ALL RAM (the session holds its own); two sequences at once, so a run of a few
# prompts keeps only a few batches in flight and a kill lands mid-run.
SMALL_ENGINE = ["--memory-share", "0.1", "--max-num-seqs", "2"]


@pytest.fixture(scope="module")
def six_prompts(engine, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """6 prompts x 3 samples: enough parts at batch size 1 that a kill lands mid-run."""
    out = tmp_path_factory.mktemp("faults") / "samples"
    sample(str(DEMO_PROMPTS), out, engine, params=SamplingConfig(n=3, max_tokens=16), limit=6)
    return out


def keys(run: Path) -> list[tuple]:
    table = load_manifest(run).table
    from seftgen.io.schema import TABLES

    return list(read_run(run).select(list(TABLES[table].key)).iter_rows())


def kill_at_random_point(
    args: list[str], out: Path, rng: random.Random, log: Path, sig: int, startup: bool = True, env: dict | None = None
) -> str:
    """Start `seftgen ARGS`, kill it with `sig` at a random point; return the point (logged).
    Asserts that every process the run had started is gone within seconds."""
    after_parts = rng.choice([0, 1, 1, 2] if startup else [1, 2])  # 0: during start-up (model load)
    delay = rng.uniform(3, 25) if after_parts == 0 else rng.uniform(0, 1.0)
    where = f"after {after_parts} part(s)" if after_parts else "at start-up"
    point = f"{signal.Signals(sig).name} {where} +{delay:.2f}s"
    print(f"kill point (seed {SEED}): {' '.join(args[:1])}: {point}")
    before = len(part_files(out)) if out.exists() else 0
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            [sys.executable, "-m", "seftgen.cli.app", *args],
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=os.environ | (env or {}),
        )
    deadline = time.monotonic() + 600
    while proc.poll() is None and time.monotonic() < deadline:
        if after_parts == 0 or (out.exists() and len(part_files(out)) >= before + after_parts):
            break
        time.sleep(0.05)
    time.sleep(delay)
    tree = _descendants([proc.pid], skip=-1)  # EngineCore, the watchdog, ...
    titles = [_title(pid) for pid in tree]
    assert proc.poll() is None, f"finished before the kill point {point}:\n{log.read_text()[-2000:]}"
    os.kill(proc.pid, sig)  # the seftgen process only, as a user's kill or an OOM killer does
    proc.wait(60)
    gone_by = time.monotonic() + 20
    while _alive(tree) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not _alive(tree), f"processes outlived the run killed {point}: {sorted(_alive(tree))}"
    if env and env.get(IN_PROCESS_ENV) == "1" and after_parts:  # vLLM's processes were up, and went too
        assert any(b"EngineCore" in t for t in titles), f"no EngineCore among {titles}"
    return point


def _title(pid: int) -> bytes:
    """A process's command line, as vLLM retitles its own (`VLLM::EngineCore`)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def check_complete(run: Path, reference: Path) -> None:
    got = keys(run)
    assert len(got) == len(set(got)), "a key was written twice"
    assert sorted(got) == sorted(keys(reference)), "rows differ from an uninterrupted run"
    assert not [p for p in run.rglob("*") if p.name.endswith(".tmp")], "temporary files left behind"
    manifest = load_manifest(run)
    assert manifest.status == RunStatus.COMPLETE
    assert all(a.status != RunStatus.RUNNING for a in manifest.attempts)


Case = tuple[str, Callable[[Path, Path], list[str]], list[int]]


@pytest.mark.slow
def test_kill_anywhere_local_engine(engine, six_prompts: Path, tmp_path: Path) -> None:
    """sample, revise (reviser), judge and best-of on the in-process engine, each killed in a
    subprocess (revise by SIGTERM, which it answers by closing its attempt; the others by
    SIGKILL), then finished by a rerun. One kill per stage: each costs an engine start."""
    rng = random.Random(SEED)
    cases: list[Case] = [
        (
            "sample",
            lambda out, _: [
                "sample",
                str(DEMO_PROMPTS),
                "-o",
                str(out),
                "--limit",
                "8",
                "-n",
                "2",
                "--max-tokens",
                "24",
                "--batch-size",
                "1",
            ],
            [signal.SIGKILL],
        ),
        (
            "revise",
            lambda out, src: (
                ["revise", str(src), "-o", str(out), "--reviser", "demo", "--max-tokens", "24", "--batch-size", "2"]
            ),
            [signal.SIGTERM],
        ),
        ("judge", lambda out, src: ["judge", str(src), "-o", str(out), "--batch-size", "1"], [signal.SIGKILL]),
        ("best-of", lambda out, src: ["best-of", str(src), "-o", str(out), "--batch-size", "1"], [signal.SIGKILL]),
    ]
    for name, argv, signals in cases:
        reference, run = tmp_path / f"{name}-reference", tmp_path / name
        assert run_cli(*argv(reference, six_prompts)) == 0
        for sig in signals * SOAK:
            # SIGTERM after the attempt opened, so there is an attempt to close.
            startup = sig == signal.SIGKILL
            kill_at_random_point(
                argv(run, six_prompts) + SMALL_ENGINE,
                run,
                rng,
                tmp_path / f"{name}.log",
                sig,
                startup=startup,
                env={IN_PROCESS_ENV: "1"} if name == "sample" else None,  # vLLM's processes, as on a GPU
            )
            manifest = load_manifest(run)  # read as it is: nobody runs it any more
            assert manifest.status == RunStatus.INTERRUPTED, manifest
            if sig == signal.SIGTERM:  # a signal it could answer: the attempt is closed as interrupted
                assert manifest.status == RunStatus.INTERRUPTED == manifest.attempts[-1].status
                assert manifest.attempts[-1].finished_at is not None
        assert run_cli(*argv(run, six_prompts)) == 0  # the rerun, on the session engine
        check_complete(run, reference)


@pytest.mark.server
def test_kill_anywhere_api_critic(server, engine, six_prompts: Path, tmp_path: Path) -> None:
    """The SRT critic through a real `vllm serve`: killed (SIGKILL, then Ctrl-C's SIGINT), then
    finished. The server is not the run's: it must survive, and serve the rerun."""
    rng = random.Random(SEED + 1)

    def argv(out: Path) -> list[str]:
        api = ["--critic", "openai", "--base-url", server.base_url, "-m", SERVED_NAME, "--concurrency", "4"]
        return ["revise", str(six_prompts), "-o", str(out), *api, "--max-tokens", "48", "--batch-size", "2"]

    reference, run = tmp_path / "reference", tmp_path / "critic"
    assert run_cli(*argv(reference)) == 0
    for sig in [signal.SIGKILL, signal.SIGINT] * SOAK:  # Ctrl-C too; no model to load: kill after parts
        kill_at_random_point(argv(run), run, rng, tmp_path / "critic.log", sig, startup=False)
        assert load_manifest(run).status == RunStatus.INTERRUPTED
    assert run_cli(*argv(run)) == 0
    check_complete(run, reference)
