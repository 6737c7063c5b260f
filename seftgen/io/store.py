"""Run folders: `parts/*.parquet` plus `manifest.json`.

A run folder is the unit of resume, sharding and provenance:
- every part file is written to a temporary name and renamed, so a killed run never leaves a
  half-written file; a resumed run reads the keys of the finished parts and skips them;
- the manifest records the run id, the configuration (and its hash), the shard, every attempt,
  token/cost totals and the stage's summary; resuming with a different configuration is refused,
  because mixing rows from two configurations would break provenance.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import RunStatus, Stage
from seftgen.errors import UserError
from seftgen.io.manifest import MANIFEST, Attempt, Manifest, write_json_atomic
from seftgen.io.schema import TABLES, Table
from seftgen.provenance import holdout_point, stable_hash, utc_now

__all__ = [
    "MANIFEST",
    "Holdout",
    "Manifest",
    "RunStore",
    "Shard",
    "is_run",
    "load_manifest",
    "read_run",
    "scan_run",
    "write_json_atomic",
]
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
            raise UserError(f"must look like i/N, got {text!r}", param="shard") from exc
        if count < 1 or not 0 <= index < count:
            raise UserError(f"{text}: need 0 <= i < N", param="shard")
        return cls(index, count)

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def part(self, i: int, n: int) -> Shard:
        """Part i of n of this shard. A prompt is in shard (r, R) when its id's number h has
        h mod R = r; the n parts are h mod nR = r + iR, which split exactly those prompts."""
        return Shard(self.index + self.count * i, self.count * n)


@dataclass(frozen=True)
class Holdout:
    """A split of a prompt source by prompt-id hash: the prompts whose point (`holdout_point`) lies
    in [start, start + fraction) are held out. `heldout` takes that band (a recipe's eval prompts,
    or SRT stage 2's new prompts, the band after the eval one), else the rest (training)."""

    fraction: float = 0.0
    heldout: bool = False
    start: float = 0.0

    def keeps(self, prompt_id: str) -> bool:
        return (self.start <= holdout_point(prompt_id) < self.start + self.fraction) == self.heldout

    def as_dict(self) -> dict[str, Any] | None:
        """For run configs: None when nothing is held out (older configs stay the same)."""
        if self.fraction <= 0 and not self.heldout:
            return None
        return {"fraction": self.fraction, "heldout": self.heldout} | ({"start": self.start} if self.start else {})


def write_parquet_atomic(df: pl.DataFrame, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        df.write_parquet(tmp, compression="zstd", statistics=True)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def is_run(path: str | Path) -> bool:
    """Whether `path` is a run folder (it has a manifest), without reading it."""
    return (Path(path) / MANIFEST).is_file()


def load_manifest(run_dir: str | Path, table: str | None = None) -> Manifest:
    """The manifest of a run folder; with `table`, checked to be that kind of run."""
    manifest = Manifest.load(run_dir)
    if table and manifest.table != table:
        raise UserError(f"expected a '{table}' run, this folder holds '{manifest.table}'", file=run_dir)
    return manifest


def part_files(run_dir: str | Path) -> list[Path]:
    return sorted((Path(run_dir) / PARTS).glob("part-*.parquet"))


def read_run(run_dir: str | Path, table: str | None = None) -> pl.DataFrame:
    """All rows of a run folder, checked to be the expected table."""
    return scan_run(run_dir, table).collect()


def scan_run(run_dir: str | Path, table: str | None = None) -> pl.LazyFrame:
    """All rows of a run folder as a lazy scan (summaries aggregate without loading the run)."""
    manifest = load_manifest(run_dir, table)
    files = part_files(run_dir)
    schema = TABLES[manifest.table].schema
    if not files:
        return pl.LazyFrame(schema=schema)
    # Parts written by an older seftgen lack columns added since (null here), so a run resumed by a
    # newer version still reads as one table.
    return pl.scan_parquet(files, schema=schema, missing_columns="insert", extra_columns="ignore")


_SAVE_LOCK = threading.RLock()


def upsert(entries: list[dict[str, Any]], entry: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """`entries` with `entry` replacing the one with the same `key` in place, or appended."""
    out = [dict(entry) if e[key] == entry[key] else e for e in entries]
    return out if any(e[key] == entry[key] for e in entries) else [*out, dict(entry)]


@dataclass
class RunStore:
    """A run folder being written by one stage (one attempt).

    Use it as a context manager (`with RunStore.open(...) as store:`): leaving the block by an
    exception or a signal closes the attempt as `interrupted` with its counters, so the manifest
    never claims `running` for a run nobody is running. A SIGKILL leaves `running`; the next
    attempt records that the previous one never closed."""

    root: Path
    table: Table
    manifest: Manifest
    done: set[tuple] = field(default_factory=set)
    _seq: int = 0
    _attempt: Attempt = field(default_factory=lambda: Attempt(started_at=utc_now().isoformat()))

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    @classmethod
    def open(
        cls,
        root: str | Path,
        table: Table,
        stage: Stage,
        config: dict[str, Any],
        *,
        shard: Shard = Shard(),
        resume: bool = True,
    ) -> RunStore:
        root = Path(root)
        check_out_dir(root)
        config_hash = stable_hash(config)
        if is_run(root):
            manifest = load_manifest(root)
            if not resume:
                raise UserError("output folder already holds a run", file=root, hint="`resume`, or another `out`")
            if manifest.table != table.name or manifest.stage != stage:
                raise UserError(f"output folder holds a '{manifest.stage}' run", file=root)
            if manifest.config_hash != config_hash or manifest.shard != shard.__dict__:
                changed = sorted(
                    k for k in set(config) | set(manifest.config) if config.get(k) != manifest.config.get(k)
                ) or ["shard"]
                raise UserError(
                    f"cannot resume: settings differ from the run in this folder ({', '.join(changed)})",
                    file=root,
                    hint="use the same settings, or another `out`",
                )
            for attempt in manifest.attempts:
                if attempt.status != RunStatus.RUNNING:
                    continue
                if attempt.host == socket.gethostname() and attempt.pid != os.getpid():
                    raise UserError(
                        f"process {attempt.pid} is still writing this run folder",
                        file=root,
                        hint="wait for it, or stop it (its rows are kept) and rerun",
                    )
                # This process's own earlier attempt, or one on another machine we cannot check.
                attempt.status = RunStatus.INTERRUPTED
                attempt.error = attempt.error or "never closed (killed)"
        else:
            manifest = Manifest(table.name, stage, config, config_hash, dict(shard.__dict__))
        (root / PARTS).mkdir(parents=True, exist_ok=True)
        for stale in [*root.glob(".*.tmp"), *(root / PARTS).glob(".*.tmp")]:
            stale.unlink(missing_ok=True)  # half-written by an attempt that was killed mid-write
        store = cls(root, table, manifest)
        store._load_done()
        store._attempt.resumed_rows = len(store.done)
        manifest.status = RunStatus.RUNNING
        manifest.attempts.append(store._attempt)
        store._save()
        return store

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: Any) -> None:
        if exc_type is not None and self._attempt.finished_at is None:
            reason = (
                "interrupted by signal" if issubclass(exc_type, KeyboardInterrupt) else f"{exc_type.__name__}: {exc}"
            )
            self.finish(status=RunStatus.INTERRUPTED, error=reason[:500])

    def _load_done(self) -> None:
        files = part_files(self.root)
        for f in files:
            seq = int(f.stem.split("-")[-2])
            self._seq = max(self._seq, seq + 1)
        if files:
            keys = pl.read_parquet(files, columns=list(self.table.key))
            self.done = set(keys.iter_rows())

    def _save(self) -> None:
        with _SAVE_LOCK:  # batch engines record batches from worker threads
            self.manifest.save(self.root)

    # The BatchJournal protocol (engines/base.py): provider batches, recorded in the manifest.
    def batches(self) -> list[dict[str, Any]]:
        with _SAVE_LOCK:
            return [dict(e) for e in self.manifest.batches or []]

    def record_batch(self, entry: dict[str, Any]) -> None:
        """Insert or update (by `file`) a provider batch, saved at once: it must survive a kill."""
        with _SAVE_LOCK:
            self.manifest.batches = upsert(self.manifest.batches or [], entry, "file")
        self._save()

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
        name = f"part-{self.manifest.shard['index']:05d}-{self._seq:06d}-{secrets.token_hex(3)}.parquet"
        write_parquet_atomic(df, self.root / PARTS / name)
        self._seq += 1
        self.done.update(df.select(keys).iter_rows())
        self.manifest.rows = len(self.done)
        self._save()
        return df.height

    def add_totals(self, totals: dict[str, float]) -> None:
        """Accumulate counters (tokens, cost, failures) over every attempt of the run."""
        if not totals:
            return
        with _SAVE_LOCK:
            self.manifest.add_totals(totals)
            for key, value in totals.items():
                self._attempt.totals[key] = self._attempt.totals.get(key, 0) + value
        self._save()

    def set_timing(self, timing: dict[str, float]) -> None:
        """Where this attempt's time went (see the manifest docs); saved with the next write."""
        self._attempt.timing = timing

    def set_engine(self, settings: dict[str, Any]) -> None:
        """The settings this attempt's engine ran with, defaults resolved; saved with the next write."""
        self._attempt.engine = settings

    def finish(
        self,
        summary: dict[str, Any] | None = None,
        status: RunStatus = RunStatus.COMPLETE,
        *,
        failures: list[dict[str, Any]] | None = None,
        error: str | None = None,
    ) -> None:
        """Close the attempt (and the run's status) with its summary and failed rows."""
        self._attempt.finished_at = utc_now().isoformat()
        self._attempt.status = status
        self._attempt.error = error
        if summary is not None:
            self.manifest.summary = summary
        if failures is not None:
            self.manifest.failures = failures
        self.manifest.status = status
        self._save()


def check_out_dir(root: Path) -> None:
    """An output folder must be a folder (or not exist yet): fail before any model loads."""
    for parent in (root, *root.parents):
        if parent.exists():
            if not parent.is_dir():
                raise UserError("output path is a file, not a folder", file=parent)
            break


def merge_runs(
    run_dirs: list[str | Path], out: str | Path, allow_partial: bool = False, of: Shard = Shard()
) -> Manifest:
    """Join the shards of one run (same stage and settings) into one run folder.

    `of`: the shard these are the parts of (`Shard.part`; a round's share of the prompts, cut
    again by `--data-parallel`); the merged run is that shard, so it resumes as one."""
    if not run_dirs:
        raise UserError("give at least one run folder to merge")
    manifests = [load_manifest(d) for d in run_dirs]
    first = manifests[0]
    for d, m in zip(run_dirs, manifests, strict=True):
        if m.table != first.table or m.config_hash != first.config_hash:
            raise UserError("run settings differ from the first folder's; only shards of one run merge", file=d)
    counts = {m.shard["count"] for m in manifests}
    indexes = sorted({m.shard["index"] for m in manifests})
    if len(counts) != 1 or next(iter(counts)) % of.count:
        raise UserError("shards were cut with different N")
    count = counts.pop()
    missing = sorted({of.part(i, count // of.count).index for i in range(count // of.count)} - set(indexes))
    if missing and not allow_partial:
        raise UserError(f"shards {missing} are missing", hint="`allow_partial` merges anyway")
    out = Path(out)
    check_out_dir(out)
    if out.exists() and any(out.iterdir()):
        raise UserError("merge output folder is not empty", file=out)
    table = TABLES[first.table]
    files = [f for d in run_dirs for f in part_files(d)]
    (out / PARTS).mkdir(parents=True, exist_ok=True)
    target = out / PARTS / "part-00000-000000-merged.parquet"
    tmp = target.with_name(".merged.tmp")
    lazy = pl.scan_parquet(files) if files else pl.LazyFrame(schema=table.schema)
    lazy.unique(subset=list(table.key), keep="first", maintain_order=True).sink_parquet(tmp)
    os.replace(tmp, target)
    manifest = Manifest(
        first.table,
        first.stage,
        first.config,
        first.config_hash,
        dict(of.__dict__),
        seftgen_version=first.seftgen_version,
        status=RunStatus.PARTIAL if missing else RunStatus.COMPLETE,
        rows=pl.scan_parquet(target).select(pl.len()).collect().item(),
        merged_from=[
            {"path": str(Path(d).resolve()), "run_id": m.run_id, "shard": m.shard, "rows": m.rows}
            for d, m in zip(run_dirs, manifests, strict=True)
        ],
    )
    for m in manifests:
        manifest.add_totals(m.totals)
    manifest.save(out)
    return manifest
