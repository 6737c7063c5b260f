"""`seftgen round --dry-run`: every training command the rounds will run, with its launcher,
processes and effective batch, before any model loads (a plan to check before hours of training)."""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

from seftgen.export.axolotl import COMMON, load_preset
from seftgen.io.workdir import Workdir
from seftgen.rounds.recipe import Recipe
from seftgen.rounds.runner import RoundOptions
from seftgen.training.env import find_axolotl
from seftgen.training.launch import default_launcher
from seftgen.training.run import effective_batch, processes, train_command


@dataclass(frozen=True)
class PlannedStep:
    round: int
    step: str
    kind: str
    preset: str | None
    commands: list[str]
    launcher: str | None
    processes: int
    effective_batch: int


def plan_training(recipe: Recipe, workdir: str | Path, rounds: list[int], options: RoundOptions) -> list[PlannedStep]:
    work = Workdir.at(workdir)
    found = find_axolotl(options.axolotl)
    axolotl = str(found.executable) if found else "axolotl"
    launcher = recipe.training.launcher or default_launcher()
    args = list(options.launcher_args if options.launcher_args is not None else recipe.training.launcher_args)
    planned = []
    for k in rounds:
        for step in recipe.train:
            if step.once and k > rounds[0] and k > 1:
                continue  # trained once (round 1), reused after
            preset = step.preset or options.preset or recipe.training.preset
            cfg = {**COMMON, **load_preset(preset), **step.set}
            config = work.config_path(k, step.name)
            commands = [shlex.join(train_command(axolotl, config, launcher, args))]
            if cfg.get("adapter"):
                commands.append(shlex.join([axolotl, "merge-lora", str(config)]))
            planned.append(
                PlannedStep(
                    k,
                    step.name,
                    str(step.kind),
                    preset,
                    commands,
                    launcher,
                    processes(launcher, args),
                    effective_batch(cfg, launcher, args),
                )
            )
    return planned
