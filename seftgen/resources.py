"""Where the shipped prompt templates and recipes are: in the wheel, or at the repo top level."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def resource_dir(kind: str) -> Path:
    """`prompts` or `recipes`: inside an installed wheel, else the source checkout's top level."""
    for candidate in (_PACKAGE / "_resources" / kind, _PACKAGE.parent / kind):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"seftgen's {kind}/ folder is missing from this installation")
