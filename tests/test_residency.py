"""The engine residency policy: on an accelerator, one local engine at a time, the previous one's
processes seen gone before the next starts. Forced on CPU (SEFTGEN_RESIDENCY=exclusive), in a
real SEFT round: the policy samples, then the reviser (another model) revises."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from seftgen.engines import residency
from seftgen.io.store import load_manifest, read_run

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import gpu_check

pytestmark = pytest.mark.engine


def test_shares_decide_whether_engines_coexist(monkeypatch) -> None:
    assert residency.shares_fit([0.45, 0.45]) and not residency.shares_fit([0.6, 0.5])
    assert not residency.shares_fit([None, 0.2])  # a default share (0.9 on a GPU) never fits beside another
    monkeypatch.setenv("SEFTGEN_RESIDENCY", "exclusive")
    assert residency.exclusive()
    monkeypatch.setenv("SEFTGEN_RESIDENCY", "shared")
    assert not residency.exclusive()
    monkeypatch.delenv("SEFTGEN_RESIDENCY")
    monkeypatch.setenv("SEFTGEN_DEVICE", "cuda")
    assert residency.exclusive()  # what a GPU gets by default


def test_a_seft_round_closes_the_policy_engine_before_the_reviser_starts(
    demo_model: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    """`bench/gpu_check.py` on a CPU: its round runs with the policy forced exclusive and the default
    memory share (never "fits" beside another engine); the graphs row says why it is skipped."""
    monkeypatch.setenv("SEFTGEN_MEMORY_SHARE", "0.1")
    check = gpu_check.main(["--workdir", str(tmp_path)])
    done, rows = check["round"], check["rows"]
    assert done["returncode"] == 0, done["stderr"][-2000:]
    events, reviser = done["events"], done["reviser"]
    kinds = [e[0] for e in events]
    assert kinds == ["start", "close", "released", "start"], events
    (_, first, _, _), (_, closed, pids, _), (_, released, same, waited, _), (_, second, state, _) = events
    assert closed == released == first and Path(second) == reviser
    assert pids and pids == same  # the policy engine had processes (EngineCore), and they were waited for
    assert state["previous_alive"] == []  # none of them ran when the reviser's engine started
    assert done["release_s"] == waited >= 0 and rows["two-engine SEFT round"] == "ok"
    assert rows["  first engine alive at second start"] == "False" and "skipped" in rows["eager vs CUDA graphs"]
    assert rows["--data-parallel over every GPU"].startswith("skipped: 0 GPUs")  # test_parallel.py runs it on CPU
    assert "two-engine SEFT round" in capsys.readouterr().out  # the table
    revised = read_run(done["round"] / "revised")
    assert revised.height == 3 and (revised["model"] == str(reviser)).all()
    # vLLM's auto-fit context (-1, the GPU default) ran on real engines, and is recorded.
    assert load_manifest(done["round"] / "revised").attempts[-1].engine["max_model_len"] == -1
