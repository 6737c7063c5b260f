"""`seftgen sample`: policy responses for a stream of prompts."""

from __future__ import annotations

from pathlib import Path

from seftgen.console import stage_progress
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.io.readers import PromptColumns, iter_prompts
from seftgen.io.schema import SAMPLES
from seftgen.io.store import RunStore, Shard
from seftgen.provenance import shard_of
from seftgen.stages.common import StageResult, chat_template_hash, chunked, finish, provenance


def sample(
    source: str,
    out: str | Path,
    engine: Engine,
    *,
    columns: PromptColumns = PromptColumns(),
    params: SamplingConfig = SamplingConfig(),
    limit: int | None = None,
    batch_size: int = 256,
    shard: Shard = Shard(),
    resume: bool = True,
) -> StageResult:
    """Sample `params.n` responses per prompt of `source` into the run folder `out`.

    The input is validated in a first streaming pass, so a bad row stops the run before the model
    is busy and before anything is written. Prompts are then sent in batches of `batch_size`; each
    batch becomes one atomically written part file, so an interrupted run loses at most the batch
    in flight, and a rerun (resume) skips every finished prompt.
    """
    wanted = sum(1 for p in iter_prompts(source, columns, limit) if shard_of(p.prompt_id, shard.count) == shard.index)
    chat_hash = chat_template_hash(engine)
    config = {
        "input": str(Path(source).resolve()) if Path(source).exists() else source,
        "columns": columns.__dict__,
        "limit": limit,
        "model": engine.model,
        "engine": engine.kind,
        "template_hash": chat_hash,
        "params": params.__dict__ | {"stop": list(params.stop)},
        "seed": engine.seed,
    }
    store = RunStore.open(out, SAMPLES, "sample", config, shard=shard, resume=resume)
    result = StageResult(Path(out), resumed=len(store.done))
    todo = (
        p for p in iter_prompts(source, columns, limit)
        if shard_of(p.prompt_id, shard.count) == shard.index
        and not all((p.prompt_id, i) in store.done for i in range(params.n))
    )
    params_json = params.to_json()
    with stage_progress("sample", wanted, done=len(store.done) // max(params.n, 1)) as bar:
        for batch in chunked(todo, batch_size):
            generations = engine.generate([p.messages for p in batch], params)
            prov = provenance(engine, store, chat_hash, params_json)
            rows = []
            for prompt, gen in zip(batch, generations):
                if gen.error:
                    result.failures.append({"prompt_id": prompt.prompt_id, "row": prompt.row, "error": gen.error})
                    continue
                for idx, completion in enumerate(gen.completions):
                    rows.append({
                        "prompt_id": prompt.prompt_id,
                        "messages": prompt.messages,
                        "sample_idx": idx,
                        "response": completion.text,
                        "prompt_tokens": gen.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "finish_reason": completion.finish_reason,
                        "error": None,
                        **prov,
                    })
            result.written += store.write(rows)
            store.add_totals(engine.take_usage())
            bar.advance(len(batch), sum(r["completion_tokens"] for r in rows))
    return finish(store, result, {"prompts": wanted, "samples_per_prompt": params.n})
