"""Streaming input: prompts and preference records from JSONL, Parquet or a `datasets` source.

Readers yield one record at a time (memory stays flat for a million prompts) together with the
1-based row number, so every error can name the file, row and field.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.provenance import prompt_id

ROLES = {"system", "user", "assistant"}
PARQUET_BATCH = 4096


def iter_rows(source: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (row number, record) from a .jsonl/.json file, a .parquet file or folder of them,
    a local `datasets` folder (saved with save_to_disk) or a hub dataset id."""
    path = Path(source).expanduser()
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in {".jsonl", ".json"}:
            yield from _iter_jsonl(path)
            return
        if suffix == ".parquet":
            yield from _iter_parquet([path])
            return
        raise UserError("unsupported input format (use .jsonl, .parquet or a dataset)", file=path)
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "dataset_dict.json").exists():
            yield from _iter_datasets_disk(path)
            return
        parts = sorted(path.rglob("*.parquet"))
        if parts:
            yield from _iter_parquet(parts)
            return
        jsonl = sorted(path.glob("*.jsonl"))
        if jsonl:
            for file in jsonl:
                yield from _iter_jsonl(file)
            return
        raise UserError("folder holds no .parquet, .jsonl or saved dataset", file=path)
    if source.startswith((".", "/", "~")) or "/" not in source:
        raise UserError("input file does not exist", file=source)
    yield from _iter_hub(source)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as handle:  # bytes: a line that is not UTF-8 is named, not a traceback
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise UserError(
                    f"not UTF-8 text (byte {raw[exc.start]:#04x} at column {exc.start + 1})", file=path, row=number
                ) from exc
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise UserError(f"invalid JSON ({exc.msg})", file=path, row=number) from exc
            if not isinstance(record, dict):
                raise UserError("each line must be a JSON object", file=path, row=number)
            yield number, record


def _iter_parquet(paths: list[Path]) -> Iterator[tuple[int, dict[str, Any]]]:
    import pyarrow.parquet as pq

    for path in paths:
        try:
            reader = pq.ParquetFile(path)
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise UserError(f"cannot read Parquet ({exc})", file=path) from exc
        number = 0
        for batch in reader.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                number += 1
                yield number, record


def _iter_datasets_disk(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    yield from enumerate(loaded, start=1)


def _iter_hub(dataset_id: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """A hub dataset id (`org/name` or `org/name:split`), streamed so nothing is held in memory."""
    import datasets

    name, _, split = dataset_id.partition(":")
    try:
        stream = datasets.load_dataset(name, split=split or "train", streaming=True)
    except Exception as exc:  # network, auth or missing dataset: all user-facing
        raise UserError(f"cannot load dataset ({exc})", file=dataset_id) from exc
    yield from enumerate(stream, start=1)


@dataclass(frozen=True)
class PromptColumns:
    """Where the prompt is in the input: a plain-text column or a chat-messages column."""

    prompt: str | None = "prompt"
    messages: str | None = None
    system: str | None = None


def to_messages(record: dict[str, Any], cols: PromptColumns, source: str, row: int) -> list[dict[str, str]]:
    """Validate one input record and turn it into chat messages; raise UserError naming the field."""
    if cols.messages:
        value = record.get(cols.messages)
        if cols.messages not in record:
            raise UserError("missing column", file=source, row=row, field=cols.messages)
        messages = check_messages(value, source, row, cols.messages)
        if messages[-1]["role"] == "assistant":
            messages = messages[:-1]  # a trailing answer is not part of the prompt
        if not messages or messages[-1]["role"] != "user":
            raise UserError("the last prompt message must be from the user", file=source, row=row, field=cols.messages)
    else:
        field = cols.prompt or "prompt"
        if field not in record:
            raise UserError("missing column", file=source, row=row, field=field)
        text = record[field]
        if not isinstance(text, str):
            raise UserError(f"expected text, got {type(text).__name__}", file=source, row=row, field=field)
        if not text.strip():
            raise UserError("empty prompt", file=source, row=row, field=field)
        messages = [{"role": "user", "content": text}]
    if cols.system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": cols.system}, *messages]
    return messages


def check_messages(value: Any, source: str, row: int, field: str) -> list[dict[str, str]]:
    if hasattr(value, "tolist"):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise UserError("expected a non-empty list of {role, content} messages", file=source, row=row, field=field)
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise UserError(f"message {i} needs 'role' and 'content'", file=source, row=row, field=field)
        if message["role"] not in ROLES:
            raise UserError(f"message {i} has unknown role {message['role']!r}", file=source, row=row, field=field)
        if not isinstance(message["content"], str) or not message["content"].strip():
            raise UserError(f"message {i} has empty or non-text content", file=source, row=row, field=field)
        messages.append({"role": message["role"], "content": message["content"]})
    return messages


@dataclass(frozen=True)
class Prompt:
    prompt_id: str
    messages: list[dict[str, str]]
    row: int
    source_id: str = ""  # the input row's `id`, else its row number
    verifiable: str | None = None  # JSON of the row's checkable facts (`verifiable_of`)


ID_FIELD = "id"


def source_id_of(record: dict[str, Any], row: int) -> str:
    """A source row's own id (its `id` field) or, without one, its row number in the input."""
    value = record.get(ID_FIELD)
    return str(value) if value is not None and str(value) != "" else str(row)


# Fields of a prompt row that a verifier judge checks answers against: IFEval-style instructions
# (ids and their arguments, one dict per id) and a reference answer.
VERIFIABLE_FIELDS = ("instruction_id_list", "kwargs", "reference")


def verifiable_of(record: dict[str, Any], source: str, row: int) -> str | None:
    """The row's checkable facts as JSON (null without any), validated so that a verifier never
    meets a malformed row."""
    facts = {k: record[k] for k in VERIFIABLE_FIELDS if record.get(k) is not None}
    if not facts:
        return None
    ids, kwargs = facts.get("instruction_id_list"), facts.get("kwargs")
    if hasattr(ids, "tolist"):
        ids = facts["instruction_id_list"] = ids.tolist()
    if hasattr(kwargs, "tolist"):
        kwargs = facts["kwargs"] = kwargs.tolist()
    if ids is not None:
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise UserError("expected a list of instruction ids", file=source, row=row, field="instruction_id_list")
        kwargs = [{}] * len(ids) if kwargs is None else kwargs
        if not isinstance(kwargs, list) or len(kwargs) != len(ids) or not all(isinstance(k, dict) for k in kwargs):
            raise UserError(
                "expected one {argument: value} object per instruction id", file=source, row=row, field="kwargs"
            )
        facts["kwargs"] = [{k: v for k, v in d.items() if v is not None} for d in kwargs]
    elif kwargs is not None:
        raise UserError("kwargs without instruction_id_list", file=source, row=row, field="kwargs")
    if "reference" in facts and not isinstance(facts["reference"], str | int | float):
        raise UserError("expected a text or number", file=source, row=row, field="reference")
    return json.dumps(facts, sort_keys=True)


def iter_prompts(source: str, cols: PromptColumns, limit: int | None = None) -> Iterator[Prompt]:
    """Validated prompts with their stable ids, deduplicated by id, in input order."""
    seen: set[str] = set()
    count = 0
    for row, record in iter_rows(source):
        if limit is not None and count >= limit:
            return
        messages = to_messages(record, cols, source, row)
        pid = prompt_id(messages)
        if pid in seen:
            continue
        seen.add(pid)
        count += 1
        yield Prompt(pid, messages, row, source_id_of(record, row), verifiable_of(record, source, row))
