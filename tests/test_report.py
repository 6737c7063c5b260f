"""`seftgen report`: the PNG, and the self-contained page loaded in a real headless Chromium (the
Debian package, /usr/bin/chromium); the dataset card's numbers and image."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import polars as pl
import pytest
from conftest import run_cli
from rows import GOOD, PROMPT, WEAK, pairs, prov, revisions, write_run

from seftgen.choices import Stage
from seftgen.evaluation import ifeval
from seftgen.evaluation.benchmark import BENCHMARKS, compare
from seftgen.evaluation.report import write_report
from seftgen.evaluation.rounds import word_diff
from seftgen.evaluation.stats import summarize
from seftgen.export.release import build_release
from seftgen.io.schema import ALPACA_EVAL, EVALS, IFEVAL, REVISIONS
from seftgen.io.store import RunStore, read_run

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (`make test` installs it)")
# Model text that would break a page which put it into HTML: it must show as text.
HOSTILE = "</script><script>document.title = 'injected'</script><b>bold?</b>"


def _evals(path: Path, outcomes: list[str]) -> tuple[Path, dict]:
    rows = [
        {
            "prompt_id": f"e{i}",
            "messages": PROMPT,
            "candidate": GOOD,
            "baseline": WEAK,
            "candidate_tokens": 10,
            "baseline_tokens": 6,
            "p_c_first": 0.8 if o == "win" else 0.3,
            "p_c_second": 0.7 if o == "win" else 0.4,
            "score": 0.75 if o == "win" else 0.35,
            "consistent": o != "tie",
            "margin": 0.5,
            "outcome": o,
            "candidate_model": "r1",
            "baseline_model": "r0",
            "candidate_run_id": "c",
            "baseline_run_id": "b",
        }
        for i, o in enumerate(outcomes)
    ]
    summary = summarize(rows)
    store = RunStore.open(path, EVALS, Stage.EVALUATE, {})
    store.write([{**prov(store), **r} for r in rows])
    store.finish(summary)
    return path, summary


def _ifeval(path: Path, responses: list[str]) -> list[ifeval.Score]:
    """An `ifeval` scores run of hand-written answers to one no-comma instruction, scored for real."""
    case = ifeval.Item("1", "Answer without commas.", ("punctuation:no_comma",), ({},))
    scores, rows = [], []
    for i, response in enumerate(responses):
        s = ifeval.score(case, response)
        scores.append(ifeval.Score(str(i), s.instruction_ids, s.strict, s.loose))
        rows.append(
            {
                "prompt_id": f"i{i}",
                "messages": PROMPT,
                "source_id": str(i),
                "instruction_ids": list(case.instruction_ids),
                "response": response,
                "finish_reason": "stop",
                "completion_tokens": 5,
                "strict": list(s.strict),
                "loose": list(s.loose),
                "prompt_strict": s.prompt_strict,
                "prompt_loose": s.prompt_loose,
                "checker": "lm_eval",
                "answers_run_id": "a",
            }
        )
    write_run(path, IFEVAL, "benchmark", {}, rows)
    return scores


def _alpaca(path: Path, prefs: list[float]) -> Path:
    """An `alpaca_eval` scores run: hand-written preferences (1: the reference, 2: the answer)."""
    rows = [
        {
            "prompt_id": f"a{i}",
            "messages": PROMPT,
            "source_id": str(i),
            "response": f"answer {i}",
            "finish_reason": "stop",
            "completion_tokens": 2,
            "policy_model": "p",
            "answers_run_id": "a",
            "reference": f"reference {i}",
            "swapped": i % 2 == 1,
            "p_first": 0.5,
            "preference": pref,
        }
        for i, pref in enumerate(prefs)
    ]
    return write_run(path, ALPACA_EVAL, "benchmark", {}, rows)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """Two rounds as `seftgen round` leaves them, from hand-written runs with known content."""
    work = tmp_path / "w"
    start = _ifeval(work / "eval" / "round-0" / "benchmarks" / "ifeval" / "scores", ["One, two.", "No commas."])
    alpaca_start = _alpaca(work / "eval" / "round-0" / "benchmarks" / "alpaca_eval" / "scores", [1.0, 1.5])
    for k, outcomes in ((1, ["win", "loss", "tie", "win"]), (2, ["win", "win", "win", "tie"])):
        rdir = work / f"round-{k}"
        revised = revisions(rdir / "revised", "seft")
        if k == 2:  # a hostile revision, to prove the page shows model text as text
            df = read_run(revised).with_columns(pl.lit(HOSTILE).alias("revised"))
            shutil.rmtree(revised)
            write_run(revised, REVISIONS, "revise", {"method": "seft"}, df.drop("run_id").to_dicts())
        judged = pairs(rdir / "pairs")
        ev, summary = _evals(rdir / "eval" / "vs-start", outcomes)
        plan = {
            "round": k,
            "stages": {
                "revise": {"path": str(revised), "summary": {"rows": 3, "kept": 2, "labels": {"major": 1, "keep": 1}}},
                "judge": {"path": str(judged), "summary": {"pairs": 1, "kept": 1, "position_consistency": 1.0}},
            },
            "eval": {"prompts": 4, "judge": "r0", "vs_start": summary, "runs": {"vs_start": str(ev)}},
        }
        if k == 1:  # round 1 ran IFEval: both answers now follow the instruction
            bench = rdir / "eval" / "benchmarks" / "ifeval"
            scores = _ifeval(bench / "scores", ["Three four.", "Five six."])
            plan["eval"]["benchmarks"] = {
                "ifeval": {
                    "round": ifeval.summarize(scores),
                    "start": ifeval.summarize(start),
                    "vs_start": ifeval.paired(scores, start),
                    "run": str(bench),
                }
            }
            alpaca = _alpaca(rdir / "eval" / "benchmarks" / "alpaca_eval" / "scores", [2.0, 1.9])
            plan["eval"]["benchmarks"]["alpaca_eval"] = {
                "round": BENCHMARKS["alpaca_eval"].summarize(alpaca) | {"judge": "gpt-x"},
                "start": BENCHMARKS["alpaca_eval"].summarize(alpaca_start),
                "vs_start": compare("alpaca_eval", alpaca, alpaca_start),
                "run": str(alpaca.parent),
            }
        (rdir / "round.json").write_text(json.dumps(plan))
    return work


def test_word_diff_marks_changed_words_only() -> None:
    diff = word_diff("the cat sat on the mat", "the dog sat on the mat today")
    assert ["-", "cat"] in diff and ["+", "dog"] in diff and ["+", " today"] in diff
    assert "".join(t for op, t in diff if op != "-") == "the dog sat on the mat today"
    assert "".join(t for op, t in diff if op != "+") == "the cat sat on the mat"


def test_report_files_are_self_contained(workdir: Path) -> None:
    made = write_report(workdir)
    assert made.rounds == 2 and made.rows == 2 * (3 + 1 + 4) + 2 * (2 + 2)  # + IFEval, AlpacaEval: rounds 0, 1
    assert made.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and made.png.stat().st_size > 20_000
    page = made.html.read_text()
    for remote in ("http://", "https://", 'src="//', "<link"):
        assert remote not in page, remote  # nothing to fetch: it opens offline, from a mail attachment
    assert HOSTILE not in page  # the JSON cannot close its <script> element


def test_report_cli_refuses_a_folder_that_is_not_a_workdir(tmp_path: Path, capsys) -> None:
    assert run_cli("report", tmp_path) == 2
    err = capsys.readouterr().err
    assert "not a `seftgen round` workdir" in err and "Traceback" not in err
    assert not (tmp_path / "report").exists()


def chromium(*args: str) -> str:
    """Debian's chromium, headless, as root, with its network chatter off (the machine is closed)."""
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--allow-file-access-from-files",
        "--virtual-time-budget=5000",  # let the page's script and the chart image finish
    ]
    done = subprocess.run([str(CHROMIUM), *flags, *args], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


@needs_chromium
def test_page_renders_rows_and_chart_in_chromium(workdir: Path, tmp_path: Path) -> None:
    from PIL import Image

    made = write_report(workdir)
    url = made.html.as_uri()
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = chromium(*profile, "--dump-dom", url)
    assert 'data-rendered="24"' in dom and 'data-chart="loaded"' in dom
    assert dom.count("<tr data-table=") == 24
    assert "answer (A) vs GPT-4 Turbo (B): P(A better) 1.000" in dom  # an AlpacaEval verdict
    assert "win rate vs GPT-4 Turbo 0.95" in dom and "vs round 0 0.25" in dom  # its round line
    assert "✗ punctuation:no_comma" in dom and "✓ punctuation:no_comma" in dom  # IFEval verdicts per answer
    assert "prompt-level strict 1.0" in dom and "vs round 0 0.5" in dom  # round 1's benchmark line
    assert "<del>" in dom and "<ins>" in dom  # the word diff of a revision
    assert "injected" not in dom.split("<title>")[1].split("</title>")[0]
    assert "&lt;/script&gt;&lt;script&gt;" in dom  # the hostile text, shown as text
    assert "win rate 0.625" in dom and "win rate 0.875" in dom  # both rounds' headlines

    filtered = chromium(*profile, "--dump-dom", url + "?label=major")
    assert 'data-rendered="2"' in filtered  # one 'major' revision per round

    shot = tmp_path / "page.png"
    chromium(*profile, f"--screenshot={shot}", "--window-size=1280,1800", url)
    image = Image.open(shot).convert("L")
    assert image.size == (1280, 1800)
    low, high = image.getextrema()
    assert high - low > 100  # text and chart on a white page, not a blank or error page


def test_card_embeds_round_numbers_and_the_chart(workdir: Path, tmp_path: Path) -> None:
    write_report(workdir)
    out = build_release(
        [workdir / "round-2" / "revised", workdir / "round-2" / "eval" / "vs-start"], "o/d", tmp_path / "rel"
    )
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "![Rounds" in card and (tmp_path / "rel" / "report.png").is_file()
    assert "this round's trained policy vs round 0 (the starting policy): win rate 0.875" in card
    assert "evaluation (candidate vs baseline): win rate 0.875" in card
    assert "candidate longer: win rate 0.875 over 4 prompts" in card
    one = build_release([workdir / "round-1" / "revised"], "o/d", tmp_path / "rel1")
    card1 = (tmp_path / "rel1" / "README.md").read_text()
    assert "ifeval of this round's trained policy: prompt-level strict 1.0" in card1 and one.configs
    assert "alpaca_eval of this round's trained policy: win rate vs GPT-4 Turbo 0.95" in card1
    assert "judged by `gpt-x`: comparable to the public leaderboard only with the official annotator" in card1
    assert "data licence: AlpacaEval instructions" in card1 and "data licence: IFEval prompts" in card1
    assert {c.name for c in out.configs} == {"revisions_seft", "evals"}
