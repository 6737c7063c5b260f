"""One source per default: every CLI option and recipe field that mirrors a library setting has
the library's default, so `seftgen X` and `seftgen.stages.X(...)` do the same thing unasked."""

from __future__ import annotations

import inspect

import pytest

from seftgen.cli import data, generate
from seftgen.cli.options import ENGINE_OPTIONS
from seftgen.defaults import defaults_of
from seftgen.engines import EngineSpec
from seftgen.engines.base import SamplingConfig
from seftgen.io.store import Shard
from seftgen.recipes import CritiqueStage, JudgeStage, ReviseStage, SampleStage
from seftgen.stages.build_data import RevisionLabels, build_jsft_data, build_reviser_data
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.revise import revise_seft, revise_srt
from seftgen.stages.sample import sample

# CLI options that are None on purpose: the library picks its default per method (revise).
PER_METHOD = {"template", "max_tokens", "batch_size"}


def cli_defaults(command) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(command).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


@pytest.mark.parametrize(
    ("command", "library"),
    [
        (generate.sample_cmd, [sample, SamplingConfig]),
        (generate.judge_cmd, [judge_pairs]),
        (generate.best_of_cmd, [best_of]),
        (data.build_reviser_data_cmd, [build_reviser_data, RevisionLabels]),
        (data.build_jsft_data_cmd, [build_jsft_data]),
    ],
    ids=lambda x: getattr(x, "__name__", ""),
)
def test_cli_defaults_are_the_librarys(command, library) -> None:
    lib: dict[str, object] = {}
    for target in library:
        lib |= defaults_of(target)
    cli = cli_defaults(command)
    engine_names = {name for name, _, _ in ENGINE_OPTIONS}
    compared = 0
    # How the CLI's text options become library values.
    as_library = {
        "shard": Shard.parse,
        "stop": lambda stop: tuple(stop or ()),
        "template": lambda given: given[0] if isinstance(given, list) and len(given) == 1 else given,
    }
    for name, given in cli.items():
        key = {"tournament_seed": "seed", "sft": "include_sft"}.get(name, name)
        if name in engine_names or key not in lib:
            continue
        default = as_library.get(name, lambda value: value)(given)
        assert default == lib[key], f"{command.__name__} --{name}: CLI {default!r}, library {lib[key]!r}"
        compared += 1
    assert compared >= 3  # the comparison really ran


def test_revise_leaves_per_method_defaults_to_the_library() -> None:
    cli = cli_defaults(generate.revise_cmd)
    assert all(cli[name] is None for name in PER_METHOD)
    assert cli["score_template"] == defaults_of(revise_srt)["score_template"]
    # The help shows the library's values for both methods.
    seft, srt = defaults_of(revise_seft), defaults_of(revise_srt)
    assert seft["params"].max_tokens != srt["max_tokens"]  # why one CLI default cannot serve both


def test_engine_options_default_to_engine_spec() -> None:
    spec = defaults_of(EngineSpec)
    cli = cli_defaults(generate.sample_cmd)
    renamed = {"engine": "kind", "tensor_parallel": "tensor_parallel_size"}
    for name, _, _ in ENGINE_OPTIONS:
        assert cli[name] == spec[renamed.get(name, name)], name


def test_recipe_stage_defaults_are_the_librarys() -> None:
    sampling = SamplingConfig()
    stage = SampleStage()
    assert (stage.n, stage.temperature, stage.top_p, stage.max_tokens) == (
        sampling.n,
        sampling.temperature,
        sampling.top_p,
        sampling.max_tokens,
    )
    assert stage.batch_size == defaults_of(sample)["batch_size"]
    seft, srt, judge = defaults_of(revise_seft), defaults_of(revise_srt), defaults_of(judge_pairs)
    assert ReviseStage().max_tokens == seft["params"].max_tokens and ReviseStage().template == seft["template"]
    critique = CritiqueStage(critic={"model": "x"})
    assert (critique.max_tokens, critique.template, critique.score_template) == (
        srt["max_tokens"],
        srt["template"],
        srt["score_template"],
    )
    j = JudgeStage()
    assert (j.template, j.verdict, j.min_margin, j.require_consistent) == (
        judge["template"],
        judge["verdict"],
        judge["min_margin"],
        judge["require_consistent"],
    )
