"""`--data-parallel N`: one stage as N worker processes, each with its own engine on its own device
slice and its own shard of the input, merged into one run at the end.

Why processes: vLLM's `LLM` refuses `data_parallel_size > 1` in one process (vLLM 0.32
`entrypoints/llm.py`: "LLM(data_parallel_size=...) is not supported for single-process usage"),
and its maintainers advise one process per `LLM`, pinned with `CUDA_VISIBLE_DEVICES` (vllm issue
4969). So worker i of N:

- sees only its devices: GPUs [i*TP, (i+1)*TP) of the visible ones through `CUDA_VISIBLE_DEVICES`
  (TP = the spec's `tensor_parallel_size`); on a CPU, its own share of the cores (its affinity
  mask, which vLLM's CPU worker binds its OpenMP threads to under the default
  `VLLM_CPU_OMP_THREADS_BIND=auto`) and 1/N of the memory share (on the CPU backend the share is
  of ALL RAM, per engine);
- runs the stage on `Shard(i, N)` of the input (split by prompt id, as `--shard i/N` does) into
  `OUT.shards/i-of-N/`, so a rerun resumes each shard where it stopped;
- is a child of this process, and this process's watchdog is started before any worker: if the
  parent dies (even by SIGKILL), the watchdog ends every worker and its engine.

When every shard is complete, they are merged (`merge_runs`) into OUT, rebuilt aside and swapped
in, so OUT is always one whole merged run. Workers are started with `spawn`: a fresh interpreter
that reads its device environment before anything imports torch or vLLM.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from seftgen import devices
from seftgen.engines import EngineSpec, release_engines
from seftgen.engines.vllm_engine import default_memory_share
from seftgen.errors import UserError
from seftgen.io.store import Shard, load_manifest, merge_runs
from seftgen.stages.common import StageResult
from seftgen.watchdog import ensure_watchdog

StageFn = Callable[..., StageResult]


@dataclass(frozen=True)
class Slice:
    """What worker `index` may use: GPU ids (CUDA) or CPU cores, and its memory share."""

    index: int
    gpus: tuple[str, ...] = ()
    cores: tuple[int, ...] = ()

    def env(self) -> dict[str, str]:
        return {"CUDA_VISIBLE_DEVICES": ",".join(self.gpus)} if self.gpus else {}


def visible_gpu_ids() -> list[str]:
    """The GPU ids this process may use, as CUDA_VISIBLE_DEVICES names them (else 0..n-1)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [d.strip() for d in listed.split(",") if d.strip() and d.strip() != "-1"]
    return [str(i) for i in range(devices.visible_gpus())]


def slices(n: int, tensor_parallel: int = 1) -> list[Slice]:
    """N disjoint device slices: TP GPUs each on an accelerator, an equal share of cores on a CPU."""
    if n < 1:
        raise UserError(f"data_parallel must be at least 1 (got {n})", param="data_parallel")
    if devices.accelerator() == "cuda":
        gpus = visible_gpu_ids()
        if n * tensor_parallel > len(gpus):
            raise UserError(
                f"data_parallel {n} x tensor_parallel_size {tensor_parallel} needs {n * tensor_parallel} GPUs; "
                f"{len(gpus)} visible",
                param="data_parallel",
            )
        return [Slice(i, tuple(gpus[i * tensor_parallel : (i + 1) * tensor_parallel])) for i in range(n)]
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if n > len(cores):
        raise UserError(f"data_parallel {n} needs {n} cores; {len(cores)} usable", param="data_parallel")
    per = len(cores) // n
    return [Slice(i, cores=tuple(cores[i * per : (i + 1) * per])) for i in range(n)]


def shard_dir(out: Path, index: int, count: int) -> Path:
    return out.with_name(f"{out.name}.shards") / f"{index}-of-{count}"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def _worker(piece: Slice, fn: StageFn, args: tuple, kwargs: dict[str, Any], conn: Any) -> None:
    """A spawned worker: pin to its slice, then run the stage on its shard; report back."""
    signal.signal(signal.SIGTERM, _interrupt)  # the parent's terminate: close the attempt as interrupted
    os.environ.update(piece.env())
    if piece.cores and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, piece.cores)  # before vLLM starts: its CPU worker binds to this mask
    try:
        result = fn(*args, **kwargs)
        conn.send(("ok", result))
    except UserError as err:
        conn.send(("user", err))
    except KeyboardInterrupt:
        conn.send(("interrupted", None))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        # Now, not at exit: multiprocessing joins a finished worker's children (the EngineCore)
        # before atexit handlers run, so a cached engine would keep the worker alive forever.
        release_engines()
        conn.close()


@dataclass
class ParallelResult(StageResult):
    shards: list[StageResult] | None = None


def run_data_parallel(
    fn: StageFn, source: str | Path, out: str | Path, spec: EngineSpec, n: int, **kwargs: Any
) -> StageResult:
    """`fn(source, shard_out, spec_i, shard=Shard(i, n), **kwargs)` in n workers, then merge into `out`.

    `spec` must be a local vLLM spec (an API engine scales with its own concurrency). A `shard`
    in kwargs (a round's share of the prompts) is split further: worker i runs its part i of n."""
    out = Path(out)
    outer: Shard = kwargs.pop("shard", None) or Shard()
    pieces = slices(n, spec.tensor_parallel_size)
    share = spec.memory_share if spec.memory_share is not None else default_memory_share()
    if not pieces[0].gpus:
        share = share / n  # on the CPU backend each engine reserves its share of ALL RAM
    ensure_watchdog()  # before the workers: if this process dies, they and their engines end too
    ctx = multiprocessing.get_context("spawn")
    running = []
    for piece in pieces:
        parent_end, child_end = ctx.Pipe(duplex=False)
        shard_spec = replace(spec, memory_share=share)
        args = (str(source), shard_dir(out, piece.index, n), shard_spec)
        proc = ctx.Process(
            target=_worker,
            args=(piece, fn, args, kwargs | {"shard": outer.part(piece.index, n)}, child_end),
            name=f"seftgen-dp-{piece.index}",
        )
        proc.start()
        child_end.close()
        running.append((piece, proc, parent_end))
    results: list[StageResult] = []
    problems: list[str] = []
    try:
        for piece, proc, conn in running:
            try:
                kind, value = conn.recv()
            except EOFError:  # the worker died without a word (killed, out of memory)
                kind, value = "error", f"worker {piece.index} exited with code {proc.join() or proc.exitcode}"
            proc.join()
            if kind == "ok":
                results.append(value)
            elif kind == "user":
                raise value
            elif kind == "interrupted":
                raise KeyboardInterrupt
            else:
                problems.append(f"shard {piece.index}/{n}: {str(value).strip().splitlines()[-1]}")
    finally:
        for _, proc, _ in running:  # an error or Ctrl-C here: no worker is left behind
            if proc.is_alive():
                proc.terminate()
            proc.join(30)
    if problems:
        hint = "rerun to resume every shard"
        if not pieces[0].gpus:
            hint += (
                f"; each CPU worker's engine had memory share {share:.3g} (yours / {n}): raise it if one did not start"
            )
        raise UserError("a data-parallel worker failed: " + "; ".join(problems), hint=hint)
    return _merge(out, n, results, outer)


def _merge(out: Path, n: int, results: list[StageResult], outer: Shard) -> ParallelResult:
    merged = ParallelResult(out, shards=results)
    merged.written = sum(r.written for r in results)
    merged.resumed = sum(r.resumed for r in results)
    merged.failures = [f | {"shard": i} for i, r in enumerate(results) for f in r.failures]
    for r in results:
        for key, value in r.totals.items():
            merged.totals[key] = merged.totals.get(key, 0) + value
        for key, value in r.timing.items():  # the slowest worker's, per part
            merged.timing[key] = max(merged.timing.get(key, 0.0), value)
    if merged.failures:  # a shard has rows to retry: no merged run until a rerun completes them
        merged.summary = {"shards": n, "merged": False}
        return merged
    staging = out.with_name(f".{out.name}.merging")
    shutil.rmtree(staging, ignore_errors=True)
    manifest = merge_runs([shard_dir(out, i, n) for i in range(n)], staging, of=outer)
    old = out.with_name(f".{out.name}.old")
    if out.exists():
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    staging.rename(out)
    shutil.rmtree(old, ignore_errors=True)
    merged.summary = {"shards": n, "rows": manifest.rows, **_first_summary(out, n)}
    return merged


def _first_summary(out: Path, n: int) -> dict[str, Any]:
    """Where each shard's run is, for the manifest reader who wants the per-shard summaries."""
    return {"shard_runs": [str(shard_dir(out, i, n)) for i in range(n)], "status": str(load_manifest(out).status)}
