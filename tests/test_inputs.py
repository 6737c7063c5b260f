"""Bad input gives one clear line naming file, row and field, exit code 2, and no output folder.

These run through the real CLI entry point; the input is rejected before any model loads.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from conftest import run_cli

from seftgen.io.readers import PromptColumns, iter_prompts


def write_jsonl(path: Path, rows: list[object]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    ("rows", "extra", "expected"),
    [
        ([{"prompt": "hi"}, {"text": "no prompt"}], [], "row 2: field 'prompt': missing column"),
        ([{"prompt": "hi"}, {"prompt": "   "}], [], "row 2: field 'prompt': empty prompt"),
        ([{"prompt": 42}], [], "row 1: field 'prompt': expected text, got int"),
        (["{not json"], [], "row 1: invalid JSON"),
        (
            [{"messages": [{"role": "robot", "content": "x"}]}],
            ["--messages-column", "messages"],
            "unknown role 'robot'",
        ),
    ],
)
def test_bad_rows_are_named(tmp_path: Path, capsys, rows, extra, expected) -> None:
    src = write_jsonl(tmp_path / "in.jsonl", rows)
    out = tmp_path / "out"
    code = run_cli("sample", src, "-o", out, *extra)
    err = capsys.readouterr().err
    assert code == 2
    assert expected in err and str(src) in err
    assert "Traceback" not in err
    assert not out.exists()


def test_missing_file_and_unknown_model(tmp_path: Path, capsys) -> None:
    assert run_cli("sample", tmp_path / "nope.jsonl", "-o", tmp_path / "o") == 2
    assert "input file does not exist" in capsys.readouterr().err
    src = write_jsonl(tmp_path / "in.jsonl", [{"prompt": "hi"}])
    assert run_cli("sample", src, "-o", tmp_path / "o", "--model", str(tmp_path / "no-model")) == 2
    assert "model folder does not exist" in capsys.readouterr().err
    (tmp_path / "empty-model").mkdir()
    assert run_cli("sample", src, "-o", tmp_path / "o", "--model", str(tmp_path / "empty-model")) == 2
    assert "no config.json" in capsys.readouterr().err
    assert run_cli("sample", src, "-o", tmp_path / "o", "--engine", "openai") == 2
    assert "needs --base-url" in capsys.readouterr().err
    assert (
        run_cli("sample", src, "-o", tmp_path / "o", "--engine", "openai", "--base-url", "http://127.0.0.1:9/v1") == 2
    )
    assert "--model names the served model" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_readers_agree_across_formats(tmp_path: Path) -> None:
    rows = [{"prompt": f"question {i}"} for i in range(5)] + [{"prompt": "question 0"}]  # one duplicate
    jsonl = write_jsonl(tmp_path / "p.jsonl", rows)
    pl.DataFrame(rows).write_parquet(tmp_path / "p.parquet")
    import datasets

    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    ids = [
        [p.prompt_id for p in iter_prompts(str(s), PromptColumns())]
        for s in (jsonl, tmp_path / "p.parquet", tmp_path / "ds")
    ]
    assert ids[0] == ids[1] == ids[2]
    assert len(ids[0]) == 5  # duplicates collapse onto one stable id


def test_messages_column_and_system_prompt(tmp_path: Path) -> None:
    src = write_jsonl(
        tmp_path / "m.jsonl",
        [{"conv": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "old answer"}]}],
    )
    (prompt,) = iter_prompts(str(src), PromptColumns(messages="conv", system="Be brief."))
    assert prompt.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


def test_input_is_streamed_not_loaded(tmp_path: Path) -> None:
    """100k prompts of ~1 KB (100 MB of JSONL): memory holds only the 16-char ids seen so far."""
    import tracemalloc

    src = tmp_path / "big.jsonl"
    filler = "x" * 1000
    with src.open("w") as f:
        for i in range(100_000):
            f.write(json.dumps({"prompt": f"{i} {filler}"}) + "\n")
    tracemalloc.start()
    count = sum(1 for _ in iter_prompts(str(src), PromptColumns()))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert count == 100_000
    assert peak < 25 * 2**20, f"peak {peak / 2**20:.1f} MiB for a {src.stat().st_size / 2**20:.0f} MiB input"


@pytest.mark.parametrize("command", ["sample", "revise", "judge", "best-of", "round", "export-axolotl", "validate"])
def test_help_reaches_the_terminal(command: str) -> None:
    """Commands that send tools' chatter to a log must not send --help there (a real process:
    the redirect only happens when stdout is the process's own)."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "seftgen.cli.app", command, "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0 and "Usage: " in out.stdout, out.stderr[-500:]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["judge", "RUN", "-o", "OUT", "--verdict", "maybe"], "'maybe' is not one of"),
        (["sample", "PROMPTS", "-o", "OUT", "--engine", "tgi"], "'tgi' is not one of"),
        (["revise", "RUN", "-o", "OUT", "--critic", "claude"], "'claude' is not one of"),
        (["export-axolotl", "RUN", "--kind", "ppo", "--base-model", "demo", "-o", "c.yml"], "'ppo' is not one of"),
    ],
)
def test_closed_sets_are_checked_by_the_cli(tmp_path: Path, capsys, args: list[str], message: str) -> None:
    assert run_cli(*[str(tmp_path / a) if a.isupper() else a for a in args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "OUT").exists()


def test_input_mistakes_stop_before_the_model_loads(tmp_path: Path, capsys) -> None:
    """Each mistake is one line naming the file (and row), exit 2, nothing written; the model is
    a folder that does not exist, so an error about the input proves it came first."""
    no_model = ["--model", str(tmp_path / "no-model")]
    good = write_jsonl(tmp_path / "good.jsonl", [{"prompt": "hi"}])
    latin1 = tmp_path / "latin1.jsonl"
    latin1.write_bytes(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n')
    afile = tmp_path / "a-file"
    afile.write_text("x")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    cases = [
        (["sample", latin1, "-o", tmp_path / "o1"], f"{latin1}: row 2: not UTF-8 text (byte 0xe9"),
        (["sample", good, "-o", afile], f"{afile}: output path is a file"),
        (["sample", good, "-o", afile / "below"], f"{afile}: output path is a file"),
        (["sample", empty, "-o", tmp_path / "o2"], f"{empty}: no prompts in the input"),
        (["revise", good, "-o", tmp_path / "o3", "--reviser", "demo"], "not a seftgen run folder"),
    ]
    for args, expected in cases:
        assert run_cli(*args, *no_model) == 2, args
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]


def test_wrong_or_empty_runs_are_refused_before_the_model_loads(tmp_path: Path, capsys) -> None:
    import rows

    from seftgen.io.schema import SAMPLES
    from seftgen.io.store import RunStore

    pairs = rows.pairs(tmp_path / "pairs")
    no_samples = RunStore.open(tmp_path / "no-samples", SAMPLES, "sample", {})
    no_samples.finish({})
    no_model = ["--model", str(tmp_path / "no-model")]
    for command in (["judge"], ["best-of"], ["revise", "--reviser", str(tmp_path / "no-model")]):
        assert run_cli(command[0], pairs, "-o", tmp_path / "out", *command[1:], *no_model) == 2
        assert "expected a 'samples' run, this folder holds 'pairs'" in capsys.readouterr().err
        assert run_cli(command[0], no_samples.root, "-o", tmp_path / "out", *command[1:], *no_model) == 2
        assert "the samples run holds no rows" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_bad_templates_and_recipes_are_one_line(tmp_path: Path, capsys) -> None:
    from conftest import DEMO_PREFS

    jinja = tmp_path / "jinja.yaml"
    jinja.write_text('user: "{{ instruction"\n')
    broken = tmp_path / "broken.yaml"
    broken.write_text("user: [\n")
    cases = [
        (["build-jsft-data", DEMO_PREFS, "-o", tmp_path / "o1", "--template", jinja], "Jinja syntax error"),
        (["build-jsft-data", DEMO_PREFS, "-o", tmp_path / "o2", "--template", broken], "template is not valid YAML"),
        (["round", broken, "--workdir", tmp_path / "o3"], "not valid YAML (expected the node content"),
    ]
    for args, expected in cases:
        assert run_cli(*args) == 2, args
        err = capsys.readouterr().err
        assert expected in err and len(err.strip().splitlines()) == 1, err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("o")]
