"""The import layers: a package imports only from packages below it, so there are no circles and
no import runs back up (the loop above the stages, the CLI a thin skin on top)."""

from __future__ import annotations

import ast
from pathlib import Path

import seftgen

ROOT = Path(seftgen.__file__).parent
# Lowest first. Modules at the package's top (errors, choices, console, ...) are the base, except
# `templates`, which reads template files through `io`.
LAYERS = ["", "io", "templates", "engines", "stages", "evaluation", "training", "export", "rounds", "cli"]


def layer_of(module: str) -> int:
    parts = module.split(".")
    name = parts[1] if len(parts) > 1 else ""
    return LAYERS.index(name) if name in LAYERS else 0


def imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("seftgen"):
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("seftgen")]
    return found


def test_no_import_runs_up_a_layer() -> None:
    bad = []
    checked = 0
    for path in sorted(ROOT.rglob("*.py")):
        module = ".".join(("seftgen", *path.relative_to(ROOT).with_suffix("").parts))
        if module.endswith(".__init__"):
            module = module.removesuffix(".__init__")
        for target in imports(path):
            checked += 1
            if layer_of(target) > layer_of(module):
                bad.append(f"{module} imports {target}")
    assert checked > 100
    assert not bad, "\n".join(bad)


def test_the_layers_are_the_packages() -> None:
    packages = {p.name for p in ROOT.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert packages == set(LAYERS) - {"", "templates"}
