"""Platform-aware engine defaults, forced with SEFTGEN_DEVICE so a CPU machine proves the GPU side."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seftgen import devices
from seftgen.engines import EngineSpec, cached_engines, get_engine, release_engines
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError

# /proc/cpuinfo lines: this project's VM (AVX2 only), a Sapphire Rapids Xeon, an AWS Graviton3.
AVX2_EPYC = "flags\t\t: fpu vme de pse tsc msr pae mce cx8 sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2\n"
SAPPHIRE_RAPIDS = "flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8\n"
GRAVITON3 = "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics sve bf16 i8mm\n"


def test_bf16_is_read_from_the_cpu_flags() -> None:
    assert not devices.bf16_in_cpuinfo(AVX2_EPYC) and not devices.bf16_in_cpuinfo("")
    assert devices.bf16_in_cpuinfo(SAPPHIRE_RAPIDS) and devices.bf16_in_cpuinfo(GRAVITON3)


@pytest.mark.parametrize(
    ("device", "bf16", "expected"), [("cuda", False, "auto"), ("cpu", True, "bfloat16"), ("cpu", False, "float32")]
)
def test_default_dtype_by_platform(monkeypatch, device: str, bf16: bool, expected: str) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", device)
    monkeypatch.setattr(devices, "cpu_has_bf16", lambda: bf16)
    assert devices.default_dtype() == expected


def test_an_engine_records_the_dtype_it_resolved(engine) -> None:
    """The session engine was asked for no dtype: it runs with the platform's, and says so."""
    assert engine.settings["dtype"] == devices.default_dtype() and engine.settings["device"] == devices.accelerator()
    assert get_engine(EngineSpec(dtype=devices.default_dtype())) is engine  # one engine, not a second


@pytest.mark.parametrize(
    ("device", "cores", "user", "expected"),
    [
        # small machines: every core decodes, in this process
        ("cpu", 2, None, {devices.RESERVED_CPU_ENV: "0", devices.IN_PROCESS_ENV: "0"}),
        ("cpu", devices.SMALL_CPU + 1, None, {}),  # larger ones: vLLM's reserved core and processes stand
        # the user's own values win, and are recorded
        ("cpu", 2, "1", {devices.RESERVED_CPU_ENV: "1", devices.IN_PROCESS_ENV: "1"}),
        ("cpu", devices.SMALL_CPU + 1, "0", {devices.RESERVED_CPU_ENV: "0", devices.IN_PROCESS_ENV: "0"}),
        ("cuda", 2, None, {}),
    ],
)
def test_cpu_engine_env_by_platform(monkeypatch, device: str, cores: int, user: str | None, expected: dict) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", device)
    for var in (devices.RESERVED_CPU_ENV, devices.IN_PROCESS_ENV):
        if user is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, user)
    assert devices.cpu_engine_env(cores) == expected
    assert devices.in_process(expected) is (expected.get(devices.IN_PROCESS_ENV) == "0")


def test_the_engine_decodes_on_every_core_of_a_small_cpu(engine) -> None:
    """On this 2-core machine the engine runs in this process: vLLM started no EngineCore or worker
    process for it, so no core is kept for one, and the model's threads span every core."""
    if devices.accelerator() != "cpu" or devices.usable_cores() > devices.SMALL_CPU:
        pytest.skip("the policy applies to CPUs of at most SMALL_CPU cores")
    import torch

    assert engine.llm is not None  # started (the session engine)
    assert engine.settings[devices.RESERVED_CPU_ENV] == "0" and engine.settings[devices.IN_PROCESS_ENV] == "0"
    assert engine.pids == set()  # vLLM started no process for it
    assert type(engine.llm.llm_engine.engine_core).__name__ == "InprocClient"
    assert torch.get_num_threads() == devices.usable_cores()
    pinned = [os.sched_getaffinity(int(t.name)) for t in Path("/proc/self/task").iterdir()]
    assert all(a == os.sched_getaffinity(0) for a in pinned), pinned  # no thread is held to one core


@pytest.mark.parametrize(
    ("device", "given", "expected"), [("cuda", None, False), ("cpu", None, True), ("cuda", True, True)]
)
def test_eager_by_platform(monkeypatch, demo_model, device: str, given: bool | None, expected: bool) -> None:
    """CUDA graphs on GPUs, eager on CPUs, `--eager/--no-eager` wins; the engine passes it to vLLM
    (its settings, as the manifest records them; the engine is not started here)."""
    from seftgen.engines import resolved
    from seftgen.engines.vllm_engine import VLLMEngine

    monkeypatch.setenv("SEFTGEN_DEVICE", device)
    assert resolved(EngineSpec(eager=given)).eager is expected
    assert VLLMEngine(str(demo_model), eager=given).settings["enforce_eager"] is expected


def test_eager_flag_reaches_the_spec() -> None:
    from seftgen.cli.options import ENGINE_OPTIONS, engine_spec_from

    values = {name: default for name, _, default in ENGINE_OPTIONS}
    assert engine_spec_from(values).eager is None and engine_spec_from(values | {"eager": False}).eager is False


@pytest.mark.parametrize(
    ("device", "given", "expected"), [("cuda", None, -1), ("cpu", None, 2048), ("cuda", 4096, 4096)]
)
def test_context_length_by_platform(monkeypatch, demo_model, device: str, given: int | None, expected: int) -> None:
    """GPUs: vLLM's auto-fit (-1: the model's context, or what fits the memory share); CPUs: 2048."""
    from seftgen.engines import resolved
    from seftgen.engines.vllm_engine import VLLMEngine

    monkeypatch.setenv("SEFTGEN_DEVICE", device)
    assert resolved(EngineSpec(max_model_len=given)).max_model_len == expected
    engine = VLLMEngine(str(demo_model), max_model_len=given)
    assert engine.settings["max_model_len"] == expected
    if expected > 0:
        assert engine.max_model_len == expected  # known without starting the engine


def test_a_hub_id_in_the_hugging_face_cache_has_known_weights(monkeypatch, demo_model: Path, tmp_path: Path) -> None:
    """A hub id already downloaded is read from its snapshot in the cache (the demo model's files,
    laid out as huggingface_hub keeps them), never fetched; one not in the cache is unknown."""
    import huggingface_hub.constants

    from seftgen.engines.memory import local_folder, weight_bytes

    repo = tmp_path / "models--acme--tiny"
    snapshot = repo / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("a" * 40)
    for f in demo_model.iterdir():
        if f.is_file():
            (snapshot / f.name).symlink_to(f)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert local_folder("acme/tiny") == snapshot
    assert weight_bytes("acme/tiny", "float32") == weight_bytes(str(demo_model), "float32") > 0
    assert local_folder("acme/absent") is None and weight_bytes("acme/absent", "float32") is None


def test_an_engine_in_this_process_sizes_its_own_kv_cache(engine, demo_model: Path) -> None:
    """vLLM would charge an engine in this process for all the process holds (the session engine's
    cache included); seftgen gives it the share minus its own weights and runtime, as vLLM would an
    engine alone in its process. The weights come from the safetensors headers."""
    import psutil

    from seftgen.engines.memory import RUNTIME_BYTES, in_process_kv_bytes, weight_bytes

    stored = sum(f.stat().st_size for f in demo_model.glob("*.safetensors"))  # bf16 on disk, plus headers
    assert 0 < stored - weight_bytes(str(demo_model), "auto") < 1 << 20
    assert weight_bytes(str(demo_model), "float32") == 2 * weight_bytes(str(demo_model), "bfloat16")
    assert weight_bytes("HuggingFaceTB/SmolLM2-135M-Instruct", "float32") is None  # a hub id: vLLM's rule
    if not devices.in_process(devices.cpu_engine_env()):
        pytest.skip("engines run in their own processes here")
    share = engine.settings["gpu_memory_utilization"]
    expected = int(share * psutil.virtual_memory().total) - weight_bytes(engine.model, engine.settings["dtype"])
    assert engine.settings["kv_cache_memory_bytes"] == expected - RUNTIME_BYTES
    # A second engine in this process gets its own cache (vLLM's rule gave it none). The session's
    # engine is closed first (engines in one process share vLLM's process-wide state: closing one
    # tore down the groups the other stepped with), and starts again on its next use.
    callers = cached_engines()
    hello = [[{"role": "user", "content": "Hi"}]]
    other = get_engine(EngineSpec(seed=7))
    try:
        assert other.generate(hello, SamplingConfig(max_tokens=2))[0].completions
        assert not engine.started and other.started
    finally:
        release_engines(callers)
    assert engine.generate(hello, SamplingConfig(max_tokens=2))[0].completions and engine.started
    with pytest.raises(UserError, match=r"leaves 0\.00 GiB"):
        in_process_kv_bytes(str(demo_model), "float32", 0.01)
