"""`seftgen evaluate`: the statistics on hand-made verdicts, then the real judge (in process and
through `vllm serve`) on answers it must tell apart, and bad input."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from conftest import DEMO_PROMPTS, SERVED_NAME, run_cli

from seftgen.choices import Outcome, Stage
from seftgen.engines.base import SamplingConfig
from seftgen.evaluation.evaluate import evaluate
from seftgen.evaluation.stats import bootstrap_interval, length_bucket, mirror, outcome, summarize, win_rate
from seftgen.io.schema import EVALS, SAMPLES
from seftgen.io.store import RunStore, read_run
from seftgen.stages.sample import sample

# --- statistics, on verdicts with known answers -------------------------------------------------


def rows_of(outcomes: list[str], cand: int = 10, base: int = 10) -> list[dict]:
    return [
        {"outcome": o, "consistent": o != "tie", "candidate_tokens": cand, "baseline_tokens": base} for o in outcomes
    ]


def test_all_wins_is_one_with_a_tight_interval() -> None:
    s = summarize(rows_of(["win"] * 40))
    assert s["win_rate"] == 1.0 and s["ci95"] == [1.0, 1.0]
    assert (s["wins"], s["losses"], s["ties"]) == (40, 0, 0)


def test_even_split_is_about_half_and_swapping_sides_mirrors_it() -> None:
    rng = random.Random(0)
    outcomes = ["win"] * 30 + ["loss"] * 30 + ["tie"] * 20
    rng.shuffle(outcomes)
    s = summarize(rows_of(outcomes))
    assert s["win_rate"] == 0.5
    low, high = s["ci95"]
    assert low < 0.5 < high and high - low < 0.3

    skewed = ["win"] * 50 + ["loss"] * 20 + ["tie"] * 10
    rate, swapped = win_rate(skewed), win_rate([mirror(Outcome(o)) for o in skewed])
    assert rate == pytest.approx(1 - swapped) and rate == pytest.approx(55 / 80)
    low, high = bootstrap_interval(skewed)
    m_low, m_high = bootstrap_interval([mirror(Outcome(o)) for o in skewed])
    assert low < rate < high
    # Mirrored up to resampling noise (the bootstrap draws the same indices: same seed, same n).
    assert m_low == pytest.approx(1 - high, abs=1e-9) and m_high == pytest.approx(1 - low, abs=1e-9)


def test_outcome_rules() -> None:
    assert outcome(0.8, True, 0.0) == Outcome.WIN
    assert outcome(0.2, True, 0.0) == Outcome.LOSS
    assert outcome(0.8, False, 0.0) == Outcome.TIE  # orders disagree
    assert outcome(0.52, True, 0.1) == Outcome.TIE  # margin 0.04 below the threshold
    assert outcome(0.5, True, 0.0) == Outcome.TIE


def test_length_buckets_show_a_gain_that_is_only_length() -> None:
    long_wins = rows_of(["win"] * 10, cand=30, base=10)
    same_loses = rows_of(["loss"] * 10, cand=10, base=10)
    s = summarize(long_wins + same_loses)
    assert s["by_length"] == {
        "candidate longer": {"prompts": 10, "win_rate": 1.0},
        "similar length": {"prompts": 10, "win_rate": 0.0},
    }
    assert length_bucket(5, 10) == "candidate shorter"
    assert s["mean_tokens"] == {"candidate": 20.0, "baseline": 10.0}


def test_rows_without_a_verdict_are_left_out() -> None:
    s = summarize([*rows_of(["win"] * 3), {"outcome": None, "consistent": False}])
    assert (s["prompts"], s["judged"], s["win_rate"]) == (4, 3, 1.0)


# --- the real judge -------------------------------------------------------------------------------


def copy_run(samples: Path, out: Path, change: Callable[[pl.DataFrame], pl.DataFrame]) -> Path:
    """A changed copy of a sample run, written through the real store as a `samples` run."""
    store = RunStore.open(out, SAMPLES, Stage.SAMPLE, {"source": f"changed copy of {samples}"})
    store.write(change(read_run(samples)).with_columns(pl.lit(store.run_id).alias("run_id")).to_dicts())
    store.finish({})
    return out


def truncated_copy(samples: Path, out: Path, words: int = 3) -> Path:
    """Every response cut to its first few words: a clearly worse policy."""
    return copy_run(
        samples,
        out,
        lambda df: df.with_columns(
            pl.col("response").map_elements(lambda t: " ".join(t.split()[:words]), return_dtype=pl.String),
            pl.lit(words).cast(pl.Int32).alias("completion_tokens"),
        ),
    )


@pytest.fixture(scope="module")
def eval_runs(engine, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """12 demo prompts answered in full, and the same answers cut to three words."""
    root = tmp_path_factory.mktemp("evaluate")
    full = root / "full"
    sample(str(DEMO_PROMPTS), full, engine, params=SamplingConfig(n=1, temperature=0.0, max_tokens=48), limit=12)
    return full, truncated_copy(full, root / "cut")


@pytest.mark.engine
def test_full_answers_beat_their_truncated_copies(engine, eval_runs, tmp_path: Path) -> None:
    """Cannot pass by accident: a judge that ignored the answers would score about 0.5."""
    full, cut = eval_runs
    result = evaluate(full, cut, tmp_path / "ev", engine)
    df = read_run(tmp_path / "ev", "evals")
    assert df.schema == EVALS.schema and df.height == 12
    for r in df.iter_rows(named=True):
        assert r["score"] == pytest.approx((r["p_c_first"] + r["p_c_second"]) / 2)
        assert r["outcome"] == outcome(r["score"], r["consistent"], 0.0)
    s = result.summary
    assert s["judged"] == 12 and s["win_rate"] > 0.6, s  # the 135M demo judge gives 0.71 here
    assert s["ci95"][0] > 0.5, s  # clearly: the whole interval above a coin flip
    assert s["by_length"].keys() == {"candidate longer"}

    # Swapping the sides mirrors every verdict (the judge sees the same two conversations; only
    # the batches differ, which can move bf16 numerics a little, so near-ties are left out).
    evaluate(cut, full, tmp_path / "ev-swapped", engine)
    back = read_run(tmp_path / "ev-swapped").sort("prompt_id")
    forth = df.sort("prompt_id")
    assert back["score"].to_list() == pytest.approx([1 - x for x in forth["score"]], abs=0.02)
    clear = ((forth["p_c_first"] - 0.5).abs() > 0.05) & ((forth["p_c_second"] - 0.5).abs() > 0.05)
    mirrored = [mirror(Outcome(o)) for o in forth.filter(clear)["outcome"]]
    assert back.filter(clear)["outcome"].to_list() == mirrored


@pytest.mark.engine
def test_cli_resumes_and_reports(engine, eval_runs, tmp_path: Path, capsys) -> None:
    full, cut = eval_runs
    out = tmp_path / "ev"
    assert run_cli("evaluate", full, cut, "-o", out, "--limit", "4", "--batch-size", "2", "--tie-margin", "0.1") == 0
    assert "win rate" in capsys.readouterr().err
    df = read_run(out)
    assert df.height == 4
    ties = df.filter(pl.col("outcome") == "tie")
    assert ties.height == df.filter(~pl.col("consistent") | (pl.col("margin") < 0.1)).height
    assert run_cli("evaluate", full, cut, "-o", out, "--limit", "4", "--batch-size", "2", "--tie-margin", "0.1") == 0
    assert "0 new rows, 4 kept from an earlier attempt" in capsys.readouterr().err


@pytest.mark.server
def test_judge_through_vllm_serve(server, engine, eval_runs, tmp_path: Path) -> None:
    """The same judgment through a real `vllm serve` (top_logprobs of the API)."""
    full, cut = eval_runs
    api = ["--engine", "openai", "--base-url", server.base_url, "-m", SERVED_NAME]
    assert run_cli("evaluate", full, cut, "-o", tmp_path / "api", "--limit", "6", *api) == 0
    df = read_run(tmp_path / "api")
    assert df.height == 6 and df["engine"].unique().to_list() == ["openai"]
    local = read_run(evaluate(full, cut, tmp_path / "local", engine, limit=6).run_dir).sort("prompt_id")
    # One model, one dtype: the two paths give the same probabilities up to batching noise.
    assert df.sort("prompt_id")["score"].to_list() == pytest.approx(local["score"].to_list(), abs=0.05)


# --- bad input: one line, exit 2, nothing written ------------------------------------------------


def test_bad_input_is_refused_before_anything_is_written(engine, eval_runs, tmp_path, capsys) -> None:
    full, _ = eval_runs
    disjoint = copy_run(full, tmp_path / "disjoint", lambda df: df.with_columns(pl.col("prompt_id").str.reverse()))
    judge_tpl = tmp_path / "judge_words.yaml"
    judge_tpl.write_text(
        "name: judge_words\nanswer_tokens: [' Alpha Centauri', ' Betelgeuse']\n"
        "assistant_prefix: 'The better one is'\nuser: '{{ instruction }} {{ response_a }} {{ response_b }}'\n"
    )
    cases = [
        ((full, disjoint), [], "no prompt in common"),
        ((full, tmp_path / "missing"), [], "missing"),
        ((full, pairs_run(tmp_path)), [], "expected a 'samples' run"),
        ((full, full), ["--template", judge_tpl], "one token"),
    ]
    for (cand, base), extra, message in cases:
        out = tmp_path / "out"
        assert run_cli("evaluate", cand, base, "-o", out, *extra) == 2, message
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
        assert len(err.strip().splitlines()) <= 2, err
        assert not out.exists()


def pairs_run(tmp_path: Path) -> Path:
    from rows import pairs

    return pairs(tmp_path / "pairs")
