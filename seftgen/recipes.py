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

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seftgen.choices import EngineKind, TrainKind, Verdict
from seftgen.defaults import defaults_of
from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.evaluation.evaluate import evaluate
from seftgen.io.files import read_mapping
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Holdout, Shard
from seftgen.resources import resource_dir
from seftgen.stages.judge import judge_pairs
from seftgen.stages.revise import revise_seft, revise_self, revise_srt
from seftgen.stages.sample import sample


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


class ModelRef(_Strict):
    """A model for a stage: 'policy' (the current round's), 'train:STEP' (the model a training step
    of this recipe produced), 'demo', a folder or hub id, or an API."""

    model: str = "policy"
    engine: EngineKind = EngineKind.VLLM
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 32


# Stage defaults are the library's (one source): the stage functions' own defaults.
_SAMPLE = defaults_of(sample)
_SEFT = defaults_of(revise_seft)
_SRT = defaults_of(revise_srt)
_JUDGE = defaults_of(judge_pairs)


class SampleStage(_Strict):
    n: int = SamplingConfig.n
    temperature: float = SamplingConfig.temperature
    top_p: float = SamplingConfig.top_p
    max_tokens: int = SamplingConfig.max_tokens
    batch_size: int = _SAMPLE["batch_size"]


class ReviseStage(_Strict):
    reviser: ModelRef = ModelRef(model="demo")
    template: str = _SEFT["template"]
    max_tokens: int = _SEFT["params"].max_tokens
    constrain: bool = Field(_SEFT["constrain"], description="Constrain decoding to the template's output format.")


class CritiqueStage(_Strict):
    critic: ModelRef
    template: str = _SRT["template"]
    score_template: str = _SRT["score_template"]
    max_tokens: int = _SRT["max_tokens"]
    constrain: bool = _SRT["constrain"]


class JudgeStage(_Strict):
    judge: ModelRef = ModelRef()
    template: str | list[str] = Field(_JUDGE["template"], description="One template, or principle judges (majority).")
    verdict: Verdict = _JUDGE["verdict"]
    min_margin: float = _JUDGE["min_margin"]
    require_consistent: bool = _JUDGE["require_consistent"]
    constrain: bool = _JUDGE["constrain"]


_SELF = defaults_of(revise_self)


class SelfCritiqueStage(_Strict):
    """SRT stage 2: after stage 1 is trained, its model answers NEW prompts, then critiques,
    refines and scores its own answers (`revise --self-critic`); pairs whose refinement scores
    strictly higher train stage 2 (DPO)."""

    model: ModelRef = Field(ModelRef(model="train:stage1"), description="The stage-1 model: 'train:STEP'.")
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
    template: str = _SELF["template"]
    score_template: str = _SELF["score_template"]
    max_tokens: int = _SELF["max_tokens"]
    constrain: bool = _SELF["constrain"]


_EVALUATE = defaults_of(evaluate)


class EvalSection(_Strict):
    """Held-out evaluation after every trained round: the round's policy against the starting
    policy (round 0) and against the previous round, judged pairwise in both orders."""

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
    judge: ModelRef = Field(
        ModelRef(model="start"),
        description="'start' (the recipe's policy: one judge for all rounds) or a model.",
    )
    template: str = _EVALUATE["template"]
    verdict: Verdict = _EVALUATE["verdict"]
    tie_margin: float = Field(_EVALUATE["tie_margin"], ge=0, le=1)


class TrainStep(_Strict):
    name: str
    kind: TrainKind
    data: RoundStage
    base: str = Field("policy", description="Model to train: 'policy' (the round's), 'train:STEP', or a model.")
    once: bool = Field(False, description="Train in round 1 only; later rounds reuse its model (the SEFT reviser).")
    preset: str | None = None
    set: dict[str, Any] = {}


class Training(_Strict):
    """How training steps run with `seftgen round --train` (axolotl in its own environment)."""

    preset: str | None = Field(None, description="axolotl preset for every step: 'cpu', 'gpu' or a YAML file.")
    launcher: str | None = Field(None, description="axolotl --launcher; default 'python' without a GPU.")
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
    base_dir: Path = Path(".")

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
            "recipe does not exist", file=name_or_path, hint="shipped: seft, self-judge, self-judge-principles, srt"
        )
    data = read_mapping(path, "recipe", empty_ok=True)
    try:
        return Recipe(**data, base_dir=Path(base_dir or Path.cwd()))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(first["msg"], file=path, field=".".join(str(p) for p in first["loc"])) from exc


def engine_for(recipe: Recipe, ref: ModelRef, policy: str) -> EngineSpec:
    model = policy if ref.model == "policy" else ref.model
    if ref.engine == EngineKind.OPENAI:
        return EngineSpec(
            model=model,
            kind=ref.engine,
            base_url=ref.base_url,
            api_key_env=ref.api_key_env,
            concurrency=ref.concurrency,
        )
    return EngineSpec(model=recipe.resolve(model), kind=ref.engine, **recipe.engine)


def sampling_of(stage: SampleStage) -> SamplingConfig:
    return SamplingConfig(n=stage.n, temperature=stage.temperature, top_p=stage.top_p, max_tokens=stage.max_tokens)


def prompt_columns(prompts: Prompts) -> PromptColumns:
    return PromptColumns(prompt=prompts.prompt_column, messages=prompts.messages_column, system=prompts.system)


def _eval_share(recipe: Recipe) -> float:
    return recipe.eval.holdout if recipe.eval is not None and recipe.eval.source is None else 0.0


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
