"""Ray Data LLM: the same stages spread over every GPU (or CPU node) of a Ray cluster.

Each `generate` call is one Ray Data job through `ray.data.llm`'s vLLM engine processor with
`replicas` engine actors; the stage runner sends one job per `--batch-size` prompts, so use large
batches (tens of thousands) on a cluster to amortise actor start-up. Ray Data's processor returns
one completion per row, so n samples become n rows; it reports no finish reason, so a completion
that used all `max_tokens` is recorded as `length`, others as `stop`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from seftgen.choices import EngineKind
from seftgen.devices import AUTO_CONTEXT, CPU_CONTEXT
from seftgen.engines.base import Completion, Engine, Generation, Messages, SamplingConfig
from seftgen.engines.vllm_engine import TOP_LOGPROBS, answer_token_id
from seftgen.errors import UserError


class RayEngine(Engine):
    kind = EngineKind.RAY

    def __init__(
        self,
        model: str,
        *,
        address: str | None = None,
        replicas: int = 1,
        batch_size: int = 64,
        dtype: str = "auto",
        head_dtype: str | None = None,
        max_model_len: int | None = None,
        eager: bool | None = None,
        memory_share: float | None = None,
        tensor_parallel_size: int = 1,
        max_num_seqs: int | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__()
        try:
            import ray
            from ray.data.llm import vLLMEngineProcessorConfig
        except ImportError as exc:
            raise UserError("a ray engine needs Ray Data", hint="pip install 'seftgen[ray]'", param="engine") from exc
        if not ray.is_initialized():
            ray.init(address=address, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
        self.model = model
        self.seed = seed
        self._tokenizer: Any = None
        cpu_only = not ray.cluster_resources().get("GPU")
        engine_kwargs: dict[str, Any] = {
            "dtype": dtype,
            # As the local engine: 2048 on CPU actors, vLLM's auto-fit (-1) on GPU nodes.
            "max_model_len": max_model_len or (CPU_CONTEXT if cpu_only else AUTO_CONTEXT),
            "gpu_memory_utilization": memory_share or (0.3 if cpu_only else 0.9),
            "tensor_parallel_size": tensor_parallel_size,
            "seed": seed,
            "max_logprobs": TOP_LOGPROBS,
        }
        if max_num_seqs is not None:
            engine_kwargs["max_num_seqs"] = max_num_seqs
        if head_dtype is not None:
            engine_kwargs["hf_overrides"] = {"head_dtype": head_dtype}
        # As the local engine: eager where the actors are CPUs, vLLM's CUDA graphs on GPU nodes.
        engine_kwargs["enforce_eager"] = cpu_only if eager is None else eager
        placement = None
        if cpu_only:  # vLLM's CPU backend: multiprocessing executor, CPU-only bundles (no GPU asked)
            engine_kwargs["distributed_executor_backend"] = "mp"
            placement = {"bundles": [{"CPU": 1}] * tensor_parallel_size, "strategy": "PACK"}
        self.config = vLLMEngineProcessorConfig(
            model_source=model,
            engine_kwargs=engine_kwargs,
            concurrency=replicas,
            batch_size=batch_size,
            placement_group_config=placement,
            log_engine_metrics=False,
        )
        self.chat_template = self.tokenizer.chat_template

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.model)
        return self._tokenizer

    def _run(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """One Ray Data job; results come back in input order (`row` holds the position)."""
        import ray
        from ray.data.llm import build_processor

        processor = build_processor(
            self.config,
            preprocess=lambda r: {"row": r["row"], "messages": r["messages"], "sampling_params": r["sampling_params"]},
            postprocess=lambda r: {
                "row": r["row"],
                "text": r.get("generated_text", ""),
                "prompt_tokens": r.get("num_input_tokens", 0),
                "completion_tokens": r.get("num_generated_tokens", 0),
                "logprobs": r.get("logprobs"),
            },
        )
        results = processor(ray.data.from_items(rows)).take_all()
        return sorted(results, key=lambda r: r["row"])

    def generate(
        self,
        conversations: list[Messages],
        params: SamplingConfig,
        *,
        continue_final: bool = False,
        ids: Sequence[str] | None = None,
    ) -> list[Generation]:
        # The chat-template stage continues a final assistant message by itself (continue_final).
        sampling = {"temperature": params.temperature, "top_p": params.top_p, "max_tokens": params.max_tokens}
        if params.stop:
            sampling["stop"] = list(params.stop)
        if params.regex:
            sampling["structured_outputs"] = {"regex": params.regex}
        rows = [
            {"row": i * params.n + k, "messages": conv, "sampling_params": sampling}
            for i, conv in enumerate(conversations)
            for k in range(params.n)
        ]
        out = self._run(rows)
        generations = []
        for i in range(len(conversations)):
            mine = out[i * params.n : (i + 1) * params.n]
            completions = [
                Completion(
                    r["text"],
                    "length" if r["completion_tokens"] >= params.max_tokens else "stop",
                    r["completion_tokens"],
                )
                for r in mine
            ]
            gen = Generation(mine[0]["prompt_tokens"] if mine else 0, completions)
            self.count(prompt_tokens=gen.prompt_tokens, completion_tokens=sum(c.completion_tokens for c in completions))
            generations.append(gen)
        self.count(requests=len(rows))
        return generations

    def check_answer_tokens(self, candidates: tuple[str, ...]) -> None:
        for cand in candidates:
            answer_token_id(self.tokenizer, cand, self.model)

    def next_token_probs(
        self, conversations: list[Messages], candidates: tuple[str, ...], *, ids: Sequence[str] | None = None
    ) -> list[dict[str, float] | None]:
        answer_ids = {cand: answer_token_id(self.tokenizer, cand, self.model) for cand in candidates}
        sampling = {"temperature": 0.0, "max_tokens": 1, "logprobs": TOP_LOGPROBS}
        out = self._run([{"row": i, "messages": c, "sampling_params": sampling} for i, c in enumerate(conversations)])
        results: list[dict[str, float] | None] = []
        for r in out:
            top = (r["logprobs"] or [{}])[0] or {}
            top = {int(k): v for k, v in top.items()}
            results.append({c: math.exp(top[i]["logprob"]) if i in top else 0.0 for c, i in answer_ids.items()})
            self.count(prompt_tokens=r["prompt_tokens"], completion_tokens=1)
        self.count(requests=len(out))
        return results

    def close(self) -> None:
        import ray

        if ray.is_initialized():
            ray.shutdown()
