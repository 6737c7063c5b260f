"""`seftgen sample`: policy responses for a stream of prompts."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import islice
from pathlib import Path

from seftgen.choices import Stage
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.errors import UserError
from seftgen.io.readers import Prompt, PromptColumns, iter_prompts
from seftgen.io.schema import SAMPLES
from seftgen.io.store import Holdout, RunStore, Shard, check_out_dir
from seftgen.provenance import shard_of
from seftgen.stages.common import StageResult, chat_template_hash, constrained, ensure_engine, finish, provenance
from seftgen.stages.config import SAMPLE
from seftgen.stages.parsing import parse_critic
from seftgen.stages.revise import stage1_turns
from seftgen.stages.runner import run_batches
from seftgen.templates import load_template


def sample(
    source: str,
    out: str | Path,
    engine: Engine | EngineSpec,
    *,
    columns: PromptColumns = PromptColumns(),
    params: SamplingConfig = SAMPLE.params,
    limit: int | None = None,
    batch_size: int = SAMPLE.batch_size,
    shard: Shard = Shard(),
    holdout: Holdout = Holdout(),
    max_prompts: int | None = None,
    self_refine: bool = False,
    resume: bool = True,
) -> StageResult:
    """Sample `params.n` responses per prompt of `source` into the run folder `out`.

    `limit` caps the prompts read from `source`; `holdout` then takes the training part or the
    held-out part of them (a recipe's eval split), `shard` one shard of that, and `max_prompts`
    the first N of what is left.

    The input is validated in a first streaming pass, so a bad row stops the run before the model
    is busy and before anything is written. Prompts are then sent in batches of `batch_size`; each
    batch becomes one atomically written part file, so an interrupted run loses at most the batches
    in flight (about one engine's width of prompts), and a rerun (resume) skips every finished prompt.

    `self_refine` (an SRT model, at inference): each response is followed in the same batch by one
    self-refinement (the `srt_self` template: the model continues its response with feedback and
    an improved response); `response` is the refinement, `initial` the first answer, `feedback`
    the model's own (`refined` false, and the initial response kept, when the reply did not parse).
    """
    check_out_dir(Path(out))

    def mine(p: Prompt) -> bool:
        return holdout.keeps(p.prompt_id) and shard_of(p.prompt_id, shard.count) == shard.index

    def selected() -> Iterator[Prompt]:
        return islice((p for p in iter_prompts(source, columns, limit) if mine(p)), max_prompts)

    total = wanted = 0
    for p in iter_prompts(source, columns, limit):  # the validating pass
        total += 1
        wanted += mine(p)
    wanted = min(wanted, max_prompts or wanted)
    if not total:
        raise UserError("no prompts in the input", file=source)
    if not wanted and holdout.heldout:
        raise UserError(f"no prompt falls in the held-out {holdout.fraction:.0%} of the input", file=source)
    engine = ensure_engine(engine)
    chat_hash = chat_template_hash(engine)
    config = {
        "input": str(Path(source).resolve()) if Path(source).exists() else source,
        "columns": columns.__dict__,
        "limit": limit,
        **({"holdout": h} if (h := holdout.as_dict()) else {}),
        **({"max_prompts": max_prompts} if max_prompts else {}),
        "model": engine.model,
        "engine": engine.kind,
        "template_hash": chat_hash,
        "params": params.as_dict(),
        "seed": engine.seed,
    }
    refiner = SelfRefiner(engine, params) if self_refine else None
    if refiner is not None:
        config["self_refine"] = refiner.settings
    store = RunStore.open(out, SAMPLES, Stage.SAMPLE, config, shard=shard, resume=resume)
    params_json = params.to_json()

    def process(batch: list[Prompt]) -> tuple[list[dict], list[dict]]:
        generations = engine.generate([p.messages for p in batch], params)
        prov = provenance(engine, store, chat_hash, params_json)
        rows, failures = [], []
        for prompt, gen in zip(batch, generations, strict=True):
            if gen.error:
                failures.append({"prompt_id": prompt.prompt_id, "row": prompt.row, "error": gen.error})
                continue
            for idx, completion in enumerate(gen.completions):
                rows.append(
                    {
                        "prompt_id": prompt.prompt_id,
                        "messages": prompt.messages,
                        "source_id": prompt.source_id,
                        "verifiable": prompt.verifiable,
                        "sample_idx": idx,
                        "response": completion.text,
                        "prompt_tokens": gen.prompt_tokens,
                        "completion_tokens": completion.completion_tokens,
                        "finish_reason": completion.finish_reason,
                        "error": None,
                        **prov,
                    }
                )
        if refiner is not None and rows:
            rows, failed = refiner.refine(rows)
            failures.extend(failed)
        return rows, failures

    todo = (p for p in selected() if not all((p.prompt_id, i) in store.done for i in range(params.n)))
    remaining = wanted - len(store.done) // max(params.n, 1)
    result = run_batches(store, todo, process, engine=engine, batch_size=batch_size, total=remaining, label="sample")
    return finish(store, result, {"prompts": wanted, "samples_per_prompt": params.n})


class SelfRefiner:
    """One SRT self-refinement of each response: the model continues its own answer in its
    stage-1 layout with feedback and an improved response (`srt_self`, constrained to the format
    where the engine supports it). Budget: twice the answer's tokens plus 256 for the feedback."""

    def __init__(self, engine: Engine, params: SamplingConfig, template: str = "srt_self") -> None:
        self.engine = engine
        self.template = load_template(template)
        self.layout = load_template(str(self.template.get("stage1", "srt_critic")))
        base = SamplingConfig(
            temperature=float(self.template.get("temperature", 0.0)), max_tokens=2 * params.max_tokens + 256
        )
        self.params = constrained(base, self.template, engine, True)

    @property
    def settings(self) -> dict[str, object]:
        return {"template": self.template.name, "template_hash": self.template.hash, "params": self.params.as_dict()}

    def refine(self, rows: list[dict]) -> tuple[list[dict], list[dict]]:
        fmt = self.template.output
        assert fmt is not None
        fields = [str(f) for f in self.template.get("feedback_fields", [f.name for f in fmt.fields[:-1]])]
        convs = [stage1_turns(self.layout, r["messages"], r["response"]) for r in rows]
        out, failures = [], []
        for row, gen in zip(rows, self.engine.generate(convs, self.params, continue_final=True), strict=True):
            if gen.error:
                failures.append({"prompt_id": row["prompt_id"], "sample_idx": row["sample_idx"], "error": gen.error})
                continue
            reply = parse_critic(fmt, gen.completions[0].text, fields)
            refined = reply.error is None and bool(reply.refinement)
            out.append(
                row
                | {
                    "initial": row["response"],
                    "response": reply.refinement if refined else row["response"],
                    "feedback": reply.feedback,
                    "refined": refined,
                    "completion_tokens": row["completion_tokens"] + gen.completions[0].completion_tokens,
                }
            )
        return out, failures
