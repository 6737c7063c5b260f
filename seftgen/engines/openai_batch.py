"""The OpenAI Batch API: the same chat completions at half the price, within a 24-hour window.

A call's requests become Batch JSONL lines (one `custom_id` each: the row key and the call, such as
`<prompt_id>:<sample_idx>:critique`), written into the run folder (`batches/*.jsonl`, split at
50,000 requests or 200 MB per file), uploaded with the Files API and run as batches; the call polls
with backoff until they end, downloads outputs and errors, and returns the replies in order, so the
stage parses and filters them exactly as it does the online engine's.

Nothing is paid twice. The manifest records each batch as it is made (file, phase, input file id,
batch id, state), before the call waits for it, so a rerun after a crash or Ctrl-C reattaches to
batches still running, reuses results already returned, and submits only the requests that have
none. A file uploaded by a run killed before its batch was created is found again (by its input
file id among the provider's batches) or submitted as is. Failed and expired requests come back as
per-row errors: the stage records them as failures and the next run submits them again.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seftgen.engines.base import BatchJournal, Messages
from seftgen.engines.openai_engine import OpenAIEngine

BATCH_DISCOUNT = 0.5  # the Batch API's price against the same model's online price
MAX_REQUESTS = 50_000  # per input file (the provider's limit)
MAX_BYTES = 200_000_000  # per input file (200 MB)
BATCH_ROWS = 10_000  # default rows per stage call with the Batch API (one file per phase)
ENDED = frozenset({"completed", "failed", "expired", "cancelled"})
DIR = "batches"


class BatchError(Exception):
    """A request the Batch API did not answer (its batch failed or expired, or the request erred)."""


class _Journal:
    """Where batches are recorded when no run folder is bound (a library call outside a stage):
    a temporary folder, so a crash loses the link to batches in flight."""

    def __init__(self) -> None:
        import tempfile

        self._tmp = tempfile.TemporaryDirectory(prefix="seftgen-batches-")
        self.root = Path(self._tmp.name)
        self._entries: list[dict[str, Any]] = []

    def batches(self) -> list[dict[str, Any]]:
        return [dict(e) for e in self._entries]

    def record_batch(self, entry: dict[str, Any]) -> None:
        self._entries = [dict(entry) if e["file"] == entry["file"] else e for e in self._entries]
        if not any(e["file"] == entry["file"] for e in self._entries):
            self._entries.append(dict(entry))


class OpenAIBatchEngine(OpenAIEngine):
    """`OpenAIEngine` whose requests go through the Files and Batches endpoints (see the module
    docstring). `price_in`/`price_out` are the model's list prices; totals charge BATCH_DISCOUNT
    of them. `poll` is the first wait between status checks (it grows 1.5x up to a minute)."""

    batch_rows = BATCH_ROWS

    def __init__(
        self,
        model: str,
        *,
        poll: float = 10.0,
        max_requests: int = MAX_REQUESTS,
        max_bytes: int = MAX_BYTES,
        completion_window: str = "24h",
        **kwargs: Any,
    ) -> None:
        super().__init__(model, **kwargs)
        self.price_in *= BATCH_DISCOUNT
        self.price_out *= BATCH_DISCOUNT
        self.poll = poll
        self.max_requests, self.max_bytes = max_requests, max_bytes
        self.completion_window = completion_window
        self._journal: BatchJournal = _Journal()
        self._lock = threading.Lock()  # the journal and the results cache, across overlapping calls
        self._results: dict[str, dict[str, Any]] = {}  # batch file -> {custom_id: reply or BatchError}
        self._ids: dict[str, set[str]] = {}  # batch file -> its custom_ids (files never change)
        self._sync_client: Any = None

    def bind(self, journal: BatchJournal) -> None:
        self._journal = journal
        self._results, self._ids = {}, {}

    def _sync(self) -> Any:
        if self._sync_client is None:
            from openai import OpenAI

            self._sync_client = OpenAI(base_url=self.base_url, api_key=self.api_key, timeout=self.timeout)
        return self._sync_client

    # -- the engine's one model call ---------------------------------------------------------------
    def _run(self, body: dict[str, Any], conversations: list[Messages], ids: Sequence[str] | None = None) -> list[Any]:
        """Replies (dicts) or exceptions, one per conversation, through batches."""
        requests = [{**body, "messages": m} for m in conversations]
        if ids is None:  # content-addressed: the same request is the same result
            ids = [_digest(r) for r in requests]
        by_id = dict(zip(ids, requests, strict=True))
        replies = self._collect(self._known(by_id), by_id)
        missing = {i: r for i, r in by_id.items() if not isinstance(replies.get(i), dict)}
        if missing:
            replies |= self._collect(self._submit(missing), missing)
        self.count(requests=len(missing))
        return [replies.get(i) or BatchError("no result") for i in ids]

    def _known(self, wanted: dict[str, Any]) -> list[dict[str, Any]]:
        """Recorded batches that hold any of `wanted` (newest last): to reattach, not to resubmit.
        A batch whose creation was cut short is looked up by its input file, or created now."""
        entries = []
        for entry in self._journal.batches():
            if wanted.keys().isdisjoint(self._ids_of(entry["file"])):
                continue
            entries.append(entry if entry.get("id") else self._create(entry, adopt=True))
        return entries

    def _submit(self, requests: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
        """Write, upload and create batches for `requests` (split by the provider's limits)."""
        phase = ",".join(sorted({i.rsplit(":", 1)[-1] if ":" in i else "requests" for i in requests}))
        entries = []
        for lines in _split(requests, self.max_requests, self.max_bytes):
            name = f"{DIR}/{phase.split(',')[0]}-{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}.jsonl"
            path = self._journal.root / name
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text("".join(lines))
            tmp.replace(path)
            entry = {"file": name, "phase": phase, "requests": len(lines), "input_file_id": None, "id": None}
            self._record(entry | {"status": "uploading"})
            with path.open("rb") as f:
                entry["input_file_id"] = self._sync().files.create(file=f, purpose="batch").id
            self._record(entry | {"status": "creating"})
            entries.append(self._create(entry, adopt=False))
        return entries

    def _create(self, entry: dict[str, Any], *, adopt: bool) -> dict[str, Any]:
        """The batch of an uploaded file: with `adopt`, first the provider's batch made from it
        (its creation may have gone through before a crash), else a new one."""
        client = self._sync()
        if entry.get("input_file_id") is None:  # the upload itself was cut short: upload again
            with (self._journal.root / entry["file"]).open("rb") as f:
                entry = entry | {"input_file_id": client.files.create(file=f, purpose="batch").id}
        batch = None
        if adopt:
            batch = next((b for b in client.batches.list(limit=100) if b.input_file_id == entry["input_file_id"]), None)
        if batch is None:
            batch = client.batches.create(
                input_file_id=entry["input_file_id"],
                endpoint="/v1/chat/completions",
                completion_window=self.completion_window,  # type: ignore[arg-type]
                metadata={"seftgen_file": entry["file"][-64:]},
            )
        entry = entry | {"id": batch.id, "status": batch.status}
        self._record(entry)
        return entry

    def _collect(self, entries: list[dict[str, Any]], wanted: dict[str, Any]) -> dict[str, Any]:
        """Wait for `entries` to end; the replies they hold for `wanted` (dicts, or BatchErrors)."""
        out: dict[str, Any] = {}
        for entry in self._wait(entries):
            for custom_id, reply in self._outputs(entry).items():
                if custom_id in wanted and not isinstance(out.get(custom_id), dict):
                    out[custom_id] = reply
        return out

    def _wait(self, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Poll until every batch has ended, with backoff and a status line when counts change."""
        from seftgen.console import console

        pending = {e["id"]: e for e in entries if e.get("status") not in ENDED}
        done = [e for e in entries if e.get("status") in ENDED]
        delay, shown = self.poll, {}
        while pending:
            for batch_id, entry in list(pending.items()):
                batch = self._sync().batches.retrieve(batch_id)
                counts = batch.request_counts
                line = f"{batch.status} {counts.completed if counts else 0}/{entry['requests']}"
                if shown.get(batch_id) != line:
                    console.print(f"[dim]batch {batch_id} ({entry['phase']}): {line}[/]")
                    shown[batch_id] = line
                if batch.status in ENDED:
                    ended = entry | {
                        "status": batch.status,
                        "output_file_id": batch.output_file_id,
                        "error_file_id": batch.error_file_id,
                        "errors": _batch_errors(batch),
                    }
                    self._record(ended)
                    done.append(ended)
                    del pending[batch_id]
            if pending:
                time.sleep(delay)
                delay = min(delay * 1.5, 60.0)
        return done

    def _outputs(self, entry: dict[str, Any]) -> dict[str, Any]:
        """custom_id -> reply body (status 200) or BatchError, for an ended batch (downloaded once)."""
        with self._lock:
            if entry["file"] in self._results:
                return self._results[entry["file"]]
        client, out = self._sync(), {}
        for key in ("error_file_id", "output_file_id"):  # outputs last: they win over errors
            if entry.get(key):
                for line in client.files.content(entry[key]).text.splitlines():
                    if line.strip():
                        item = json.loads(line)
                        out[item["custom_id"]] = _reply(item)
        why = entry.get("errors") or f"batch {entry['status']}"
        for custom_id in self._ids_of(entry["file"]):
            out.setdefault(custom_id, BatchError(f"no result: {why}"))
        with self._lock:
            self._results[entry["file"]] = out
        return out

    def _ids_of(self, file: str) -> set[str]:
        if file not in self._ids:
            path = self._journal.root / file
            self._ids[file] = _ids_in(path) if path.is_file() else set()
        return self._ids[file]

    def _record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self._journal.record_batch(entry)

    def close(self) -> None:
        super().close()
        if self._sync_client is not None:
            self._sync_client.close()
            self._sync_client = None


def _digest(request: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:32]


def _ids_in(path: Path) -> set[str]:
    with path.open() as f:
        return {json.loads(line)["custom_id"] for line in f if line.strip()}


def _split(requests: dict[str, dict[str, Any]], max_requests: int, max_bytes: int) -> list[list[str]]:
    """Batch JSONL lines, cut into files of at most `max_requests` lines and `max_bytes` bytes."""
    files: list[list[str]] = [[]]
    size = 0
    for custom_id, body in requests.items():
        line = json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body})
        line += "\n"
        if files[-1] and (len(files[-1]) >= max_requests or size + len(line.encode()) > max_bytes):
            files.append([])
            size = 0
        files[-1].append(line)
        size += len(line.encode())
    return files


def _reply(item: dict[str, Any]) -> dict[str, Any] | BatchError:
    """One output or error line: the chat completion body, or why there is none."""
    response = item.get("response") or {}
    if response.get("status_code") == 200 and isinstance(response.get("body"), dict):
        return response["body"]
    error = item.get("error") or (response.get("body") or {}).get("error") or {}
    return BatchError(f"{error.get('code') or response.get('status_code')}: {error.get('message') or 'failed'}")


def _batch_errors(batch: Any) -> str | None:
    data = getattr(batch.errors, "data", None) if batch.errors else None
    return "; ".join(f"{e.code}: {e.message}" for e in data)[:500] if data else None
