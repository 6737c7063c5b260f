"""`seftgen release`: the built folder loads with `datasets`, the card parses, rows are screened.

The upload cannot reach the Hub here. `RecordingHub` below is a STAND-IN for the Hub's HTTP API
on loopback (set through HF_ENDPOINT): it records the calls huggingface_hub makes and answers
just enough for `create_repo` and `upload_folder` to complete. It is a fake, named as such.
"""

from __future__ import annotations

import base64
import json
import threading
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import datasets
import polars as pl
import pytest
from conftest import DEMO_PREFS, run_cli
from huggingface_hub import DatasetCard

from seftgen.export.release import build_release, release
from seftgen.io.schema import REVISIONS
from seftgen.io.store import RunStore
from seftgen.stages.build_data import build_reviser_data


def revisions_run(path: Path) -> Path:
    """A small revisions run written through the real store, with one rejected row and one row
    whose provenance is missing."""
    store = RunStore.open(
        path,
        REVISIONS,
        "revise",
        {
            "method": "srt",
            "template": "srt_critic",
            "template_hash": "t1",
            "score_template": "srt_score",
            "score_template_hash": "t2",
            "params": {"max_tokens": 8},
        },
    )
    now = datetime.now(UTC)
    base = {
        "messages": [{"role": "user", "content": "q"}],
        "method": "srt",
        "original": "o",
        "revised": "r",
        "feedback": "Weaknesses: x. Overall Score: [[5]] Suggestions: y.",
        "critic_score": 5,
        "original_score": 5,
        "revised_score": 6,
        "similarity": 0.5,
        "kept": True,
        "reason": None,
        "raw": "{}",
        "prompt_tokens": 1,
        "completion_tokens": 1,
        "policy_model": "p",
        "source_run_id": "s",
        "model": "critic",
        "engine": "openai",
        "template_hash": "t1+t2",
        "params": "{}",
        "seed": 0,
        "run_id": store.run_id,
        "created_at": now,
    }
    rows = [{**base, "prompt_id": f"p{i}", "sample_idx": 0} for i in range(3)]
    rows[1] |= {"kept": False, "reason": "refinement scored 4 < original 6", "reason_kind": "filter"}
    rows[2] |= {"model": None}
    store.write(rows)
    store.finish({"not_kept_by_reason": {"filter: refinement scored N < original N": 1}})
    return path


def test_dry_run_folder_loads_and_card_parses(tmp_path: Path) -> None:
    build_reviser_data(str(DEMO_PREFS), tmp_path / "rd")
    rel = build_release([tmp_path / "rd", revisions_run(tmp_path / "rev")], "org/seft-demo", tmp_path / "out")
    assert rel.left_out == {"revisions_srt": {"missing provenance": 1, "filter failure": 1}}
    card = DatasetCard.load(tmp_path / "out" / "README.md")
    assert card.data.license == "apache-2.0" and card.data.task_categories == ["text-generation"]
    assert {c["config_name"] for c in card.data.configs} == {"reviser_sft", "revisions_srt"}
    assert "left out of this release (missing provenance): 1" in card.text
    assert "`srt_critic` (t1)" in card.text and "`srt_score` (t2)" in card.text
    sft = datasets.load_dataset(str(tmp_path / "out"), "reviser_sft", split="train")
    assert sft.num_rows == pl.read_parquet(tmp_path / "rd" / "parts").height
    rev = datasets.load_dataset(str(tmp_path / "out"), "revisions_srt", split="train")
    assert rev.num_rows == 1 and rev[0]["kept"] is True


def test_include_rejected_and_cli_report(tmp_path: Path, capsys) -> None:
    run = revisions_run(tmp_path / "rev")
    assert run_cli("release", run, "--repo-id", "org/x", "--dry-run", tmp_path / "a", "--include-rejected") == 0
    assert datasets.load_dataset(str(tmp_path / "a"), "revisions_srt", split="train").num_rows == 2
    assert "1 (missing provenance)" in capsys.readouterr().err
    assert run_cli("release", run, "--repo-id", "no-slash", "--dry-run", tmp_path / "b") == 2


class RecordingHub(BaseHTTPRequestHandler):
    """STAND-IN for the Hub API (not the real Hub): records requests, answers create/preupload/commit."""

    calls: ClassVar[list[tuple[str, str, bytes]]] = []

    def log_message(self, *args) -> None:
        pass

    def _reply(self, code: int, payload: dict) -> None:
        body = json.dumps(payload).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.calls.append(("POST", self.path, data))
        host = f"http://{self.headers['Host']}"
        if self.path == "/api/repos/create":
            self._reply(200, {"url": f"{host}/datasets/org/demo", "name": "org/demo"})
        elif self.path == "/api/validate-yaml":
            self._reply(200, {"errors": [], "warnings": []})
        elif "/preupload/" in self.path:
            files = json.loads(data)["files"]
            self._reply(
                200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
            )
        elif "/commit/" in self.path:
            self._reply(200, {"commitUrl": f"{host}/datasets/org/demo/commit/{'a' * 40}", "commitOid": "a" * 40})
        else:
            self._reply(404, {"error": f"stand-in does not serve {self.path}"})

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, b""))
        self._reply(404, {"error": f"stand-in does not serve {self.path}"})


@pytest.fixture
def recording_hub(monkeypatch):
    RecordingHub.calls = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), RecordingHub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    yield RecordingHub.calls
    server.shutdown()


def test_upload_goes_through_huggingface_hub(recording_hub, tmp_path: Path) -> None:
    run = revisions_run(tmp_path / "rev")
    rel = release([run], "org/demo", private=True)
    paths = [p for _, p, _ in recording_hub]
    # huggingface_hub >= 2.4 may ask other endpoints first (/api/agent-harnesses); what matters is
    # that the repo is created, with these settings, before anything is committed to it.
    created = paths.index("/api/repos/create")
    assert created < next(i for i, p in enumerate(paths) if "/commit/" in p)
    create = json.loads(recording_hub[created][2])
    assert create["name"] == "demo" and create["organization"] == "org" and create["visibility"] == "private"
    assert create["type"] == "dataset"
    commit = next(body for method, p, body in recording_hub if "/commit/" in p)
    lines = [json.loads(line) for line in commit.decode().splitlines()]
    files = {entry["value"]["path"]: entry["value"] for entry in lines if entry["key"] == "file"}
    assert set(files) == {"README.md", "data/revisions_srt/train-00000.parquet"}
    readme = base64.b64decode(files["README.md"]["content"]).decode()
    assert "config_name: revisions_srt" in readme
    assert "/api/validate-yaml" in paths  # huggingface_hub checked the card's YAML before the commit
    assert rel.url
