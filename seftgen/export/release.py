"""`seftgen release`: a Hub dataset folder (Parquet per config + dataset card) and its upload.

The card is generated from the run manifests: method, models, templates with hashes, sampling
parameters, filters and how many rows each removed, judge position consistency, token and cost
totals, and example rows. Rows without complete provenance are never released; rows that failed
parsing or filters only with `include_rejected`. What was left out, and why, is reported and
written into the card.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from seftgen.choices import RunStatus
from seftgen.errors import UserError
from seftgen.evaluation.benchmark import benchmark_notes, round_headline
from seftgen.evaluation.stats import headline
from seftgen.io.manifest import Manifest
from seftgen.io.schema import PROVENANCE
from seftgen.io.store import load_manifest, read_run, write_parquet_atomic
from seftgen.io.workdir import plan_near

PROVENANCE_COLUMNS = [c.name for c in PROVENANCE]
EXAMPLE_CHARS = 300


@dataclass
class ConfigPart:
    name: str
    run_dir: Path
    manifest: Manifest
    rows: pl.DataFrame
    left_out: Counter = field(default_factory=Counter)


@dataclass
class Release:
    folder: Path
    configs: list[ConfigPart]
    url: str | None = None

    @property
    def left_out(self) -> dict[str, dict[str, int]]:
        return {c.name: dict(c.left_out) for c in self.configs if c.left_out}


def select_rows(df: pl.DataFrame, include_rejected: bool) -> tuple[pl.DataFrame, Counter]:
    left: Counter[str] = Counter()
    missing = pl.any_horizontal([pl.col(c).is_null() for c in PROVENANCE_COLUMNS if c in df.columns])
    n_missing = df.filter(missing).height
    if n_missing:
        left["missing provenance"] = n_missing
        df = df.filter(~missing)
    if "kept" in df.columns and not include_rejected:
        rejected = df.filter(~pl.col("kept"))
        for kind, n in Counter(rejected["reason_kind"].to_list()).items():
            left[f"{kind} failure" if kind else "not kept"] += n
        df = df.filter(pl.col("kept").fill_null(True))  # null: a run from before its table had `kept`
    return df, left


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def _short(value: Any) -> Any:
    if isinstance(value, str):
        return value if len(value) <= EXAMPLE_CHARS else value[:EXAMPLE_CHARS] + "…"
    if isinstance(value, list):
        return [_short(v) for v in value]
    if isinstance(value, dict):
        return {k: _short(v) for k, v in value.items()}
    return value


def _card_body(repo_id: str, configs: list[ConfigPart], include_rejected: bool) -> str:
    methods = sorted({m for c in configs for m in [c.manifest.kind.method] if m})
    lines = [
        f"# {repo_id}",
        "",
        f"Alignment training data generated with [seftgen](https://pypi.org/project/seftgen/)"
        f" ({', '.join(methods) or 'policy samples'}). Every row carries provenance columns "
        "(`model`, `engine`, `template_hash`, `params`, `seed`, `run_id`, `created_at`) so it can be traced "
        "and reproduced.",
        "",
    ]
    if not include_rejected:
        lines += ["Rows that failed parsing or a filter, and rows with incomplete provenance, are not included.", ""]
    for c in configs:
        m, cfg = c.manifest, c.manifest.config
        lines += [
            f"## Config `{c.name}`",
            "",
            f"- rows: {c.rows.height}",
            f"- stage: `{m.stage}`, run `{m.run_id}`",
        ]
        near = plan_near(c.run_dir)
        plan = near[1] if near else None
        if plan:
            lines.append(f"- round: {plan.round}")
        models = sorted(set(c.rows["model"].to_list())) if c.rows.height else []
        lines.append(f"- models: {', '.join(f'`{Path(x).name}`' for x in models) or 'none'}")
        if "policy_model" in c.rows.columns and c.rows.height:
            policies = sorted(set(c.rows["policy_model"].to_list()))
            lines.append(f"- policy models: {', '.join(f'`{Path(x).name}`' for x in policies)}")
        templates = [f"`{cfg.get('template', 'chat template')}` ({cfg.get('template_hash')})"]
        if cfg.get("score_template"):
            templates.append(f"`{cfg['score_template']}` ({cfg.get('score_template_hash')})")
        lines.append(f"- templates: {', '.join(templates)}")
        lines.append(f"- parameters: `{json.dumps(cfg.get('params'), sort_keys=True)}`")
        summary = m.summary
        if summary.get("position_consistency") is not None:
            lines.append(
                f"- judge position consistency: {summary['position_consistency']:.1%}, "
                f"mean margin {summary.get('mean_margin')}"
            )
        for reason, n in (summary.get("not_kept_by_reason") or {}).items():
            lines.append(f"- removed by `{reason}`: {n}")
        if m.table == "evals":
            lines.append(f"- evaluation (candidate vs baseline): {headline(summary)}")
            for bucket, b in (summary.get("by_length") or {}).items():
                lines.append(f"  - {bucket}: win rate {b['win_rate']:.3f} over {b['prompts']} prompts")
        evals = (plan.eval if plan else None) or {}
        for name, label in (("vs_start", "round 0 (the starting policy)"), ("vs_previous", "the previous round")):
            if name in evals:
                lines.append(f"- this round's trained policy vs {label}: {headline(evals[name])}")
        for name, bench in (evals.get("benchmarks") or {}).items():
            lines.append(f"- {name} of this round's trained policy: {round_headline(name, bench)}")
            lines += benchmark_notes(name, bench["round"])
        for reason, n in c.left_out.items():
            lines.append(f"- left out of this release ({reason}): {n}")
        totals = m.totals
        if totals:
            lines.append(
                f"- tokens: {int(totals.get('prompt_tokens', 0))} prompt + "
                f"{int(totals.get('completion_tokens', 0))} completion; cost ${totals.get('cost_usd', 0):.4f}"
            )
        if c.rows.height:
            example = {k: v for k, v in c.rows.row(0, named=True).items() if k not in PROVENANCE_COLUMNS}
            lines += [
                "",
                "Example row:",
                "",
                "```json",
                json.dumps(_short(example), indent=2, ensure_ascii=False, default=str),
                "```",
            ]
        lines.append("")
    return "\n".join(lines)


def _report_image(parts: list[ConfigPart]) -> Path | None:
    """The workdir's `seftgen report` chart, when the released runs come from one that has it."""
    for p in parts:
        if (near := plan_near(p.run_dir)) and (png := near[0].report_dir() / "report.png").is_file():
            return png
    return None


def build_release(
    run_dirs: list[str | Path],
    repo_id: str,
    folder: str | Path,
    *,
    include_rejected: bool = False,
    license: str = "apache-2.0",
) -> Release:
    """Write the Hub dataset folder: data/<config>/train-00000.parquet and README.md."""
    from huggingface_hub import DatasetCard, DatasetCardData

    if "/" not in repo_id:
        raise UserError(f"must be ORG/NAME, got {repo_id!r}", param="repo_id")
    parts: list[ConfigPart] = []
    for run_dir in map(Path, run_dirs):
        manifest = load_manifest(run_dir)
        if manifest.status not in (RunStatus.COMPLETE, RunStatus.PARTIAL):
            raise UserError(f"run is '{manifest.status}': finish it (rerun its command) before releasing", file=run_dir)
        rows, left = select_rows(read_run(run_dir), include_rejected)
        parts.append(ConfigPart(manifest.kind.name, run_dir, manifest, rows, left))
    names = Counter(p.name for p in parts)
    if dup := [n for n, k in names.items() if k > 1]:
        raise UserError(f"two runs would both be config {dup[0]!r}; merge them first (`seftgen merge`)")
    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise UserError("release folder is not empty", file=folder)
    for p in parts:
        target = folder / "data" / p.name / "train-00000.parquet"
        target.parent.mkdir(parents=True, exist_ok=True)
        write_parquet_atomic(p.rows, target)
    data = DatasetCardData(
        license=license,
        task_categories=["text-generation"],
        size_categories=[_size_category(sum(p.rows.height for p in parts))],
        tags=["seftgen", "synthetic", *sorted({m.lower() for p in parts if (m := p.manifest.kind.method)})],
        configs=[
            {"config_name": p.name, "data_files": [{"split": "train", "path": f"data/{p.name}/train-*.parquet"}]}
            for p in parts
        ],
    )
    body = _card_body(repo_id, parts, include_rejected)
    if (png := _report_image(parts)) is not None:
        shutil.copyfile(png, folder / "report.png")
        title, _, rest = body.partition("\n")
        body = f"{title}\n\n![Rounds: win rate, kept rows, scores, judge consistency](report.png)\n{rest}"
    card = DatasetCard(f"---\n{data.to_yaml()}\n---\n\n{body}")
    card.save(folder / "README.md")
    return Release(folder, parts)


def release(
    run_dirs: list[str | Path],
    repo_id: str,
    *,
    private: bool = False,
    dry_run: str | Path | None = None,
    include_rejected: bool = False,
    license: str = "apache-2.0",
) -> Release:
    """Build the folder; with `dry_run`, keep it there; otherwise upload it to the Hub and clean up."""
    if dry_run is not None:
        return build_release(run_dirs, repo_id, dry_run, include_rejected=include_rejected, license=license)
    from huggingface_hub import HfApi

    tmp = Path(tempfile.mkdtemp(prefix="seftgen-release-"))
    try:
        built = build_release(run_dirs, repo_id, tmp / "dataset", include_rejected=include_rejected, license=license)
        api = HfApi()  # token and endpoint from HF_TOKEN / HF_ENDPOINT or `hf auth login`
        try:
            api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
            commit = api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=built.folder,
                commit_message=f"seftgen release of {len(built.configs)} config(s)",
            )
        except Exception as exc:  # HTTP/auth errors are the user's to fix: show them plainly
            raise UserError(f"upload to the Hub failed: {exc}") from exc
        built.url = str(getattr(commit, "repo_url", "") or f"datasets/{repo_id}")
        return built
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
