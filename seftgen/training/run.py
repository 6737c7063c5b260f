"""`axolotl train` then `axolotl merge-lora`, as subprocesses with their output in log files.

On the CPU with the `python` launcher both run in one process (`ONE_PROCESS`): each command
otherwise spends about 20 s importing axolotl, torch and transformers before it starts (the demo's
round-2 policy: 21 s to the config print, 26 s to train, 20 s of imports and 4 s to merge;
2026-12-07). On GPUs they stay two processes: axolotl merges shard by shard on the GPU
(`cli/merge_lora.py`: `device = "cuda" if torch.cuda.is_available() else "cpu"`), and memory the
trainer left in the process would compete with it.

The console gets one live line per step (step, loss) from the trainer's own log lines. A step
whose merged model and done-marker exist (for the same config) is skipped on rerun; a failed or
killed step is reported with the log's last lines, and rerunning starts it cleanly.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seftgen.devices import accelerator, visible_gpus
from seftgen.errors import UserError
from seftgen.io.manifest import write_json_atomic
from seftgen.provenance import stable_hash
from seftgen.training.env import RESULT_MARK, Axolotl, axolotl_env, run_python
from seftgen.watchdog import ensure_watchdog

DONE = ".seftgen-trained.json"
# The trainer's own bar has no description ("  50%|█████     | 2/4 [00:06<00:06, 3.07s/it]"); the
# tokenizing and weight-loading bars have one, and are not training steps.
_STEP = re.compile(r"(?:^|[\r\n])[ \t]*\d+%\|[^|\r\n]*\|\s*(\d+)/(\d+) \[")
_METRICS = re.compile(r"\{'(?:loss|train_runtime)'[^{}]*\}")


class TrainingFailed(UserError):
    """A training command exited non-zero; the message holds the log's last lines."""

    exit_code = 1


@dataclass
class TrainResult:
    config: Path
    model: Path  # the merged model (LoRA) or the output folder (full fine-tuning)
    log: Path
    steps: int = 0
    losses: list[float] = field(default_factory=list)
    train_loss: float | None = None
    seconds: float = 0.0
    skipped: bool = False
    command: list[str] = field(default_factory=list)  # the `axolotl train` command, launcher included
    effective_batch: int | None = None  # micro batch x accumulation x processes

    def as_dict(self) -> dict[str, Any]:
        return {
            "config": str(self.config),
            "model": str(self.model),
            "log": str(self.log),
            "steps": self.steps,
            "losses": self.losses,
            "train_loss": self.train_loss,
            "seconds": round(self.seconds, 1),
            "skipped": self.skipped,
            "command": self.command,
            "effective_batch": self.effective_batch,
        }


def parse_progress(text: str) -> tuple[int, int, list[float], float | None]:
    """(step, total, per-step losses, final train loss) from HF Trainer output in a log."""
    steps = _STEP.findall(text)
    step, total = (int(steps[-1][0]), int(steps[-1][1])) if steps else (0, 0)
    losses: list[float] = []
    final = None
    for blob in _METRICS.findall(text):
        try:
            metrics = ast.literal_eval(blob)
        except (ValueError, SyntaxError):
            continue
        if "loss" in metrics:
            losses.append(float(metrics["loss"]))
        if "train_loss" in metrics:
            final = float(metrics["train_loss"])
    return step, total, losses, final


def _tail(log: Path, lines: int = 12) -> str:
    text = log.read_text(errors="replace") if log.is_file() else ""
    return "\n".join(text.strip().splitlines()[-lines:])


def train_command(
    axolotl: Axolotl | Path | str, config_path: str | Path, launcher: str | None, launcher_args: list[str] | None = None
) -> list[str]:
    """`axolotl train CFG [--launcher L] [-- ARGS]`: axolotl passes what follows `--` to its
    launcher (axolotl 0.19 `cli/main.py`: "Extract launcher args from extra args (after --)")."""
    executable = axolotl.executable if isinstance(axolotl, Axolotl) else axolotl
    cmd = [str(executable), "train", str(config_path)]
    if launcher:
        cmd += ["--launcher", launcher]
    if launcher_args:
        cmd += ["--", *launcher_args]
    return cmd


# `axolotl train CFG --launcher python` then `axolotl merge-lora CFG`, through axolotl's own CLI
# (its click group, `axolotl.cli.main.cli`) in one interpreter; each command is echoed to the log.
ONE_PROCESS = """
import sys
from axolotl.cli.main import cli
config = sys.argv[1]
for args in (["train", config, "--launcher", "python"], ["merge-lora", config]):
    print("$ axolotl " + " ".join(args), flush=True)
    cli.main(args, prog_name="axolotl", standalone_mode=False)
"""


def one_process(cfg: dict[str, Any], launcher: str | None) -> bool:
    """Whether training and the LoRA merge run in one process (see the module docstring)."""
    return bool(cfg.get("adapter")) and launcher == "python" and accelerator() == "cpu"


_PROCESS_FLAGS = ("--num_processes", "--nproc_per_node", "--nproc-per-node", "--num-processes")


def processes(launcher: str | None, launcher_args: list[str] | None = None) -> int:
    """Training processes (data-parallel replicas). accelerate with no config, and torchrun, use
    every visible GPU; an explicit --num_processes / --nproc_per_node wins; `python` is one."""
    args = launcher_args or []
    for i, arg in enumerate(args):
        name, _, value = arg.partition("=")
        if name in _PROCESS_FLAGS:
            value = value or (args[i + 1] if i + 1 < len(args) else "")
            if value.isdigit():
                return int(value)
    if launcher == "python":
        return 1
    return max(visible_gpus(), 1)


def effective_batch(cfg: dict[str, Any], launcher: str | None, launcher_args: list[str] | None = None) -> int:
    """Examples per optimizer step: it grows with the number of GPUs at the same learning rate."""
    micro = int(cfg.get("micro_batch_size") or 1)
    accumulation = int(cfg.get("gradient_accumulation_steps") or 1)
    return micro * accumulation * processes(launcher, launcher_args)


def hub_models(cfg: dict[str, Any]) -> list[str]:
    """The config's models that are hub ids (not local folders): they must be downloaded first."""
    names = [cfg.get("base_model"), cfg.get("tokenizer_config")]
    return sorted({n for n in names if isinstance(n, str) and n and not Path(n).expanduser().exists()})


PREFETCH = f"""
import json, sys
from huggingface_hub import snapshot_download
for repo in json.load(sys.stdin):
    print("downloading", repo, flush=True)
    snapshot_download(repo)
print({RESULT_MARK!r})
print(json.dumps("ok"))
"""


def prefetch(axolotl: Axolotl, cfg: dict[str, Any], say: Callable[[str], None] | None = None) -> list[str]:
    """Download the config's hub models into the Hub cache, once, in axolotl's environment (its
    huggingface_hub), so that training then runs with HF_HUB_OFFLINE=1. A model already cached
    costs a quick check. Returns the ids fetched."""
    repos = hub_models(cfg)
    if repos:
        if say is not None:
            say(f"downloading {', '.join(repos)} into the Hugging Face cache (once)")
        run_python(axolotl, PREFETCH, repos, timeout=6 * 3600, offline=False)
    return repos


def _run(
    cmd: list[str], log: Path, on_output: Callable[[str], None] | None, axolotl: Axolotl, what: str | None = None
) -> None:
    """Run `cmd`, its output appended to `log`. `what` names it in the log and in errors (default:
    the command line, and `axolotl train` style for errors)."""
    with log.open("ab") as out:
        out.write(f"\n$ {what or ' '.join(cmd)}\n".encode())
        out.flush()
        ensure_watchdog()  # axolotl (and its dataloader workers) end with us, even on SIGKILL
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=axolotl_env(axolotl))
        try:
            while proc.poll() is None:
                time.sleep(1.0)
                if on_output is not None:
                    on_output(log.read_text(errors="replace"))
        finally:
            if proc.poll() is None:  # interrupted: take the trainer down with us
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if proc.returncode != 0:
        name = what or f"axolotl {' '.join(cmd[1:3])}"
        raise TrainingFailed(f"`{name}` exited {proc.returncode}; last lines of {log}:\n{_tail(log)}")


def train(
    axolotl: Axolotl,
    config_path: str | Path,
    log: str | Path,
    *,
    launcher: str | None = None,
    launcher_args: list[str] | None = None,
    on_step: Callable[[int, int, float | None], None] | None = None,
    say: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train (and merge a LoRA adapter); skip when this config's model is already done. A base
    model given as a hub id is downloaded first (`prefetch`); training itself runs offline."""
    config_path = Path(config_path).resolve()
    log = Path(log)
    cfg = yaml.safe_load(config_path.read_text())
    out_dir = Path(cfg["output_dir"])
    model = out_dir / "merged" if cfg.get("adapter") else out_dir
    done = out_dir / DONE
    key = stable_hash(cfg)
    if done.is_file() and json.loads(done.read_text()).get("config_hash") == key and (model / "config.json").is_file():
        previous = json.loads(done.read_text())["result"]
        return TrainResult(**{**previous, "config": config_path, "model": model, "log": log, "skipped": True})
    if out_dir.exists():  # what a killed or failed attempt left: start clean
        shutil.rmtree(out_dir)
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    cmd = train_command(axolotl, config_path, launcher, launcher_args)
    result = TrainResult(
        config_path, model, log, command=cmd, effective_batch=effective_batch(cfg, launcher, launcher_args)
    )
    start = time.monotonic()
    prefetch(axolotl, cfg, say)

    def progress(text: str) -> None:
        step, total, losses, _ = parse_progress(text)
        if on_step is not None and total:
            on_step(step, total, losses[-1] if losses else None)

    if one_process(cfg, launcher):
        both = [str(axolotl.python), "-c", ONE_PROCESS, str(config_path)]
        _run(both, log, progress, axolotl, what=f"axolotl train and merge-lora in one process: {config_path}")
    else:
        _run(cmd, log, progress, axolotl)
    result.steps, _, result.losses, result.train_loss = parse_progress(log.read_text(errors="replace"))
    if cfg.get("adapter") and not one_process(cfg, launcher):
        _run([str(axolotl.executable), "merge-lora", str(config_path)], log, None, axolotl)
    result.seconds = time.monotonic() - start
    if not (model / "config.json").is_file():
        raise TrainingFailed(f"training finished but no model is in {model}; see {log}")
    write_json_atomic(done, {"config_hash": key, "result": result.as_dict() | {"skipped": False}})
    return result
