"""The engine residency policy: on an accelerator, one local engine at a time, the previous one's
processes seen gone before the next starts. Forced on CPU (SEFTGEN_RESIDENCY=exclusive), in a
real SEFT round: the policy samples, then the reviser (another model) revises."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from seftgen.engines import residency
from seftgen.io.store import load_manifest, read_run

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


def test_a_seft_round_closes_the_policy_engine_before_the_reviser_starts(demo_model: Path, tmp_path: Path) -> None:
    reviser = tmp_path / "reviser-model"  # another model folder: a second engine
    shutil.copytree(demo_model, reviser)
    recipe = yaml.safe_load((REPO / "recipes" / "seft.yaml").read_text())
    recipe.update(
        prompts={"source": str(REPO / "data" / "demo" / "prompts.jsonl"), "limit": 3},
        sample={"n": 1, "max_tokens": 8},
        revise={"reviser": {"model": str(reviser)}, "max_tokens": 24},
        reviser_data=False,
        train=[],
        eval=None,
        quality={"keep_truncated": True},
        engine={"max_model_len": -1},  # vLLM's auto-fit, the GPU default, on real engines here
    )
    path = tmp_path / "seft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    log = tmp_path / "residency.jsonl"
    env = {**os.environ, "SEFTGEN_RESIDENCY": "exclusive", "SEFTGEN_RESIDENCY_LOG": str(log)}
    env["SEFTGEN_MEMORY_SHARE"] = "0.15"  # the default share: not given in the recipe, so never "fits"
    cmd = [sys.executable, "-m", "seftgen.cli.app", "round", str(path), "--workdir", str(tmp_path / "w")]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    events = [json.loads(line) for line in log.read_text().splitlines()]
    kinds = [e[0] for e in events]
    assert kinds == ["start", "close", "released", "start"], events
    (_, first, _, _), (_, closed, pids, _), (_, released, same, _, _), (_, second, state, _) = events
    assert closed == released == first and Path(second) == reviser
    assert pids and pids == same  # the policy engine had processes (EngineCore), and they were waited for
    assert state["previous_alive"] == []  # none of them ran when the reviser's engine started
    revised = read_run(tmp_path / "w" / "round-1" / "revised")
    assert revised.height == 3 and (revised["model"] == str(reviser)).all()
    assert load_manifest(tmp_path / "w" / "round-1" / "revised").attempts[-1].engine["max_model_len"] == -1
