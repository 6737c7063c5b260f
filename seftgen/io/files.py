"""Reading the small files users and runs hand us (recipes, templates, presets, configs,
manifests) as mappings, with one-line errors that name the file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from seftgen.errors import UserError, yaml_problem


def read_mapping(path: Path, what: str, *, empty_ok: bool = False) -> dict[str, Any]:
    """The YAML (or JSON, by suffix) mapping in `path`; `what` names the file in errors."""
    as_json = path.suffix == ".json"
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if as_json else yaml.safe_load(text)
    except UnicodeDecodeError as exc:
        raise UserError(f"{what} is not UTF-8 text (byte {exc.start + 1})", file=path) from exc
    except json.JSONDecodeError as exc:
        raise UserError(f"{what} is not valid JSON ({exc.msg} at line {exc.lineno})", file=path) from exc
    except yaml.YAMLError as exc:
        raise UserError(f"{what} is not valid YAML ({yaml_problem(exc)})", file=path) from exc
    if data is None and empty_ok:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{what} must be a {'JSON object' if as_json else 'YAML mapping'}", file=path)
    return data
