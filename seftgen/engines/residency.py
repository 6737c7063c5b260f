"""Which local engines may live at once: on an accelerator, one per device set, unless the user
gave memory shares that fit.

vLLM refuses an engine whose memory share exceeds the device's free memory (vLLM 0.32,
`v1/worker/utils.py`: "Free memory on device ... is less than desired GPU memory utilization"),
and `gpu_memory_utilization` is per instance (`config/cache.py`: two engines on one GPU need shares
that add up, "0.5 each"). A round that samples with the policy and then revises with the reviser
would hold 0.9 of the GPU when the reviser's engine starts. So before a local engine starts on an
accelerator, every other local engine is closed (vLLM's multiprocess mode ends EngineCore on
shutdown: SIGTERM, then kill) and its processes are seen gone, then its memory is seen free
(NVML, or `nvidia-smi`), with a timeout and an error that names what still holds it.

On the CPU backend the share is of ALL RAM and engines in their own processes coexist. Engines
that run in this process (small CPUs, `devices.cpu_engine_env`) take turns whatever the policy:
they share vLLM's process-wide state (`engines.make_room`).
`SEFTGEN_RESIDENCY=exclusive|shared` forces the policy, so a CPU test can prove the GPU one.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import psutil

from seftgen.devices import accelerator
from seftgen.errors import UserError

ENV = "SEFTGEN_RESIDENCY"
LOG_ENV = "SEFTGEN_RESIDENCY_LOG"  # a file: every journal event is appended as a JSON line
RELEASE_TIMEOUT_S = 120.0


def exclusive() -> bool:
    """Whether local engines must take turns on the device (accelerators), or may coexist (CPU)."""
    forced = os.environ.get(ENV, "").strip().lower()
    if forced in ("exclusive", "shared"):
        return forced == "exclusive"
    return accelerator() == "cuda"


def shares_fit(shares: Iterable[float | None]) -> bool:
    """Engines coexist on one device only when every one has an explicit share and they add up."""
    values = list(shares)
    return all(v is not None for v in values) and sum(v for v in values if v is not None) <= 1.0


@dataclass
class Journal:
    """What the policy did, in order: ("close", model, pids), ("released", model, pids, seconds),
    ("start", model). Tests and `bench/gpu_check.py` read it."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def add(self, *event: Any) -> None:
        self.events.append(event)
        if path := os.environ.get(LOG_ENV):
            with open(path, "a") as log:
                log.write(json.dumps([*event, time.time()]) + "\n")


JOURNAL = Journal()


# Helpers that live as long as this process, whoever started them: never an engine's.
_NOT_ENGINE = ("resource_tracker", "seftgen.watchdog")


def child_pids() -> set[int]:
    """This process's descendants that can belong to an engine (vLLM's EngineCore, its workers);
    multiprocessing's resource tracker, started with the first engine, lives until we exit."""
    pids = set()
    try:
        children = psutil.Process().children(recursive=True)
    except psutil.Error:
        return pids
    for child in children:
        try:
            cmdline = " ".join(child.cmdline())
        except psutil.Error:
            continue
        if not any(mark in cmdline for mark in _NOT_ENGINE):
            pids.add(child.pid)
    return pids


def wait_gone(pids: set[int], what: str, timeout: float = RELEASE_TIMEOUT_S) -> float:
    """Wait until none of `pids` runs; seconds waited. A process that stays is an error naming it."""
    start = time.monotonic()
    alive = set(pids)
    while alive:
        alive = running(alive)
        if not alive:
            break
        if time.monotonic() - start > timeout:
            raise UserError(
                f"{what}'s engine processes {sorted(alive)} are still running {timeout:.0f}s after it was closed; "
                "the next engine would not have the device's memory",
                hint="end them (kill PID), then rerun: finished parts are kept",
            )
        time.sleep(0.2)
    return time.monotonic() - start


def running(pids: set[int]) -> set[int]:
    """The ones still running (an exited child not yet reaped is a zombie: it holds no memory)."""
    out = set()
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.Error:
            continue
    return out


def device_free_fraction() -> list[float] | None:
    """Free memory / total per visible GPU, or None when it cannot be read (no GPU, no NVML)."""
    try:
        import pynvml  # nvidia-ml-py, a dependency of vLLM's CUDA build

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            out = []
            for i in range(count):
                info = pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i))
                out.append(info.free / info.total)
            return out
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        pass
    try:
        text = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.free,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    fractions = []
    for line in text.strip().splitlines():
        free, total = (float(x) for x in line.split(","))
        fractions.append(free / total if total else 0.0)
    return fractions or None


def wait_memory(share: float, what: str, timeout: float = RELEASE_TIMEOUT_S) -> None:
    """On a GPU: wait until every visible device has `share` of its memory free again."""
    if accelerator() != "cuda":
        return
    start = time.monotonic()
    while True:
        free = device_free_fraction()
        if free is None or min(free) >= share:
            return
        if time.monotonic() - start > timeout:
            raise UserError(
                f"after closing {what}, only {min(free):.0%} of a GPU's memory is free and the next engine "
                f"needs {share:.0%}: another process holds it (see nvidia-smi)",
                hint="free the GPU, or give each engine a smaller `memory_share` so that they add up to at most 1",
            )
        time.sleep(0.5)
