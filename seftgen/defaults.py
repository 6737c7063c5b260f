"""Field defaults of a config dataclass, for the CLI helpers that mirror one (EngineSpec).

Defaults are written once, in a dataclass (`seftgen.stages.config`, `EngineSpec`,
`SamplingConfig`); this reads a dataclass's fields, never a function's signature.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def defaults_of(target: type) -> dict[str, Any]:
    """Field name -> default of a dataclass."""
    return {
        f.name: f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        for f in dataclasses.fields(target)
        if f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING
    }
