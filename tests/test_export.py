"""`seftgen export-axolotl`: every kind validated by axolotl itself, and one real preprocess."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import polars as pl
import pytest
import rows
import yaml
from conftest import DEMO_PREFS, run_cli

from seftgen.errors import UserError
from seftgen.export.axolotl import export_axolotl
from seftgen.stages.build_data import build_jsft_data, build_reviser_data
from seftgen.training.env import find_axolotl

AXOLOTL = find_axolotl()
pytestmark = [
    pytest.mark.axolotl,
    pytest.mark.skipif(AXOLOTL is None, reason="needs axolotl's environment (make train-env)"),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("runs")
    build_reviser_data(str(DEMO_PREFS), d / "reviser")
    build_jsft_data(str(DEMO_PREFS), d / "jsft")
    return {
        "reviser": d / "reviser",
        "jsft": d / "jsft",
        "seft": rows.revisions(d / "seft", "seft"),
        "srt": rows.revisions(d / "srt", "srt"),
        "pairs": rows.pairs(d / "pairs"),
        "best": rows.best_of(d / "best"),
    }


@pytest.mark.parametrize(
    ("run", "kind", "variant", "n"),
    [
        ("reviser", "sft", "seft-reviser", None),
        ("jsft", "sft", "jsft", None),
        ("seft", "sft", "seft-policy", 2),
        ("seft", "dpo", "seft-dpo", 1),
        ("srt", "sft", "srt-stage1", 2),  # p1's two refinements: its best-scored one only; p3's
        ("srt", "dpo", "srt-stage2", 3),
        ("pairs", "dpo", "self-judge-dpo", 1),
        ("best", "sft", "best-of", 1),
    ],
)
def test_every_kind_validates(runs, tmp_path: Path, run: str, kind: str, variant: str, n: int | None) -> None:
    result = export_axolotl(runs[run], kind, "demo", tmp_path / "cfg.yml")  # validates with axolotl before writing
    assert result.variant == variant and (n is None or result.rows == n)
    cfg = yaml.safe_load(result.config_path.read_text())
    ds = cfg["datasets"][0]
    assert Path(ds["path"]).is_absolute() and ds["path"].endswith("train.parquet") and Path(ds["path"]).is_file()
    assert Path(cfg["output_dir"]).is_absolute() and Path(cfg["base_model"]).is_absolute()
    assert cfg["dataset_prepared_path"].startswith(cfg["output_dir"])
    assert result.validated  # axolotl's own validate_config ran, in axolotl's environment
    provenance = pl.read_parquet(Path(ds["path"]).with_name("provenance.parquet"))
    assert provenance.height == result.rows and provenance["run_id"].null_count() == 0
    assert {"model", "template_hash", "params", "seed", "created_at"} <= set(provenance.columns)
    if kind == "dpo":
        assert cfg["rl"] == "dpo" and ds["type"] == "chat_template.default" and "chat_template" in cfg
        assert cfg["rl_beta"] == (0.01 if variant == "srt-stage2" else 0.1)
        assert not {"ds_type", "message_property_mappings", "roles", "chat_template"} & set(ds)
        assert not cfg.get("sample_packing")
    else:
        assert ds["roles_to_train"] == ["assistant"]


def test_overrides_presets_and_rejections(runs, tmp_path: Path, capsys) -> None:
    result = export_axolotl(
        runs["pairs"], "dpo", "demo", tmp_path / "a.yml", preset="cpu", overrides={"rl_beta": 0.2, "adapter": None}
    )
    assert result.config["rl_beta"] == 0.2 and result.config["bf16"] is False  # --set over preset over defaults
    assert not [k for k in result.config if k.startswith("lora_")]  # full fine-tuning drops the LoRA keys
    lora = export_axolotl(runs["pairs"], "dpo", "demo", tmp_path / "l.yml", preset="cpu")
    assert lora.config["lora_mlp_kernel"] is False and lora.config["lora_r"] == 16
    with pytest.raises(UserError, match="axolotl does not know lora_rank"):  # axolotl would drop it silently
        export_axolotl(runs["pairs"], "dpo", "demo", tmp_path / "b.yml", overrides={"lora_rank": 8})
    assert not (tmp_path / "b.yml").exists() and not (tmp_path / "b-data").exists()
    with pytest.raises(UserError, match="rejects sample_packing"):
        export_axolotl(runs["pairs"], "dpo", "demo", tmp_path / "c.yml", overrides={"sample_packing": True})
    assert (
        run_cli("export-axolotl", runs["pairs"], "--kind", "sft", "--base-model", "demo", "-o", tmp_path / "d.yml") == 2
    )
    assert "cannot export a 'judge' run as --kind sft" in capsys.readouterr().err
    assert (
        run_cli(
            "export-axolotl",
            runs["seft"],
            "--kind",
            "sft",
            "--base-model",
            "demo",
            "-o",
            tmp_path / "e.yml",
            "--set",
            "learning_rate=3e-5",
        )
        == 0
    )
    assert yaml.safe_load((tmp_path / "e.yml").read_text())["learning_rate"] == 3e-5


def _preprocess(cfg: Path) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AXOLOTL_DO_NOT_TRACK": "1", "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [str(AXOLOTL.executable), "preprocess", str(cfg)],
        check=False,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _prepared(cfg: dict) -> datasets.Dataset:  # noqa: F821
    import datasets

    folders = [p for p in Path(cfg["dataset_prepared_path"]).iterdir() if p.is_dir()]
    assert len(folders) == 1
    loaded = datasets.load_from_disk(str(folders[0]))
    return loaded["train"] if isinstance(loaded, datasets.DatasetDict) else loaded


def test_axolotl_preprocess_reads_our_files_and_masks_the_prompt(runs, demo_model, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(demo_model)
    sft = export_axolotl(runs["srt"], "sft", "demo", tmp_path / "sft.yml", preset="cpu")
    _preprocess(sft.config_path)
    ds = _prepared(sft.config)
    assert ds.num_rows == 2 and sft.left_out == 2  # p1's best refinement (score 8 over 7), p3's; p2 not kept
    for ex in ds:
        trained = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab != -100])
        masked = tok.decode([t for t, lab in zip(ex["input_ids"], ex["labels"], strict=True) if lab == -100])
        assert rows.PROMPT[0]["content"] in masked and rows.PROMPT[0]["content"] not in trained  # instruction masked
        assert "### Feedback" in trained and "### Improved Response" in trained
        assert trained.strip().startswith(rows.WEAK)  # stage 1 target: the response, then feedback, refinement
    assert any(rows.GOOD in tok.decode(ex["input_ids"]) for ex in ds)
    dpo = export_axolotl(runs["pairs"], "dpo", "demo", tmp_path / "dpo.yml", preset="cpu")
    _preprocess(dpo.config_path)
    ds = _prepared(dpo.config)
    assert ds.num_rows == 1
    ex = ds[0]
    assert rows.PROMPT[0]["content"] in ex["prompt"] and rows.GOOD in ex["chosen"] and rows.WEAK in ex["rejected"]
    assert rows.GOOD not in ex["prompt"]


def test_without_axolotl_the_config_is_written_unvalidated(runs, tmp_path: Path, monkeypatch, capsys) -> None:
    """No axolotl anywhere: export still writes the config, says so in one line, records it."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("seftgen.training.env._CHECKOUT", tmp_path)
    result = export_axolotl(runs["pairs"], "dpo", "demo", tmp_path / "u.yml")
    assert result.config_path.is_file() and not result.validated
    assert (
        run_cli("export-axolotl", runs["pairs"], "--kind", "dpo", "--base-model", "demo", "-o", tmp_path / "v.yml") == 0
    )
    assert "written unvalidated" in capsys.readouterr().err
    assert run_cli("validate", tmp_path / "v.yml", "--axolotl", AXOLOTL.executable) == 0
    assert run_cli("validate", tmp_path / "v.yml") == 2  # none found: one clear line
    assert "no axolotl found" in capsys.readouterr().err
