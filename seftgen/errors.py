"""The one error type users see, and where it points.

Every mistake a user can make (bad file, missing column, unknown model folder, malformed config)
raises `UserError`. The CLI turns it into a single red line and exit code 2; anything else is a
bug and keeps its traceback.

The library speaks of its own parameters: `param` names the one at fault, and a message or hint
writes other parameter names in backticks (`` `base_url` ``). The CLI's one error formatter maps
those names to its flags (`--base-url`), as the `hf` CLI does, so a library user never reads a
flag and a CLI user never reads a Python name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TypeVar

E = TypeVar("E", bound=StrEnum)
_PARAM = re.compile(r"`([a-z_][a-z0-9_]*)`")


class UserError(Exception):
    """A problem with the user's input, named precisely enough to fix it."""

    exit_code = 2

    def __init__(
        self,
        message: str,
        *,
        file: str | Path | None = None,
        row: int | None = None,
        field: str | None = None,
        hint: str | None = None,
        param: str | None = None,
    ) -> None:
        self.message = message
        self.file = str(file) if file is not None else None
        self.row = row
        self.field = field
        self.hint = hint
        self.param = param
        super().__init__(self.format())

    def format(self, flag_of: Callable[[str], str | None] | None = None) -> str:
        """One line. `flag_of` maps a parameter name to the caller's name for it (a CLI flag);
        without it, parameters are shown as the library names them."""

        def name(param: str) -> str:
            return (flag_of(param) if flag_of else None) or f"`{param}`"

        def names(text: str) -> str:
            return _PARAM.sub(lambda m: name(m.group(1)), text) if flag_of else text

        where = []
        if self.file:
            where.append(self.file)
        if self.row is not None:
            where.append(f"row {self.row}")
        if self.field:
            where.append(f"field '{self.field}'")
        if self.param:
            where.append(name(self.param))
        message = names(self.message)
        text = f"{': '.join(where)}: {message}" if where else message
        if self.hint:
            text += f" ({names(self.hint)})"
        return text


def choice(kind: type[E], value: object, param: str) -> E:
    """`value` as a member of the closed set `kind`, or a UserError that lists the choices."""
    try:
        return kind(value)
    except ValueError as exc:
        raise UserError(f"must be one of {', '.join(kind)}, got {value!r}", param=param) from exc


def yaml_problem(exc: Exception) -> str:
    """A YAML error in one line: what is wrong and where (PyYAML's own text spans several)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    return f"{problem} at line {mark.line + 1}, column {mark.column + 1}" if mark else problem
