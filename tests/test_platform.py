"""Platform-aware engine defaults, forced with SEFTGEN_DEVICE so a CPU machine proves the GPU side."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seftgen import devices
from seftgen.engines import EngineSpec, get_engine

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
        ("cpu", 2, None, {devices.RESERVED_CPU_ENV: "0"}),  # small machines: every core decodes
        ("cpu", devices.SMALL_CPU + 1, None, {}),  # larger ones: vLLM's reserved core stands
        ("cpu", 2, "1", {devices.RESERVED_CPU_ENV: "1"}),  # the user's own value wins, and is recorded
        ("cuda", 2, None, {}),
    ],
)
def test_cpu_engine_env_by_platform(monkeypatch, device: str, cores: int, user: str | None, expected: dict) -> None:
    monkeypatch.setenv("SEFTGEN_DEVICE", device)
    if user is None:
        monkeypatch.delenv(devices.RESERVED_CPU_ENV, raising=False)
    else:
        monkeypatch.setenv(devices.RESERVED_CPU_ENV, user)
    assert devices.cpu_engine_env(cores) == expected


def test_the_engine_decodes_on_every_core_of_a_small_cpu(engine) -> None:
    """On this 2-core machine no core is kept for EngineCore: vLLM's worker got the setting, and its
    OpenMP threads are bound to every core (vLLM's own default binds them to one of the two)."""
    if devices.accelerator() != "cpu" or devices.usable_cores() > devices.SMALL_CPU:
        pytest.skip("the policy applies to CPUs of at most SMALL_CPU cores")
    assert engine.llm is not None  # started (the session engine)
    assert engine.settings[devices.RESERVED_CPU_ENV] == "0"
    cores: set[int] = set()
    for pid in engine.pids:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert f"{devices.RESERVED_CPU_ENV}=0".encode() in environ
        for task in Path(f"/proc/{pid}/task").iterdir():
            affinity = os.sched_getaffinity(int(task.name))
            if len(affinity) == 1:  # an OpenMP thread bound to its core
                cores |= affinity
    assert cores == os.sched_getaffinity(0), cores


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
