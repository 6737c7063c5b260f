"""A round workdir and its `round.json` files: the only reader and writer of both.

Layout (every path is built here, nowhere else):

    WORKDIR/
      round-K/round.json        the round's plan and results (RoundPlan)
      round-K/<stage folders>   one run folder per stage (samples, revised, pairs, ...)
      round-K/train-STEP.yml    axolotl configs; round-K/logs/ their logs
      round-K/eval/...          the round's held-out evaluation and benchmarks
      eval/round-0/...          the starting policy's answers, made once and reused by every round
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.io.manifest import write_json_atomic

PLAN = "round.json"
ROUND_PREFIX = "round-"
START = "round-0"  # the starting policy's evaluation answers, under WORKDIR/eval/


@dataclass
class RoundPlan:
    """What one round planned and did. Written once per round run; read by later rounds (their
    policy, the models trained once), `seftgen report` and release cards.

    Fields:
        recipe: the recipe's method (seft, self-judge, srt).
        round: K, from 1.
        policy: the model that wrote the round's samples.
        next_policy: the model round K+1 starts from (the next-policy step's output), or None.
        models: training step -> the model it produces (a merged folder once trained).
        stages: stage -> {path, run_id, rows, status, model, summary} of its run folder.
        configs: the axolotl configs written ({path, variant, rows, validated, effective_batch}).
        training: step -> what training did (losses, steps, seconds, skipped).
        skipped_training_steps: step -> why it did not run.
        blocked: why the round stopped early (a model not trained yet), or None.
        commands: axolotl commands still to run (without --train).
        eval: held-out evaluation and benchmark results of the trained policy.
        time: seconds per stage, export and training step, and the round's total.
        gates: rows each quality gate removed, per stage.
    """

    round: int
    recipe: str = ""
    policy: str = ""
    next_policy: str | None = None
    models: dict[str, str] = field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)
    configs: list[dict[str, Any]] = field(default_factory=list)
    training: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped_training_steps: dict[str, str] = field(default_factory=dict)
    blocked: str | None = None
    commands: list[str] = field(default_factory=list)
    eval: dict[str, Any] | None = None
    time: dict[str, dict[str, float]] = field(default_factory=dict)
    gates: dict[str, dict[str, int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RoundPlan:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})  # older plans: missing fields default

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Workdir:
    """Paths of a round workdir, and its plans."""

    root: Path

    @classmethod
    def at(cls, root: str | Path) -> Workdir:
        return cls(Path(root).resolve())

    def round_dir(self, k: int) -> Path:
        return self.root / f"{ROUND_PREFIX}{k}"

    def plan_path(self, k: int) -> Path:
        return self.round_dir(k) / PLAN

    def has_plan(self, k: int) -> bool:
        return self.plan_path(k).is_file()

    def read_plan(self, k: int) -> RoundPlan:
        path = self.plan_path(k)
        if not path.is_file():
            raise UserError(f"round {k} has not been run", file=path, hint="run it first, or give the policy")
        return RoundPlan.from_dict(json.loads(path.read_text()))

    def write_plan(self, plan: RoundPlan) -> Path:
        path = self.plan_path(plan.round)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, plan.as_dict())
        return path

    def rounds(self) -> list[int]:
        """The rounds that have a plan, in order."""
        ks = [_round_number(p.parent.name) for p in self.root.glob(f"{ROUND_PREFIX}*/{PLAN}")]
        return sorted(k for k in ks if k is not None)

    def stage_dir(self, k: int, folder: str) -> Path:
        return self.round_dir(k) / folder

    def config_path(self, k: int, step: str) -> Path:
        return self.round_dir(k) / f"train-{step}.yml"

    def train_log(self, k: int, step: str) -> Path:
        return self.round_dir(k) / "logs" / f"train-{step}.log"

    def eval_dir(self, k: int) -> Path:
        """Round K's evaluation folder; K = 0 is the starting policy's, shared by every round."""
        return self.root / "eval" / START if k == 0 else self.round_dir(k) / "eval"

    def eval_samples(self, k: int) -> Path:
        return self.eval_dir(k) / "samples"

    def benchmark_dir(self, k: int, name: str) -> Path:
        return self.eval_dir(k) / "benchmarks" / name

    def report_dir(self) -> Path:
        return self.root / "report"


def _round_number(name: str) -> int | None:
    rest = name.removeprefix(ROUND_PREFIX)
    return int(rest) if name.startswith(ROUND_PREFIX) and rest.isdigit() else None


def plan_near(run_dir: str | Path) -> tuple[Workdir, RoundPlan] | None:
    """The workdir and plan of the round a run folder belongs to (round-K/<run>, round-K/eval/<run>
    or deeper), or None for a run outside any round."""
    for folder in Path(run_dir).resolve().parents:
        k = _round_number(folder.name)
        if k is not None and (folder / PLAN).is_file():
            work = Workdir(folder.parent)
            return work, work.read_plan(k)
    return None
