"""Round recipes: a whole SEFT / SELF-JUDGE / SRT round as data, run by `seftgen round`.

A recipe names the prompts, the data stages (sample, then revise/critique/judge/best-of), and the
training steps to export. Round K's policy is the recipe's `policy` for K = 1, else the merged
output of round K-1's last training step; `policy` inside a stage means "the current policy"
(SELF-JUDGE judges with the policy itself).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.errors import UserError
from seftgen.io.readers import PromptColumns
from seftgen.io.store import Shard
from seftgen.resources import resource_dir


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
    engine: Literal["vllm", "openai"] = "vllm"
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 32


class SampleStage(_Strict):
    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 256
    batch_size: int = 256


class ReviseStage(_Strict):
    reviser: ModelRef = ModelRef(model="demo")
    template: str = "reviser"
    max_tokens: int = 512
    constrain: bool = Field(True, description="Constrain decoding to the template's output format.")


class CritiqueStage(_Strict):
    critic: ModelRef
    template: str = "srt_critic"
    score_template: str = "srt_score"
    max_tokens: int = 1024
    constrain: bool = True


class JudgeStage(_Strict):
    judge: ModelRef = ModelRef()
    template: str = "judge_general"
    verdict: Literal["logprobs", "text"] = "logprobs"
    min_margin: float = 0.0
    require_consistent: bool = False
    constrain: bool = True


class TrainStep(_Strict):
    name: str
    kind: Literal["sft", "dpo"]
    data: Literal["revise", "critique", "judge", "best_of", "reviser_data", "jsft_data"]
    base: str = Field("policy", description="Model to train: 'policy' (the round's), 'train:STEP', or a model.")
    once: bool = Field(False, description="Train in round 1 only; later rounds reuse its model (the SEFT reviser).")
    preset: str | None = None
    set: dict[str, Any] = {}


class Training(_Strict):
    """How training steps run with `seftgen round --train` (axolotl in its own environment)."""

    preset: str | None = Field(None, description="axolotl preset for every step: 'cpu', 'gpu' or a YAML file.")
    launcher: str | None = Field(None, description="axolotl --launcher; default 'python' without a GPU.")
    next_policy: str | None = Field(None, description="Step whose model is round K+1's policy (default: last).")


class Recipe(_Strict):
    method: Literal["seft", "self-judge", "srt"]
    description: str = ""
    policy: str = "demo"
    engine: dict[str, Any] = Field(default_factory=dict, description="vLLM engine options for local models.")
    prompts: Prompts
    preferences: str | None = Field(None, description="Preference records for reviser/JSFT data stages.")
    sample: SampleStage = SampleStage()
    revise: ReviseStage | None = None
    critique: CritiqueStage | None = None
    judge: JudgeStage | None = None
    best_of: JudgeStage | None = None
    reviser_data: bool = False
    jsft_data: bool = False
    train: list[TrainStep] = []
    training: Training = Training()
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
        raise UserError("recipe does not exist", file=name_or_path, hint="shipped: seft, self-judge, srt")
    try:
        data = yaml.safe_load(path.read_text()) or {}
        return Recipe(**data, base_dir=Path(base_dir or Path.cwd()))
    except yaml.YAMLError as exc:
        raise UserError(f"not valid YAML ({exc})", file=path) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UserError(first["msg"], file=path, field=".".join(str(p) for p in first["loc"])) from exc


def engine_for(recipe: Recipe, ref: ModelRef, policy: str) -> EngineSpec:
    model = policy if ref.model == "policy" else ref.model
    if ref.engine == "openai":
        return EngineSpec(
            model=model, kind="openai", base_url=ref.base_url, api_key_env=ref.api_key_env, concurrency=ref.concurrency
        )
    return EngineSpec(model=recipe.resolve(model), **recipe.engine)


def sampling_of(stage: SampleStage) -> SamplingConfig:
    return SamplingConfig(n=stage.n, temperature=stage.temperature, top_p=stage.top_p, max_tokens=stage.max_tokens)


def prompt_columns(prompts: Prompts) -> PromptColumns:
    return PromptColumns(prompt=prompts.prompt_column, messages=prompts.messages_column, system=prompts.system)


def round_shard(prompts: Prompts, round_k: int) -> Shard:
    return Shard((round_k - 1) % prompts.split_rounds, prompts.split_rounds) if prompts.split_rounds else Shard()
