"""Platform-aware engine defaults, forced with SEFTGEN_DEVICE so a CPU machine proves the GPU side."""

from __future__ import annotations

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
