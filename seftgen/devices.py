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
RESERVED_CPU_ENV = "VLLM_CPU_NUM_OF_RESERVED_CPU"
IN_PROCESS_ENV = "VLLM_ENABLE_V1_MULTIPROCESSING"  # "0": EngineCore and its worker run in the caller
SMALL_CPU = 4  # cores at or below which vLLM's reserved core costs more than it saves
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


# CPU instructions that compute in bf16 natively; without them PyTorch emulates bf16 arithmetic.
_BF16_FLAGS = {"avx512_bf16", "amx_bf16", "bf16"}  # x86 (AVX-512 BF16, AMX), aarch64 (FEAT_BF16)


def bf16_in_cpuinfo(text: str) -> bool:
    """Whether a /proc/cpuinfo text lists bf16 instructions (x86 `flags`, aarch64 `Features`)."""
    flags = {f for line in text.splitlines() if line.startswith(("flags", "Features")) for f in line.split()}
    return bool(flags & _BF16_FLAGS)


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions (Linux; elsewhere assumed not)."""
    try:
        return bf16_in_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return False


def default_dtype() -> str:
    """The weight dtype for local engines on this machine, when none is given.

    GPUs: 'auto', vLLM's own choice: the model's dtype where the device supports it, else float16
    (vLLM 0.32 `config/model.py: _resolve_auto_dtype`; `platforms/cuda.py: supported_dtypes` has
    no bf16 below compute capability 8.0, so a bf16 model runs in fp16 on a V100 or T4).
    CPUs: bfloat16 only with bf16 instructions, else float32. vLLM's 'auto' keeps bf16 on every
    x86 CPU (`platforms/cpu.py`: "x86/aarch64 CPU has supported both bf16 and fp16 natively"),
    but on an AVX2-only CPU bf16 is emulated: the demo model decoded at 36-39 tokens/s in float32
    against 16 in bfloat16 on this project's 2-core AMD EPYC (8 sequences, docs/benchmarks.md).
    """
    if accelerator() == "cuda":
        return "auto"
    return "bfloat16" if cpu_has_bf16() else "float32"


def default_eager() -> bool:
    """Whether a local engine runs eager PyTorch when not told (`--eager/--no-eager`).

    GPUs: no, vLLM's own default (vLLM 0.32 `config/model.py`, `enforce_eager`: "If False, we will
    use CUDA graph and eager execution in hybrid for maximal performance"); capturing the graphs
    and compiling costs start-up time once per engine, repaid by faster decoding on any stage of
    more than a few batches. CPUs: yes, as seftgen has always run there: the CPU backend has no
    CUDA graphs, and what torch.compile would save on CPU is not measured yet."""
    return accelerator() != "cuda"


AUTO_CONTEXT = -1  # vLLM's max_model_len "auto"
CPU_CONTEXT = 2048


def default_max_model_len() -> int:
    """A local engine's context length when not told (`--max-model-len`).

    GPUs: -1, vLLM's auto-fit (vLLM 0.32 `config/model.py`, `max_model_len`: "-1 or 'auto' ->
    Automatically choose the maximum model length that fits in GPU memory. This will use the
    model's maximum context length if it fits"), so a judge's two long answers and its template
    fit where the model allows. CPUs: 2048 tokens, what CPU-sized runs need; a longer context
    costs RAM that the CPU backend reserves up front."""
    return AUTO_CONTEXT if accelerator() == "cuda" else CPU_CONTEXT


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, as vLLM's CPU worker reads it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def cpu_engine_env(cores: int | None = None) -> dict[str, str]:
    """The environment a local vLLM engine on the CPU runs with, for the variables seftgen sets:
    the user's own value when set, else seftgen's default; empty on GPUs and where vLLM decides.

    Both defaults apply to small CPUs (at most SMALL_CPU cores); above that vLLM's rules stand.
    - Every core decodes. vLLM 0.32's CPU worker keeps cores off the model's OpenMP threads for
      EngineCore (`utils/ompmultiprocessing.py`: "at least reserve 1/local_world_size core for
      scheduler proc as always use MP executor"; `VLLM_CPU_NUM_OF_RESERVED_CPU` overrides it). On
      2 cores that halves the threads that decode: with none reserved the demo model decoded
      1.3-1.5x faster here (docs/benchmarks.md, "every core decodes on small CPUs").
    - The engine runs in this process. `LLMEngine` takes `multiprocess_mode` from
      `VLLM_ENABLE_V1_MULTIPROCESSING` (`v1/engine/llm_engine.py`); at "1" EngineCore is a spawned
      process, and the CPU platform makes its worker another one (`platforms/cpu.py`: "OMP requires
      the MP executor to function correctly"), each importing torch and vLLM again. At "0" both run
      in this process (the uni executor): an engine started in 22 s against 52 s, and a second one
      in the same process in 5 s against 33 s, decoding at 0.95 of the speed (docs/benchmarks.md,
      "the engine in process on small CPUs"). Engines in one process take turns
      (`engines.make_room`). A GPU keeps the processes: there EngineCore's busy loop overlaps the
      model's steps, and this process never touches CUDA.
    """
    if accelerator() != "cpu":
        return {}
    small = (cores if cores is not None else usable_cores()) <= SMALL_CPU
    env: dict[str, str] = {}
    for var in (RESERVED_CPU_ENV, IN_PROCESS_ENV):
        if var in os.environ:
            env[var] = os.environ[var]
        elif small:
            env[var] = "0"
    return env


def in_process(env: dict[str, str]) -> bool:
    """Whether an engine started with `env` (cpu_engine_env's) runs in the calling process."""
    return env.get(IN_PROCESS_ENV, os.environ.get(IN_PROCESS_ENV, "1")) == "0"
