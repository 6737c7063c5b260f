"""Every table seftgen writes, column by column. The README's schema section is generated from here.

All tables carry the provenance columns, so any row can be traced to the model, template,
sampling parameters and run that produced it, and reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

MESSAGES = pl.List(pl.Struct({"role": pl.String, "content": pl.String}))


@dataclass(frozen=True)
class Column:
    name: str
    dtype: pl.DataType
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    def frame(self, rows: list[dict]) -> pl.DataFrame:
        """Build a frame with exactly this table's columns, order and types."""
        return pl.DataFrame(rows, schema=self.schema, strict=False)


PROVENANCE = (
    Column("model", pl.String, "Model that produced the row's generated text (local folder or hub id)."),
    Column(
        "engine",
        pl.String,
        "Engine that ran the model: `vllm`, `openai` or `ray` (`none` for data built from records).",
    ),
    Column("template_hash", pl.String, "sha256 prefix of the prompt/chat template text used."),
    Column("params", pl.String, "JSON of the sampling/judging parameters of the run."),
    Column("seed", pl.Int64, "Engine-level seed (vLLM on CPU has no per-request seed)."),
    Column("run_id", pl.String, "Id of the run (one run folder) that wrote the row."),
    Column("created_at", pl.Datetime("us", "UTC"), "When the row was written (UTC)."),
)

_PROMPT = (
    Column("prompt_id", pl.String, "sha256 prefix of the prompt messages; stable across runs."),
    Column("messages", MESSAGES, "Prompt as chat messages (system prompt included), no answer."),
    Column(
        "source_id",
        pl.String,
        "The input row's own id (its `id` field), else its row number in the input: traces a row to its source.",
    ),
)
VERIFIABLE = Column(
    "verifiable",
    pl.String,
    "JSON of the input row's checkable facts for verifier judges (`instruction_id_list` with `kwargs`, "
    "`reference`); null when it has none.",
)

SAMPLES = Table(
    "samples",
    "Policy responses, one row per (prompt, sample).",
    ("prompt_id", "sample_idx"),
    (
        *_PROMPT,
        VERIFIABLE,
        Column("sample_idx", pl.Int32, "0-based index among the n samples of the prompt."),
        Column("response", pl.String, "Generated response text."),
        Column("prompt_tokens", pl.Int32, "Tokens in the rendered prompt."),
        Column("completion_tokens", pl.Int32, "Tokens generated."),
        Column("finish_reason", pl.String, "`stop`, `length`, or `error`."),
        Column("error", pl.String, "Why the request failed (API engine), else null."),
        Column("initial", pl.String, "`--self-refine`: the response before self-refinement (else null)."),
        Column("feedback", pl.String, "`--self-refine`: the model's own feedback on its initial response."),
        Column(
            "refined",
            pl.Boolean,
            "`--self-refine`: `response` is the model's refinement; false: its reply did not parse and `response` "
            "is the initial one; null without --self-refine.",
        ),
        *PROVENANCE,
    ),
)

REVISIONS = Table(
    "revisions",
    "Revised responses from the SEFT reviser or the SRT critic, one row per sample.",
    ("prompt_id", "sample_idx"),
    (
        *_PROMPT,
        Column("sample_idx", pl.Int32, "Index of the revised sample in its sample run."),
        Column(
            "method", pl.String, "`seft` (adaptive reviser), `srt` (API critic) or `srt-self` (stage-2 self-critic)."
        ),
        Column("original", pl.String, "The policy response that was revised."),
        Column("revised", pl.String, "Revised response; equals `original` on `keep`; null if failed."),
        Column("label", pl.String, "SEFT: keep / minor / major (configurable). SRT: null."),
        Column("feedback", pl.String, "SRT: the critic's feedback. SEFT: null."),
        Column("critic_score", pl.Int32, "SRT: score the critic gave inside its feedback."),
        Column("original_score", pl.Int32, "SRT: score of the original, from a separate call."),
        Column("revised_score", pl.Int32, "SRT: score of the refinement, from a separate call."),
        Column("similarity", pl.Float64, "difflib ratio between original and revised (1 = same)."),
        Column("kept", pl.Boolean, "True if the row passed parsing, every filter and the quality gates."),
        Column(
            "reason", pl.String, "Why the row was not kept (what failed to parse, which filter or gate), else null."
        ),
        Column("reason_kind", pl.String, "Kind of `reason`: `parse`, `filter` or `quality`; null when kept."),
        Column("raw", pl.String, "Raw reviser/critic reply, kept for audit."),
        Column("prompt_tokens", pl.Int32, "Prompt tokens over all calls for this row."),
        Column("completion_tokens", pl.Int32, "Completion tokens over all calls for this row."),
        Column("policy_model", pl.String, "Model that wrote `original`."),
        Column("source_run_id", pl.String, "Run id of the sample run that was revised."),
        *PROVENANCE,
    ),
)

VERIFIER = (
    Column("verifier", pl.String, "The verifier judge that scored the samples (`--verifier`), else null."),
    Column(
        "verification",
        pl.String,
        "JSON of the verifier's results per sample (`sample_idx` -> score, per-check pass/fail, error) and "
        "`tie_break` (the LLM judge decided a tie); null without a verifier.",
    ),
)

PAIRS = Table(
    "pairs",
    "Judged preference pairs (DPO layout: messages, chosen, rejected), one row per sample pair.",
    ("prompt_id", "idx_a", "idx_b"),
    (
        *_PROMPT,
        VERIFIABLE,
        Column("idx_a", pl.Int32, "sample_idx of the response shown first in order AB."),
        Column("idx_b", pl.Int32, "sample_idx of the response shown second in order AB."),
        Column("p_a_ab", pl.Float64, "P(' A') / (P(' A')+P(' B')) with order AB."),
        Column("p_a_ba", pl.Float64, "P(label of response a) with order BA, i.e. P(' B') share."),
        Column("score_a", pl.Float64, "(p_a_ab + p_a_ba) / 2: the judge's preference for a."),
        Column("consistent", pl.Boolean, "Both orders prefer the same response."),
        Column("margin", pl.Float64, "abs(2 score_a - 1), from 0 (tie) to 1 (certain)."),
        Column("chosen", pl.String, "Preferred response text."),
        Column("rejected", pl.String, "Other response text."),
        Column("chosen_idx", pl.Int32, "sample_idx of the chosen response."),
        Column("kept", pl.Boolean, "Passed parsing, the margin / consistency filters and the chosen text's gates."),
        Column(
            "reason",
            pl.String,
            "Why the pair was not kept (no answer token, tie, margin, order, a gate on `chosen`), else null.",
        ),
        Column("reason_kind", pl.String, "Kind of `reason`: `parse`, `filter` or `quality`; null when kept."),
        Column("raw", pl.String, "Text-verdict mode: the judge's replies; logprob mode: null."),
        Column(
            "principle_scores",
            pl.List(pl.Struct({"principle": pl.String, "score_a": pl.Float64, "consistent": pl.Boolean})),
            "Several principle judges: each principle's score_a and consistency (the pair's verdict is their "
            "majority, ties by the mean; score_a is the mean); one judge: null.",
        ),
        *VERIFIER,
        Column("policy_model", pl.String, "Model that wrote the responses."),
        Column("source_run_id", pl.String, "Run id of the sample run that was judged."),
        *PROVENANCE,
    ),
)

BEST_OF = Table(
    "best_of",
    "Tournament winners: the best of n samples per prompt, with the bracket record.",
    ("prompt_id",),
    (
        *_PROMPT,
        VERIFIABLE,
        Column("winner_idx", pl.Int32, "sample_idx of the tournament winner."),
        Column("response", pl.String, "The winning response text."),
        Column("num_candidates", pl.Int32, "n, the number of samples in the tournament."),
        Column("judgments", pl.Int32, "Matches played (n - 1)."),
        Column("bracket", pl.String, "JSON list of matches: round, a, b, score_a, winner, bye."),
        *VERIFIER,
        Column("policy_model", pl.String, "Model that wrote the responses."),
        Column("source_run_id", pl.String, "Run id of the sample run."),
        Column(
            "kept",
            pl.Boolean,
            "The winner passed the quality gates, and with a verifier scored at least `min_score` (a training target).",
        ),
        Column("reason", pl.String, "Which gate or verifier check the winner failed, else null."),
        Column("reason_kind", pl.String, "`quality` or `filter` (the verifier) when not kept, else null."),
        *PROVENANCE,
    ),
)

SFT = Table(
    "sft",
    "Chat-format SFT examples (reviser data, judge-augmented SFT data).",
    ("example_id",),
    (
        Column("example_id", pl.String, "sha256 prefix of the example's messages."),
        Column("messages", MESSAGES, "Full conversation; the last assistant turn is the target."),
        Column("kind", pl.String, "What the example teaches: keep/minor/major, sft, judge, judge:PRINCIPLE."),
        Column("source_id", pl.String, "Id of the preference record the example came from."),
        Column(
            "target_from",
            pl.Int32,
            "Character offset in the last (assistant) message where the loss starts: principle judge examples "
            "train only what follows the prefix ending 'Decision: Response'; null: the whole message.",
        ),
        *PROVENANCE,
    ),
)

EVALS = Table(
    "evals",
    "Pairwise evaluation of a candidate run against a baseline run, one row per common prompt.",
    ("prompt_id",),
    (
        *_PROMPT,
        Column("candidate", pl.String, "Candidate response (the first sample of the prompt in the candidate run)."),
        Column("baseline", pl.String, "Baseline response (the first sample of the prompt in the baseline run)."),
        Column("candidate_tokens", pl.Int32, "Tokens of the candidate response (its sample's completion_tokens)."),
        Column("baseline_tokens", pl.Int32, "Tokens of the baseline response."),
        Column("p_c_first", pl.Float64, "Judge's P(candidate) share with the candidate shown first (order CB)."),
        Column("p_c_second", pl.Float64, "Judge's P(candidate) share with the candidate shown second (order BC)."),
        Column("score", pl.Float64, "(p_c_first + p_c_second) / 2: the judge's preference for the candidate."),
        Column("consistent", pl.Boolean, "Both orders prefer the same response."),
        Column("margin", pl.Float64, "abs(2 score - 1), from 0 (tie) to 1 (certain)."),
        Column(
            "outcome",
            pl.String,
            "`win`, `loss` or `tie` for the candidate (tie: the orders disagree or a small margin).",
        ),
        Column("reason", pl.String, "Why the prompt has no verdict (the judge gave no answer token), else null."),
        Column("raw", pl.String, "Text-verdict mode: the judge's replies; logprob mode: null."),
        Column("candidate_model", pl.String, "Model that wrote the candidate response."),
        Column("baseline_model", pl.String, "Model that wrote the baseline response."),
        Column("candidate_run_id", pl.String, "Run id of the candidate samples run."),
        Column("baseline_run_id", pl.String, "Run id of the baseline samples run."),
        *PROVENANCE,
    ),
)

IFEVAL = Table(
    "ifeval",
    "IFEval: one row per answered prompt, with the benchmark's own strict and loose verdicts per instruction.",
    ("prompt_id",),
    (
        *_PROMPT,
        Column(
            "instruction_ids",
            pl.List(pl.String),
            "The prompt's instructions (IFEval ids: `punctuation:no_comma`, ...).",
        ),
        Column("response", pl.String, "The answer that was scored (its sample in the answers run)."),
        Column("finish_reason", pl.String, "The answer's finish reason (`length`: cut at max_tokens, still scored)."),
        Column("completion_tokens", pl.Int32, "Tokens of the answer."),
        Column("strict", pl.List(pl.Boolean), "Per instruction, in order: followed, by the strict check."),
        Column(
            "loose",
            pl.List(pl.Boolean),
            "Per instruction: followed, by the loose check (also without `*`, first or last line).",
        ),
        Column("prompt_strict", pl.Boolean, "Every instruction followed (strict): the prompt-level score."),
        Column("prompt_loose", pl.Boolean, "Every instruction followed (loose)."),
        Column("checker", pl.String, "The checkers that scored it (`lm_eval <version> ifeval`)."),
        Column("answers_run_id", pl.String, "Run id of the answers (samples) run."),
        *PROVENANCE,
    ),
)

_JUDGED_ANSWER = (
    Column("response", pl.String, "The answer that was judged (its sample in the answers run)."),
    Column("finish_reason", pl.String, "The answer's finish reason (`length`: cut at max_tokens, still judged)."),
    Column("completion_tokens", pl.Int32, "Tokens of the answer."),
    Column("policy_model", pl.String, "Model that wrote the answer."),
    Column("answers_run_id", pl.String, "Run id of the answers (samples) run."),
)

ALPACA_EVAL = Table(
    "alpaca_eval",
    "AlpacaEval 2: one row per instruction, the answer judged against GPT-4 Turbo's reference output "
    "(provenance: the judge).",
    ("prompt_id",),
    (
        *_PROMPT,
        *_JUDGED_ANSWER,
        Column("reference", pl.String, "GPT-4 Turbo's reference output (`gpt4_1106_preview`)."),
        Column("swapped", pl.Boolean, "The answer was shown first (`m`); else the reference was."),
        Column("p_first", pl.Float64, "The judge's P(m) / (P(m) + P(M)): the first output shown is better."),
        Column(
            "preference",
            pl.Float64,
            "alpaca_eval's preference: 1 the reference is better, 2 the answer; null when the judge named neither.",
        ),
        Column(
            "reason", pl.String, "Why there is no preference (neither `m` nor `M` among the top tokens), else null."
        ),
        *PROVENANCE,
    ),
)

MT_BENCH = Table(
    "mt_bench",
    "MT-Bench: one row per question and turn, the judge's 1-10 rating of the answer (provenance: the judge).",
    ("prompt_id", "turn"),
    (
        *_PROMPT,
        Column("turn", pl.Int32, "1 or 2: the answer graded (turn 2 is judged with the whole conversation)."),
        Column("category", pl.String, "The question's category (`writing`, `math`, ...)."),
        *_JUDGED_ANSWER,
        Column(
            "judge_prompt", pl.String, "FastChat's judge prompt used (`single-v1`, `single-math-v1-multi-turn`, ...)."
        ),
        Column("judgment", pl.String, "The judge's reply: its explanation and `Rating: [[N]]`."),
        Column("score", pl.Float64, "The rating read from the reply (1-10); null when it has none."),
        Column("reason", pl.String, "Why there is no score (no rating in the reply, or it was cut), else null."),
        *PROVENANCE,
    ),
)

TABLES: dict[str, Table] = {
    t.name: t for t in (SAMPLES, REVISIONS, PAIRS, BEST_OF, SFT, EVALS, IFEVAL, ALPACA_EVAL, MT_BENCH)
}


def schema_markdown() -> str:
    """Markdown for the README: one section per table, then the run manifest."""
    from seftgen.io.manifest import manifest_markdown

    out = []
    for table in TABLES.values():
        out.append(f"#### `{table.name}`: {table.doc}\n\nKey: `{', '.join(table.key)}`.\n")
        out.append("| column | type | meaning |\n|---|---|---|")
        for c in table.columns:
            out.append(f"| `{c.name}` | `{c.dtype}` | {c.doc} |")
        out.append("")
    out.append(manifest_markdown())
    return "\n".join(out)
