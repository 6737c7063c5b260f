"""`seftgen round RECIPE --rounds 1-K [--train]`: a method's rounds, data stages and training.

One round, in the order the methods need:
1. data built from preference records (reviser data, JSFT data) and the training steps that use
   only it (the SEFT reviser, the JSFT model);
2. the round's policy samples the prompts;
3. model stages: revise / critique / judge / best-of, each with its model ('policy', a trained
   step's model 'train:STEP', or a named model);
4. the remaining training steps; the recipe's next-policy step gives round K+1's policy.

With `train`, every step runs `axolotl train` (+ `merge-lora`) in axolotl's own environment;
without it, the configs and commands are written, and a stage that needs a model not trained yet
stops the round with what to run. `round.json` in each round folder records the plan, the models
(which model wrote what), the stage summaries, the training losses and where the time went.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.engines import EngineSpec, cached_engines, release_engines
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.evaluation.evaluate import evaluate
from seftgen.export.axolotl import ExportResult, export_axolotl
from seftgen.io.preferences import columns_for
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Holdout, load_manifest, scan_run, write_json_atomic
from seftgen.recipes import (
    ModelRef,
    Recipe,
    RoundStage,
    TrainStep,
    engine_for,
    prompt_columns,
    round_shard,
    sampling_of,
    stage2_holdout,
    training_holdout,
)
from seftgen.stages.build_data import build_jsft_data, build_reviser_data
from seftgen.stages.common import StageResult
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.revise import revise_seft, revise_self, revise_srt
from seftgen.stages.sample import sample
from seftgen.training.env import Axolotl, find_axolotl
from seftgen.training.run import TrainResult, train

PLAN = "round.json"
Notify = Callable[[str], None]
StepProgress = Callable[[str, int, int, float | None], None]


@dataclass
class RoundResult:
    round: int
    policy: str
    dir: Path
    stages: dict[RoundStage, StageResult] = field(default_factory=dict)
    exports: list[ExportResult] = field(default_factory=list)
    trained: dict[str, TrainResult] = field(default_factory=dict)
    models: dict[str, str] = field(default_factory=dict)  # training step -> its model
    skipped: dict[str, str] = field(default_factory=dict)
    blocked: str | None = None  # why the round stopped before its end (a model not trained yet)
    next_policy: str | None = None
    eval: dict[str, Any] | None = None  # held-out evaluation of the trained policy (recipe `eval`)
    timing: dict[str, float] = field(default_factory=dict)  # seconds per stage / export / training step
    seconds: float = 0.0  # the whole round

    @property
    def commands(self) -> list[str]:
        return [c for e in self.exports for c in e.commands if not self._trained(e)]

    def _trained(self, export: ExportResult) -> bool:
        return any(t.config == export.config_path for t in self.trained.values())


def parse_rounds(text: str) -> list[int]:
    """'2' -> [2]; '1-3' -> [1, 2, 3]."""
    first, _, last = text.partition("-")
    try:
        lo, hi = int(first), int(last or first)
    except ValueError as exc:
        raise UserError(f"--rounds must look like K or K-M, got {text!r}") from exc
    if lo < 1 or hi < lo:
        raise UserError(f"--rounds {text}: rounds start at 1 and go up")
    return list(range(lo, hi + 1))


def _plan(workdir: Path, round_k: int) -> dict[str, Any]:
    path = workdir / f"round-{round_k}" / PLAN
    if not path.is_file():
        raise UserError(f"round {round_k} has not been run", file=path, hint="run it first, or pass --policy")
    return json.loads(path.read_text())


def policy_for_round(recipe: Recipe, workdir: Path, round_k: int) -> str:
    """Round 1 trains the recipe's policy; round K trains round K-1's trained policy."""
    if round_k == 1:
        return recipe.policy
    previous = _plan(workdir, round_k - 1)
    merged = previous.get("next_policy")
    if not merged or not (Path(merged) / "config.json").is_file():
        raise UserError(
            f"round {round_k - 1}'s trained policy is missing: run its training first",
            file=merged or workdir / f"round-{round_k - 1}" / PLAN,
            hint="pass --train, run the commands in its round.json, or pass --policy",
        )
    return merged


def run_rounds(
    recipe: Recipe,
    workdir: str | Path,
    rounds: list[int],
    *,
    policy: str | None = None,
    do_train: bool = False,
    axolotl: str | Path | None = None,
    preset: str | None = None,
    notify: Notify | None = None,
    on_step: StepProgress | None = None,
) -> list[RoundResult]:
    """Rounds in order; round K+1 starts from round K's trained policy. Stops at a blocked round."""
    results = []
    for k in rounds:
        result = run_round(
            recipe,
            workdir,
            k,
            policy if k == rounds[0] else None,
            do_train=do_train,
            axolotl=axolotl,
            preset=preset,
            notify=notify,
            on_step=on_step,
        )
        results.append(result)
        if result.blocked:
            break
    return results


def run_round(
    recipe: Recipe,
    workdir: str | Path,
    round_k: int,
    policy: str | None = None,
    *,
    do_train: bool = False,
    axolotl: str | Path | None = None,
    preset: str | None = None,
    notify: Notify | None = None,
    on_step: StepProgress | None = None,
) -> RoundResult:
    if round_k < 1:
        raise UserError("--round starts at 1")
    say = notify or (lambda _: None)
    workdir = Path(workdir).resolve()
    policy = policy or policy_for_round(recipe, workdir, round_k)
    rdir = workdir / f"round-{round_k}"
    rdir.mkdir(parents=True, exist_ok=True)
    result = RoundResult(round_k, policy, rdir)
    began = time.monotonic()
    ax: Axolotl | None = find_axolotl(axolotl)
    if do_train and ax is None:
        raise UserError(
            "--train needs axolotl", hint="make install-train (.venv-train), --axolotl PATH or $SEFTGEN_AXOLOTL"
        )
    outputs: dict[RoundStage, Path] = {}
    previous = _plan(workdir, round_k - 1) if round_k > 1 else {}
    _check_steps(recipe)
    callers_engines = cached_engines()  # not ours to close

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        start = time.monotonic()
        try:
            return fn()
        finally:
            result.timing[name] = round(time.monotonic() - start, 1)

    def model_of(ref: str) -> str | None:
        """'policy', 'train:STEP' or a model; None when STEP has not produced its model yet."""
        if ref == "policy":
            return policy
        if ref.startswith("train:"):
            return result.models.get(ref.removeprefix("train:"))
        return recipe.resolve(ref)

    def run_step(step: TrainStep) -> bool:
        """Export (and with --train, train) one step; False when the round must stop here."""
        if step.once and round_k > 1 and step.name in previous.get("models", {}):
            result.models[step.name] = previous["models"][step.name]  # e.g. the reviser, trained in round 1
            result.skipped[step.name] = f"trained once, in an earlier round: {result.models[step.name]}"
            return True
        data = outputs[step.data]
        if not _has_trainable_rows(data):
            result.skipped[step.name] = f"no kept rows in {data}"
            return False
        base = model_of(step.base)
        if base is None:
            raise UserError(f"train step '{step.name}' starts from {step.base}, which comes later", field="train")
        release_engines(callers_engines)  # training needs the memory the engines hold
        exported = timed(
            f"export:{step.name}",
            lambda: export_axolotl(
                data,
                step.kind,
                base,
                rdir / f"train-{step.name}.yml",
                preset=step.preset or preset or recipe.training.preset,
                overrides=step.set,
                axolotl=ax.executable if ax else None,
            ),
        )
        result.exports.append(exported)
        result.models[step.name] = exported.next_base_model
        if do_train and ax is not None:
            say(f"training '{step.name}' ({exported.variant}, {exported.rows} rows)")
            trained = timed(
                f"train:{step.name}",
                lambda: train(
                    ax,
                    exported.config_path,
                    rdir / "logs" / f"train-{step.name}.log",
                    launcher=recipe.training.launcher or _default_launcher(),
                    on_step=(lambda s, n, loss: on_step(step.name, s, n, loss)) if on_step else None,
                ),
            )
            result.trained[step.name] = trained
        return True

    def stage_model(ref: ModelRef, stage: str) -> EngineSpec | None:
        model = model_of(ref.model)
        # A step's config names where its model will be; a stage needs the model itself.
        if ref.model.startswith("train:") and model is not None and not (Path(model) / "config.json").is_file():
            model = None
        if model is None:
            step = ref.model.removeprefix("train:")
            result.blocked = (
                f"{stage} uses the model of training step '{step}', which is not trained yet: "
                "run the commands below (or pass --train), then rerun this round"
            )
            return None
        return engine_for(recipe, ref.model_copy(update={"model": model}), policy)

    # 1. Data from preference records, and the steps that train on it alone.
    builders = {RoundStage.REVISER_DATA: build_reviser_data, RoundStage.JSFT_DATA: build_jsft_data}
    wanted = [name for name in builders if getattr(recipe, name)]
    if wanted and not recipe.preferences:
        raise UserError("the recipe builds reviser/JSFT data but names no 'preferences'", field="preferences")
    prefs = recipe.resolve(str(recipe.preferences))
    columns = columns_for(recipe.preferences_preset)
    options = {RoundStage.REVISER_DATA: {}, RoundStage.JSFT_DATA: {"template": recipe.jsft_template}}
    for name in wanted:
        out = rdir / name.folder
        result.stages[name] = timed(
            name, lambda build=builders[name], out=out, kw=options[name]: build(prefs, out, columns=columns, **kw)
        )
        outputs[name] = out
    early = [s for s in recipe.train if s.data.from_preferences]
    late = [s for s in recipe.train if not s.data.from_preferences]
    for step in early:
        run_step(step)
    if round_k == 1 and (first := recipe.training.first_policy):
        # SELF-JUDGE: self-training starts from the JSFT model, trained just above.
        trained_first = result.models.get(first)
        if not trained_first or not (Path(trained_first) / "config.json").is_file():
            result.blocked = (
                f"round 1's policy is the model of training step '{first}', which is not trained yet: "
                "run the commands below (or pass --train), then rerun this round"
            )
            result.seconds = round(time.monotonic() - began, 1)
            write_json_atomic(rdir / PLAN, _plan_of(recipe, result, outputs))
            return result
        policy = result.policy = trained_first

    # 2. The policy samples.
    say(f"round {round_k}: sampling with {policy}")
    samples = rdir / RoundStage.SAMPLE.folder
    result.stages[RoundStage.SAMPLE] = timed(
        RoundStage.SAMPLE,
        lambda: sample(
            recipe.resolve(recipe.prompts.source),
            samples,
            engine_for(recipe, ModelRef(model="policy"), policy),
            columns=prompt_columns(recipe.prompts),
            params=sampling_of(recipe.sample),
            limit=recipe.prompts.limit,
            batch_size=recipe.sample.batch_size,
            shard=round_shard(recipe.prompts, round_k),
            holdout=training_holdout(recipe),
        ),
    )
    outputs[RoundStage.SAMPLE] = samples

    # 3. Model stages, in the recipe's order: each with its model and its run function.
    for name, ref, run in _model_stages(recipe, samples):
        spec = stage_model(ref, name)
        if spec is None:
            break
        say(f"round {round_k}: {name} with {spec.model}")
        outputs[name] = rdir / name.folder
        result.stages[name] = timed(name, lambda run=run, spec=spec, out=outputs[name]: run(spec, out))

    # 4. The remaining training steps; SRT stage 2's data is made when its step needs it, by the
    #    stage-1 model trained just before.
    if not result.blocked:
        for step in late:
            if step.data == RoundStage.SELF_CRITIQUE and step.data not in outputs and recipe.self_critique:
                made = self_critique_stage(recipe, rdir, round_k, stage_model, timed, say)
                if made is None:
                    break
                for name, (path, stage) in made.items():
                    outputs[name], result.stages[name] = path, stage
            if step.data not in outputs:
                raise UserError(f"train step '{step.name}' uses '{step.data}', which this recipe does not produce")
            if not run_step(step):
                break  # later steps would start from this step's model
    release_engines(callers_engines)
    next_step = recipe.training.next_policy or next((s.name for s in reversed(recipe.train) if not s.once), None)
    if not result.blocked and next_step and next_step not in result.skipped:
        result.next_policy = result.models.get(next_step)

    # 5. Held-out evaluation of the trained policy, against round 0 and the previous round.
    if recipe.eval is not None and not result.blocked:
        trained = (
            result.next_policy if result.next_policy and (Path(result.next_policy) / "config.json").is_file() else None
        )
        if trained is None:
            result.eval = {"skipped": "no trained policy in this round (run it with --train)"}
        else:
            say(f"round {round_k}: evaluating {trained} on held-out prompts")
            result.eval = timed("eval", lambda: evaluate_round(recipe, workdir, round_k, trained, callers_engines))
    result.seconds = round(time.monotonic() - began, 1)
    write_json_atomic(rdir / PLAN, _plan_of(recipe, result, outputs))
    return result


ModelStage = tuple[RoundStage, ModelRef, Callable[[EngineSpec, Path], StageResult]]


def self_critique_stage(
    recipe: Recipe,
    rdir: Path,
    round_k: int,
    stage_model: Callable[[ModelRef, str], EngineSpec | None],
    timed: Callable[[str, Callable[[], Any]], Any],
    say: Notify,
) -> dict[RoundStage, tuple[Path, StageResult]] | None:
    """SRT stage 2's data: the stage-1 model answers the stage-2 prompts (never stage 1's), then
    critiques, refines and scores its own answers. None when the stage-1 model is not trained."""
    sc = recipe.self_critique
    assert sc is not None
    spec = stage_model(sc.model, RoundStage.SELF_CRITIQUE)
    if spec is None:
        return None
    if sc.source is not None:
        source, columns, holdout = (
            recipe.resolve(sc.source),
            PromptColumns(sc.prompt_column, sc.messages_column),
            Holdout(),
        )
    else:
        source, columns, holdout = (
            recipe.resolve(recipe.prompts.source),
            prompt_columns(recipe.prompts),
            stage2_holdout(recipe),
        )
    samples, critiqued = rdir / RoundStage.SELF_SAMPLES.folder, rdir / RoundStage.SELF_CRITIQUE.folder
    say(f"round {round_k}: stage-2 prompts answered by {spec.model}")
    sampled = timed(
        RoundStage.SELF_SAMPLES,
        lambda: sample(
            source,
            samples,
            spec,
            columns=columns,
            params=sampling_of(sc.sample),
            limit=recipe.prompts.limit if sc.source is None else None,
            batch_size=sc.sample.batch_size,
            holdout=holdout,
            max_prompts=sc.prompts,
        ),
    )
    say(f"round {round_k}: self-critique with {spec.model}")
    critique = timed(
        RoundStage.SELF_CRITIQUE,
        lambda: revise_self(
            samples,
            critiqued,
            spec,
            template=sc.template,
            score_template=sc.score_template,
            max_tokens=sc.max_tokens,
            constrain=sc.constrain,
        ),
    )
    return {RoundStage.SELF_SAMPLES: (samples, sampled), RoundStage.SELF_CRITIQUE: (critiqued, critique)}


def _model_stages(recipe: Recipe, samples: Path) -> list[ModelStage]:
    """The recipe's model stages: which model each uses, and how it runs on the round's samples."""
    stages: list[ModelStage] = []
    if r := recipe.revise:
        params = SamplingConfig(temperature=0.0, max_tokens=r.max_tokens)
        stages.append(
            (
                RoundStage.REVISE,
                r.reviser,
                lambda spec, out: revise_seft(
                    samples, out, spec, template=r.template, params=params, constrain=r.constrain
                ),
            )
        )
    if c := recipe.critique:
        stages.append(
            (
                RoundStage.CRITIQUE,
                c.critic,
                lambda spec, out: revise_srt(
                    samples,
                    out,
                    spec,
                    template=c.template,
                    score_template=c.score_template,
                    max_tokens=c.max_tokens,
                    constrain=c.constrain,
                ),
            )
        )
    if j := recipe.judge:
        stages.append(
            (
                RoundStage.JUDGE,
                j.judge,
                lambda spec, out: judge_pairs(
                    samples,
                    out,
                    spec,
                    template=j.template,
                    verdict=j.verdict,
                    min_margin=j.min_margin,
                    require_consistent=j.require_consistent,
                    constrain=j.constrain,
                ),
            )
        )
    if b := recipe.best_of:
        stages.append(
            (
                RoundStage.BEST_OF,
                b.judge,
                lambda spec, out: best_of(
                    samples, out, spec, template=b.template, verdict=b.verdict, constrain=b.constrain
                ),
            )
        )
    return stages


START = "round-0"  # the starting policy's eval samples, under the workdir's eval folder


def evaluate_round(recipe: Recipe, workdir: Path, round_k: int, trained: str, keep: set[EngineSpec]) -> dict[str, Any]:
    """Sample the eval prompts with the trained policy (and, once, with the starting policy), then
    judge round K against round 0 and against round K-1 with one fixed judge."""
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

    def answers(model: str, out: Path) -> Path:
        spec = engine_for(recipe, ModelRef(model=model), model)
        sample(source, out, spec, columns=columns, params=params, limit=limit, holdout=holdout, max_prompts=ev.prompts)
        return out

    runs = {f"round-{round_k}": answers(trained, workdir / f"round-{round_k}" / "eval" / "samples")}
    release_engines(keep)  # the trained policy is done; the start model samples and judges next
    runs[START] = answers(start, workdir / "eval" / START / "samples")  # once: later rounds resume it
    previous = workdir / f"round-{round_k - 1}" / "eval" / "samples"
    judge_ref = ev.judge.model_copy(update={"model": start if ev.judge.model == "start" else ev.judge.model})
    judge = engine_for(recipe, judge_ref, start)
    out: dict[str, Any] = {"prompts": load_manifest(runs[START]).rows, "judge": judge.model, "runs": {}}
    baselines = {"vs_start": runs[START]}
    if round_k > 1:
        baselines["vs_previous"] = previous
    for name, baseline in baselines.items():
        if not (baseline / "manifest.json").is_file():
            out[name] = {"skipped": f"no eval samples of the previous round ({baseline})"}
            continue
        run = workdir / f"round-{round_k}" / "eval" / name.replace("_", "-")
        evaluated = evaluate(
            runs[f"round-{round_k}"],
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
    return out


def _check_steps(recipe: Recipe) -> None:
    names = [s.name for s in recipe.train]
    for step in recipe.train:
        if step.base.startswith("train:") and step.base.removeprefix("train:") not in names:
            raise UserError(f"train step '{step.name}' starts from unknown step {step.base}", field="train")


def _default_launcher() -> str | None:
    """axolotl's default launcher is accelerate (GPUs); without a GPU, plain python."""
    import torch

    return None if torch.cuda.is_available() else "python"


def _has_trainable_rows(run_dir: Path) -> bool:
    rows = scan_run(run_dir)
    if "kept" in rows.collect_schema().names():
        rows = rows.filter(pl.col("kept"))
    return rows.head(1).collect().height > 0


def _plan_of(recipe: Recipe, result: RoundResult, outputs: dict[RoundStage, Path]) -> dict[str, Any]:
    stages = {}
    for name, path in outputs.items():
        manifest = load_manifest(path)
        stages[name] = {
            "path": str(path),
            "run_id": manifest.run_id,
            "rows": manifest.rows,
            "status": manifest.status,
            "model": manifest.config.get("model"),
            "summary": manifest.summary,
        }
    return {
        "recipe": recipe.method,
        "round": result.round,
        "policy": result.policy,
        "next_policy": result.next_policy,
        "models": result.models,
        "stages": stages,
        "configs": [
            {"path": str(e.config_path), "variant": e.variant, "rows": e.rows, "validated": e.validated}
            for e in result.exports
        ],
        "training": {name: t.as_dict() for name, t in result.trained.items()},
        "skipped_training_steps": result.skipped,
        "blocked": result.blocked,
        "commands": result.commands,
        "eval": result.eval,
        "time": time_table(result),
    }


def time_table(result: RoundResult) -> dict[str, dict[str, float]]:
    """Where the round's time went, per stage and training step (seconds): the stage's total and,
    for model stages, engine start-up, generation, writing and rows/s (from its run's attempt)."""
    table: dict[str, dict[str, float]] = {}
    stages = {str(name): stage for name, stage in result.stages.items()}
    for name, seconds in result.timing.items():
        table[name] = {"total_s": seconds}
        if (stage := stages.get(name)) is not None:
            table[name] |= {k: v for k, v in stage.timing.items() if k != "wall_s"}
    table["round"] = {"total_s": result.seconds}
    return table
