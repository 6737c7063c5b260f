"""`--data-parallel N`: device slices (forced for GPUs), and on this CPU two real engines in two
worker processes, each pinned to its own core with half the memory share, killed with SIGKILL of
the parent (no worker or engine survives), then resumed and merged into a run equal in keys to a
one-process run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import DEMO_PROMPTS, REPO, run_cli
from test_verifiers import _row, _samples

from seftgen.cli.app import main
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.io.store import Shard, load_manifest, part_files, read_run
from seftgen.provenance import shard_of
from seftgen.rounds.recipe import RoundStage
from seftgen.stages.parallel import shard_dir, slices
from seftgen.stages.sample import sample
from seftgen.watchdog import _alive, _children, _descendants


def test_gpu_slices_follow_cuda_visible_devices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", "cuda")  # forced: this machine has no GPU
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5,6,7")
    assert [s.gpus for s in slices(2, tensor_parallel=2)] == [("3", "5"), ("6", "7")]
    assert [s.env() for s in slices(4)] == [{"CUDA_VISIBLE_DEVICES": d} for d in ("3", "5", "6", "7")]
    with pytest.raises(UserError, match="needs 6 GPUs; 4 visible"):
        slices(3, tensor_parallel=2)


def test_cpu_slices_split_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", "cpu")
    monkeypatch.setattr("os.sched_getaffinity", lambda _: {0, 1, 2, 3, 4})
    assert [s.cores for s in slices(2)] == [(0, 1), (2, 3)] and slices(2)[0].env() == {}
    with pytest.raises(UserError, match="needs 6 cores"):
        slices(6)


def _spawned(parent: int) -> dict[int, str]:
    """The parent's data-parallel workers (its multiprocessing spawn children; their engines'
    EngineCores are spawned too, one level down), by pid: their cores."""
    found = {}
    for pid in _children(parent):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if b"multiprocessing.spawn" in cmdline and b"seftgen.watchdog" not in cmdline:
            found[pid] = next(line.split()[1] for line in status.splitlines() if line.startswith("Cpus_allowed_list"))
    return found


@pytest.mark.engine
def test_two_workers_killed_then_resumed_equal_one_process(engine, whole_machine, tmp_path: Path) -> None:
    reference = tmp_path / "one"
    params = SamplingConfig(n=2, max_tokens=8)
    assert sample(str(DEMO_PROMPTS), reference, engine, params=params, limit=8, batch_size=1).ok
    out = tmp_path / "dp"
    argv = [
        *("sample", str(DEMO_PROMPTS), "-o", str(out), "--limit", "8", "-n", "2", "--max-tokens", "8"),
        *("--batch-size", "1", "--data-parallel", "2", "--memory-share", "0.2"),
    ]
    log = tmp_path / "dp.log"
    with log.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "seftgen.cli.app", *argv], stdout=sink, stderr=subprocess.STDOUT)
    workers: dict[int, str] = {}
    deadline = time.monotonic() + 120
    while sorted(workers.values()) != ["0", "1"] and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)  # a worker pins itself first thing after it starts
        workers = _spawned(proc.pid)
    assert sorted(workers.values()) == ["0", "1"], (workers, log.read_text()[-2000:])  # one core each
    # Kill as soon as a shard has landed its first batch: both engines are up and decoding.
    landed = time.monotonic() + 120
    while not any(part_files(shard_dir(out, i, 2)) for i in range(2)) and time.monotonic() < landed:
        time.sleep(0.2)
    tree = _descendants([proc.pid], skip=-1)
    assert proc.poll() is None, log.read_text()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    gone_by = time.monotonic() + 20
    while _alive(tree) and time.monotonic() < gone_by:
        time.sleep(0.2)
    assert not _alive(tree), f"outlived the parent: {sorted(_alive(tree))}"
    assert not out.exists()  # nothing merged from a half-done run
    # The rerun resumes each shard and merges them: the same rows as one process wrote.
    assert run_cli(*argv) == 0
    keys = sorted(read_run(out).select("prompt_id", "sample_idx").iter_rows())
    assert keys == sorted(read_run(reference).select("prompt_id", "sample_idx").iter_rows())
    manifest = load_manifest(out)
    assert len(manifest.merged_from) == 2 and manifest.rows == len(keys)
    assert {m["shard"]["index"] for m in manifest.merged_from} == {0, 1}
    assert all(load_manifest(shard_dir(out, i, 2)).shard == {"index": i, "count": 2} for i in range(2))
    assert run_cli(*argv) == 0  # a rerun of a complete run rebuilds the same merged run
    assert sorted(read_run(out).select("prompt_id", "sample_idx").iter_rows()) == keys


def test_cli_refuses_data_parallel_it_cannot_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An API critic scales with --concurrency, and --shard and --data-parallel both shard: exit 2, nothing written."""
    samples = _samples(tmp_path / "s", [_row("p1", 0, "a", None), _row("p1", 1, "b", None)])
    refused = {
        "an API engine scales with --concurrency": ("--critic", "openai", "-m", "critic", "--data-parallel", "2"),
        "not both": ("--reviser", str(tmp_path), "--data-parallel", "2", "--shard", "0/2"),
    }
    for message, args in refused.items():
        with pytest.raises(SystemExit) as done:
            main(["revise", str(samples), "-o", str(tmp_path / "r"), *args])
        err = capsys.readouterr().err
        assert done.value.code == 2 and message in err and "Traceback" not in err
        assert not (tmp_path / "r").exists()


def test_shard_parts_split_exactly_their_shard() -> None:
    ids = [f"{i:08x}" + "0" * 8 for i in range(0, 4000, 7)]
    outer = Shard(1, 3)
    mine = {p for p in ids if shard_of(p, outer.count) == outer.index}
    parts = [outer.part(i, 2) for i in range(2)]
    got = [{p for p in ids if shard_of(p, s.count) == s.index} for s in parts]
    assert parts == [Shard(1, 6), Shard(4, 6)] and got[0] | got[1] == mine and not got[0] & got[1]


@pytest.mark.engine
def test_a_round_spreads_its_model_stages(
    engine, whole_machine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`round --data-parallel 2`: the round's share of the prompts (split_rounds 2: shard 0/2) is
    cut again for two workers (parts 0/4 and 2/4); the merged samples are that shard, with the
    keys of a one-process round, and the same round rerun in one process resumes them."""
    from test_round import tiny

    from seftgen.rounds import load_recipe, run_round

    shipped = tiny("self-judge-verifier", tmp_path)
    recipe_data = yaml.safe_load(shipped.read_text())
    recipe_data["prompts"] |= {"limit": 12, "split_rounds": 2}
    recipe_data["sample"] |= {"n": 2, "max_tokens": 8}
    recipe_data["eval"] = None
    shipped.write_text(yaml.safe_dump(recipe_data))
    recipe = load_recipe(str(shipped), REPO)
    one = run_round(recipe, tmp_path / "one", 1)  # the session's engine, in this process
    monkeypatch.setenv("SEFTGEN_MEMORY_SHARE", "0.2")  # of ALL RAM on CPU: 0.1 for each worker
    work = tmp_path / "dp"
    assert run_cli("round", shipped, "--workdir", work, "--base-dir", REPO, "--data-parallel", "2") == 0
    monkeypatch.delenv("SEFTGEN_MEMORY_SHARE")
    samples = work / "round-1" / "samples"
    key = ["prompt_id", "sample_idx"]
    assert sorted(read_run(samples).select(key).iter_rows()) == sorted(
        read_run(one.dir / "samples").select(key).iter_rows()
    )
    assert load_manifest(samples).shard == {"index": 0, "count": 2}
    assert [load_manifest(shard_dir(samples, i, 2)).shard["index"] for i in range(2)] == [0, 2]
    assert read_run(work / "round-1" / "best-of").height == read_run(one.dir / "best-of").height
    again = run_round(recipe, work, 1)  # one process: the merged run resumes as the round's shard
    assert again.stages[RoundStage.SAMPLE].written == 0 and again.stages[RoundStage.SAMPLE].resumed > 0
