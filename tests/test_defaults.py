"""One source per default: every CLI option and recipe field that mirrors a library setting has
the library's default (`seftgen.stages.config`), so `seftgen X`, a recipe and
`seftgen.stages.X(...)` do the same thing unasked."""

from __future__ import annotations

import inspect

import pytest

from seftgen.cli import data, generate
from seftgen.cli.options import ENGINE_OPTIONS
from seftgen.defaults import defaults_of
from seftgen.engines import EngineSpec
from seftgen.evaluation.benchmark import run_benchmark
from seftgen.evaluation.evaluate import evaluate
from seftgen.rounds.recipe import CritiqueStage, EvalSection, JudgeStage, ReviseStage, SampleStage, SelfCritiqueStage
from seftgen.stages import config
from seftgen.stages.build_data import RevisionLabels, build_jsft_data
from seftgen.stages.judge import best_of, judge_pairs
from seftgen.stages.revise import revise_seft, revise_self, revise_srt
from seftgen.stages.sample import sample


def signature_defaults(fn) -> dict[str, object]:
    return {
        name: p.default
        for name, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }


# (library function, its config, how the config's fields are named in the signature)
FUNCTIONS = [
    (sample, config.SAMPLE, {}),
    (revise_seft, config.REVISE, {}),
    (revise_srt, config.CRITIQUE, {}),
    (revise_self, config.SELF_CRITIQUE, {}),
    (judge_pairs, config.JUDGE, {}),
    (best_of, config.TOURNAMENT, {}),
    (evaluate, config.EVALUATE, {}),
    (build_jsft_data, config.JSFT_DATA, {}),
    (run_benchmark, config.BENCHMARK, {}),
]


@pytest.mark.parametrize(("fn", "cfg", "renamed"), FUNCTIONS, ids=lambda x: getattr(x, "__name__", ""))
def test_stage_functions_default_to_their_config(fn, cfg, renamed) -> None:
    sig = signature_defaults(fn)
    compared = 0
    for name in defaults_of(type(cfg)):
        key = renamed.get(name, name)
        if key in sig:
            assert sig[key] == getattr(cfg, name), f"{fn.__name__}({key}=...)"
            compared += 1
    assert compared >= 2, fn.__name__  # the comparison really ran


CLI = [
    (generate.sample_cmd, {"batch_size": config.SAMPLE.batch_size, **defaults_of(type(config.SAMPLE.params))}),
    (generate.judge_cmd, defaults_of(config.JudgeConfig)),
    (generate.best_of_cmd, defaults_of(config.BestOfConfig) | {"tournament_seed": config.TOURNAMENT.seed}),
    (generate.evaluate_cmd, defaults_of(config.EvaluateConfig)),
    (generate.benchmark_cmd, defaults_of(config.BenchmarkConfig)),
    (data.build_reviser_data_cmd, defaults_of(RevisionLabels) | {"template": config.REVISE.template}),
    (data.build_jsft_data_cmd, defaults_of(config.JsftDataConfig) | {"sft": config.JSFT_DATA.include_sft}),
]


@pytest.mark.parametrize(("command", "library"), CLI, ids=lambda x: getattr(x, "__name__", ""))
def test_cli_defaults_are_the_librarys(command, library) -> None:
    cli = signature_defaults(command)
    engine_names = {name for name, _, _ in ENGINE_OPTIONS}
    as_library = {
        "stop": lambda stop: tuple(stop or ()),
        "template": lambda given: given[0] if isinstance(given, list) and len(given) == 1 else given,
    }
    compared = 0
    for name, given in cli.items():
        if name in engine_names or name not in library:
            continue
        default = as_library.get(name, lambda value: value)(given)
        assert default == library[name], f"{command.__name__} --{name}: CLI {default!r}, library {library[name]!r}"
        compared += 1
    assert compared >= 2  # the comparison really ran


def test_revise_leaves_per_method_defaults_to_the_library() -> None:
    cli = signature_defaults(generate.revise_cmd)
    assert all(cli[name] is None for name in ("template", "max_tokens", "batch_size"))
    assert cli["score_template"] == config.CRITIQUE.score_template
    assert config.REVISE.params.max_tokens != config.CRITIQUE.max_tokens  # why one CLI default cannot serve both


def test_engine_options_default_to_engine_spec() -> None:
    spec = defaults_of(EngineSpec)
    cli = signature_defaults(generate.sample_cmd)
    renamed = {"engine": "kind", "tensor_parallel": "tensor_parallel_size"}
    for name, _, _ in ENGINE_OPTIONS:
        assert cli[name] == spec[renamed.get(name, name)], name


def test_recipe_stage_defaults_are_the_librarys() -> None:
    sampling = config.SAMPLE.params
    stage = SampleStage()
    assert stage.params() == sampling and stage.batch_size == config.SAMPLE.batch_size
    assert ReviseStage().max_tokens == config.REVISE.params.max_tokens
    assert ReviseStage().template == config.REVISE.template
    critique = CritiqueStage(critic={"model": "x"})
    assert (critique.max_tokens, critique.template, critique.score_template) == (
        config.CRITIQUE.max_tokens,
        config.CRITIQUE.template,
        config.CRITIQUE.score_template,
    )
    self_critique = SelfCritiqueStage()
    assert (self_critique.template, self_critique.score_template) == (
        config.SELF_CRITIQUE.template,
        config.SELF_CRITIQUE.score_template,
    )
    j = JudgeStage()
    assert (j.template, j.verdict, j.min_margin, j.require_consistent) == (
        config.JUDGE.template,
        config.JUDGE.verdict,
        config.JUDGE.min_margin,
        config.JUDGE.require_consistent,
    )
    ev = EvalSection()
    assert (ev.template, ev.verdict, ev.tie_margin) == (
        config.EVALUATE.template,
        config.EVALUATE.verdict,
        config.EVALUATE.tie_margin,
    )
