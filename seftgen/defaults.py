"""One source per default: the CLI and the recipes read the library's own defaults from here.

A default is written once, where the library defines it (a stage function's signature or a config
dataclass); everything that offers the same setting elsewhere reads it back, so the CLI, recipes
and library cannot drift apart (a test compares them too).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from typing import Any


def defaults_of(target: Callable[..., Any] | type) -> dict[str, Any]:
    """Parameter name -> default of a function, or field name -> default of a dataclass."""
    if dataclasses.is_dataclass(target):
        return {
            f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            for f in dataclasses.fields(target)
            if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
        }
    return {
        name: p.default
        for name, p in inspect.signature(target).parameters.items()
        if p.default is not inspect.Parameter.empty
    }
