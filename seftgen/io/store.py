"""Run folders: `parts/*.parquet` plus `manifest.json`.

A run folder is the unit of resume, sharding and provenance:
- every part file is written to a temporary name and renamed, so a killed run never leaves a
  half-written file; a resumed run reads the keys of the finished parts and skips them;
- the manifest records the run id, the configuration (and its hash), the shard, every attempt,
  token/cost totals and the stage's summary; resuming with a different configuration is refused,
  because mixing rows from two configurations would break provenance.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seftgen import __version__
from seftgen.errors import UserError
from seftgen.io.schema import TABLES, Table
from seftgen.provenance import new_run_id, stable_hash, utc_now

MANIFEST = "manifest.json"
PARTS = "parts"


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError as exc:
            raise UserError(f"--shard must look like i/N, got {text!r}") from exc
        if count < 1 or not 0 <= index < count:
            raise UserError(f"--shard {text}: need 0 <= i < N")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def load_manifest(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / MANIFEST
    if not path.is_file():
        raise UserError("not a seftgen run folder (no manifest.json)", file=run_dir)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise UserError(f"manifest.json is not valid JSON ({exc.msg})", file=path) from exc


def part_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / PARTS).glob("part-*.parquet"))


def read_run(run_dir: str | Path, table: str | None = None) -> pl.DataFrame:
    """All rows of a run folder, checked to be the expected table."""
    manifest = load_manifest(run_dir)
    if table and manifest["table"] != table:
        raise UserError(f"expected a '{table}' run, this folder holds '{manifest['table']}'", file=run_dir)
    files = part_files(run_dir)
    schema = TABLES[manifest["table"]].schema
    if not files:
        return pl.DataFrame(schema=schema)
    return pl.read_parquet(files)


@dataclass
class RunStore:
    """A run folder being written by one stage."""

    root: Path
    table: Table
    manifest: dict[str, Any]
    done: set[tuple] = field(default_factory=set)
    _seq: int = 0
    _attempt: dict[str, Any] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @classmethod
    def open(
        cls,
        root: str | Path,
        table: Table,
        stage: str,
        config: dict[str, Any],
        *,
        shard: Shard = Shard(),
        resume: bool = True,
    ) -> RunStore:
        root = Path(root)
        config_hash = stable_hash(config)
        manifest_path = root / MANIFEST
        if manifest_path.exists():
            manifest = load_manifest(root)
            if not resume:
                raise UserError("output folder already holds a run", file=root, hint="use --resume, or another --out")
            if manifest["table"] != table.name or manifest["stage"] != stage:
                raise UserError(f"output folder holds a '{manifest['stage']}' run", file=root)
            if manifest["config_hash"] != config_hash or manifest["shard"] != shard.__dict__:
                changed = sorted(
                    k for k in set(config) | set(manifest["config"]) if config.get(k) != manifest["config"].get(k)
                ) or ["shard"]
                raise UserError(
                    f"cannot resume: settings differ from the run in this folder ({', '.join(changed)})",
                    file=root,
                    hint="use the same settings, or another --out",
                )
        else:
            if root.exists() and any(root.iterdir()):
                raise UserError("output folder exists and is not a seftgen run", file=root)
            (root / PARTS).mkdir(parents=True, exist_ok=True)
            manifest = {
                "seftgen_version": __version__,
                "table": table.name,
                "stage": stage,
                "run_id": new_run_id(),
                "created_at": utc_now().isoformat(),
                "status": "running",
                "config": config,
                "config_hash": config_hash,
                "shard": shard.__dict__,
                "rows": 0,
                "attempts": [],
                "totals": {},
                "summary": {},
            }
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        store = cls(root, table, manifest)
        store._load_done()
        store._attempt = {"started_at": utc_now().isoformat(), "resumed_rows": len(store.done)}
        manifest["status"] = "running"
        manifest["attempts"].append(store._attempt)
        store._save()
        return store

    def _load_done(self) -> None:
        files = part_files(self.root)
        for f in files:
            seq = int(f.stem.split("-")[-2])
            self._seq = max(self._seq, seq + 1)
        if files:
            keys = pl.read_parquet(files, columns=list(self.table.key))
            self.done = set(keys.iter_rows())

    def _save(self) -> None:
        self.manifest["updated_at"] = utc_now().isoformat()
        write_json_atomic(self.root / MANIFEST, self.manifest)

    def write(self, rows: list[dict[str, Any]]) -> int:
        """Write rows as one new part file (atomically); return how many were new."""
        if not rows:
            return 0
        df = self.table.frame(rows)
        keys = list(self.table.key)
        df = df.unique(subset=keys, keep="first", maintain_order=True)
        fresh = [k not in self.done for k in df.select(keys).iter_rows()]
        df = df.filter(pl.Series(fresh, dtype=pl.Boolean))
        if df.is_empty():
            return 0
        name = f"part-{self.manifest['shard']['index']:05d}-{self._seq:06d}-{secrets.token_hex(3)}.parquet"
        write_parquet_atomic(df, self.root / PARTS / name)
        self._seq += 1
        self.done.update(df.select(keys).iter_rows())
        self.manifest["rows"] = len(self.done)
        self._save()
        return df.height

    def add_totals(self, totals: dict[str, float]) -> None:
        """Accumulate counters (tokens, cost, failures) over every attempt of the run."""
        for key, value in totals.items():
            self.manifest["totals"][key] = self.manifest["totals"].get(key, 0) + value
            self._attempt[key] = self._attempt.get(key, 0) + value
        self._save()

    def finish(self, summary: dict[str, Any] | None = None, status: str = "complete") -> None:
        self._attempt["finished_at"] = utc_now().isoformat()
        self._attempt["status"] = status
        if summary is not None:
            self.manifest["summary"] = summary
        self.manifest["status"] = status
        self._save()


def merge_runs(run_dirs: list[str | Path], out: str | Path, allow_partial: bool = False) -> dict[str, Any]:
    """Join the shards of one run (same stage and settings) into one run folder."""
    if not run_dirs:
        raise UserError("give at least one run folder to merge")
    manifests = [load_manifest(d) for d in run_dirs]
    first = manifests[0]
    for d, m in zip(run_dirs, manifests, strict=True):
        if m["table"] != first["table"] or m["config_hash"] != first["config_hash"]:
            raise UserError("run settings differ from the first folder's; only shards of one run merge", file=d)
    counts = {m["shard"]["count"] for m in manifests}
    indexes = sorted({m["shard"]["index"] for m in manifests})
    if len(counts) != 1:
        raise UserError("shards were cut with different N")
    missing = sorted(set(range(counts.pop())) - set(indexes))
    if missing and not allow_partial:
        raise UserError(f"shards {missing} are missing", hint="pass --allow-partial to merge anyway")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError("merge output folder is not empty", file=out)
    table = TABLES[first["table"]]
    files = [f for d in run_dirs for f in part_files(d)]
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    target = out / PARTS / "part-00000-000000-merged.parquet"
    tmp = target.with_name(".merged.tmp")
    lazy = pl.scan_parquet(files) if files else pl.LazyFrame(schema=table.schema)
    lazy.unique(subset=list(table.key), keep="first", maintain_order=True).sink_parquet(tmp)
    os.replace(tmp, target)
    rows = pl.scan_parquet(target).select(pl.len()).collect().item()
    totals: dict[str, float] = {}
    for m in manifests:
        for k, v in m.get("totals", {}).items():
            totals[k] = totals.get(k, 0) + v
    manifest = {
        **{k: first[k] for k in ("seftgen_version", "table", "stage", "config", "config_hash")},
        "run_id": new_run_id(),
        "created_at": utc_now().isoformat(),
        "status": "complete" if not missing else "partial",
        "shard": {"index": 0, "count": 1},
        "rows": rows,
        "attempts": [],
        "totals": totals,
        "summary": {},
        "merged_from": [
            {"path": str(Path(d).resolve()), "run_id": m["run_id"], "shard": m["shard"], "rows": m["rows"]}
            for d, m in zip(run_dirs, manifests, strict=True)
        ],
    }
    write_json_atomic(out / MANIFEST, manifest)
    return manifest
