"""`seftgen round RECIPE --round K`: run round K's data stages and write its axolotl configs."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.export.axolotl import ExportResult, export_axolotl
from seftgen.io.store import read_run
from seftgen.recipes import Recipe, engine_for, prompt_columns, round_shard, sampling_of
from seftgen.stages.build_data import build_jsft_data, build_reviser_data
from seftgen.stages.common import StageResult
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.revise import revise_seft, revise_srt
from seftgen.stages.sample import sample


@dataclass
class RoundResult:
    round: int
    policy: str
    dir: Path
    stages: dict[str, StageResult] = field(default_factory=dict)
    exports: list[ExportResult] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def commands(self) -> list[str]:
        return [c for e in self.exports for c in e.commands]


def policy_for_round(recipe: Recipe, workdir: Path, round_k: int) -> str:
    """Round 1 trains the recipe's policy; round K trains round K-1's merged output."""
    if round_k == 1:
        return recipe.policy
    plan = workdir / f"round-{round_k - 1}" / "round.json"
    if not plan.is_file():
        raise UserError(f"round {round_k - 1} has not been run", file=plan, hint="run it first, or pass --policy")
    merged = json.loads(plan.read_text())["next_policy"]
    if not Path(merged).exists():
        raise UserError(
            f"round {round_k - 1}'s trained model is missing: run its axolotl commands first",
            file=merged,
            hint="see round.json for the commands, or pass --policy",
        )
    return merged


def run_round(recipe: Recipe, workdir: str | Path, round_k: int, policy: str | None = None) -> RoundResult:
    if round_k < 1:
        raise UserError("--round starts at 1")
    workdir = Path(workdir).resolve()
    policy = policy or policy_for_round(recipe, workdir, round_k)
    rdir = workdir / f"round-{round_k}"
    result = RoundResult(round_k, policy, rdir)
    outputs: dict[str, Path] = {}

    if recipe.reviser_data or recipe.jsft_data:
        if not recipe.preferences:
            raise UserError("the recipe builds reviser/JSFT data but names no 'preferences'")
        prefs = recipe.resolve(recipe.preferences)
        if recipe.reviser_data:
            result.stages["reviser_data"] = build_reviser_data(prefs, rdir / "reviser-data")
            outputs["reviser_data"] = rdir / "reviser-data"
        if recipe.jsft_data:
            result.stages["jsft_data"] = build_jsft_data(prefs, rdir / "jsft-data")
            outputs["jsft_data"] = rdir / "jsft-data"

    policy_spec = engine_for(recipe, _policy_ref(), policy)
    samples = rdir / "samples"
    result.stages["sample"] = sample(
        recipe.resolve(recipe.prompts.source),
        samples,
        policy_spec,
        columns=prompt_columns(recipe.prompts),
        params=sampling_of(recipe.sample),
        limit=recipe.prompts.limit,
        batch_size=recipe.sample.batch_size,
        shard=round_shard(recipe.prompts, round_k),
    )
    if recipe.revise:
        from seftgen.engines.base import SamplingConfig

        r = recipe.revise
        result.stages["revise"] = revise_seft(
            samples,
            rdir / "revised",
            engine_for(recipe, r.reviser, policy),
            template=r.template,
            params=SamplingConfig(temperature=0.0, max_tokens=r.max_tokens),
        )
        outputs["revise"] = rdir / "revised"
    if recipe.critique:
        c = recipe.critique
        result.stages["critique"] = revise_srt(
            samples,
            rdir / "refined",
            engine_for(recipe, c.critic, policy),
            template=c.template,
            score_template=c.score_template,
            max_tokens=c.max_tokens,
        )
        outputs["critique"] = rdir / "refined"
    if recipe.judge:
        j = recipe.judge
        result.stages["judge"] = judge_pairs(
            samples,
            rdir / "pairs",
            engine_for(recipe, j.judge, policy),
            template=j.template,
            verdict=j.verdict,
            min_margin=j.min_margin,
            require_consistent=j.require_consistent,
        )
        outputs["judge"] = rdir / "pairs"
    if recipe.best_of:
        b = recipe.best_of
        result.stages["best_of"] = best_of(
            samples, rdir / "best-of", engine_for(recipe, b.judge, policy), template=b.template, verdict=b.verdict
        )
        outputs["best_of"] = rdir / "best-of"

    base = policy
    for step in recipe.train:
        if step.data not in outputs:
            raise UserError(
                f"train step '{step.name}' uses '{step.data}', which this recipe does not produce",
                field=f"train.{step.name}.data",
            )
        if not _has_trainable_rows(outputs[step.data]):
            # One empty step (say, a reviser whose replies never parsed) must not cost the round
            # its other configs; it is reported, and round.json records why it was skipped.
            result.skipped[step.name] = f"no kept rows in {outputs[step.data]}"
            break  # later steps would start from this step's model
        exported = export_axolotl(
            outputs[step.data], step.kind, base, rdir / f"train-{step.name}.yml", preset=step.preset, overrides=step.set
        )
        result.exports.append(exported)
        if step.data not in ("reviser_data",):  # the reviser is a separate model, not the policy
            base = exported.next_base_model
    plan: dict[str, Any] = {
        "recipe": recipe.method,
        "round": round_k,
        "policy": policy,
        "next_policy": base,
        "stages": {k: str(v) for k, v in outputs.items()} | {"sample": str(samples)},
        "configs": [str(e.config_path) for e in result.exports],
        "skipped_training_steps": result.skipped,
        "commands": result.commands,
    }
    (rdir / "round.json").write_text(json.dumps(plan, indent=2) + "\n")
    return result


def _has_trainable_rows(run_dir: Path) -> bool:
    df = read_run(run_dir)
    return df.height > 0 and ("kept" not in df.columns or bool(df["kept"].any()))


def _has_trainable_rows(run_dir: Path) -> bool:
    df = read_run(run_dir)
    return df.height > 0 and ("kept" not in df.columns or bool(df["kept"].any()))


def _policy_ref():
    from seftgen.recipes import ModelRef

    return ModelRef(model="policy")
