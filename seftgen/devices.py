"""Which accelerator this machine has, found without initialising CUDA in this process.

vLLM starts its own worker processes; a parent that has initialised CUDA (`torch.cuda.is_available()`
can, unless PYTORCH_NVML_BASED_CUDA_CHECK=1) forces them to `spawn` and holds a CUDA context of its
own. So seftgen never asks torch: it reads the NVIDIA driver's device list instead, and
`SEFTGEN_DEVICE=cpu|cuda` forces the answer (tests force the GPU policies on CPU this way).
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

ENV = "SEFTGEN_DEVICE"
_DRIVER_GPUS = Path("/proc/driver/nvidia/gpus")


@cache
def _driver_gpus() -> int:
    try:
        return sum(1 for _ in _DRIVER_GPUS.iterdir())
    except OSError:
        return 0


def accelerator() -> str:
    """'cuda' or 'cpu' (forced by $SEFTGEN_DEVICE)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("cpu", "cuda"):
        return forced
    return "cuda" if visible_gpus() > 0 else "cpu"


def visible_gpus() -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else every GPU the driver lists."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"]) if _driver_gpus() else 0
    return _driver_gpus()
