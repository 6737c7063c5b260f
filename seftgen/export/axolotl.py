"""`seftgen export-axolotl`: a training dataset file plus a validated axolotl config.

What to train on follows from the run folder and `--kind`:

| run holds                       | kind | variant         | training rows                                        |
|---------------------------------|------|-----------------|------------------------------------------------------|
| build-reviser-data (sft)        | sft  | seft-reviser    | reviser examples as they are                         |
| build-jsft-data (sft)           | sft  | jsft            | SFT + judge examples as they are                     |
| revisions, method seft          | sft  | seft-policy     | prompt + kept revised response                       |
| revisions, method seft          | dpo  | seft-dpo        | revised > original (label not keep)                  |
| revisions, method srt           | sft  | srt-stage1      | instruction (masked) -> response, feedback, refinement |
| revisions, method srt           | dpo  | srt-stage2      | refinement > original, beta 0.01                     |
| pairs (judge)                   | dpo  | self-judge-dpo  | chosen > rejected, beta 0.1                          |
| best_of                         | sft  | best-of         | prompt + tournament winner                           |

Rows that were not kept (parse failures, filters) are never exported. `train.parquet` holds only
what axolotl reads; `provenance.parquet` beside it holds, row for row, each training row's keys and
provenance columns (axolotl would carry extra columns into the trainer). What axolotl needs
is applied: absolute paths, DPO `path` at the Parquet FILE, chat template at
top level, no keys DPO drops, a fresh `dataset_prepared_path` for every new dataset file. axolotl
itself runs in its own environment (`seftgen.training`), never imported here.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import yaml

from seftgen.choices import TrainKind, Variant
from seftgen.errors import UserError, choice, yaml_problem
from seftgen.io.files import read_mapping
from seftgen.io.manifest import write_text_atomic
from seftgen.io.schema import MESSAGES, PROVENANCE, TABLES
from seftgen.io.store import load_manifest, read_run, write_parquet_atomic
from seftgen.models import DEMO, resolve_model
from seftgen.provenance import stable_hash
from seftgen.templates import load_template
from seftgen.training.env import Axolotl, find_axolotl, validate_configs

# Our defaults; rl_beta values are the papers' (SELF-JUDGE 0.1, SRT 0.01).
COMMON: dict[str, Any] = {
    "chat_template": "tokenizer_default",
    "sequence_len": 2048,
    "sample_packing": False,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_target_linear": True,
    "micro_batch_size": 2,
    "gradient_accumulation_steps": 4,
    "optimizer": "adamw_torch",
    "lr_scheduler": "cosine",
    "warmup_ratio": 0.05,
    "bf16": "auto",
    "logging_steps": 10,
    "save_strategy": "epoch",
    "seed": 0,
}
SFT_DEFAULTS = {"learning_rate": 1e-4, "num_epochs": 3}
DPO_DEFAULTS = {"rl": "dpo", "learning_rate": 5e-6, "num_epochs": 1}
VARIANT_DEFAULTS: dict[Variant, dict[str, Any]] = {
    Variant.SEFT_REVISER: SFT_DEFAULTS,
    Variant.JSFT: SFT_DEFAULTS,
    Variant.SEFT_POLICY: {**SFT_DEFAULTS, "num_epochs": 2},
    Variant.BEST_OF: {**SFT_DEFAULTS, "num_epochs": 2},
    Variant.SRT_STAGE1: SFT_DEFAULTS,
    Variant.SEFT_DPO: {**DPO_DEFAULTS, "rl_beta": 0.1},
    Variant.SELF_JUDGE_DPO: {**DPO_DEFAULTS, "rl_beta": 0.1},
    Variant.SRT_STAGE2: {**DPO_DEFAULTS, "rl_beta": 0.01},
}


@dataclass
class ExportResult:
    config_path: Path
    data_path: Path
    variant: Variant
    rows: int
    left_out: int
    config: dict[str, Any] = field(default_factory=dict)
    validated: bool = False  # checked by axolotl itself (False: no axolotl was found, or --no-validate)
    command: list[str] | None = None  # the train command with its launcher (set by the round)
    effective_batch: int | None = None  # examples per optimizer step with that launcher

    @property
    def commands(self) -> list[str]:
        cmds = [shlex.join(self.command) if self.command else f"axolotl train {self.config_path}"]
        if self.config.get("adapter"):
            axolotl = self.command[0] if self.command else "axolotl"
            cmds.append(f"{shlex.quote(axolotl)} merge-lora {shlex.quote(str(self.config_path))}")
        return cmds

    @property
    def next_base_model(self) -> str:
        """Where the trained model lands: the next round's base model."""
        out = Path(self.config["output_dir"])
        return str(out / "merged") if self.config.get("adapter") else str(out)


def _assistant(messages: list[dict[str, str]], text: str) -> list[dict[str, str]]:
    return [*messages, {"role": "assistant", "content": text}]


@dataclass
class TrainingRows:
    variant: Variant
    rows: pl.DataFrame  # what axolotl reads
    provenance: pl.DataFrame  # row for row: where each training row came from
    left_out: int


def training_rows(run_dir: str | Path, kind: TrainKind) -> TrainingRows:
    """The training rows of a run in axolotl's layout, their provenance, and how many were left out."""
    manifest = load_manifest(run_dir)
    run = manifest.kind
    variant = run.variants.get(kind)
    if variant is None:
        raise UserError(
            f"cannot export a '{run.stage}' run as `kind` {kind}",
            file=run_dir,
            hint="sft: reviser/jsft data, revisions, best-of; dpo: revisions, judged pairs",
        )
    df = read_run(run_dir)
    left_out = 0
    if "kept" in df.columns:
        # Runs from before a table had `kept` (best-of before the quality gates) read it as null: kept.
        df = df.with_columns(pl.col("kept").fill_null(True))
        left_out = int((~df["kept"]).sum())
        df = df.filter(pl.col("kept"))
    if variant == Variant.SRT_STAGE1:  # n > 1: the prompt's best refinement is its target (the paper's r_i)
        best = df.sort(["prompt_id", "revised_score", "sample_idx"], descending=[False, True, False], nulls_last=True)
        best = best.unique("prompt_id", keep="first", maintain_order=True)
        left_out += df.height - best.height
        df = best
    if variant == Variant.SEFT_DPO:
        left_out += int((df["label"] == "keep").sum())  # a kept response has no rejected side
        df = df.filter(pl.col("label") != "keep")
    if run.table == "sft":
        rows = _with_train_detail(df) if "target_from" in df.columns else df.select("messages")
    elif variant == Variant.SEFT_POLICY:
        rows = _frame([_assistant(m, r) for m, r in df.select("messages", "revised").iter_rows()])
    elif variant == Variant.SRT_STAGE1:
        target = load_template(manifest.config["template"])
        rows = _frame(
            [
                _assistant(m, target.render("target", response=o, feedback=f, refinement=r))
                for m, o, f, r in df.select("messages", "original", "feedback", "revised").iter_rows()
            ]
        )
    elif variant == Variant.BEST_OF:
        rows = _frame([_assistant(m, r) for m, r in df.select("messages", "response").iter_rows()])
    elif run.table == "revisions":  # seft-dpo, srt-stage2: the revision over the original
        rows = df.select("messages", pl.col("revised").alias("chosen"), pl.col("original").alias("rejected"))
    else:  # self-judge-dpo
        rows = df.select("messages", "chosen", "rejected")
    keys = [c for c in (*TABLES[run.table].key, "source_id", "policy_model", "source_run_id") if c in df.columns]
    provenance = df.select(*keys, *(c.name for c in PROVENANCE))
    return TrainingRows(variant, rows, provenance, left_out)


TRAIN_DETAIL = "train_detail"  # axolotl's message_field_training_detail: character spans to train or mask
_DETAIL = pl.List(pl.Struct({"begin_offset": pl.Int64, "end_offset": pl.Int64, "train": pl.Boolean}))
MESSAGES_DETAIL = pl.List(pl.Struct({"role": pl.String, "content": pl.String, TRAIN_DETAIL: _DETAIL}))


def _with_train_detail(df: pl.DataFrame) -> pl.DataFrame:
    """SFT rows whose loss starts inside the target (`target_from`, principle judge examples):
    the last message gets axolotl's `train_detail` (mask [0, from), train [from, end]); every
    other message has none, so roles_to_train decides as usual."""
    if df["target_from"].is_null().all():
        return df.select("messages")
    conversations = []
    for messages, start in df.select("messages", "target_from").iter_rows():
        out = [{**m, TRAIN_DETAIL: None} for m in messages]
        if start is not None:
            end = len(out[-1]["content"]) - 1
            out[-1][TRAIN_DETAIL] = [
                {"begin_offset": 0, "end_offset": start - 1, "train": False},
                {"begin_offset": start, "end_offset": end, "train": True},
            ]
        conversations.append(out)
    return pl.DataFrame({"messages": conversations}, schema={"messages": MESSAGES_DETAIL})


def _frame(conversations: list[list[dict[str, str]]]) -> pl.DataFrame:
    return pl.DataFrame({"messages": conversations}, schema={"messages": MESSAGES})


_EXPONENT = re.compile(r"[-+]?\d+(\.\d*)?[eE][-+]?\d+")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """`key=value` pairs; values are YAML (`lora_r=8`, `bf16=false`, `lora_target_modules=[q_proj]`)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expects key=value, got {item!r}", param="overrides")
        try:
            parsed = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise UserError(f"{key}: value is not valid YAML ({yaml_problem(exc)})", param="overrides") from exc
        if isinstance(parsed, str) and _EXPONENT.fullmatch(parsed.strip()):
            parsed = float(parsed)  # YAML 1.1 reads 3e-5 (no dot) as a string; users mean a number
        out[key.strip()] = parsed
    return out


def load_preset(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    file = Path(path)
    if not file.is_file():
        from seftgen.resources import resource_dir

        file = resource_dir("recipes") / "presets" / f"{path}.yaml"
    if not file.is_file():
        raise UserError("preset file does not exist", file=path)
    return read_mapping(file, "preset", empty_ok=True)


def build_config(
    variant: Variant,
    base_model: str,
    data_path: Path,
    output_dir: Path,
    data_id: str,
    *,
    preset: dict[str, Any] | None = None,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`data_id` identifies the dataset contents; it names a fresh `dataset_prepared_path`."""
    is_dpo = VARIANT_DEFAULTS[variant].get("rl") == "dpo"
    if is_dpo:
        dataset = {
            "path": str(data_path),
            "split": "train",
            "type": "chat_template.default",
            "field_messages": "messages",
            "field_chosen": "chosen",
            "field_rejected": "rejected",
        }
    else:
        dataset = {
            "path": str(data_path),
            "type": "chat_template",
            "field_messages": "messages",
            "message_property_mappings": {"role": "role", "content": "content"},
            "roles_to_train": ["assistant"],
            "train_on_eos": "turn",
        }
    cfg: dict[str, Any] = {
        "base_model": base_model,
        **COMMON,
        **VARIANT_DEFAULTS[variant],
        "datasets": [dataset],
        # Fresh per dataset file: axolotl would otherwise reuse last round's tokenized data.
        "dataset_prepared_path": str(output_dir / f"prepared-{data_id}"),
        "output_dir": str(output_dir),
    }
    cfg.update(preset or {})
    cfg.update(overrides or {})
    if not cfg.get("adapter"):
        for key in [k for k in cfg if k.startswith("lora_")]:
            cfg.pop(key)
    if cfg.get("rl") and cfg.get("sample_packing"):
        raise UserError("axolotl rejects sample_packing with DPO; remove it from `overrides` or `preset`")
    return cfg


def validate(cfgs: list[dict[str, Any]], axolotl: Axolotl | None) -> None:
    """axolotl's own validation (in its environment) plus the unknown-key check; raises UserError
    naming the problem. `axolotl` None means no validator was found: the caller records that."""
    if axolotl is None:
        return
    for problem in validate_configs(axolotl, cfgs):
        if problem:
            raise UserError(problem)


def export_axolotl(
    run_dir: str | Path,
    kind: TrainKind | str,
    base_model: str,
    config_path: str | Path,
    *,
    output_dir: str | Path | None = None,
    preset: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    check: bool = True,
    axolotl: str | Path | None = None,
) -> ExportResult:
    """Write `<config stem>-data/train.parquet` and the axolotl YAML at `config_path`.

    With `check`, the config is validated by axolotl's own code in axolotl's environment (found by
    `seftgen.training.env.find_axolotl`) before anything is written. Without an axolotl the config
    is still written, with `validated` False (validate it later with `seftgen validate`)."""
    kind = choice(TrainKind, kind, "kind")
    data = training_rows(run_dir, kind)
    variant, rows, left_out = data.variant, data.rows, data.left_out
    if rows.is_empty():
        raise UserError(f"no rows to train on ({left_out} were not kept by parsing or filters)", file=run_dir)
    config_path = Path(config_path).resolve()
    base = resolve_model(base_model) if base_model == DEMO or Path(base_model).exists() else base_model
    data_path = config_path.with_name(f"{config_path.stem}-data") / "train.parquet"
    out_dir = Path(output_dir).resolve() if output_dir else config_path.with_name(f"{config_path.stem}-output")
    manifest = load_manifest(run_dir)
    # The data's identity (not the manifest's timestamps, which a resumed rerun updates): the same
    # rows give the same config, so a finished training step is recognised and skipped.
    data_id = stable_hash([manifest.run_id, manifest.rows, variant, rows.height], 10)
    cfg = build_config(variant, base, data_path, out_dir, data_id, preset=load_preset(preset), overrides=overrides)
    if rows.schema.get("messages") == MESSAGES_DETAIL:  # principle judge examples: loss after the prefix
        cfg["datasets"][0]["message_field_training_detail"] = TRAIN_DETAIL
    validator = find_axolotl(axolotl) if check else None
    validate([cfg], validator)  # before anything is written: a rejected config leaves no files behind
    data_path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet_atomic(rows, data_path)
    write_parquet_atomic(data.provenance, data_path.with_name("provenance.parquet"))
    header = (
        f"# axolotl config written by seftgen ({variant}) from run {manifest.run_id}\n"
        f"# source: {Path(run_dir).resolve()}\n"
        f"# rows: {rows.height} (left out, not kept: {left_out})\n"
        f"# next: axolotl train {config_path}"
        + ("; axolotl merge-lora " + str(config_path) if cfg.get("adapter") else "")
        + "\n"
    )
    write_text_atomic(config_path, header + yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    return ExportResult(config_path, data_path, variant, rows.height, left_out, cfg, validator is not None)
