"""How axolotl is launched: the default launcher for this machine."""

from __future__ import annotations

from seftgen.devices import accelerator


def default_launcher() -> str | None:
    """axolotl's default launcher is accelerate (GPUs: None keeps it); without a GPU, plain python."""
    return None if accelerator() == "cuda" else "python"
