"""Stable identifiers: content hashes for prompts and templates, and run ids."""

from __future__ import annotations

import hashlib
import json
import secrets
from datetime import UTC, datetime
from typing import Any


def stable_hash(value: Any, length: int = 16) -> str:
    """sha256 of the canonical JSON of `value`, so equal content gives an equal id anywhere."""
    blob = value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def prompt_id(messages: list[dict[str, str]]) -> str:
    """The id of a prompt is the hash of its chat messages (system prompt included)."""
    return stable_hash([{"role": m["role"], "content": m["content"]} for m in messages])


def template_hash(source: str | None) -> str:
    """Hash of a template's source text; `none` when the model's built-in template is unknown."""
    return stable_hash(source, 12) if source else "none"


def new_run_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(3)


def utc_now() -> datetime:
    return datetime.now(UTC)


def shard_of(key: str, num_shards: int) -> int:
    """Deterministic shard of a prompt id; independent of input order and machine."""
    return int(key[:8], 16) % num_shards


def holdout_point(key: str) -> float:
    """A prompt id's place in [0, 1) for held-out splits. It reads other hex digits than
    `shard_of`, so a held-out set takes the same share of every shard (and of every round)."""
    return int(key[8:16], 16) / 16**8
