"""Prompt templates: YAML files with Jinja2 fields, one per task (like distilabel's task catalogue).

A template names its task, documents itself, and holds the text fields a stage renders (`user`,
`target`, `assistant_prefix`, ...) plus the settings its parser needs (labels, answer tokens).
Its hash (of the whole file) goes into every row it produced.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jinja2

from seftgen.errors import UserError
from seftgen.formats import OutputFormat
from seftgen.io.files import read_mapping
from seftgen.provenance import template_hash
from seftgen.resources import resource_dir

_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


@functools.lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    """Compiling is ~100x slower than rendering; stages render the same field for every row."""
    return _ENV.from_string(source)


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    path: Path
    source: str
    data: dict[str, Any]

    @cached_property
    def hash(self) -> str:
        return template_hash(self.source)

    @cached_property
    def output(self) -> OutputFormat | None:
        """The reply format declared under `output:` (None for templates whose reply is not parsed)."""
        spec = self.data.get("output")
        if isinstance(spec, dict) and "template" in spec:  # another template's format, declared once there
            return _borrowed(spec, self.path)
        return None if spec is None else OutputFormat.from_template(spec, self.data, self.path)

    @cached_property
    def output_format(self) -> str | None:
        """The reply format as prompts show it (`{{ output_format }}`), built once."""
        return None if self.output is None else self.output.skeleton()

    def render(self, field: str, **values: Any) -> str:
        if field not in self.data:
            raise UserError(f"template has no '{field}' field", file=self.path, field=field)
        if self.output_format is not None and "output_format" not in values:
            values["output_format"] = self.output_format
        try:
            return _compile(self.data[field]).render(**values).strip()
        except jinja2.TemplateError as exc:
            raise UserError(f"cannot render ({exc})", file=self.path, field=field) from exc

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)


def _borrowed(spec: dict[str, Any], path: Path) -> OutputFormat:
    """`output: {template: NAME, fields: [...]}`: NAME's declared format, or its leading `fields`
    (a scoring call that stops after the score)."""
    base = load_template(str(spec["template"])).output
    if base is None:
        raise UserError(f"template {spec['template']!r} declares no output format", file=path, field="output")
    names = [f.name for f in base.fields]
    wanted = [str(n) for n in spec.get("fields", names)]
    if wanted != names[: len(wanted)] or not wanted:
        raise UserError(f"output fields must be a leading part of {names}, got {wanted}", file=path, field="output")
    return OutputFormat(base.fields[: len(wanted)])


def template_names() -> list[str]:
    return sorted(p.stem for p in resource_dir("prompts").glob("*.yaml"))


def load_template(name_or_path: str) -> PromptTemplate:
    """A shipped template by name (`reviser`, `judge_general`, ...) or a YAML file of your own."""
    path = Path(name_or_path)
    if not path.is_file():
        path = resource_dir("prompts") / f"{name_or_path}.yaml"
        if not path.is_file():
            raise UserError(f"unknown template {name_or_path!r}", hint=f"shipped: {', '.join(template_names())}")
    data = read_mapping(path, "template")
    if "user" not in data and "stage1" not in data:  # self templates continue the sample's own turns
        raise UserError("template must be a mapping with at least a 'user' (or 'stage1') field", file=path)
    template = PromptTemplate(data.get("name", path.stem), path, path.read_text(encoding="utf-8"), data)
    _ = template.output  # a bad `output:` declaration is reported now, before any model loads
    for field, text in data.items():  # and so is Jinja that does not compile
        if isinstance(text, str) and ("{{" in text or "{%" in text):
            try:
                _compile(text)
            except jinja2.TemplateSyntaxError as exc:
                raise UserError(
                    f"Jinja syntax error ({exc.message}, line {exc.lineno})", file=path, field=field
                ) from exc
    return template


def instruction_text(messages: list[dict[str, str]]) -> str:
    """The prompt shown inside reviser/critic/judge templates: the last user turn, with any
    earlier turns quoted before it so multi-turn context is not lost."""
    turns = [m for m in messages if m["role"] != "system"]
    if len(turns) == 1:
        return turns[0]["content"]
    return "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in turns)
