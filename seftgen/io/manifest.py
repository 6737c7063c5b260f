"""`manifest.json`: what a run folder holds, how it was made, and how its attempts ended.

One type, read and written only here: stages, export, release and the round read its fields,
never string keys of a raw dict. `RUN_KINDS` is the one registry of what each kind of run folder
is (stage, table, method, release config, axolotl variants); export and release both use it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from seftgen import __version__
from seftgen.choices import ReviseMethod, RunStatus, Stage, TrainKind, Variant
from seftgen.errors import UserError
from seftgen.io.files import read_mapping
from seftgen.provenance import new_run_id, utc_now
from seftgen.watchdog import process_start

MANIFEST = "manifest.json"


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temporary name in the same folder, then rename: readers (and a rerun after a
    kill) see the old file or the new one, never half of one."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")


@dataclass
class Attempt:
    """One invocation of the stage on this folder. Counters are the attempt's own; the manifest's
    `totals` add them up over every attempt."""

    started_at: str
    resumed_rows: int = 0
    pid: int | None = field(default_factory=os.getpid)
    host: str | None = field(default_factory=socket.gethostname)
    pid_start: str | None = field(default_factory=lambda: process_start(os.getpid()))
    finished_at: str | None = None
    status: RunStatus = RunStatus.RUNNING
    error: str | None = None  # why an interrupted attempt stopped
    totals: dict[str, float] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)  # where the attempt's time went
    engine: dict[str, Any] = field(default_factory=dict)  # the settings the engine ran with (dtype, ...)

    @property
    def abandoned(self) -> bool:
        """Still `running`, but its process is gone (SIGKILL, a crash, a lost machine we can see)."""
        if self.status != RunStatus.RUNNING or self.pid is None or self.host != socket.gethostname():
            return False
        return process_start(self.pid) != self.pid_start

    def close_abandoned(self) -> None:
        if self.abandoned:
            self.status = RunStatus.INTERRUPTED
            self.error = self.error or "its process was killed (no chance to close the attempt)"


@dataclass
class Manifest:
    table: str
    stage: Stage
    config: dict[str, Any]
    config_hash: str
    shard: dict[str, int] = field(default_factory=lambda: {"index": 0, "count": 1})
    run_id: str = field(default_factory=new_run_id)
    created_at: str = field(default_factory=lambda: utc_now().isoformat())
    updated_at: str | None = None
    seftgen_version: str = __version__
    status: RunStatus = RunStatus.RUNNING
    rows: int = 0
    attempts: list[Attempt] = field(default_factory=list)
    totals: dict[str, float] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)
    failures: list[dict[str, Any]] = field(default_factory=list)
    merged_from: list[dict[str, Any]] | None = None
    batches: list[dict[str, Any]] | None = None

    @property
    def method(self) -> str | None:
        """The revise method (`seft` / `srt`) recorded in the config; None for other stages."""
        return self.config.get("method")

    @property
    def kind(self) -> RunKind:
        return run_kind(self)

    def add_totals(self, totals: dict[str, float]) -> None:
        for key, value in totals.items():
            self.totals[key] = self.totals.get(key, 0) + value

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for optional in ("merged_from", "batches"):
            if data[optional] is None:
                data.pop(optional)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], path: Path) -> Manifest:
        known = {f.name for f in fields(cls)}
        try:
            values = {k: v for k, v in data.items() if k in known}
            values["stage"] = Stage(values["stage"])
            values["status"] = RunStatus(values.get("status", RunStatus.RUNNING))
            values["attempts"] = [_attempt(a) for a in values.get("attempts", [])]
            manifest = cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(f"manifest.json is not a seftgen manifest ({exc})", file=path) from exc
        # Read as it is, not as it was left: a run whose process is gone is not running.
        for attempt in manifest.attempts:
            attempt.close_abandoned()
        if (
            manifest.status == RunStatus.RUNNING
            and manifest.attempts
            and not any(a.status == RunStatus.RUNNING for a in manifest.attempts)
        ):
            manifest.status = RunStatus.INTERRUPTED
        return manifest

    @classmethod
    def load(cls, run_dir: str | Path) -> Manifest:
        path = Path(run_dir) / MANIFEST
        if not path.is_file():
            raise UserError("not a seftgen run folder (no manifest.json)", file=run_dir)
        return cls.from_dict(read_mapping(path, "manifest.json"), path)

    def save(self, run_dir: str | Path) -> None:
        self.updated_at = utc_now().isoformat()
        write_json_atomic(Path(run_dir) / MANIFEST, self.to_dict())


# What each manifest field means (`seftgen schema` prints it; a test keeps it equal to the fields).
MANIFEST_DOCS: dict[str, str] = {
    "table": "Table the parts hold (`samples`, `revisions`, `pairs`, `best_of`, `sft`, `evals`).",
    "stage": "Stage that wrote the run: " + ", ".join(f"`{s}`" for s in Stage) + ".",
    "config": "The stage's settings (input run, model, engine, template and hash, parameters, seed).",
    "config_hash": "Hash of `config`; a resume with other settings is refused.",
    "shard": "`{index, count}` of `--shard i/N`.",
    "run_id": "Id of the run, in every row's `run_id`.",
    "created_at": "When the run folder was created (UTC).",
    "updated_at": "Last write of the manifest (UTC).",
    "seftgen_version": "seftgen version that created the run.",
    "status": "Run state: " + ", ".join(f"`{s}`" for s in RunStatus) + ".",
    "rows": "Rows written so far.",
    "attempts": "One entry per invocation: started_at, resumed_rows, pid, host, pid_start, finished_at, status, "
    "error, totals, timing, engine. An attempt left `running` by a process that is gone reads as `interrupted`. "
    "`timing` (seconds): `engine_start_s` (loading the model, when this stage loaded it), `wall_s` (the "
    "batches, first to last), `generation_s` (waiting for the engine's results, parsing included), `write_s` "
    "(Parquet parts and manifest), and `rows_per_s`. `engine`: a local engine's settings with the platform's "
    "defaults resolved (`dtype`, `max_model_len`, `gpu_memory_utilization`, `enforce_eager`, `device`, ...).",
    "totals": "Counters over every attempt: requests, retries, failures, prompt/completion tokens, cost_usd.",
    "summary": "The stage's summary (kept, labels, reasons rows were not kept, scores, consistency).",
    "failures": "Rows that failed on the engine side in the last attempt (not written; a rerun retries them).",
    "merged_from": "`seftgen merge` only: the shard runs joined (path, run_id, shard, rows).",
    "batches": "`--batch-api` only: one entry per provider batch, recorded before it is waited for: `file` "
    "(its requests, under `batches/` in the run folder), `phase` (the calls it holds: `critique`, "
    "`score-original,score-refined`, ...), `requests`, `input_file_id`, `id` (the batch), `status` "
    "(`uploading`, `creating`, then the provider's), and once ended `output_file_id`, `error_file_id`, "
    "`errors`. A rerun reattaches to these instead of submitting again.",
}


def manifest_markdown() -> str:
    lines = [
        f"#### `{MANIFEST}`: what a run folder holds, how it was made, how its attempts ended.\n",
        "| field | meaning |\n|---|---|",
    ]
    lines += [f"| `{name}` | {doc} |" for name, doc in MANIFEST_DOCS.items()]
    return "\n".join(lines) + "\n"


def _attempt(data: dict[str, Any]) -> Attempt:
    known = {f.name for f in fields(Attempt)}
    values = {k: v for k, v in data.items() if k in known}
    values["status"] = RunStatus(values.get("status", RunStatus.RUNNING))
    for unknown in ("pid", "host", "pid_start"):  # an attempt recorded without them: not this process
        values.setdefault(unknown, None)
    return Attempt(**values)


@dataclass(frozen=True)
class RunKind:
    """What a kind of run folder is, for everything downstream of the stage that wrote it."""

    name: str  # the release config name (data/<name>/ on the Hub)
    stage: Stage
    table: str
    method: str | None  # the paper method whose data this is (dataset card)
    variants: dict[TrainKind, Variant]  # axolotl export variant per training kind
    revise_method: ReviseMethod | None = None  # revise runs: the config's `method`


RUN_KINDS: tuple[RunKind, ...] = (
    RunKind("samples", Stage.SAMPLE, "samples", None, {}),
    RunKind(
        "revisions_seft",
        Stage.REVISE,
        "revisions",
        "SEFT",
        {TrainKind.SFT: Variant.SEFT_POLICY, TrainKind.DPO: Variant.SEFT_DPO},
        ReviseMethod.SEFT,
    ),
    RunKind(
        "revisions_srt",
        Stage.REVISE,
        "revisions",
        "SRT",
        {TrainKind.SFT: Variant.SRT_STAGE1, TrainKind.DPO: Variant.SRT_STAGE2},
        ReviseMethod.SRT,
    ),
    RunKind(
        "revisions_srt_self",
        Stage.REVISE,
        "revisions",
        "SRT",
        {TrainKind.DPO: Variant.SRT_STAGE2},
        ReviseMethod.SRT_SELF,
    ),
    RunKind("pairs", Stage.JUDGE, "pairs", "SELF-JUDGE", {TrainKind.DPO: Variant.SELF_JUDGE_DPO}),
    RunKind("best_of", Stage.BEST_OF, "best_of", "SELF-JUDGE", {TrainKind.SFT: Variant.BEST_OF}),
    RunKind("reviser_sft", Stage.BUILD_REVISER_DATA, "sft", "SEFT", {TrainKind.SFT: Variant.SEFT_REVISER}),
    RunKind("jsft", Stage.BUILD_JSFT_DATA, "sft", "SELF-JUDGE", {TrainKind.SFT: Variant.JSFT}),
    RunKind("evals", Stage.EVALUATE, "evals", None, {}),
)


def run_kind(manifest: Manifest) -> RunKind:
    for kind in RUN_KINDS:
        if kind.stage == manifest.stage and kind.revise_method in (None, manifest.method):
            return kind
    raise UserError(f"unknown kind of run: stage '{manifest.stage}', method {manifest.method!r}")
