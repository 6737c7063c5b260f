"""Library errors speak of parameters; the CLI's one formatter turns them into its flags."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import DEMO_PROMPTS, run_cli

from seftgen.choices import Verdict
from seftgen.cli.errors import flag_of
from seftgen.errors import UserError, choice
from seftgen.io.store import Shard


def test_library_messages_name_parameters_and_the_cli_names_flags(tmp_path: Path, capsys) -> None:
    with pytest.raises(UserError) as caught:
        Shard.parse("2")
    assert str(caught.value) == "`shard`: must look like i/N, got '2'"
    assert caught.value.format(flag_of) == "--shard: must look like i/N, got '2'"
    assert run_cli("sample", DEMO_PROMPTS, "-o", tmp_path / "o", "--shard", "2") == 2
    err = capsys.readouterr().err
    assert "--shard: must look like i/N" in err and "`shard`" not in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing written


def test_hints_and_renamed_parameters() -> None:
    err = UserError("bad", param="tensor_parallel_size", hint="try `base_url` or `allow_partial`")
    assert err.format(flag_of) == "--tensor-parallel: bad (try --base-url or --allow-partial)"
    assert err.format() == "`tensor_parallel_size`: bad (try `base_url` or `allow_partial`)"
    with pytest.raises(UserError, match="`verdict`: must be one of logprobs, text, got 'x'"):
        choice(Verdict, "x", "verdict")
    assert choice(Verdict, "text", "verdict") is Verdict.TEXT
