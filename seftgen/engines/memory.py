"""The KV cache of a local engine that runs in this process on the CPU.

vLLM's CPU worker sizes the KV cache as the memory share of all RAM minus what its process holds
(vLLM 0.32 `v1/worker/cpu_worker.py: determine_available_memory`: `consumed_memory =
psutil.Process(os.getpid()).memory_info().rss`, `requested_memory_for_kv = requested_cpu_memory -
consumed_memory`, and a ValueError when that is not positive). In its own worker process that is
the engine's own weights and runtime. In the caller's process (`devices.cpu_engine_env` on small
CPUs) it is everything the process holds, other engines included: a second engine in one process
got a negative KV cache and failed. So seftgen sizes the cache itself, as vLLM would for an engine
alone: the share minus this model's weights (read from the safetensors headers, at the dtype the
engine runs in) and the runtime a worker holds besides them, and passes it as
`kv_cache_memory_bytes`, which vLLM takes as given (`Explicitly set ... GiB for KV cache`).
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import psutil

from seftgen.errors import UserError

# What a CPU worker holds besides the weights (torch, vLLM, the warm-up's activations): the demo
# model's engine process held 3.54 GiB with its KV cache at a 0.15 share of 23.5 GiB, of which the
# weights are 0.54 GiB and the KV cache about 2.4 GiB (measured 2026-12-07).
RUNTIME_BYTES = 1 << 30
KV_SPACE_ENV = "VLLM_CPU_KVCACHE_SPACE"  # vLLM's own (GiB): when the user sets it, it stands
MIN_KV_BYTES = 256 << 20  # below this a 2048-token context of a small model hardly fits
_DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}
_STORED_BYTES = {"F64": 8, "F32": 4, "BF16": 2, "F16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


def local_folder(model: str) -> Path | None:
    """The folder holding `model`: itself, or a hub id's snapshot in the Hugging Face cache
    (`snapshot_download(local_files_only=True)`: never the network); None when not downloaded."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(model, local_files_only=True))
    except Exception:  # not cached, or not a hub id at all: vLLM will say which
        return None


def weight_bytes(model: str, dtype: str) -> int | None:
    """Bytes of the model's weights at `dtype` ('auto': as stored), from its safetensors headers
    (no tensor is read); for other weight files, their size on disk; None when the model is neither
    a local folder nor a hub id already in the Hugging Face cache (vLLM will fetch it)."""
    folder = local_folder(model)
    if folder is None:
        return None
    files = sorted(folder.glob("*.safetensors"))
    if not files:
        other = [f.stat().st_size for f in folder.glob("*.bin")]
        return sum(other) if other else None
    total = 0
    for file in files:
        with file.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
        for name, tensor in header.items():
            if name == "__metadata__":
                continue
            stored = _STORED_BYTES.get(tensor["dtype"], 4)
            per = _DTYPE_BYTES.get(dtype, stored) if tensor["dtype"] in ("F32", "BF16", "F16") else stored
            total += math.prod(tensor["shape"]) * per
    return total


def in_process_kv_bytes(model: str, dtype: str, share: float) -> int | None:
    """The KV cache an engine alone in its process would get: share x RAM - weights - runtime;
    None when the weights cannot be read before the start (vLLM's own rule then applies)."""
    weights = weight_bytes(model, dtype)
    if weights is None:
        return None
    total = psutil.virtual_memory().total
    kv = int(share * total) - weights - RUNTIME_BYTES
    if kv < MIN_KV_BYTES:
        raise UserError(
            f"a memory share of {share} ({share * total / 2**30:.1f} GiB of this machine's RAM) leaves "
            f"{max(kv, 0) / 2**30:.2f} GiB for {model}'s KV cache after its weights",
            hint="give the engine a larger memory share",
        )
    return kv
