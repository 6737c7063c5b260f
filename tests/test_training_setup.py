"""Training on GPU nodes, as far as a CPU can prove it: axolotl's launcher comes from axolotl's
own environment, every shipped preset validates with axolotl's own code, hub models are fetched
before training runs offline, and `round --dry-run` shows each command with its launcher."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from seftgen.devices import accelerator
from seftgen.export.axolotl import build_config, load_preset
from seftgen.training import run as training_run
from seftgen.training.env import axolotl_env, find_axolotl, validate_configs
from seftgen.training.launch import default_launcher
from seftgen.training.run import effective_batch, hub_models, one_process, prefetch, processes, train_command

AXOLOTL = find_axolotl()
needs_axolotl = pytest.mark.skipif(AXOLOTL is None, reason="needs axolotl's environment (make train-env)")
PRESETS = sorted(p.stem for p in (REPO / "recipes" / "presets").glob("*.yaml"))


def script(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"#!/bin/sh\n{text}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path


@needs_axolotl
@pytest.mark.axolotl
def test_accelerate_resolves_to_the_training_environment(tmp_path: Path, monkeypatch) -> None:
    """axolotl runs `accelerate launch` by name from PATH. A decoy accelerate first on PATH (as
    seftgen's own .venv/bin would be) must not be the one that runs."""
    assert AXOLOTL is not None
    decoy = script(tmp_path / "decoy" / "accelerate", "echo decoy")
    monkeypatch.setenv("PATH", f"{decoy.parent}{os.pathsep}{os.environ['PATH']}")
    resolved = subprocess.run(
        ["sh", "-c", "command -v accelerate"], env=axolotl_env(AXOLOTL), capture_output=True, text=True, check=True
    ).stdout.strip()
    assert Path(resolved) == AXOLOTL.executable.parent / "accelerate"
    env = axolotl_env(AXOLOTL)
    ran = subprocess.run(["accelerate", "--help"], env=env, capture_output=True, text=True, check=False)
    assert ran.returncode == 0 and "decoy" not in ran.stdout and "launch" in ran.stdout, ran.stdout  # it ran
    # Without seftgen's PATH the decoy would have run: the test can fail.
    plain = subprocess.run(["sh", "-c", "command -v accelerate"], capture_output=True, text=True, check=True)
    assert plain.stdout.strip() == str(decoy)


@needs_axolotl
@pytest.mark.axolotl
def test_every_shipped_preset_validates_with_axolotl(demo_model: Path, tmp_path: Path) -> None:
    """axolotl's own validate_config, for SFT and DPO, in axolotl's environment. The CPU cannot run
    axolotl's CUDA-only flash-attention check (`check_flash_attn_available` runs only when CUDA is
    available); the presets use sdpa, which needs no package, so that check does not apply."""
    assert {"cpu", "gpu", "gpu-fsdp", "gpu-qlora"} <= set(PRESETS)
    configs = []
    for preset in PRESETS:
        loaded = load_preset(preset)
        assert loaded.get("attn_implementation", "sdpa") == "sdpa" and "flash_attention" not in loaded, preset
        for variant in ("seft-policy", "srt-stage2"):
            data = tmp_path / "train.parquet"
            configs.append(build_config(variant, str(demo_model), data, tmp_path / "out", "x", preset=loaded))
    assert AXOLOTL is not None
    problems = validate_configs(AXOLOTL, configs)
    assert len(problems) == 2 * len(PRESETS)
    assert problems == [None] * len(problems), [p for p in problems if p]


def test_launcher_processes_and_effective_batch(monkeypatch) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", "cuda")
    assert accelerator() == "cuda" and default_launcher() is None  # accelerate, axolotl's default
    monkeypatch.setenv("SEFTGEN_DEVICE", "cpu")
    assert default_launcher() == "python"
    cfg = {"micro_batch_size": 4, "gradient_accumulation_steps": 8}
    assert processes("python") == 1 and effective_batch(cfg, "python") == 32
    assert processes(None, ["--num_processes", "8"]) == 8 and effective_batch(cfg, None, ["--num_processes=8"]) == 256
    assert processes("torchrun", ["--nproc_per_node", "2"]) == 2
    cmd = train_command("ax", "c.yml", "accelerate", ["--num_processes", "8"])
    assert cmd == ["ax", "train", "c.yml", "--launcher", "accelerate", "--", "--num_processes", "8"]


def test_hub_models_are_fetched_once_then_training_is_offline(demo_model: Path, monkeypatch) -> None:
    """A stand-in for the Hub download (no network here): what prefetch sends to axolotl's Python."""
    assert hub_models({"base_model": str(demo_model)}) == []
    assert hub_models({"base_model": "org/Model", "tokenizer_config": "org/Tok"}) == ["org/Model", "org/Tok"]
    calls = []
    monkeypatch.setattr(training_run, "run_python", lambda ax, code, repos, **kw: calls.append((repos, kw)) or "ok")
    said: list[str] = []
    assert prefetch(object(), {"base_model": "org/Model"}, said.append) == ["org/Model"]  # type: ignore[arg-type]
    assert calls == [(["org/Model"], {"timeout": 6 * 3600, "offline": False})] and "org/Model" in said[0]
    assert prefetch(object(), {"base_model": str(demo_model)}) == [] and len(calls) == 1  # type: ignore[arg-type]
    assert axolotl_env()["HF_HUB_OFFLINE"] == "1" and "HF_HUB_OFFLINE" not in axolotl_env(offline=False)


def test_round_dry_run_prints_each_command_with_its_launcher(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", "cuda")  # as on a GPU node: accelerate
    code = run_cli(
        "round", "seft", "--rounds", "1-2", "--preset", "gpu-fsdp", "--launcher-args", "--num_processes 8",
        "--dry-run", "--workdir", tmp_path / "w", "--base-dir", REPO,
    )  # fmt: skip
    assert code == 0
    err = capsys.readouterr().err
    assert err.count("train ") == 3  # reviser (once), policy twice
    assert "round-1/train-reviser.yml -- --num_processes 8" in err
    assert "8 process(es), effective batch 32" in err and "launcher accelerate" in err
    assert not (tmp_path / "w").exists()  # nothing ran, nothing written


def test_a_lora_trains_and_merges_in_one_process_only_on_the_cpu(monkeypatch) -> None:
    """axolotl's imports cost about 20 s per command; on a GPU the merge runs on the device, beside
    whatever the trainer left there, so it keeps a process of its own (forced here: no GPU)."""
    lora = {"adapter": "lora"}
    monkeypatch.setenv("SEFTGEN_DEVICE", "cpu")
    assert one_process(lora, "python")
    assert not one_process({}, "python") and not one_process(lora, "accelerate") and not one_process(lora, None)
    monkeypatch.setenv("SEFTGEN_DEVICE", "cuda")
    assert not one_process(lora, "python")
