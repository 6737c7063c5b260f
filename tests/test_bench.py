"""The benchmarks run (tiny workloads, the session's engine): `make bench` must not rot.

Figures are not asserted here (timed tests are not how performance is judged); what is checked
is that each benchmark does the same model work on both sides and reports in the one format.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

FIELDS = {"benchmark", "workload", "unit", "baseline_median", "ours_median", "ratio_median", "ratio_min", "ratio_max"}


def check(out: dict, repeats: int = 1) -> None:
    assert set(out) >= FIELDS
    assert all(len(rates) == repeats and min(rates) > 0 for rates in out["runs"].values())
    assert out["ratio_min"] <= out["ratio_median"] <= out["ratio_max"]


@pytest.mark.engine
@pytest.mark.parametrize(
    ("name", "argv"),
    [
        ("sample_throughput", ["--prompts", "4", "--n", "1", "--max-tokens", "8", "--batch-size", "2"]),
        ("reviser", ["--samples", "4", "--max-tokens", "16", "--batch-size", "2"]),
        ("judge", ["--prompts", "3", "--n", "2", "--sample-tokens", "8", "--batch-size", "2"]),
        ("best_of", ["--prompts", "3", "--n", "3", "--sample-tokens", "8", "--batch-size", "2"]),
        ("evaluate", ["--prompts", "3", "--sample-tokens", "8", "--batch-size", "2"]),
        ("ifeval_bench", ["--prompts", "3", "--max-tokens", "8", "--batch-size", "2"]),
    ],
)
def test_model_benchmarks_run(engine, name: str, argv: list[str], capsys) -> None:
    import importlib

    out = importlib.import_module(name).main([*argv, "--repeats", "1"], engine=engine)
    check(out)
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == out
    if name == "judge":
        assert out["workload"]["pairs"] == 3  # 3 prompts x 1 pair, both sides
    if name == "best_of":
        assert out["workload"]["judgments"] == 6  # 3 prompts x (3 - 1)
    if name == "ifeval_bench":
        assert out["workload"]["scoring_541_s"] > 0  # the figure docs/benchmarks.md reports
    if name == "evaluate":
        assert out["workload"]["pairs"] == 3 and out["target"] == 0.9  # 3 prompts, candidate vs baseline


def test_critic_client_benchmark_and_the_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, BENCH / "critic_client.py", "--rows", "20", "--repeats", "1", "--batch-size", "8"],
        capture_output=True,
        text=True,
        check=True,
        cwd=BENCH,
        timeout=300,
    )
    out = json.loads(done.stdout.strip().splitlines()[-1])
    check(out)
    from run_all import table

    rendered = table([out, {"benchmark": "judge", "error": "exit 1"}])
    assert f"**{out['ratio_median']}**" in rendered and "| judge | failed: exit 1 |" in rendered


@pytest.mark.engine
@pytest.mark.slow
def test_judge_precision_study_runs(engine) -> None:
    """The precision study judges the same pairs with bf16, a float32 head and a float32 model
    (each a real engine of its own, loaded one after another), and closes only its own engines."""
    import judge_precision

    from seftgen.engines.base import SamplingConfig

    out = judge_precision.main(["--prompts", "3", "--n", "2", "--repeats", "1"])
    assert out["pairs"] == 3 and set(out["engines"]) == {"bf16", "bf16 + fp32 head", "fp32"}
    hello = [[{"role": "user", "content": "Hi"}]]
    assert engine.generate(hello, SamplingConfig(max_tokens=2))[0].completions  # the caller's engine is open
    reference = out["engines"]["fp32"]
    assert reference["max_abs_diff_vs_fp32"] == 0 and reference["verdict_changes_vs_fp32"] == 0
    assert all(e["judging_s"] > 0 and e["distinct_probabilities"] >= 1 for e in out["engines"].values())


@pytest.mark.engine  # no engine, but the embedded model's tokenizer (`make test-fast` runs without it)
def test_format_compile_prints_every_bundled_format() -> None:
    """`bench/format_compile.py` (no engine: xgrammar and the demo model's tokenizer)."""
    from seftgen.templates import load_template, template_names

    run = subprocess.run(
        [sys.executable, str(BENCH / "format_compile.py"), "--no-compare"], capture_output=True, text=True, check=True
    )
    rows = [line.split(" | ") for line in run.stdout.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [r[0].strip("| ") for r in rows] == [n for n in template_names() if load_template(n).output is not None]
    assert all(float(r[1]) >= 0 and r[2] == "-" and int(r[3].strip(" |")) >= 0 for r in rows)
