"""Which model a recipe means: the one type for `policy`, `train:STEP`, `start` and a named model,
with its resolution and the one rule for "is this model trained yet"."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

TRAINED_PREFIX = "train:"


class RefKind(StrEnum):
    POLICY = "policy"  # the round's current policy
    TRAINED = "train"  # the model a training step of this recipe produces (train:STEP)
    START = "start"  # the recipe's starting policy (round 0): one fixed judge for every round
    MODEL = "model"  # a local folder, a hub id, 'demo', or a served model's name


def is_trained(model: str | Path | None) -> bool:
    """A training step's model exists once its merged folder holds a config (axolotl writes the
    config path before training; only a trained model has `config.json`)."""
    return model is not None and (Path(model) / "config.json").is_file()


@dataclass(frozen=True)
class ModelRef:
    kind: RefKind
    name: str = ""  # the step (TRAINED) or the model (MODEL)

    @classmethod
    def parse(cls, text: str) -> ModelRef:
        if text == RefKind.POLICY:
            return cls(RefKind.POLICY)
        if text == RefKind.START:
            return cls(RefKind.START)
        if text.startswith(TRAINED_PREFIX):
            return cls(RefKind.TRAINED, text.removeprefix(TRAINED_PREFIX))
        return cls(RefKind.MODEL, text)

    def __str__(self) -> str:
        if self.kind == RefKind.TRAINED:
            return f"{TRAINED_PREFIX}{self.name}"
        return self.name if self.kind == RefKind.MODEL else str(self.kind)

    @property
    def step(self) -> str | None:
        return self.name if self.kind == RefKind.TRAINED else None

    def planned(self, *, policy: str, start: str, models: Mapping[str, str]) -> str | None:
        """The model this names, trained or not (a step's config names where its model will be);
        None for a step with no config yet."""
        if self.kind == RefKind.POLICY:
            return policy
        if self.kind == RefKind.START:
            return start
        if self.kind == RefKind.TRAINED:
            return models.get(self.name)
        return self.name

    def resolve(self, *, policy: str, start: str, models: Mapping[str, str]) -> str | None:
        """The model a stage can load now; None for a step whose model is not trained yet."""
        model = self.planned(policy=policy, start=start, models=models)
        if self.kind == RefKind.TRAINED and not is_trained(model):
            return None
        return model
