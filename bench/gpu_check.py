"""The GPU check: what seftgen does differently on a GPU, measured on one, in minutes, offline.

Run it on a machine with a GPU (`make install GPU=1 model`, no network needed):

    .venv/bin/python bench/gpu_check.py [--workdir /tmp/gpu-check]

It prints one table:
- the two-engine SEFT round: the policy samples, then a second model (a copy of the demo model)
  revises; on a GPU the residency policy closes the policy's engine and sees its processes gone
  before the reviser's starts (`seftgen/engines/residency.py`). Rows: the engines' order, the
  seconds the release took, whether any of the first engine's processes were alive at the second
  start.
- eager against CUDA graphs: raw `LLM.chat` decode tokens/s of the same greedy requests with
  `enforce_eager=True` and with vLLM's default (graphs), and each engine's start-up seconds.
- `--data-parallel` over every visible GPU (2 or more): `seftgen sample` of the same prompts in one
  process and as one worker per GPU, the wall time of each and whether the merged run holds the
  same (prompt, sample) keys. Skipped with fewer than 2 GPUs; `tests/test_parallel.py` runs two
  CPU workers in the suite.

On a CPU the round runs with the policy forced (`SEFTGEN_RESIDENCY=exclusive`) and the graphs row
is skipped (the CPU backend has none); `tests/test_residency.py` runs that part in the suite.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from harness import REPO, quiet

from seftgen.devices import IN_PROCESS_ENV


def residency_round(workdir: Path, model: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """A tiny SEFT round in a `seftgen round` process: the policy (`model`) samples 3 prompts, a copy
    of it revises them (a second engine). Returns the residency journal's events, the release time,
    the round's folder and the process's result; the policy is forced exclusive."""
    workdir.mkdir(parents=True, exist_ok=True)
    reviser = workdir / "reviser-model"  # another model folder: a second engine
    if not reviser.exists():
        shutil.copytree(model, reviser)
    recipe = yaml.safe_load((REPO / "recipes" / "seft.yaml").read_text())
    recipe.update(
        prompts={"source": str(REPO / "data" / "demo" / "prompts.jsonl"), "limit": 3},
        policy=str(model),
        sample={"n": 1, "max_tokens": 8},
        revise={"reviser": {"model": str(reviser)}, "max_tokens": 24},
        reviser_data=False,
        train=[],
        eval=None,
        quality={"keep_truncated": True},
        engine={"max_model_len": -1},  # vLLM's auto-fit, the GPU default, on every platform
    )
    path = workdir / "seft.yaml"
    path.write_text(yaml.safe_dump(recipe))
    log = workdir / "residency.jsonl"
    log.unlink(missing_ok=True)
    run_env = {
        **os.environ,
        IN_PROCESS_ENV: "1",  # EngineCore in its own process, as on a GPU (small CPUs run it in process)
        **(env or {}),
        "SEFTGEN_RESIDENCY": "exclusive",
        "SEFTGEN_RESIDENCY_LOG": str(log),
    }
    cmd = [sys.executable, "-m", "seftgen.cli.app", "round", str(path), "--workdir", str(workdir / "w")]
    began = time.monotonic()
    proc = subprocess.run(cmd, env=run_env, capture_output=True, text=True, timeout=1800, check=False)
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    released = [e for e in events if e[0] == "released"]
    return {
        "returncode": proc.returncode,
        "stderr": proc.stderr,
        "events": events,
        "reviser": reviser,
        "round": workdir / "w" / "round-1",
        "release_s": released[0][3] if released else None,
        "total_s": round(time.monotonic() - began, 1),
    }


def graphs_rows(args: Any) -> list[tuple[str, str]]:
    """Eager against CUDA graphs on this GPU (start-up and decode tokens/s), or why not."""
    from seftgen.devices import accelerator

    if accelerator() != "cuda":
        return [("eager vs CUDA graphs", "skipped: no GPU (the CPU backend has no CUDA graphs)")]
    from harness import decode_rates

    rows = []
    variants = {"eager": ({"eager": True}, {}), "cuda graphs": ({"eager": False}, {})}
    for name, variant in variants.items():
        began = time.monotonic()
        rate = decode_rates({name: variant}, model=args.model, seqs=args.seqs, max_tokens=args.max_tokens, repeats=3)
        took = time.monotonic() - began
        # The median of the runs, never the best alone (bench/harness.py).
        rows.append(
            (f"decode, {name}", f"{statistics.median(rate[name]):.1f} tokens/s (start-up and runs {took:.0f} s)")
        )
    return rows


def data_parallel_rows(model: Path, workdir: Path, gpus: int) -> list[tuple[str, str]]:
    """`seftgen sample` in one process, then with `--data-parallel <gpus>`: wall times, same keys."""
    if gpus < 2:
        return [("--data-parallel over every GPU", f"skipped: {gpus} GPUs visible (needs 2 or more)")]
    from seftgen.io.store import read_run

    argv = [
        *(sys.executable, "-m", "seftgen.cli.app", "sample", str(REPO / "data" / "demo" / "prompts.jsonl")),
        *("-m", str(model), "--limit", "128", "-n", "4", "--max-tokens", "128", "--batch-size", "128"),
    ]
    took, keys = {}, {}
    for n in (1, gpus):
        out = workdir / f"dp-{n}"
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name(f"{out.name}.shards"), ignore_errors=True)
        began = time.monotonic()
        cmd = [*argv, "-o", str(out), "--data-parallel", str(n)]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        took[n] = time.monotonic() - began
        if proc.returncode != 0:
            return [(f"--data-parallel {n}", f"FAILED: {proc.stderr[-300:]}")]
        keys[n] = sorted(read_run(out).select("prompt_id", "sample_idx").iter_rows())
    return [
        ("--data-parallel, 1 process", f"{took[1]:.0f} s (128 prompts x 4 samples, with start-up)"),
        (
            f"--data-parallel {gpus}",
            f"{took[gpus]:.0f} s ({took[1] / took[gpus]:.2f}x); same keys: {keys[1] == keys[gpus]}",
        ),
    ]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Print the table; return its rows and the round's result (`residency_round`)."""
    quiet()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="demo")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--seqs", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=256)
    args = parser.parse_args(argv)
    from seftgen.devices import accelerator, visible_gpus
    from seftgen.models import resolve_model

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="seftgen-gpu-check-"))
    model = Path(resolve_model(args.model))
    rows: list[tuple[str, str]] = [("device", f"{accelerator()} ({visible_gpus()} GPUs visible)")]
    done = residency_round(workdir / "round", model)
    order = " -> ".join(f"{e[0]} {Path(e[1]).name}" for e in done["events"])
    alive = [e[2].get("previous_alive") for e in done["events"] if e[0] == "start" and isinstance(e[2], dict)]
    rows += [
        ("two-engine SEFT round", "ok" if done["returncode"] == 0 else f"FAILED: {done['stderr'][-300:]}"),
        ("  engines, in order", order or "none recorded"),
        ("  release of the first engine", f"{done['release_s']} s" if done["release_s"] is not None else "none"),
        ("  first engine alive at second start", str(any(alive))),
        ("  round wall time", f"{done['total_s']} s"),
    ]
    rows += graphs_rows(args)
    rows += data_parallel_rows(model, workdir, visible_gpus() if accelerator() == "cuda" else 0)
    width = max(len(k) for k, _ in rows)
    print("\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return {"rows": dict(rows), "round": done}


if __name__ == "__main__":
    main()
