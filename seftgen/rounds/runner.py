"""`seftgen round RECIPE --rounds 1-K [--train]`: a method's rounds, data stages and training.

One round, in the order the methods need (one method of `Round` per phase):
1. `preference_data`: data built from preference records (reviser data, JSFT data), and the
   training steps that use only it (the SEFT reviser, the JSFT model);
2. `sample`: the round's policy samples the prompts;
3. `model_stages`: revise / critique / judge / best-of, each with its model ('policy', a trained
   step's model 'train:STEP', or a named model);
4. `late_training`: the remaining steps (SRT stage 2's data is made here, by the stage-1 model);
   the recipe's next-policy step gives round K+1's policy;
5. `evaluate`: the trained policy on held-out prompts, against round 0 and round K-1.

With `train`, every step runs `axolotl train` (+ `merge-lora`) in axolotl's own environment;
without it, the configs and commands are written, and a stage that needs a model not trained yet
stops the round with what to run. `round.json` (a `RoundPlan`) records the plan, the models
(which model wrote what), the stage summaries, the training losses and where the time went.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import polars as pl

from seftgen.engines import EngineKind, EngineSpec, cached_engines, release_engines
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.export.axolotl import ExportResult, export_axolotl
from seftgen.io.preferences import columns_for
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Holdout, load_manifest, scan_run
from seftgen.io.workdir import RoundPlan, Workdir
from seftgen.rounds.evaluation import evaluate_round
from seftgen.rounds.recipe import (
    Recipe,
    RoundStage,
    StageModel,
    TrainStep,
    engine_for,
    prompt_columns,
    round_shard,
    stage2_holdout,
    training_holdout,
)
from seftgen.rounds.refs import ModelRef, RefKind, is_trained
from seftgen.stages.build_data import build_jsft_data, build_reviser_data
from seftgen.stages.common import StageResult
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.parallel import run_data_parallel
from seftgen.stages.revise import revise_seft, revise_self, revise_srt
from seftgen.stages.sample import sample
from seftgen.training.env import Axolotl, find_axolotl
from seftgen.training.launch import default_launcher
from seftgen.training.run import TrainResult, effective_batch, train, train_command

Notify = Callable[[str], None]
StepProgress = Callable[[str, int, int, float | None], None]
T = TypeVar("T")
StageFn = Callable[..., StageResult]  # fn(source, out, engine, **settings), as every stage is called
# A model stage of the round: its name, its model (None: a verifier alone), the stage function and
# its settings (picklable: `--data-parallel` sends them to worker processes).
ModelStage = tuple[RoundStage, StageModel | None, StageFn, dict[str, Any]]


@dataclass
class RoundOptions:
    """How rounds run, beside the recipe: the CLI's `round` options."""

    train: bool = False  # run axolotl (else write configs and commands)
    axolotl: str | Path | None = None  # axolotl's environment or executable
    preset: str | None = None  # overrides the recipe's training preset
    launcher_args: list[str] | None = None  # overrides the recipe's training.launcher_args
    notify: Notify | None = None  # one line per phase
    on_step: StepProgress | None = None  # training progress (step, steps, loss)
    data_parallel: int = 1  # model stages on a local vLLM engine run as N workers (`stages/parallel.py`)


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
        raise UserError(f"must look like K or K-M, got {text!r}", param="rounds") from exc
    if lo < 1 or hi < lo:
        raise UserError(f"{text}: rounds start at 1 and go up", param="rounds")
    return list(range(lo, hi + 1))


def policy_for_round(recipe: Recipe, work: Workdir, round_k: int) -> str:
    """Round 1 trains the recipe's policy; round K trains round K-1's trained policy."""
    if round_k == 1:
        return recipe.policy
    merged = work.read_plan(round_k - 1).next_policy
    if not is_trained(merged):
        raise UserError(
            f"round {round_k - 1}'s trained policy is missing: run its training first",
            file=merged or work.plan_path(round_k - 1),
            hint="pass `train`, run the commands in its round.json, or give the `policy`",
        )
    assert merged is not None
    return merged


def run_rounds(
    recipe: Recipe,
    workdir: str | Path,
    rounds: list[int],
    *,
    policy: str | None = None,
    options: RoundOptions | None = None,
) -> list[RoundResult]:
    """Rounds in order; round K+1 starts from round K's trained policy. Stops at a blocked round.

    Round K's evaluation leaves the engine of its trained policy open for round K+1, whose first
    stage samples with that policy (one model start less per round); the residency policy still
    closes it first where engines cannot share the devices. What the rounds opened is closed at
    the end; the caller's own engines are left alone."""
    results = []
    callers = cached_engines()
    try:
        for k in rounds:
            last = k == rounds[-1]
            first_policy = policy if k == rounds[0] else None
            result = run_round(recipe, workdir, k, first_policy, options=options, callers=callers, hand_over=not last)
            results.append(result)
            if result.blocked:
                break
    finally:
        release_engines(callers)
    return results


def run_round(
    recipe: Recipe,
    workdir: str | Path,
    round_k: int,
    policy: str | None = None,
    *,
    options: RoundOptions | None = None,
    callers: set[EngineSpec] | None = None,
    hand_over: bool = False,
) -> RoundResult:
    """One round. `callers`: engines the round must not close (default: all open when it starts).
    `hand_over`: leave the trained policy's engine open for the next round (see `run_rounds`)."""
    return Round(recipe, Workdir.at(workdir), round_k, policy, options or RoundOptions(), callers, hand_over).run()


class Round:
    """One round of a recipe in a workdir: its phases share the round's state (models trained so
    far, the run folders written, the timings), and `run` calls them in order."""

    def __init__(
        self,
        recipe: Recipe,
        work: Workdir,
        k: int,
        policy: str | None,
        options: RoundOptions,
        callers: set[EngineSpec] | None = None,
        hand_over: bool = False,
    ) -> None:
        if k < 1:
            raise UserError("rounds start at 1", param="round_k")
        _check_steps(recipe)
        self.recipe, self.work, self.k, self.options = recipe, work, k, options
        self.say: Notify = options.notify or (lambda _: None)
        self.previous = work.read_plan(k - 1) if k > 1 else None
        policy = policy or policy_for_round(recipe, work, k)
        self.dir = work.round_dir(k)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.result = RoundResult(k, policy, self.dir)
        self.outputs: dict[RoundStage, Path] = {}
        self.axolotl: Axolotl | None = find_axolotl(options.axolotl)
        if options.train and self.axolotl is None:
            raise UserError(
                "training needs axolotl",
                param="train",
                hint="make train-env (.venv-train), `axolotl` PATH or $SEFTGEN_AXOLOTL",
            )
        self.callers_engines = cached_engines() if callers is None else set(callers)  # not ours to close
        self.hand_over = hand_over  # leave the trained policy's engine open for the next round
        self.began = time.monotonic()

    @property
    def policy(self) -> str:
        return self.result.policy

    # -- the phases -------------------------------------------------------------------------------

    def run(self) -> RoundResult:
        early = [s for s in self.recipe.train if s.data.from_preferences]
        late = [s for s in self.recipe.train if not s.data.from_preferences]
        self.preference_data()
        for step in early:
            self.train_step(step)
        if self.first_policy() and self.sample() and self.model_stages():
            self.late_training(late)
        release_engines(self.callers_engines)
        self.pick_next_policy()
        self.evaluate()
        return self.finish()

    def preference_data(self) -> None:
        """Reviser / JSFT data from the recipe's preference records."""
        recipe = self.recipe
        builders = {RoundStage.REVISER_DATA: build_reviser_data, RoundStage.JSFT_DATA: build_jsft_data}
        wanted = [name for name in builders if getattr(recipe, name)]
        if not wanted:
            return
        if not recipe.preferences:
            raise UserError("the recipe builds reviser/JSFT data but names no 'preferences'", field="preferences")
        prefs, columns = recipe.resolve(recipe.preferences), columns_for(recipe.preferences_preset)
        options: dict[RoundStage, dict[str, Any]] = {RoundStage.JSFT_DATA: {"template": recipe.jsft_template}}
        for name in wanted:
            out = self.work.stage_dir(self.k, name.folder)
            build, kw = builders[name], options.get(name, {})
            self.result.stages[name] = self.timed(
                name, lambda build=build, out=out, kw=kw: build(prefs, out, columns=columns, **kw)
            )
            self.outputs[name] = out

    def first_policy(self) -> bool:
        """SELF-JUDGE: self-training starts from the JSFT model, trained just before. False when
        that model is not trained yet (the round stops)."""
        first = self.recipe.training.first_policy
        if self.k != 1 or not first:
            return True
        trained = self.result.models.get(first)
        if not is_trained(trained):
            self.result.blocked = (
                f"round 1's policy is the model of training step '{first}', which is not trained yet: "
                "run the commands below (or pass --train), then rerun this round"
            )
            return False
        assert trained is not None
        self.result.policy = trained
        return True

    def sample(self) -> bool:
        recipe = self.recipe
        self.say(f"round {self.k}: sampling with {self.policy}")
        out = self.work.stage_dir(self.k, RoundStage.SAMPLE.folder)
        spec = engine_for(recipe, StageModel(), self.policy)
        self.result.stages[RoundStage.SAMPLE] = self.timed(
            RoundStage.SAMPLE,
            lambda: self.spread(
                sample,
                recipe.resolve(recipe.prompts.source),
                out,
                spec,
                columns=prompt_columns(recipe.prompts),
                params=recipe.sample.params(),
                limit=recipe.prompts.limit,
                batch_size=recipe.sample.batch_size,
                shard=round_shard(recipe.prompts, self.k),
                holdout=training_holdout(recipe),
            ),
        )
        self.outputs[RoundStage.SAMPLE] = out
        return True

    def model_stages(self) -> bool:
        """The recipe's model stages in order; False when one needs a model not trained yet."""
        samples = self.outputs[RoundStage.SAMPLE]
        for name, stage_model, fn, settings in _model_stages(self.recipe):
            if stage_model is None:  # a verifier alone: no model
                spec = None
                self.say(f"round {self.k}: {name} with a verifier")
            else:
                spec = self.stage_engine(stage_model, name)
                if spec is None:
                    return False
                self.say(f"round {self.k}: {name} with {spec.model}")
            out = self.outputs[name] = self.work.stage_dir(self.k, name.folder)
            self.result.stages[name] = self.timed(
                name, lambda fn=fn, spec=spec, out=out, kw=settings: self.spread(fn, samples, out, spec, **kw)
            )
        return True

    def late_training(self, steps: list[TrainStep]) -> None:
        for step in steps:
            needs_stage2 = step.data == RoundStage.SELF_CRITIQUE and step.data not in self.outputs
            if needs_stage2 and self.recipe.self_critique and not self.self_critique():
                return
            if step.data not in self.outputs:
                raise UserError(f"train step '{step.name}' uses '{step.data}', which this recipe does not produce")
            if not self.train_step(step):
                return  # later steps would start from this step's model

    def self_critique(self) -> bool:
        """SRT stage 2's data: the stage-1 model answers the stage-2 prompts (never stage 1's), then
        critiques, refines and scores its own answers. False when the stage-1 model is not trained."""
        recipe, sc = self.recipe, self.recipe.self_critique
        assert sc is not None
        spec = self.stage_engine(sc.model, RoundStage.SELF_CRITIQUE)
        if spec is None:
            return False
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
        samples = self.work.stage_dir(self.k, RoundStage.SELF_SAMPLES.folder)
        critiqued = self.work.stage_dir(self.k, RoundStage.SELF_CRITIQUE.folder)
        self.say(f"round {self.k}: stage-2 prompts answered by {spec.model}")
        self.result.stages[RoundStage.SELF_SAMPLES] = self.timed(
            RoundStage.SELF_SAMPLES,
            lambda: self.spread(
                sample,
                source,
                samples,
                spec,
                columns=columns,
                params=sc.sample.params(),
                limit=recipe.prompts.limit if sc.source is None else None,
                batch_size=sc.sample.batch_size,
                holdout=holdout,
                max_prompts=sc.prompts,
            ),
        )
        self.say(f"round {self.k}: self-critique with {spec.model}")
        self.result.stages[RoundStage.SELF_CRITIQUE] = self.timed(
            RoundStage.SELF_CRITIQUE,
            lambda: self.spread(
                revise_self,
                samples,
                critiqued,
                spec,
                template=sc.template,
                score_template=sc.score_template,
                max_tokens=sc.max_tokens,
                constrain=sc.constrain,
                quality=recipe.gates,
            ),
        )
        self.outputs[RoundStage.SELF_SAMPLES], self.outputs[RoundStage.SELF_CRITIQUE] = samples, critiqued
        return True

    def train_step(self, step: TrainStep) -> bool:
        """Export (and with `train`, train) one step; False when the round must stop here."""
        result = self.result
        if step.once and self.previous is not None and step.name in self.previous.models:
            result.models[step.name] = self.previous.models[step.name]  # e.g. the reviser, trained in round 1
            result.skipped[step.name] = f"trained once, in an earlier round: {result.models[step.name]}"
            return True
        data = self.outputs[step.data]
        if not _has_trainable_rows(data):
            result.skipped[step.name] = f"no kept rows in {data}"
            return False
        base = self.planned(step.base_ref)
        if base is None:
            raise UserError(f"train step '{step.name}' starts from {step.base}, which comes later", field="train")
        release_engines(self.callers_engines)  # training needs the memory the engines hold
        ax = self.axolotl
        exported = self.timed(
            f"export:{step.name}",
            lambda: export_axolotl(
                data,
                step.kind,
                base,
                self.work.config_path(self.k, step.name),
                preset=step.preset or self.options.preset or self.recipe.training.preset,
                overrides=step.set,
                axolotl=ax.executable if ax else None,
            ),
        )
        result.exports.append(exported)
        result.models[step.name] = exported.next_base_model
        launcher, launcher_args = self.launcher()
        exported.command = train_command(ax or "axolotl", exported.config_path, launcher, launcher_args)
        exported.effective_batch = batch = effective_batch(exported.config, launcher, launcher_args)
        if self.options.train and ax is not None:
            self.say(f"training '{step.name}' ({exported.variant}, {exported.rows} rows, effective batch {batch})")
            on_step = self.options.on_step
            result.trained[step.name] = self.timed(
                f"train:{step.name}",
                lambda: train(
                    ax,
                    exported.config_path,
                    self.work.train_log(self.k, step.name),
                    launcher=launcher,
                    launcher_args=launcher_args,
                    on_step=(lambda s, n, loss: on_step(step.name, s, n, loss)) if on_step else None,
                    say=self.say,
                ),
            )
        return True

    def launcher(self) -> tuple[str | None, list[str]]:
        training = self.recipe.training
        args = self.options.launcher_args if self.options.launcher_args is not None else training.launcher_args
        return training.launcher or default_launcher(), list(args)

    def pick_next_policy(self) -> None:
        recipe, result = self.recipe, self.result
        step = recipe.training.next_policy or next((s.name for s in reversed(recipe.train) if not s.once), None)
        if not result.blocked and step and step not in result.skipped:
            result.next_policy = result.models.get(step)

    def evaluate(self) -> None:
        """Held-out evaluation of the trained policy, against round 0 and the previous round."""
        result = self.result
        if self.recipe.eval is None or result.blocked:
            return
        if not is_trained(result.next_policy):
            result.eval = {"skipped": "no trained policy in this round (run it with --train)"}
            return
        trained = result.next_policy
        assert trained is not None
        ev = self.recipe.eval
        on = (["held-out prompts"] if ev.pairwise else []) + list(ev.benchmarks)
        self.say(f"round {self.k}: evaluating {trained} on {' and '.join(on)}")
        result.eval = self.timed(
            "eval",
            lambda: evaluate_round(self.recipe, self.work, self.k, trained, self.callers_engines, self.hand_over),
        )

    def finish(self) -> RoundResult:
        self.result.seconds = round(time.monotonic() - self.began, 1)
        self.work.write_plan(plan_of(self.recipe, self.result, self.outputs))
        return self.result

    # -- helpers ----------------------------------------------------------------------------------

    def spread(
        self, fn: StageFn, source: str | Path, out: Path, spec: EngineSpec | None, **settings: Any
    ) -> StageResult:
        """Run one stage: in this process, or with `data_parallel` N > 1 on a local vLLM engine, as
        N workers, each on its own device slice and its part of the stage's prompts. The workers
        take the devices, so the round first closes the engines it holds (the caller's stay)."""
        n = self.options.data_parallel
        if n <= 1 or spec is None or spec.kind != EngineKind.VLLM:
            return fn(source, out, spec, **settings)
        release_engines(self.callers_engines)
        return run_data_parallel(fn, source, out, spec, n, **settings)

    def timed(self, name: str, fn: Callable[[], T]) -> T:
        start = time.monotonic()
        try:
            return fn()
        finally:
            self.result.timing[name] = round(time.monotonic() - start, 1)

    def planned(self, ref: ModelRef) -> str | None:
        model = ref.planned(policy=self.policy, start=self.recipe.policy, models=self.result.models)
        return self.recipe.resolve(model) if model is not None and ref.kind == RefKind.MODEL else model

    def stage_engine(self, stage_model: StageModel, stage: str) -> EngineSpec | None:
        """The engine for a stage's model; None (and the round blocked) when that model is a
        training step's that is not trained yet."""
        ref = stage_model.ref
        model = ref.resolve(policy=self.policy, start=self.recipe.policy, models=self.result.models)
        if model is None:
            self.result.blocked = (
                f"{stage} uses the model of training step '{ref.step}', which is not trained yet: "
                "run the commands below (or pass --train), then rerun this round"
            )
            return None
        return engine_for(self.recipe, stage_model, model)


def _model_stages(recipe: Recipe) -> list[ModelStage]:
    """The recipe's model stages: which model each uses, its function and its settings."""
    stages: list[ModelStage] = []
    quality = recipe.gates
    if r := recipe.revise:
        params = SamplingConfig(temperature=0.0, max_tokens=r.max_tokens)
        settings = {"template": r.template, "params": params, "constrain": r.constrain, "quality": quality}
        stages.append((RoundStage.REVISE, r.reviser, revise_seft, settings))
    if c := recipe.critique:
        settings = {"template": c.template, "score_template": c.score_template, "max_tokens": c.max_tokens}
        stages.append(
            (RoundStage.CRITIQUE, c.critic, revise_srt, settings | {"constrain": c.constrain, "quality": quality})
        )
    if j := recipe.judge:
        settings = {
            "template": j.template,
            "verdict": j.verdict,
            "min_margin": j.min_margin,
            "require_consistent": j.require_consistent,
            "constrain": j.constrain,
            "quality": quality,
            "verifier": j.verifier,
            "tie_break": j.tie_break,
        }
        stages.append((RoundStage.JUDGE, j.judge if j.needs_model else None, judge_pairs, settings))
    if b := recipe.best_of:
        settings = {
            "template": b.template,
            "verdict": b.verdict,
            "constrain": b.constrain,
            "quality": quality,
            "verifier": b.verifier,
            "tie_break": b.tie_break,
            "min_score": b.min_score,
        }
        stages.append((RoundStage.BEST_OF, b.judge if b.needs_model else None, best_of, settings))
    return stages


def _check_steps(recipe: Recipe) -> None:
    names = [s.name for s in recipe.train]
    for step in recipe.train:
        if (base := step.base_ref.step) is not None and base not in names:
            raise UserError(f"train step '{step.name}' starts from unknown step {step.base}", field="train")


def _has_trainable_rows(run_dir: Path) -> bool:
    rows = scan_run(run_dir)
    if "kept" in rows.collect_schema().names():
        rows = rows.filter(pl.col("kept").fill_null(True))
    return rows.head(1).collect().height > 0


def plan_of(recipe: Recipe, result: RoundResult, outputs: dict[RoundStage, Path]) -> RoundPlan:
    stages = {}
    gates: dict[str, dict[str, int]] = {}
    for name, path in outputs.items():
        manifest = load_manifest(path)
        stages[str(name)] = {
            "path": str(path),
            "run_id": manifest.run_id,
            "rows": manifest.rows,
            "status": manifest.status,
            "model": manifest.config.get("model"),
            "summary": manifest.summary,
        }
        if removed := (manifest.summary or {}).get("gates"):
            gates[str(name)] = removed
    return RoundPlan(
        round=result.round,
        recipe=recipe.method,
        policy=result.policy,
        next_policy=result.next_policy,
        models=result.models,
        stages=stages,
        configs=[
            {
                "path": str(e.config_path),
                "variant": e.variant,
                "rows": e.rows,
                "validated": e.validated,
                "command": e.commands,
                "effective_batch": e.effective_batch,
            }
            for e in result.exports
        ],
        training={name: t.as_dict() for name, t in result.trained.items()},
        skipped_training_steps=result.skipped,
        blocked=result.blocked,
        commands=result.commands,
        eval=result.eval,
        time=time_table(result),
        gates=gates,
    )


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
