"""The CLI's one error formatter: library parameter names become this CLI's flags."""

from __future__ import annotations

from seftgen.console import print_error
from seftgen.errors import UserError

# Library parameters whose flag is not `--` + the name with dashes.
RENAMED = {
    "kind": "--kind",
    "engine": "--engine",
    "tensor_parallel_size": "--tensor-parallel",
    "overrides": "--set",
    "round_k": "--round",
    "axolotl": "--axolotl",
    "out": "--out",
    "policy": "--policy",
}


def flag_of(param: str) -> str:
    return RENAMED.get(param) or "--" + param.replace("_", "-")


def show(err: UserError) -> None:
    print_error(err, flag_of)
