"""A trained round's held-out evaluation: its policy's answers judged against round 0's (the
starting policy, answered once and reused by every round) and against round K-1's; and the
recipe's benchmarks (`eval.benchmarks`), each run while that model's engine is up and compared
with round 0 (and round K-1) prompt by prompt."""

from __future__ import annotations

from typing import Any

from seftgen.engines import EngineSpec, release_engines
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.evaluation.benchmark import compare, get, run_benchmark
from seftgen.evaluation.evaluate import evaluate
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Holdout, is_run, load_manifest
from seftgen.io.workdir import START, Workdir
from seftgen.rounds.recipe import Recipe, StageModel, engine_for, prompt_columns
from seftgen.stages.sample import sample


def evaluate_round(
    recipe: Recipe,
    work: Workdir,
    round_k: int,
    trained: str,
    keep: set[EngineSpec],
    hand_over: bool = False,
) -> dict[str, Any]:
    """Sample the eval prompts with the trained policy (and, once, with the starting policy), then
    judge round K against round 0 and against round K-1 with one fixed judge. `keep`: engines not
    to close; `hand_over`: keep the trained policy's too (the next round samples with it)."""
    ev = recipe.eval
    assert ev is not None
    start = recipe.policy
    if ev.source is not None:
        source, columns = recipe.resolve(ev.source), PromptColumns(ev.prompt_column, ev.messages_column)
        limit, holdout = None, Holdout()
    else:
        source, columns = recipe.resolve(recipe.prompts.source), prompt_columns(recipe.prompts)
        limit, holdout = recipe.prompts.limit, Holdout(ev.holdout, heldout=True)
    params = SamplingConfig(n=1, temperature=ev.temperature, max_tokens=ev.max_tokens or recipe.sample.max_tokens)

    def answers(model: str, k: int) -> EngineSpec:
        spec = engine_for(recipe, StageModel(model=model), model)
        sample(
            source,
            work.eval_samples(k),
            spec,
            columns=columns,
            params=params,
            limit=limit,
            holdout=holdout,
            max_prompts=ev.prompts,
        )
        return spec

    bench_judge = None
    if ev.benchmark_judge is not None:
        judge_ref = ev.benchmark_judge.ref.resolve(policy=trained, start=start, models={}) or start
        bench_judge = engine_for(recipe, ev.benchmark_judge, judge_ref)

    def benchmarks(spec: EngineSpec, k: int) -> None:
        # Every benchmark's answers first, with this model's engine; then the scoring, so a local
        # judge's engine takes the device once (one engine per device at a time on a GPU).
        for answers_only in (True, False):
            for name in ev.benchmarks:
                run = run_benchmark(
                    name,
                    work.benchmark_dir(k, name),
                    spec,
                    judge=bench_judge if get(name).judged else None,
                    limit=ev.benchmark_prompts,
                    max_tokens=ev.benchmark_max_tokens,
                    answers_only=answers_only,
                )
                if not (run.answers.ok if answers_only else run.ok):
                    raise UserError(f"benchmark {name} of round {k} has failures: rerun the round to retry them")

    if not ev.pairwise:  # the benchmarks alone
        trained_spec = engine_for(recipe, StageModel(model=trained), trained)
        benchmarks(trained_spec, round_k)
        release_engines(keep | {trained_spec} if hand_over else keep)
        benchmarks(engine_for(recipe, StageModel(model=start), start), 0)
        release_engines(keep)
        return {"benchmarks": {name: benchmark_summary(work, name, round_k) for name in ev.benchmarks}}
    trained_spec = answers(trained, round_k)
    benchmarks(trained_spec, round_k)
    keep = keep | {trained_spec} if hand_over else keep
    release_engines(keep)  # the trained policy is done; the start model samples and judges next
    start_spec = answers(start, 0)  # once: later rounds resume it
    benchmarks(start_spec, 0)
    judge_model = ev.judge.ref.resolve(policy=trained, start=start, models={}) or start
    judge = engine_for(recipe, ev.judge, judge_model)
    out: dict[str, Any] = {"prompts": load_manifest(work.eval_samples(0)).rows, "judge": judge.model, "runs": {}}
    baselines = {"vs_start": 0}
    if round_k > 1:
        baselines["vs_previous"] = round_k - 1
    for name, k in baselines.items():
        baseline = work.eval_samples(k)
        if not is_run(baseline):
            out[name] = {"skipped": f"no eval samples of the previous round ({baseline})"}
            continue
        run = work.eval_dir(round_k) / name.replace("_", "-")
        evaluated = evaluate(
            work.eval_samples(round_k),
            baseline,
            run,
            judge,
            template=ev.template,
            verdict=ev.verdict,
            tie_margin=ev.tie_margin,
        )
        out[name] = evaluated.summary
        out["runs"][name] = str(run)
        out["judge"] = load_manifest(run).config["model"]  # the resolved model, as its rows name it
    release_engines(keep)
    if ev.benchmarks:
        out["benchmarks"] = {name: benchmark_summary(work, name, round_k) for name in ev.benchmarks}
    return out


def benchmark_summary(work: Workdir, name: str, round_k: int) -> dict[str, Any]:
    """Round K's scores on a benchmark, round 0's, and K against 0 and against K-1, paired."""
    bench = get(name)
    scores = {k: work.benchmark_dir(k, name) / "scores" for k in {0, round_k - 1, round_k}}
    out: dict[str, Any] = {
        "round": bench.summarize(scores[round_k]),
        "start": bench.summarize(scores[0]),
        "vs_start": compare(name, scores[round_k], scores[0]),
        "run": str(work.benchmark_dir(round_k, name)),
    }
    if round_k > 1 and bench.values(scores[round_k - 1]):
        out["vs_previous"] = compare(name, scores[round_k], scores[round_k - 1])
    return out


__all__ = ["START", "evaluate_round"]
