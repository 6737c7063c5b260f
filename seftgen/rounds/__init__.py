"""The loop: recipes and the rounds that run them (the top layer below the CLI).

from seftgen.rounds import RoundOptions, load_recipe, run_rounds
run_rounds(load_recipe("seft"), "runs/seft", [1, 2], options=RoundOptions(train=True))
"""

from seftgen.rounds.recipe import Recipe, RoundStage, load_recipe
from seftgen.rounds.refs import ModelRef, RefKind, is_trained
from seftgen.rounds.runner import Round, RoundOptions, RoundResult, parse_rounds, run_round, run_rounds

__all__ = [
    "ModelRef",
    "Recipe",
    "RefKind",
    "Round",
    "RoundOptions",
    "RoundResult",
    "RoundStage",
    "is_trained",
    "load_recipe",
    "parse_rounds",
    "run_round",
    "run_rounds",
]
