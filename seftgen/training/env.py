"""Where axolotl is, and running Python inside its environment.

axolotl pins packages that vLLM's resolve cannot hold (huggingface_hub 1.17 vs >= 1.31), so it is
never imported here: seftgen finds its executable and talks to it by subprocess. The lookup order
is one setting: `--axolotl PATH` (or `$SEFTGEN_AXOLOTL`), then `axolotl` on PATH, then
`.venv-train/bin/axolotl` in the working directory or the seftgen checkout.
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.models import cache_dir
from seftgen.watchdog import ensure_watchdog

ENV_VAR = "SEFTGEN_AXOLOTL"
TRAIN_VENV = ".venv-train"
_CHECKOUT = Path(__file__).resolve().parents[2]
RESULT_MARK = "@@seftgen-result@@"


@dataclass(frozen=True)
class Axolotl:
    executable: Path  # the `axolotl` console script
    python: Path  # the interpreter of its environment


def _interpreter(script: Path) -> Path:
    """The Python a console script runs with: its shebang, else the `python` beside it."""
    try:
        first = script.read_text(errors="replace").splitlines()[0]
    except (OSError, IndexError):
        first = ""
    if first.startswith("#!") and "python" in first:
        candidate = Path(first[2:].strip().split()[0])
        if candidate.is_file():
            return candidate
    return script.with_name("python")


def find_axolotl(explicit: str | Path | None = None) -> Axolotl | None:
    """The axolotl to use, or None when there is none (validation is then skipped, with a warning)."""
    setting = explicit or os.environ.get(ENV_VAR)
    if setting:
        path = Path(setting).expanduser()
        if path.is_dir():  # a venv folder
            path = path / "bin" / "axolotl"
        if not path.is_file():
            raise UserError("no axolotl executable there", file=setting, hint=f"`axolotl` or ${ENV_VAR}")
        return Axolotl(path.resolve(), _interpreter(path))
    candidates = [shutil.which("axolotl")]
    candidates += [str(base / TRAIN_VENV / "bin" / "axolotl") for base in (Path.cwd(), _CHECKOUT)]
    for c in candidates:
        if c and Path(c).is_file():
            return Axolotl(Path(c).resolve(), _interpreter(Path(c)))
    return None


def axolotl_env(axolotl: Axolotl | None = None, *, offline: bool = True) -> dict[str, str]:
    """Environment for axolotl subprocesses: no telemetry, and its own environment first on PATH.

    axolotl's default launcher runs accelerate BY NAME (axolotl 0.19, `cli/utils/train.py`:
    `base_cmd = ["accelerate", "launch"] + all_launcher_args + ["-m", "axolotl.cli.train"]`, then
    `subprocess.run(cmd)`), so PATH decides which accelerate runs. seftgen's own environment has an
    accelerate too (the demo extra) whose Python has no axolotl: the training environment's `bin/`
    must come first. `offline`: HF_HUB_OFFLINE=1, for runs whose models are all local folders (or
    already in the Hub cache, see `seftgen.training.run.prefetch`)."""
    env = {**os.environ, "AXOLOTL_DO_NOT_TRACK": "1", "TOKENIZERS_PARALLELISM": "false"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    else:
        env.pop("HF_HUB_OFFLINE", None)
    if axolotl is not None:
        env["PATH"] = os.pathsep.join([str(axolotl.executable.parent), env.get("PATH", "")])
    return env


def run_python(axolotl: Axolotl, code: str, payload: Any, timeout: float = 900, *, offline: bool = True) -> Any:
    """Run `code` in axolotl's interpreter with `payload` as JSON on stdin; it prints its result
    as JSON after a marker line (axolotl prints on import, so stdout is not ours alone)."""
    ensure_watchdog()
    proc = subprocess.run(
        [str(axolotl.python), "-c", code],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=axolotl_env(axolotl, offline=offline),
        check=False,
    )
    if RESULT_MARK not in proc.stdout:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])[:600]
        raise UserError(f"axolotl's Python failed (exit {proc.returncode}): {tail}", file=axolotl.python)
    return json.loads(proc.stdout.split(RESULT_MARK, 1)[1])


# A validator that stays up: importing axolotl's config schema takes about 8 s here, and a round
# validates one config per training step. It reads one JSON list of configs per line and answers
# with the marker line and one JSON line of results.
VALIDATE = f"""
import copy, json, sys
from axolotl.utils.config import validate_config
from axolotl.utils.dict import DictDefault
from axolotl.utils.schemas.config import AxolotlInputConfig
from axolotl.utils.schemas.datasets import DPODataset, SFTDataset

top = set(AxolotlInputConfig.model_fields) | {{f.alias for f in AxolotlInputConfig.model_fields.values() if f.alias}}

def check(cfg):
    # axolotl drops keys its schema does not name, silently: name them instead.
    unknown = [k for k in cfg if k not in top]
    model = DPODataset if cfg.get("rl") else SFTDataset
    for i, ds in enumerate(cfg.get("datasets") or []):
        unknown += [f"datasets[{{i}}].{{k}}" for k in ds if k not in model.model_fields]
    if unknown:
        return "axolotl does not know " + ", ".join(unknown) + " (it would drop them silently)"
    try:
        validate_config(DictDefault(copy.deepcopy(cfg)))
    except Exception as exc:
        return "axolotl rejects the config: " + " ".join(str(exc).split())[:800]
    return None

for line in sys.stdin:
    results = [check(cfg) for cfg in json.loads(line)]
    print({RESULT_MARK!r})
    print(json.dumps(results), flush=True)
"""


class _Validator:
    """One long-lived `python -c VALIDATE` in axolotl's environment (its output goes to a log file
    but for the answers). It ends when seftgen does: stdin closes, and the watchdog covers a kill."""

    def __init__(self, axolotl: Axolotl) -> None:
        ensure_watchdog()
        self.log = cache_dir() / "logs" / f"axolotl-validator-{os.getpid()}.log"  # beside the CLI's tool logs
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._sink = self.log.open("ab")
        self._buffer = b""
        self.proc = subprocess.Popen(
            [str(axolotl.python), "-u", "-c", VALIDATE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._sink,
            bufsize=0,
            env=axolotl_env(axolotl),
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ask(self, configs: list[dict[str, Any]], timeout: float) -> list[str | None]:
        import select

        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(configs) + "\n").encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        marked = False
        while True:  # axolotl prints on import: skip lines until the marker
            while b"\n" not in self._buffer:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([fd], [], [], left)[0]:
                    self.close()
                    raise UserError(f"axolotl's validator gave no answer in {timeout:.0f} s", file=self.log)
                chunk = os.read(fd, 65536)  # unbuffered: select sees every byte not read yet
                if not chunk:
                    tail = " ".join(self.log.read_text(errors="replace").strip().splitlines()[-3:])[:600]
                    raise UserError(f"axolotl's Python failed (exit {self.proc.wait()}): {tail}", file=self.log)
                self._buffer += chunk
            line, self._buffer = self._buffer.split(b"\n", 1)
            if marked:
                return json.loads(line)
            marked = line.decode(errors="replace").strip() == RESULT_MARK

    def close(self) -> None:
        if self.alive():
            assert self.proc.stdin is not None
            self.proc.stdin.close()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self._sink.close()


_VALIDATORS: dict[Path, _Validator] = {}


@atexit.register
def close_validators() -> None:
    for validator in _VALIDATORS.values():
        validator.close()
    _VALIDATORS.clear()


def validate_configs(axolotl: Axolotl, configs: list[dict[str, Any]], timeout: float = 900) -> list[str | None]:
    """axolotl's own `validate_config` plus the unknown-key check, per config: None or the problem.
    The validator process is started once per axolotl and kept for the next call."""
    validator = _VALIDATORS.get(axolotl.python)
    if validator is None or not validator.alive():
        validator = _VALIDATORS[axolotl.python] = _Validator(axolotl)
    return validator.ask(configs, timeout)
