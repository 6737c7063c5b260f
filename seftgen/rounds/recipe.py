"""Round recipes: a whole SEFT / SELF-JUDGE / SRT round as data, run by `seftgen round`.

A recipe names the prompts, the data stages (sample, then revise/critique/judge/best-of), and the
training steps to export. Round K's policy is the recipe's `policy` for K = 1, else the merged
output of round K-1's last training step; `policy` inside a stage means "the current policy"
(SELF-JUDGE judges with the policy itself).
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from seftgen.choices import EngineKind, TrainKind, Verdict
from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.io.files import read_mapping
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Holdout, Shard
from seftgen.resources import resource_dir
from seftgen.rounds.refs import ModelRef
from seftgen.stages.config import BENCHMARK, CRITIQUE, EVALUATE, JUDGE, REVISE, SAMPLE, SELF_CRITIQUE, TOURNAMENT
from seftgen.stages.quality import GATES, QualityGates


class RoundStage(StrEnum):
    """The data stages of a round, as recipes name them (a training step's `data`)."""

    SAMPLE = "sample"
    REVISE = "revise"  # SEFT reviser
    CRITIQUE = "critique"  # SRT critic
    JUDGE = "judge"  # SELF-JUDGE pairs
    BEST_OF = "best_of"  # tournament winners
    REVISER_DATA = "reviser_data"  # from preference records
    JSFT_DATA = "jsft_data"  # from preference records
    SELF_SAMPLES = "self_samples"  # SRT stage 2: the stage-1 model's answers to new prompts
    SELF_CRITIQUE = "self_critique"  # SRT stage 2: its own feedback, refinements and scores

    @property
    def folder(self) -> str:
        """The run folder the stage writes inside `round-K/`."""
        return _FOLDERS[self]

    @property
    def from_preferences(self) -> bool:
        return self in (RoundStage.REVISER_DATA, RoundStage.JSFT_DATA)


_FOLDERS = {
    RoundStage.SAMPLE: "samples",
    RoundStage.REVISE: "revised",
    RoundStage.CRITIQUE: "refined",
    RoundStage.JUDGE: "pairs",
    RoundStage.BEST_OF: "best-of",
    RoundStage.REVISER_DATA: "reviser-data",
    RoundStage.JSFT_DATA: "jsft-data",
    RoundStage.SELF_SAMPLES: "stage2-samples",
    RoundStage.SELF_CRITIQUE: "self-critique",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prompts(_Strict):
    source: str = Field(description="Prompt file/dataset; relative paths resolve against the recipe's base dir.")
    prompt_column: str = "prompt"
    messages_column: str | None = None
    system: str | None = None
    limit: int | None = None
    split_rounds: int | None = Field(None, description="Round K uses shard (K-1) mod N: fresh prompts per round.")


class StageModel(_Strict):
    """A stage's model: `model` is 'policy' (the current round's), 'train:STEP' (the model a
    training step of this recipe produced), 'start' (the recipe's starting policy), 'demo', a folder
    or hub id, or a served model's name with `engine: openai`."""

    model: str = "policy"
    engine: EngineKind = EngineKind.VLLM
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 32

    @property
    def ref(self) -> ModelRef:
        return ModelRef.parse(self.model)


_SAMPLING = SAMPLE.params


class SampleStage(_Strict):
    n: int = _SAMPLING.n
    temperature: float = _SAMPLING.temperature
    top_p: float = _SAMPLING.top_p
    max_tokens: int = _SAMPLING.max_tokens
    batch_size: int = SAMPLE.batch_size

    def params(self) -> SamplingConfig:
        return SamplingConfig(n=self.n, temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)


class ReviseStage(_Strict):
    reviser: StageModel = StageModel(model="demo")
    template: str = REVISE.template
    max_tokens: int = REVISE.params.max_tokens
    constrain: bool = Field(REVISE.constrain, description="Constrain decoding to the template's output format.")


class CritiqueStage(_Strict):
    critic: StageModel
    template: str = CRITIQUE.template
    score_template: str = CRITIQUE.score_template
    max_tokens: int = CRITIQUE.max_tokens
    constrain: bool = CRITIQUE.constrain


class JudgeStage(_Strict):
    judge: StageModel = StageModel()
    template: str | list[str] = Field(JUDGE.template, description="One template, or principle judges (majority).")
    verdict: Verdict = JUDGE.verdict
    min_margin: float = JUDGE.min_margin
    require_consistent: bool = JUDGE.require_consistent
    constrain: bool = JUDGE.constrain
    verifier: str | None = Field(
        JUDGE.verifier,
        description="A program judges in place of `judge`: instructions, instructions-loose, match or "
        "module:function (see `seftgen judge --help`); no model is loaded unless `tie_break`.",
    )
    tie_break: bool = Field(JUDGE.tie_break, description="With `verifier`: `judge` decides the samples it ties.")
    min_score: float = Field(
        TOURNAMENT.min_score, ge=0, le=1, description="best_of with `verifier`: keep a winner scoring at least this."
    )

    @property
    def needs_model(self) -> bool:
        return self.verifier is None or self.tie_break


class SelfCritiqueStage(_Strict):
    """SRT stage 2: after stage 1 is trained, its model answers NEW prompts, then critiques,
    refines and scores its own answers (`revise --self-critic`); pairs whose refinement scores
    strictly higher train stage 2 (DPO)."""

    model: StageModel = Field(StageModel(model="train:stage1"), description="The stage-1 model: 'train:STEP'.")
    source: str | None = Field(None, description="Its own prompt source; default: a split of `prompts`.")
    prompt_column: str = "prompt"
    messages_column: str | None = None
    split: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Without `source`: share of `prompts` (by prompt-id hash, after the eval split) kept for "
        "stage 2; stage 1 never samples them.",
    )
    prompts: int | None = Field(None, ge=1, description="At most this many stage-2 prompts.")
    sample: SampleStage = Field(SampleStage(temperature=0.7, top_p=0.9), description="How it answers them.")
    template: str = SELF_CRITIQUE.template
    score_template: str = SELF_CRITIQUE.score_template
    max_tokens: int = SELF_CRITIQUE.max_tokens
    constrain: bool = SELF_CRITIQUE.constrain


class EvalSection(_Strict):
    """Held-out evaluation after every trained round: the round's policy against the starting
    policy (round 0) and against the previous round, judged pairwise in both orders, and the
    benchmarks."""

    pairwise: bool = Field(
        True, description="Judge the held-out answers pairwise; false: only `benchmarks` (then at least one)."
    )

    source: str | None = Field(None, description="Eval prompt file/dataset; default: a held-out split of `prompts`.")
    prompt_column: str = "prompt"
    messages_column: str | None = None
    holdout: float = Field(
        0.1,
        gt=0,
        lt=1,
        description="Without `source`: share of `prompts` held out by prompt-id hash (never trained on).",
    )
    prompts: int = Field(32, ge=1, description="Eval prompts (the first N of the source or of the held-out split).")
    max_tokens: int | None = Field(None, description="Answer length; default: the `sample` stage's.")
    temperature: float = Field(0.0, ge=0, description="Eval sampling temperature (0: greedy, reproducible).")
    judge: StageModel = Field(
        StageModel(model="start"),
        description="'start' (the recipe's policy: one judge for all rounds) or a model.",
    )
    template: str = EVALUATE.template
    verdict: Verdict = EVALUATE.verdict
    tie_margin: float = Field(EVALUATE.tie_margin, ge=0, le=1)
    benchmarks: list[Literal["ifeval", "alpaca_eval", "mt_bench"]] = Field(
        default_factory=list,
        description="Benchmarks for the trained policy after each round, and once for round 0, each compared "
        "with round 0 prompt by prompt (`ifeval`: offline, the benchmark's own checkers; `alpaca_eval` and "
        "`mt_bench`: judged by `benchmark_judge`).",
    )
    benchmark_judge: StageModel | None = Field(
        None,
        description="The judge of `alpaca_eval` (an API model with logprobs) and `mt_bench`, e.g. "
        "{model: gpt-4-1106-preview, engine: openai, base_url: ...}; 'start' for the starting policy.",
    )
    benchmark_prompts: int | None = Field(
        None, ge=1, description="The first N prompts of each benchmark (one fixed subset for every round); default all."
    )
    benchmark_max_tokens: int = Field(BENCHMARK.max_tokens, ge=1, description="Answer length for the benchmarks.")

    @model_validator(mode="after")
    def _measures_something(self) -> EvalSection:
        if not self.pairwise and not self.benchmarks:
            raise ValueError("eval with pairwise: false needs at least one of `benchmarks`")
        judged = [b for b in self.benchmarks if b in ("alpaca_eval", "mt_bench")]
        if judged and self.benchmark_judge is None:
            raise ValueError(f"benchmarks {', '.join(judged)} need eval.benchmark_judge (the model that judges them)")
        return self


class TrainStep(_Strict):
    name: str
    kind: TrainKind
    data: RoundStage
    base: str = Field("policy", description="Model to train: 'policy' (the round's), 'train:STEP', or a model.")
    once: bool = Field(False, description="Train in round 1 only; later rounds reuse its model (the SEFT reviser).")
    preset: str | None = None
    set: dict[str, Any] = {}

    @property
    def base_ref(self) -> ModelRef:
        return ModelRef.parse(self.base)


class Training(_Strict):
    """How training steps run with `seftgen round --train` (axolotl in its own environment)."""

    preset: str | None = Field(
        None, description="axolotl preset for every step: 'cpu', 'gpu', 'gpu-fsdp', 'gpu-qlora' or a YAML file."
    )
    launcher: str | None = Field(
        None, description="axolotl --launcher (accelerate, torchrun, python); default accelerate on GPUs, else python."
    )
    launcher_args: list[str] = Field(
        default_factory=list,
        description="Arguments for the launcher, after `--` (e.g. ['--num_processes', '4']).",
    )
    next_policy: str | None = Field(None, description="Step whose model is round K+1's policy (default: last).")
    first_policy: str | None = Field(
        None,
        description="A step trained on preference data whose model is round 1's policy (SELF-JUDGE: 'jsft', so "
        "self-training starts from the JSFT model).",
    )


class Recipe(_Strict):
    method: Literal["seft", "self-judge", "srt"]
    description: str = ""
    policy: str = "demo"
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM engine options for local models.")
    prompts: Prompts
    preferences: str | None = Field(None, description="Preference records for reviser/JSFT data stages.")
    preferences_preset: str = Field("seftgen", description="Their layout: seftgen, ultrafeedback or nectar.")
    jsft_template: str | list[str] = Field(
        "judge_general", description="JSFT judge template(s); the four principle_* for the reference's principles."
    )
    sample: SampleStage = SampleStage()
    revise: ReviseStage | None = None
    critique: CritiqueStage | None = None
    self_critique: SelfCritiqueStage | None = None
    judge: JudgeStage | None = None
    best_of: JudgeStage | None = None
    reviser_data: bool = False
    jsft_data: bool = False
    train: list[TrainStep] = []
    training: Training = Training()
    eval: EvalSection | None = None
    quality: dict[str, Any] = Field(
        default_factory=dict,
        description="Quality gate thresholds (seftgen.stages.quality.QualityGates fields), e.g. "
        "{keep_truncated: false, max_repeated_ngrams: 0.3}; unset ones keep their defaults.",
    )
    base_dir: Path = Path(".")

    @property
    def gates(self) -> QualityGates:
        return GATES.with_settings(self.quality)

    def resolve(self, value: str) -> str:
        """A relative path in the recipe is relative to `base_dir`; other strings pass through."""
        path = self.base_dir / value
        return str(path.resolve()) if not Path(value).is_absolute() and path.exists() else value


def load_recipe(name_or_path: str, base_dir: str | Path | None = None) -> Recipe:
    path = Path(name_or_path)
    if not path.is_file():
        path = resource_dir("recipes") / f"{name_or_path}.yaml"
    if not path.is_file():
        raise UserError(
            "recipe does not exist",
            file=name_or_path,
            hint="shipped: " + ", ".join(sorted(p.stem for p in resource_dir("recipes").glob("*.yaml"))),
        )
    data = read_mapping(path, "recipe", empty_ok=True)
    try:
        recipe = Recipe(**data, base_dir=Path(base_dir or Path.cwd()))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(first["msg"], file=path, field=".".join(str(p) for p in first["loc"])) from exc
    try:
        recipe.gates  # noqa: B018 - unknown or mistyped gate settings fail here, before any model loads
    except UserError as exc:
        raise UserError(exc.message, file=path, field="quality") from exc
    return recipe


def engine_for(recipe: Recipe, stage: StageModel, model: str) -> EngineSpec:
    """The engine that runs `model` (already resolved from the stage's ref) as the stage says."""
    if stage.engine == EngineKind.OPENAI:
        return EngineSpec(
            model=model,
            kind=stage.engine,
            base_url=stage.base_url,
            api_key_env=stage.api_key_env,
            concurrency=stage.concurrency,
        )
    return EngineSpec(model=recipe.resolve(model), kind=stage.engine, **recipe.engine)


def prompt_columns(prompts: Prompts) -> PromptColumns:
    return PromptColumns(prompt=prompts.prompt_column, messages=prompts.messages_column, system=prompts.system)


def _eval_share(recipe: Recipe) -> float:
    """The held-out band of `prompts` for pairwise eval (none when eval runs benchmarks only)."""
    ev = recipe.eval
    return ev.holdout if ev is not None and ev.source is None and ev.pairwise else 0.0


def _stage2_share(recipe: Recipe) -> float:
    sc = recipe.self_critique
    return sc.split if sc is not None and sc.source is None else 0.0


def training_holdout(recipe: Recipe) -> Holdout:
    """The training side of the prompts: what is left after the eval split and SRT stage 2's
    split (adjacent bands from 0 of the prompt-id hash), so neither is ever trained on in stage 1."""
    held = _eval_share(recipe) + _stage2_share(recipe)
    return Holdout(held, heldout=False) if held else Holdout()


def stage2_holdout(recipe: Recipe) -> Holdout:
    """SRT stage 2's prompts: the band after the eval split (disjoint from stage 1's and eval's)."""
    share = _stage2_share(recipe)
    return Holdout(share, heldout=True, start=_eval_share(recipe)) if share else Holdout()


def round_shard(prompts: Prompts, round_k: int) -> Shard:
    return Shard((round_k - 1) % prompts.split_rounds, prompts.split_rounds) if prompts.split_rounds else Shard()
