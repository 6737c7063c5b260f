"""Engines run models: offline vLLM, any OpenAI-compatible server, or Ray Data LLM on a cluster.

`get_engine(spec)` caches engines per process, so a pipeline (or a test session) that names the
same model twice loads it once.
"""

from __future__ import annotations

import atexit
import time
from dataclasses import dataclass, replace
from pathlib import Path

from seftgen.choices import EngineKind
from seftgen.devices import cpu_engine_env, default_dtype, default_eager, default_max_model_len, in_process
from seftgen.engines import residency
from seftgen.engines.base import Completion, Engine, Generation, Messages, SamplingConfig
from seftgen.errors import UserError
from seftgen.models import DEMO, resolve_model
from seftgen.watchdog import ensure_watchdog

__all__ = [
    "Completion",
    "Engine",
    "EngineSpec",
    "Generation",
    "Messages",
    "SamplingConfig",
    "get_engine",
    "release_engines",
]


@dataclass(frozen=True)
class EngineSpec:
    """Everything needed to build an engine; hashable, so it keys the engine cache."""

    model: str = "demo"
    kind: EngineKind = EngineKind.VLLM
    # vLLM
    dtype: str | None = None  # None: the platform's (devices.default_dtype: auto on GPUs; bf16 or fp32 on CPUs)
    head_dtype: str | None = None  # lm_head (logits) dtype; "float32": fine-grained judge probabilities
    max_model_len: int | None = None  # None: the platform's (devices.default_max_model_len: auto-fit on GPUs)
    eager: bool | None = None  # None: the platform's (devices.default_eager: CUDA graphs on GPUs, eager on CPUs)
    memory_share: float | None = None  # None: 0.9 with CUDA, 0.3 on CPU (see default_memory_share)
    tensor_parallel_size: int = 1
    max_num_seqs: int | None = None  # sequences decoded together; None: vLLM's default (256 on CPU)
    seed: int = 0
    chat_template: str | None = None  # path to a Jinja chat template file
    # OpenAI-compatible
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    max_retries: int = 5
    timeout: float = 120.0
    price_in: float = 0.0  # list prices, USD per million tokens (the Batch API is charged half)
    price_out: float = 0.0
    batch_api: bool = False  # requests through the provider's Files and Batches endpoints
    batch_poll: float = 10.0  # seconds before the first status check of a batch (then 1.5x, up to 60)
    # Ray Data LLM
    ray_address: str | None = None
    replicas: int = 1
    ray_batch_size: int = 64


_CACHE: dict[EngineSpec, Engine] = {}


def make_room(spec: EngineSpec, share: float) -> None:
    """The residency policy (`residency.py`): on an accelerator, close every other local engine,
    and see its processes gone and its memory free, before `spec`'s engine starts, unless every
    engine's memory share was given and they fit together. Engines that run in this process (small
    CPUs) are always closed first. Engines not started yet hold nothing."""
    local = [s for s in _CACHE if s.kind == EngineKind.VLLM and getattr(_CACHE[s], "started", True) and s != spec]
    if local and in_process(cpu_engine_env()):
        # Engines in this process share vLLM's process-wide state: closing one tears down the
        # model-parallel groups that every other one steps with (`v1/engine/core.py`, shutdown:
        # `cleanup_dist_env_and_memory()`), so they never coexist. The closed ones stay cached and
        # start again on their next use (seconds in process, docs/benchmarks.md).
        for other in local:
            residency.JOURNAL.add("close", other.model, [])
            _CACHE[other].close()
        residency.JOURNAL.add("start", spec.model, {"previous_alive": []})
        return
    if (
        not local
        or not residency.exclusive()
        or residency.shares_fit([*(s.memory_share for s in local), spec.memory_share])
    ):
        residency.JOURNAL.add("start", spec.model, {"previous_alive": []})
        return
    closed: set[int] = set()
    for other in local:
        engine = _CACHE.pop(other)
        pids = set(getattr(engine, "pids", set()))
        residency.JOURNAL.add("close", other.model, sorted(pids))
        engine.close()
        waited = residency.wait_gone(pids, other.model)
        residency.JOURNAL.add("released", other.model, sorted(pids), round(waited, 2))
        closed |= pids
    import gc

    gc.collect()
    residency.wait_memory(share, ", ".join(s.model for s in local))
    alive = sorted(residency.running(closed))  # seen just before the next start
    residency.JOURNAL.add("start", spec.model, {"previous_alive": alive})


def _read_template(path: str | None) -> str | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise UserError("chat template file does not exist", file=path)
    return file.read_text()


def resolved(spec: EngineSpec) -> EngineSpec:
    """The spec as the engine cache keys it: 'demo', a relative path and a symlink to the same
    folder are one model, and an unset dtype is the platform's, so they are one engine."""
    if spec.kind not in (EngineKind.VLLM, EngineKind.RAY):
        return spec
    # Ray actors may run on other machines (GPU nodes under a CPU head): there vLLM chooses.
    if spec.kind == EngineKind.RAY:
        return replace(spec, model=resolve_model(spec.model), dtype=spec.dtype or "auto")
    return replace(
        spec,
        model=resolve_model(spec.model),
        dtype=spec.dtype or default_dtype(),
        eager=default_eager() if spec.eager is None else spec.eager,
        max_model_len=spec.max_model_len or default_max_model_len(),
    )


def get_engine(spec: EngineSpec) -> Engine:
    if spec.batch_api and spec.kind != EngineKind.OPENAI:
        raise UserError("the Batch API is for API engines: set `engine` openai and `base_url`", param="batch_api")
    spec = resolved(spec)
    if spec in _CACHE:
        return _CACHE[spec]
    ensure_watchdog()  # engine processes (vLLM's EngineCore, Ray) must not outlive this one
    started = time.monotonic()
    engine: Engine
    # What vLLM needs wherever it runs: in this process or in Ray actors.
    local = {
        "dtype": spec.dtype,
        "head_dtype": spec.head_dtype,
        "max_model_len": spec.max_model_len,
        "eager": spec.eager,
        "memory_share": spec.memory_share,
        "tensor_parallel_size": spec.tensor_parallel_size,
        "max_num_seqs": spec.max_num_seqs,
        "seed": spec.seed,
    }
    if spec.kind == EngineKind.VLLM:
        from seftgen.engines.vllm_engine import VLLMEngine, default_memory_share

        share = spec.memory_share or default_memory_share()
        engine = VLLMEngine(
            spec.model,
            chat_template=_read_template(spec.chat_template),
            before_start=lambda: make_room(spec, share),
            **local,
        )
    elif spec.kind == EngineKind.OPENAI:
        from seftgen.engines.openai_batch import OpenAIBatchEngine
        from seftgen.engines.openai_engine import OpenAIEngine

        if not spec.base_url:
            raise UserError("an openai engine needs `base_url` (e.g. http://127.0.0.1:8000/v1)", param="base_url")
        if spec.model == DEMO:
            raise UserError("with an openai engine, `model` names the served model (see GET /v1/models)", param="model")
        api = OpenAIBatchEngine if spec.batch_api else OpenAIEngine
        batch = {"poll": spec.batch_poll} if spec.batch_api else {}
        engine = api(
            spec.model,
            **batch,
            base_url=spec.base_url,
            api_key_env=spec.api_key_env,
            concurrency=spec.concurrency,
            rpm=spec.rpm,
            tpm=spec.tpm,
            max_retries=spec.max_retries,
            timeout=spec.timeout,
            price_in=spec.price_in,
            price_out=spec.price_out,
            seed=spec.seed,
        )
    elif spec.kind == EngineKind.RAY:
        from seftgen.engines.ray_engine import RayEngine

        if spec.chat_template:
            raise UserError("not supported with a ray engine (it uses the tokenizer's)", param="chat_template")
        engine = RayEngine(
            spec.model,
            address=spec.ray_address,
            replicas=spec.replicas,
            batch_size=spec.ray_batch_size,
            **local,
        )
    else:
        raise UserError(f"unknown engine {spec.kind!r} (choose {', '.join(EngineKind)})", param="engine")
    engine.startup_s += time.monotonic() - started  # a local vLLM engine adds its own start, when it starts
    _CACHE[spec] = engine
    return engine


def cached_engines() -> set[EngineSpec]:
    return set(_CACHE)


@atexit.register
def release_engines(keep: set[EngineSpec] | frozenset[EngineSpec] = frozenset()) -> None:
    """Close cached engines except `keep` (a round frees what it opened before training, which
    needs the memory, and leaves engines its caller opened alone)."""
    keep = {resolved(s) for s in keep}
    for spec in [s for s in _CACHE if s not in keep]:
        _CACHE.pop(spec).close()
    import gc

    gc.collect()
