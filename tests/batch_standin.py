"""A local STAND-IN for OpenAI's Files and Batches endpoints: no provider can be reached here.

It keeps uploaded files in memory and runs each batch's requests against a real `vllm serve` on
loopback (the upstream), one by one, so every output is real model text. It speaks the shapes the
`openai` client reads (file objects, batch objects with request counts, output and error files in
the Batch JSONL format). Tests steer it: `hold` (cleared) keeps new batches `in_progress`, `fail`
names custom_ids that come back as request errors, `expire_after` ends a batch as `expired` after
that many requests. `polls` counts status checks, `submitted` every request line of every batch
created and `executed` every request it ran (both by custom_id: what a provider would bill).
"""

from __future__ import annotations

import collections
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import uvicorn
from conftest import free_port
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import PlainTextResponse


class BatchStandIn:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.port = free_port()
        self.files: dict[str, dict[str, Any]] = {}
        self.batches: dict[str, dict[str, Any]] = {}
        self.submitted: collections.Counter[str] = collections.Counter()
        self.executed: collections.Counter[str] = collections.Counter()
        self.polls = 0  # status checks (GET /v1/batches/{id})
        self.upstream_errors: list[str] = []  # non-200 replies of the upstream server (diagnostics)
        self.hold = threading.Event()
        self.hold.set()
        self.fail: set[str] = set()
        self.expire_after: int | None = None
        self._lock = threading.Lock()
        self._server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> BatchStandIn:
        self._thread.start()
        deadline = time.time() + 30
        while not self._server.started:
            if time.time() > deadline:
                raise RuntimeError("the batch stand-in did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.hold.set()
        self._server.should_exit = True
        self._thread.join(30)

    def created(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(b) for b in self.batches.values()]

    def reset(self) -> None:
        with self._lock:
            self.files.clear()
            self.batches.clear()
            self.submitted.clear()
            self.executed.clear()
        self.fail.clear()
        self.expire_after = None
        self.hold.set()

    # -- the endpoints -----------------------------------------------------------------------------
    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        def models() -> Any:  # so the client sees a vLLM server and constrains decoding
            return httpx.get(f"{self.upstream}/models").json()

        @app.post("/v1/files")
        async def upload(request: Request) -> Any:
            form = await request.form()
            upload = form["file"]
            data = await upload.read()  # type: ignore[union-attr]
            file = self._file(data, getattr(upload, "filename", "upload.jsonl"), str(form.get("purpose")))
            return file["meta"]

        @app.get("/v1/files/{file_id}/content")
        def content(file_id: str) -> PlainTextResponse:
            if file_id not in self.files:
                raise HTTPException(404, "no such file")
            return PlainTextResponse(self.files[file_id]["data"].decode())

        @app.post("/v1/batches")
        async def create(request: Request) -> Any:
            body = await request.json()
            if body.get("input_file_id") not in self.files:
                raise HTTPException(400, "no such input file")
            lines = [json.loads(x) for x in self.files[body["input_file_id"]]["data"].decode().splitlines() if x]
            batch = {
                "id": f"batch_{secrets.token_hex(8)}",
                "object": "batch",
                "endpoint": body["endpoint"],
                "input_file_id": body["input_file_id"],
                "completion_window": body["completion_window"],
                "metadata": body.get("metadata"),
                "status": "validating",
                "created_at": int(time.time()),
                "output_file_id": None,
                "error_file_id": None,
                "errors": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
            }
            with self._lock:
                self.batches[batch["id"]] = batch
                self.submitted.update(line["custom_id"] for line in lines)
            threading.Thread(target=self._execute, args=(batch["id"], lines), daemon=True).start()
            return batch

        @app.get("/v1/batches/{batch_id}")
        def retrieve(batch_id: str) -> Any:
            with self._lock:
                if batch_id not in self.batches:
                    raise HTTPException(404, "no such batch")
                self.polls += 1
                return json.loads(json.dumps(self.batches[batch_id]))

        @app.get("/v1/batches")
        def listing() -> Any:
            with self._lock:
                data = [json.loads(json.dumps(b)) for b in reversed(self.batches.values())]
            return {"object": "list", "data": data, "has_more": False}

        return app

    def _file(self, data: bytes, filename: str, purpose: str) -> dict[str, Any]:
        file_id = f"file-{secrets.token_hex(8)}"
        meta = {
            "id": file_id,
            "object": "file",
            "bytes": len(data),
            "created_at": int(time.time()),
            "filename": filename,
            "purpose": purpose,
            "status": "processed",
        }
        with self._lock:
            self.files[file_id] = {"data": data, "meta": meta}
        return self.files[file_id]

    def _execute(self, batch_id: str, lines: list[dict[str, Any]]) -> None:
        """Run a batch's requests against the upstream server (8 at a time), like a provider."""
        batch = self.batches[batch_id]
        with self._lock:
            batch["status"] = "in_progress"
        self.hold.wait()
        expire = self.expire_after
        with httpx.Client(timeout=600) as client, ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda item: self._request(client, batch, expire, *item), enumerate(lines)))
        outputs = [line for ok, line in results if ok]
        errors = [line for ok, line in results if not ok]
        out = self._file("".join(json.dumps(o) + "\n" for o in outputs).encode(), "output.jsonl", "batch_output")
        err = self._file("".join(json.dumps(e) + "\n" for e in errors).encode(), "errors.jsonl", "batch_output")
        with self._lock:
            batch["output_file_id"] = out["meta"]["id"] if outputs else None
            batch["error_file_id"] = err["meta"]["id"] if errors else None
            batch["status"] = "expired" if expire is not None else "completed"

    def _request(
        self, client: httpx.Client, batch: dict[str, Any], expire: int | None, i: int, line: dict[str, Any]
    ) -> tuple[bool, dict[str, Any]]:
        """One request line: (succeeded, its output or error line)."""
        custom_id = line["custom_id"]
        if expire is not None and i >= expire:
            error = {"code": "batch_expired", "message": "This request could not be executed in time."}
            return False, {"id": f"req_{i}", "custom_id": custom_id, "response": None, "error": error}
        with self._lock:
            self.executed[custom_id] += 1
        if custom_id in self.fail:
            body: Any = {"error": {"message": "stand-in: injected server error", "type": "server_error"}}
            status = 500
        else:
            for _ in range(3):  # a provider's batch runner retries transient server errors too
                reply = client.post(f"{self.upstream}/chat/completions", json=line["body"])
                body, status = reply.json(), reply.status_code
                if status < 500:
                    break
            if status != 200:
                self.upstream_errors.append(f"{custom_id}: {status} {json.dumps(body)[:300]}")
        with self._lock:
            batch["request_counts"]["completed" if status == 200 else "failed"] += 1
        response = {"status_code": status, "request_id": f"r{i}", "body": body}
        return status == 200, {"id": f"req_{i}", "custom_id": custom_id, "response": response, "error": None}
